"""The `san-search` command's surface: help, version, subcommands."""

from __future__ import annotations

import subprocess
import sys

import pytest

from san_search import __version__
from san_search.cli import build_parser, main


def test_help_lists_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["data", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "prepare" in out and "synth" in out


def test_prepare_help_names_every_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["data", "prepare", "--help"])
    out = capsys.readouterr().out
    for flag in ("--format", "--root", "--out", "--size", "--crop", "--detect",
                 "--max-per-identity", "--seed", "--overwrite", "--splits", "--pairs"):
        assert flag in out, flag


def test_console_script_version() -> None:
    res = subprocess.run([sys.executable, "-m", "san_search.cli", "--version"],
                         capture_output=True, text=True, check=True)
    assert res.stdout.strip() == f"san-search {__version__}"


def test_bad_splits_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["data", "synth", "--out", "x", "--splits", "0.5,0.5"])
    assert "expected three numbers like 0.7,0.15,0.15, got '0.5,0.5'" in capsys.readouterr().err
