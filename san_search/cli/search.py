"""`san-search search` and `launch`: a multi-objective search, here or on a Ray cluster."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from san_search import shipped
from san_search.cli.options import Subparsers, add_tracking_options

if TYPE_CHECKING:
    from san_search.search.space import SearchSpace


def add_search(sub: Subparsers) -> None:
    sr = sub.add_parser(
        "search", help="multi-objective search: Ray Tune + Optuna, one MLflow child run per "
        "trial",
        description="Search a space of SAN candidates (search_spaces/*.yaml) with Ray Tune and "
        "Optuna, training each trial on Ray Train; records one MLflow parent run with the "
        "Pareto front and one child run per trial. `--resume NAME` continues a search whose "
        "driver died.",
    )
    sr.add_argument("space", nargs="?", help="search-space YAML, or a shipped one: default, "
                    "paper, cpu32, smoke")
    sr.add_argument("--data", help="prepared dataset folder")
    sr.add_argument("--zoo", help="zoo folder (aux models to train against, val to score)")
    sr.add_argument("--out", default="runs/search", help="searches folder (runs/search)")
    sr.add_argument("--name", default=None, help="search name (default: search-<time>)")
    sr.add_argument("--resume", metavar="NAME", default=None,
                    help="continue the search NAME in --out")
    sr.add_argument("--check", action="store_true",
                    help="check the space against the data and zoo, then stop")
    sr.add_argument("--trials", type=int, default=None, help="override budget.trials")
    sr.add_argument("--epochs", type=int, default=None, help="override budget.epochs")
    sr.add_argument("--concurrency", type=int, default=None, help="override budget.concurrency")
    sr.add_argument("--sampler", default=None, help="override sampler.name (tpe, nsga2, "
                    "nsga3, random, qmc, gp)")
    sr.add_argument("--seed", type=int, default=None, help="override sampler.seed")
    sr.add_argument("--scheduler", default=None, choices=["mo_asha", "none"],
                    help="override scheduler.name")
    sr.add_argument("--ray-address", default=None, help="Ray cluster (default: a local Ray; "
                    "'auto' inside a cluster)")
    sr.add_argument("--storage", default=None, metavar="URI",
                    help="where Ray Tune and Train write trials and checkpoints, under "
                    "<URI>/<name>/ (default: the search folder); on a cluster without a "
                    "shared disk give one every node reaches, e.g. s3://bucket/searches")
    add_tracking_options(sr, "san-search")
    sr.set_defaults(func=cmd_search)


def _space_path(text: str) -> Path:
    """A search-space file, or the name of a shipped one (default, paper, cpu32, smoke)."""
    path = Path(text)
    if path.is_file() or path.suffix in (".yaml", ".yml"):
        return path
    return shipped.space(text)  # says "no such file, and not a shipped space (...)"


def cmd_search(args: argparse.Namespace) -> int:
    from san_search import search
    from san_search.errors import SanSearchError

    if args.resume:
        if args.space or args.data or args.zoo:
            raise SanSearchError("--resume NAME takes the space, data and zoo from the saved "
                                 "search: leave out SPACE, --data and --zoo")
        summary = search.resume(args.resume, out=args.out, ray_address=args.ray_address)
    else:
        if not (args.space and args.data and args.zoo):
            raise SanSearchError("give a search space, --data and --zoo (or --resume NAME)")
        overrides = search.parse_overrides(args.trials, args.epochs, args.concurrency,
                                           args.sampler, args.seed, args.scheduler)
        space_path = _space_path(args.space)
        if args.check:
            from san_search.search.driver import check

            space, ds, have = check(space_path, overrides, Path(args.data), Path(args.zoo),
                                    args.ray_address)
            print(f"{space_path}: OK against {Path(args.zoo).absolute()} "
                  f"({ds.size} px {ds.color})")
            where = f"the Ray cluster at {args.ray_address}" if args.ray_address else \
                "a local Ray"
            print(f"  a trial fits {where}: " + ", ".join(
                f"{v:g} {k}" for k, v in sorted(have.items()) if k in ("CPU", "GPU")
                or k in (space.resources.custom or {})))
            _print_packing(space, Path(args.zoo), ds.size)
            for k, v in space.describe().items():
                print(f"  {k}: {v}")
            return 0
        summary = search.start(space_path, Path(args.data), Path(args.zoo), out=args.out,
                               name=args.name, tracking_uri=args.tracking_uri,
                               experiment=args.experiment, overrides=overrides,
                               ray_address=args.ray_address, storage=args.storage)
    print(search.format_table([r for r in summary["rows"] if r["on_front"]]))
    return 0


def _print_packing(space: SearchSpace, zoo: Path, image_size: int) -> None:
    """`search --check`: how trials share a GPU and what the largest one needs."""
    from san_search.search.packing import plan
    from san_search.zoo.store import open_zoo

    packing = plan(space, open_zoo(zoo), image_size)
    if packing is not None:
        print(f"  GPU packing: {packing.describe()}")


def add_launch(sub: Subparsers) -> None:
    la = sub.add_parser(
        "launch", help="bring a Ray cluster up (cluster.yaml) and submit a search as a Ray job",
        description="Check the cluster YAML against Ray's schema and the search space, run "
        "`ray up`, open an SSH tunnel to the head's dashboard (`ray dashboard`), and submit "
        "`san-search search` as a Ray job on the head. Data and zoo paths are paths on the "
        "cluster's nodes. Extra search options go after `--`.")
    la.add_argument("--cluster", default="cluster.yaml", help="Ray cluster-launcher YAML "
                    "(cluster.yaml)")
    la.add_argument("--space", required=True, help="shipped space name, or a YAML inside "
                    "this repository")
    la.add_argument("--data", required=True, help="prepared dataset, as a path on the nodes")
    la.add_argument("--zoo", required=True, help="zoo folder, as a path on the nodes")
    la.add_argument("--storage", required=True, metavar="URI",
                    help="where trials and checkpoints go, reachable from every node "
                    "(s3://bucket/searches)")
    la.add_argument("--name", default=None, help="search and job name (search-<time>)")
    la.add_argument("--out", default="~/runs/search", help="searches folder on the head "
                    "(~/runs/search)")
    la.add_argument("--port", type=int, default=8265, help="local end of the dashboard "
                    "tunnel (8265)")
    la.add_argument("--no-up", action="store_true", help="the cluster is already up")
    la.add_argument("--follow", action="store_true", help="stream the job's logs until it ends")
    la.add_argument("--dry-run", action="store_true", help="check and print the commands only")
    la.add_argument("search_args", nargs=argparse.REMAINDER,
                    help="after --: more `san-search search` options (e.g. -- --trials 64)")
    la.set_defaults(func=cmd_launch)


def cmd_launch(args: argparse.Namespace) -> int:
    import shlex

    from san_search.search.launch import make_plan, run_plan

    plan = make_plan(args.cluster, args.space, args.data, args.zoo, storage=args.storage,
                     name=args.name, out=args.out, port=args.port, up=not args.no_up,
                     extra=args.search_args[1:] if args.search_args[:1] == ["--"]
                     else args.search_args)
    if args.dry_run:
        for cmd in (plan.up, plan.tunnel, plan.submit, plan.follow):
            if cmd is not None:
                print(shlex.join(cmd) + (" &" if cmd is plan.tunnel else ""))
        return 0
    return run_plan(plan, follow=args.follow)
