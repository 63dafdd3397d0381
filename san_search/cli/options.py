"""Option helpers shared by several commands: command groups, dataset build options, MLflow
tracking options. Each is written once here; the command modules call them."""

from __future__ import annotations

import argparse
from typing import Any, Protocol


class Subparsers(Protocol):
    """What `ArgumentParser.add_subparsers()` returns, as far as the commands use it."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser: ...


def add_group(sub: Subparsers, name: str, help: str, metavar: str) -> Subparsers:
    """A command that only holds subcommands (`data`, `zoo`, `ensemble`); its chosen
    subcommand lands in `args.<name>_command`."""
    group = sub.add_parser(name, help=help)
    subparsers: Subparsers = group.add_subparsers(dest=f"{name}_command", required=True,
                                                  metavar=metavar)
    return subparsers


def split_fractions(text: str) -> tuple[float, float, float]:
    """`--splits 0.7,0.15,0.15` -> (0.7, 0.15, 0.15)."""
    message = f"expected three numbers like 0.7,0.15,0.15, got {text!r}"
    try:
        a, b, c = (float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(message) from None
    return a, b, c


def add_build_options(p: argparse.ArgumentParser) -> None:
    """Seed, identity splits, verification pairs and --overwrite of a dataset build."""
    p.add_argument("--seed", type=int, default=0, help="seed of splits, pairs and sampling (0)")
    p.add_argument("--splits", type=split_fractions, default=(0.7, 0.15, 0.15),
                   metavar="TR,VA,TE", help="identity fractions of train,val,test (0.7,0.15,0.15)")
    p.add_argument("--pairs", type=int, default=3000,
                   help="genuine verification pairs per val/test split, as many impostor (3000)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace --out if san-search wrote it (its .san-search-output marker, "
                   "or a 0.1 dataset's dataset.json); any other folder is refused")


def add_allow_unsigned(p: argparse.ArgumentParser) -> None:
    """--allow-unsigned: load an unsigned export although a trust key is set."""
    p.add_argument("--allow-unsigned", action="store_true",
                   help="load an unsigned export although a trust key is set (--trust or "
                   "$SAN_SEARCH_TRUST_KEY), on its SHA-256 hashes alone; without it a trust "
                   "key means signed and an unsigned export is refused")


def add_tracking_options(p: argparse.ArgumentParser, experiment: str) -> None:
    """--tracking-uri and --experiment, with the command's default experiment."""
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else "
                   "sqlite:///<cwd>/mlflow.db)")
    p.add_argument("--experiment", default=experiment, help=f"MLflow experiment ({experiment})")
