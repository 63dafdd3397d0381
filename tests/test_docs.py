"""The manual: its reference pages are what the code generates now (every command, flag,
candidate setting and search-space key), and its strict build passes, and fails on a
broken link."""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from san_search.cli import build_parser
from san_search.cli.reference import PAGES, _commands, pages

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "docs" / "reference"


def test_the_committed_reference_is_what_the_code_generates() -> None:
    for name, text in pages().items():
        committed = (REFERENCE / name).read_text()
        assert committed == text, (f"docs/reference/{name} is behind the code: run "
                                   "`python -m san_search.cli.reference docs/reference`")
    assert sorted(pages()) == sorted(PAGES)
    for name, text in pages().items():  # the same pages in every checkout (CI's is elsewhere)
        assert str(REPO) not in text, name


def test_every_command_and_flag_is_in_the_reference() -> None:
    cli = (REFERENCE / "cli.md").read_text()
    commands = list(_commands(build_parser(), ""))
    assert len(commands) == 16  # every leaf command of build_parser
    for full, sub, _ in commands:
        section = cli.split(f"## `san-search {full}`", 1)
        assert len(section) == 2, full
        body = section[1].split("\n## ", 1)[0]
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            for flag in action.option_strings:
                assert f"`{flag}`" in body, f"{full}: {flag}"


def test_every_candidate_setting_and_search_space_key_is_in_the_reference() -> None:
    from san_search.config import CandidateConfig, TrainResources
    from san_search.search import sections
    from san_search.search.space import TOP_KEYS

    candidate = (REFERENCE / "candidate.md").read_text()
    for cls in (CandidateConfig, TrainResources):
        for f in dataclasses.fields(cls):
            assert f"| `{f.name}` |" in candidate, f.name
    space = (REFERENCE / "search-space.md").read_text()
    for key in TOP_KEYS:
        assert f"`{key}`" in space, key
    for cls in (sections.Objective, sections.Constraint, sections.SamplerSpec,
                sections.SchedulerSpec, sections.Budget, sections.Parameter):
        for f in dataclasses.fields(cls):
            assert f"| `{f.name}` |" in space, (cls.__name__, f.name)


def _mkdocs(root: Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "mkdocs"
    if not exe.exists():
        pytest.skip("mkdocs is not installed (the dev extra installs it)")
    return subprocess.run([str(exe), "build", "--strict", "--site-dir", str(root / "site")],
                          cwd=root, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})


@pytest.mark.slow  # two builds of the manual, about 10 s
def test_the_strict_build_passes_and_fails_on_a_broken_link(tmp_path: Path) -> None:
    shutil.copytree(REPO / "docs", tmp_path / "docs")
    shutil.copy(REPO / "mkdocs.yml", tmp_path / "mkdocs.yml")
    ok = _mkdocs(tmp_path)
    assert ok.returncode == 0, ok.stderr[-2000:]
    page = tmp_path / "docs" / "concepts.md"
    page.write_text(page.read_text() + "\nSee [the missing page](no-such-page.md).\n")
    broken = _mkdocs(tmp_path)
    assert broken.returncode != 0
    assert "no-such-page.md" in broken.stderr
