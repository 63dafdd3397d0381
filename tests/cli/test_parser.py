"""The `san-search` command's surface: help, version, every command and subcommand with its
flags and defaults."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from san_search import __version__, shipped
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


SPLITS = (0.7, 0.15, 0.15)
ATTACK_BUDGET = {"attack_images": 512, "attack_epochs": 2, "attack_lr": 0.002,
                 "attack_batch": 64, "attack_seed": 0}
# Every command: the shortest valid command line, the function it runs, and every other
# option with its default (the whole namespace, so a flag added, dropped or re-defaulted
# without updating this table fails).
COMMANDS: dict[str, tuple[list[str], str, dict[str, object]]] = {
    "data prepare": (
        ["--format", "lfw", "--root", "r", "--out", "o"], "cmd_data_prepare",
        {"format": "lfw", "root": "r", "out": "o", "size": 64, "color": "rgb", "crop": None,
         "detect": False,
         "max_per_identity": 20, "workers": None, "seed": 0, "splits": SPLITS, "pairs": 3000,
         "overwrite": False}),
    "data synth": (
        ["--out", "o"], "cmd_data_synth",
        {"out": "o", "identities": 500, "images_per_identity": 20, "size": 64,
         "female_share": 0.5, "files": False, "seed": 0, "splits": SPLITS, "pairs": 3000,
         "overwrite": False}),
    "zoo train": (
        ["--data", "d", "--out", "o"], "cmd_zoo_train",
        {"data": "d", "zoo": str(shipped.zoo_spec("default")), "out": "o",
         "ray_address": None, "commercial": False}),
    "zoo report": (
        ["z"], "cmd_zoo_report",
        {"zoo_dir": "z", "data": None, "no_third_party": False, "no_mlflow": False,
         "tracking_uri": None, "experiment": "san-search-zoo"}),
    "train": (
        ["--data", "d", "--zoo", "z"], "cmd_train",
        {"data": "d", "zoo": "z", "config": str(shipped.candidate("default")),
         "out": "runs/train", "name": None, "resume_from": None, "max_failures": None,
         "ray_address": None, "tracking_uri": None, "experiment": "san-search-train"}),
    "evaluate": (
        ["c", "--data", "d", "--zoo", "z"], "cmd_evaluate",
        {"checkpoint": "c", "data": "d", "zoo": "z", "role": "val"}),
    "search": (
        [], "cmd_search",
        {"space": None, "data": None, "zoo": None, "out": "runs/search", "name": None,
         "resume": None, "check": False, "trials": None, "epochs": None, "concurrency": None,
         "sampler": None, "seed": None, "scheduler": None, "ray_address": None,
         "storage": None, "tracking_uri": None, "experiment": "san-search"}),
    "ensemble select": (
        ["--search", "s", "--size", "3"], "cmd_ensemble_select",
        {"search": "s", "search_dir": "runs/search", "size": 3, "min_utility": 0.5,
         "diversity_weight": 0.2, "hv_weight": 0.2, "policy": "random", "seed": 0,
         "no_third_party": False, "attack": False, **ATTACK_BUDGET}),
    "ensemble export": (
        ["--search", "s", "--out", "o"], "cmd_ensemble_export",
        {"search": "s", "search_dir": "runs/search", "out": "o", "policy": None,
         "overwrite": False, "registered_name": "san-search-ensemble", "alias": "champion",
         "no_register": False, "sign": None}),
    "perturb": (
        ["--ensemble", "e", "--input", "i", "--output", "o"], "cmd_perturb",
        {"ensemble": "e", "input": "i", "output": "o", "policy": None, "backend": "torch",
         "overwrite": False, "trust": None, "faces": None, "aligned": False,
         "crops_only": False, "sheet": None, "allow_unsigned": False}),
    "evaluate-photos": (
        ["--ensemble", "e", "--data", "d"], "cmd_evaluate_photos",
        {"ensemble": "e", "data": "d", "root": None, "limit": 300, "seed": 0, "policy": None,
         "backend": "torch", "keep": None, "allow_unsigned": False}),
    "attack": (
        ["--ensemble", "e", "--data", "d", "--zoo", "z"], "cmd_attack",
        {"ensemble": "e", "data": "d", "zoo": "z", "no_mlflow": False, "allow_unsigned": False,
         **ATTACK_BUDGET}),
    "keys generate": (["--out", "k"], "cmd_keys_generate", {"out": "k"}),
    "demo": (
        [], "cmd_demo",
        {"out": "runs/demo", "data": None, "trials": None, "size": 3, "gpus_per_trial": None,
         "tracking_uri": None}),
    "launch": (
        ["--space", "s", "--data", "d", "--zoo", "z", "--storage", "u"], "cmd_launch",
        {"cluster": "cluster.yaml", "space": "s", "data": "d", "zoo": "z", "storage": "u",
         "name": None, "out": "~/runs/search", "port": 8265, "no_up": False, "follow": False,
         "dry_run": False, "search_args": []}),
    "models": ([], "cmd_models_list", {}),
}
POSITIONALS = {"zoo_dir", "checkpoint", "space", "search_args"}
GROUPS = {"data": "SUBCOMMAND", "zoo": "SUBCOMMAND", "ensemble": "STEP", "keys": "SUBCOMMAND"}


def _choices(argv: list[str], capsys: pytest.CaptureFixture[str]) -> set[str]:
    """The (sub)commands argparse offers after `argv`, read from its invalid-choice error."""
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([*argv, "no-such-command"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'no-such-command' (choose from " in err
    return set(re.findall(r"'([a-z-]+)'", err.split("choose from", 1)[1]))


def test_every_command_and_subcommand_is_in_the_table(
        capsys: pytest.CaptureFixture[str]) -> None:
    words = [name.split() for name in COMMANDS]
    assert _choices([], capsys) == {w[0] for w in words}
    for group in GROUPS:
        assert _choices([group], capsys) == {w[1] for w in words if w[0] == group}, group


@pytest.mark.parametrize("command", list(COMMANDS))
def test_command_parses_with_its_flags_and_defaults(command: str) -> None:
    argv, func, expected = COMMANDS[command]
    words = command.split()
    args = vars(build_parser().parse_args([*words, *argv]))
    assert args.pop("func").__name__ == func
    assert args.pop("command") == words[0]
    if len(words) == 2:
        assert args.pop(f"{words[0]}_command") == words[1]
    assert args == expected


@pytest.mark.parametrize("command", list(COMMANDS))
def test_command_help_names_every_flag(command: str,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([*command.split(), "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: san-search {command} [-h]")
    for dest in COMMANDS[command][2]:
        name = dest if dest in POSITIONALS else "--" + dest.replace("_", "-")
        assert name in out, (command, name)


@pytest.mark.parametrize("group", list(GROUPS))
def test_a_group_without_its_subcommand_is_refused(group: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([group])
    assert exc.value.code == 2
    assert f"the following arguments are required: {GROUPS[group]}" in capsys.readouterr().err
