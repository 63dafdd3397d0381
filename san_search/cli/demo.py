"""`san-search demo`: the whole product on synthetic faces, in one command."""

from __future__ import annotations

import argparse

from san_search.cli.options import Subparsers


def add_demo(sub: Subparsers) -> None:
    dm = sub.add_parser(
        "demo", help="the whole product on synthetic faces, in one command (about 10 min)",
        description="Synthetic faces (or --data) -> a small zoo -> a small search "
        "(search_spaces/demo.yaml, 8 trials) -> ensemble selection -> export and "
        "registration -> perturbing a few sample faces -> a summary. Starts a local MLflow "
        "server on 127.0.0.1 (left running for the UI) unless --tracking-uri or "
        "$MLFLOW_TRACKING_URI names one. Data and zoo are kept in --out and reused.")
    dm.add_argument("--out", default="runs/demo", help="demo folder (runs/demo)")
    dm.add_argument("--data", default=None, help="a prepared dataset instead of synthetic faces")
    dm.add_argument("--trials", type=int, default=None, help="override the search's 8 trials")
    dm.add_argument("--size", type=int, default=3, help="ensemble size (3)")
    dm.add_argument("--gpus-per-trial", type=float, default=None,
                    help="GPU share per Train worker (default: 0.5 when a GPU is visible, "
                    "else CPU trials)")
    dm.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: "
                    "$MLFLOW_TRACKING_URI, else a local server the demo starts)")
    dm.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from san_search.demo import run_demo

    run_demo(args.out, data=args.data, trials=args.trials, tracking_uri=args.tracking_uri,
             gpus_per_trial=args.gpus_per_trial, size=args.size)
    return 0
