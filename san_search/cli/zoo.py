"""`san-search zoo train` and `zoo report`: the gender classifiers and face matchers."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from san_search import shipped
from san_search.cli.options import Subparsers, add_tracking_options


def add_zoo_train(sub: Subparsers) -> None:
    z = sub.add_parser(
        "train", help="train every model of a zoo YAML as parallel Ray tasks",
        description="Train the zoo's gender classifiers and face matchers, each with its role "
        "(aux / val / test), in parallel Ray tasks. Pretrained entries (source: "
        "<package>:<file>) are converted from the installed package, checked by SHA-256, "
        "never downloaded. Models already in --out with the same settings are kept; a model "
        "never changes role; a zoo never mixes datasets.",
    )
    z.add_argument("--data", required=True, help="prepared dataset folder")
    z.add_argument("--zoo", default=str(shipped.zoo_spec("default")),
                   help="zoo YAML (default: the built-in default zoo)")
    z.add_argument("--out", required=True, help="zoo folder (created, or extended)")
    z.add_argument("--ray-address", default=None,
                   help="Ray cluster address (default: start a local Ray)")
    z.add_argument("--commercial", action="store_true",
                   help="refuse pretrained entries whose weights or training data are for "
                   "research only (see `zoo report` for each model's licences)")
    z.set_defaults(func=cmd_zoo_train)


def cmd_zoo_train(args: argparse.Namespace) -> int:
    from san_search.zoo.store import load_spec, roles_summary, train_zoo

    spec = load_spec(args.zoo)
    t0 = time.perf_counter()
    zoo = train_zoo(spec, Path(args.data), Path(args.out), ray_address=args.ray_address,
                    commercial=args.commercial)
    print(f"zoo {zoo.path}: {len(zoo.entries)} models in {time.perf_counter() - t0:.0f} s")
    for kind, roles in roles_summary(zoo).items():
        print(f"  {kind:<8} " + "  ".join(f"{r}: {', '.join(n) or '-'}" for r, n in roles.items()))
    return 0


def add_zoo_report(sub: Subparsers) -> None:
    r = sub.add_parser(
        "report", help="score every zoo model on the test split, with baselines; log to MLflow",
    )
    r.add_argument("zoo_dir", help="zoo folder")
    r.add_argument("--data", default=None, help="dataset folder (default: the zoo's own)")
    r.add_argument("--no-third-party", action="store_true",
                   help="leave out the pretrained third-party evaluators")
    r.add_argument("--no-mlflow", action="store_true", help="print only")
    add_tracking_options(r, "san-search-zoo")
    r.set_defaults(func=cmd_zoo_report)


def cmd_zoo_report(args: argparse.Namespace) -> int:
    from san_search import tracking
    from san_search.zoo.report import format_table, log_report, score_zoo

    if not args.no_mlflow:  # fail fast, before scoring
        tracking.check_reachable(tracking.resolve_tracking_uri(args.tracking_uri))
    rows, context = score_zoo(args.zoo_dir, args.data, third_party=not args.no_third_party)
    table = format_table(rows)
    print(table)
    if not args.no_mlflow:
        run_id = log_report(rows, context, table, args.tracking_uri, args.experiment)
        print(f"logged to MLflow run {run_id} (experiment {args.experiment!r}, "
              f"{tracking.resolve_tracking_uri(args.tracking_uri)})")
    return 0
