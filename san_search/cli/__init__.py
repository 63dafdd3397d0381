"""The `san-search` command: `build_parser` assembles one parser builder per command (each
`add_<command>` lives beside its `cmd_<command>` in this package's modules), and `main`
runs the chosen command, turning errors and signals into exit codes."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable, Sequence
from types import FrameType

from san_search import __version__
from san_search.cli.attack import add_attack
from san_search.cli.data import add_data_prepare, add_data_synth
from san_search.cli.demo import add_demo
from san_search.cli.ensemble import add_ensemble_export, add_ensemble_select, add_perturb
from san_search.cli.keys import add_keys_generate
from san_search.cli.models import add_models_list
from san_search.cli.options import Subparsers, add_group
from san_search.cli.photos import add_evaluate_photos
from san_search.cli.search import add_launch, add_search
from san_search.cli.train import add_evaluate, add_train
from san_search.cli.zoo import add_zoo_report, add_zoo_train
from san_search.errors import SanSearchError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="san-search",
        description="Find, select and ship Semi-Adversarial Network ensembles.",
    )
    parser.add_argument("--version", action="version", version=f"san-search {__version__}")
    sub: Subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = add_group(sub, "data", "prepare face datasets", "SUBCOMMAND")
    add_data_prepare(data)
    add_data_synth(data)
    zoo = add_group(sub, "zoo", "train and report the gender classifiers and matchers",
                    "SUBCOMMAND")
    add_zoo_train(zoo)
    add_zoo_report(zoo)
    add_train(sub)
    add_evaluate(sub)
    add_search(sub)
    ensemble = add_group(sub, "ensemble", "choose, test and export a diverse ensemble", "STEP")
    add_ensemble_select(ensemble)
    add_ensemble_export(ensemble)
    add_perturb(sub)
    add_evaluate_photos(sub)
    add_attack(sub)
    keys = add_group(sub, "keys", "make the key pair that signs exports", "SUBCOMMAND")
    add_keys_generate(keys)
    add_demo(sub)
    add_launch(sub)
    add_models_list(sub)
    return parser


_RECEIVED: list[str] = []  # the signals turned into KeyboardInterrupt, for the message


def _raise_on_term(signum: int, frame: FrameType | None) -> None:
    # Turn SIGTERM into an exception so atomic writers remove their temporary folders.
    _RECEIVED.append(signal.Signals(signum).name)
    raise KeyboardInterrupt(_RECEIVED[-1])


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_on_term)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except SanSearchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # Not "nothing was written": an interrupted search keeps its folder and runs (the
        # driver has printed how to continue it), and other commands keep what they finished.
        print(f"interrupted by {_RECEIVED[-1]}" if _RECEIVED else "interrupted",
              file=sys.stderr)
        return 130
