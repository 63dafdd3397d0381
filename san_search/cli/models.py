"""`san-search models`: list the registered architectures."""

from __future__ import annotations

import argparse

from san_search.cli.options import Subparsers


def add_models_list(sub: Subparsers) -> None:
    models = sub.add_parser("models", help="list the registered architectures")
    models.set_defaults(func=cmd_models_list)


def cmd_models_list(args: argparse.Namespace) -> int:
    from san_search.models import KINDS, list_models

    for kind in KINDS:
        print(f"{kind}: {', '.join(list_models(kind))}")
    return 0
