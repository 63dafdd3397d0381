"""The `san-search` command: argument parsing and one small function per subcommand."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

from san_search import __version__, shipped
from san_search.errors import SanSearchError


def _fractions(text: str) -> tuple[float, float, float]:
    message = f"expected three numbers like 0.7,0.15,0.15, got {text!r}"
    try:
        a, b, c = (float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(message) from None
    return a, b, c


def _add_build_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0, help="seed of splits, pairs and sampling (0)")
    p.add_argument("--splits", type=_fractions, default=(0.7, 0.15, 0.15), metavar="TR,VA,TE",
                   help="identity fractions of train,val,test (0.7,0.15,0.15)")
    p.add_argument("--pairs", type=int, default=3000,
                   help="genuine verification pairs per val/test split, as many impostor (3000)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")


def cmd_data_prepare(args: argparse.Namespace) -> int:
    from san_search.data import BuildOptions, prepare, summary_table

    t0 = time.perf_counter()
    info = prepare(
        args.format, Path(args.root), Path(args.out), size=args.size, crop=args.crop,
        detect=args.detect, max_per_identity=args.max_per_identity,
        options=BuildOptions(args.seed, args.splits, args.pairs), workers=args.workers,
        overwrite=args.overwrite,
    )
    print(summary_table(info, Path(args.out).absolute()))
    print(f"prepared {Path(args.out).absolute()} in {time.perf_counter() - t0:.1f} s")
    return 0


def cmd_data_synth(args: argparse.Namespace) -> int:
    from san_search.data import BuildOptions, summary_table, synth, synth_files

    t0 = time.perf_counter()
    out = Path(args.out).absolute()
    if args.files:
        synth_files(out, identities=args.identities, images_per_identity=args.images_per_identity,
                    size=args.size, seed=args.seed, female_share=args.female_share,
                    overwrite=args.overwrite)
        print(f"wrote {args.identities * args.images_per_identity} PNG files and "
              f"{out / 'manifest.csv'} in {time.perf_counter() - t0:.1f} s")
        return 0
    info = synth(out, identities=args.identities, images_per_identity=args.images_per_identity,
                 size=args.size, female_share=args.female_share,
                 options=BuildOptions(args.seed, args.splits, args.pairs),
                 overwrite=args.overwrite)
    print(summary_table(info, out))
    print("synthetic faces: a stand-in for real faces, for demos and tests")
    print(f"wrote {out} in {time.perf_counter() - t0:.1f} s")
    return 0


def _default_zoo_yaml() -> str:
    return str(shipped.zoo_spec("default"))


def cmd_zoo_train(args: argparse.Namespace) -> int:
    from san_search.config import load_zoo_spec
    from san_search.zoo import roles_summary, train_zoo

    spec = load_zoo_spec(args.zoo)
    t0 = time.perf_counter()
    zoo = train_zoo(spec, Path(args.data), Path(args.out), ray_address=args.ray_address)
    print(f"zoo {zoo.path}: {len(zoo.entries)} models in {time.perf_counter() - t0:.0f} s")
    for kind, roles in roles_summary(zoo).items():
        print(f"  {kind:<8} " + "  ".join(f"{r}: {', '.join(n) or '-'}" for r, n in roles.items()))
    return 0


def cmd_zoo_report(args: argparse.Namespace) -> int:
    from san_search import tracking
    from san_search.zoo_report import format_table, log_report, score_zoo

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


def cmd_train(args: argparse.Namespace) -> int:
    import dataclasses

    from san_search.config import load_candidate_file
    from san_search.experiment import run_candidate

    cfg, resources = load_candidate_file(args.config)
    summary = run_candidate(
        cfg, Path(args.data), Path(args.zoo), tracking_uri=args.tracking_uri,
        experiment=args.experiment, out=Path(args.out), name=args.name,
        resume_from=args.resume_from, ray_address=args.ray_address,
        resources=dataclasses.replace(resources, max_failures=args.max_failures),
    )
    print(f"{'alpha':>5} {'privacy':>8} {'utility':>8} {'SSIM':>6}   (val pool means)")
    for p in summary["curve"]:
        print(f"{p['alpha']:>5.2f} {p['privacy_mean']:>8.3f} {p['utility_mean']:>8.3f} "
              f"{p['ssim']:>6.3f}")
    for k, v in summary["matched"].items():
        print(f"{k}: {v:.3f}")
    print(f"MLflow run {summary['run_id']} ({summary['name']}); checkpoint {summary['checkpoint']}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from san_search.evaluate import privacy_at_utility
    from san_search.experiment import final_evaluation

    ev = final_evaluation(Path(args.checkpoint), Path(args.data), Path(args.zoo),
                          role=args.role)
    print(f"{args.role} pool, val images; privacy and utility are pool means")
    print(f"{'alpha':>5} {'privacy':>8} {'utility':>8} {'SSIM':>6} {'noise@u':>8} {'blur@u':>7}")
    for p in ev.curve:
        u = p["utility_mean"]
        print(f"{p['alpha']:>5.2f} {p['privacy_mean']:>8.3f} {u:>8.3f} {p['ssim']:>6.3f} "
              f"{privacy_at_utility(ev.baselines['noise'], u):>8.3f} "
              f"{privacy_at_utility(ev.baselines['blur'], u):>7.3f}")
    print("noise@u / blur@u: the baseline's privacy at the same utility (interpolated)")
    return 0


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
            space, ds, _ = search.bind(space_path, overrides, Path(args.data), Path(args.zoo))
            print(f"{space_path}: OK against {Path(args.zoo).absolute()} ({ds.size} px)")
            for k, v in space.describe().items():
                print(f"  {k}: {v}")
            return 0
        summary = search.start(space_path, Path(args.data), Path(args.zoo), out=args.out,
                               name=args.name, tracking_uri=args.tracking_uri,
                               experiment=args.experiment, overrides=overrides,
                               ray_address=args.ray_address, storage=args.storage)
    print(search.format_table([r for r in summary["rows"] if r["on_front"]]))
    return 0


def cmd_ensemble_select(args: argparse.Namespace) -> int:
    from san_search.ensemble import Weights, select

    select(args.search, search_dir=args.search_dir, size=args.size,
           min_utility=args.min_utility,
           weights=Weights(args.diversity_weight, args.hv_weight), seed=args.seed,
           policy=args.policy, third_party=not args.no_third_party)
    return 0


def cmd_ensemble_export(args: argparse.Namespace) -> int:
    from san_search import tracking
    from san_search.ensemble import Selection, search_folder
    from san_search.export import export_ensemble, register

    sel = Selection.load(search_folder(args.search, args.search_dir))
    if not args.no_register:  # fail fast, before exporting
        tracking.check_reachable(sel.tracking_uri)
    out = export_ensemble(sel, args.out, policy=args.policy, overwrite=args.overwrite)
    if not args.no_register:
        register(out, sel.tracking_uri, sel.ensemble_run_id, args.registered_name, args.alias)
    print(f"model card: {out / 'README.md'}")
    return 0


def cmd_perturb(args: argparse.Namespace) -> int:
    from san_search.perturb import perturb_files

    rep = perturb_files(args.ensemble, args.input, args.output, policy=args.policy,
                        backend=args.backend, overwrite=args.overwrite)
    rate = len(rep.written) / rep.seconds if rep.seconds > 0 else 0.0
    print(f"wrote {len(rep.written)} PNG(s) to {args.output} in {rep.seconds:.1f} s "
          f"({rate:.0f} images/s); skipped {len(rep.skipped)}")
    for path, why in rep.skipped:
        print(f"  skipped {path}: {why}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from san_search.demo import run_demo

    run_demo(args.out, data=args.data, trials=args.trials, tracking_uri=args.tracking_uri,
             gpus_per_trial=args.gpus_per_trial, size=args.size)
    return 0


def cmd_launch(args: argparse.Namespace) -> int:
    import shlex

    from san_search.launch import make_plan, run_plan

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


def cmd_models_list(args: argparse.Namespace) -> int:
    from san_search.models import KINDS, list_models

    for kind in KINDS:
        print(f"{kind}: {', '.join(list_models(kind))}")
    return 0


def _add_tracking(p: argparse.ArgumentParser, experiment: str) -> None:
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else "
                   "sqlite:///<cwd>/mlflow.db)")
    p.add_argument("--experiment", default=experiment, help=f"MLflow experiment ({experiment})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="san-search",
        description="Find, select and ship Semi-Adversarial Network ensembles.",
    )
    parser.add_argument("--version", action="version", version=f"san-search {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = sub.add_parser("data", help="prepare face datasets")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")

    p = data_sub.add_parser(
        "prepare", help="raw face images -> prepared dataset (Parquet, splits, pairs)",
        description="Read LFW, CelebA or a CSV manifest; write grayscale square faces split by "
        "identity, verification pairs, gender prototypes and dataset.json, atomically.",
    )
    p.add_argument("--format", required=True, choices=["lfw", "celeba", "manifest"])
    p.add_argument("--root", required=True,
                   help="dataset root (for manifest: the CSV, or a folder with manifest.csv)")
    p.add_argument("--out", required=True, help="output folder (must not exist, or --overwrite)")
    p.add_argument("--size", type=int, default=64, help="image side in pixels, even (64)")
    p.add_argument("--crop", type=float, default=None,
                   help="centred crop side as a fraction of the shorter side "
                   "(lfw 0.5, celeba 0.75, manifest 1.0)")
    p.add_argument("--detect", action="store_true",
                   help="find the face with OpenCV's Haar cascade (in-the-wild images)")
    p.add_argument("--max-per-identity", type=int, default=20,
                   help="keep at most this many images per person, seeded (20; 0 = all)")
    p.add_argument("--workers", type=int, default=None, help="decoding processes (all cores)")
    _add_build_options(p)
    p.set_defaults(func=cmd_data_prepare)

    s = data_sub.add_parser(
        "synth", help="generate procedural synthetic faces (a stand-in for real faces)",
        description="Generate a seeded synthetic face set: as a prepared dataset, or with "
        "--files as PNGs + manifest.csv for `data prepare --format manifest`.",
    )
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--identities", type=int, default=500, help="number of people (500)")
    s.add_argument("--images-per-identity", type=int, default=20, help="images per person (20)")
    s.add_argument("--size", type=int, default=64, help="image side in pixels, even (64)")
    s.add_argument("--female-share", type=float, default=0.5, help="share of women (0.5)")
    s.add_argument("--files", action="store_true",
                   help="write PNG files + manifest.csv instead of a prepared dataset")
    _add_build_options(s)
    s.set_defaults(func=cmd_data_synth)

    zoo = sub.add_parser("zoo", help="train and report the gender classifiers and matchers")
    zoo_sub = zoo.add_subparsers(dest="zoo_command", required=True, metavar="SUBCOMMAND")
    z = zoo_sub.add_parser(
        "train", help="train every model of a zoo YAML as parallel Ray tasks",
        description="Train the zoo's gender classifiers and face matchers, each with its role "
        "(aux / val / test), in parallel Ray tasks. Models already in --out with the same "
        "settings are kept; a model never changes role; a zoo never mixes datasets.",
    )
    z.add_argument("--data", required=True, help="prepared dataset folder")
    z.add_argument("--zoo", default=_default_zoo_yaml(),
                   help="zoo YAML (default: the built-in default zoo)")
    z.add_argument("--out", required=True, help="zoo folder (created, or extended)")
    z.add_argument("--ray-address", default=None,
                   help="Ray cluster address (default: start a local Ray)")
    z.set_defaults(func=cmd_zoo_train)
    r = zoo_sub.add_parser(
        "report", help="score every zoo model on the test split, with baselines; log to MLflow",
    )
    r.add_argument("zoo_dir", help="zoo folder")
    r.add_argument("--data", default=None, help="dataset folder (default: the zoo's own)")
    r.add_argument("--no-third-party", action="store_true",
                   help="leave out the pretrained third-party evaluators")
    r.add_argument("--no-mlflow", action="store_true", help="print only")
    _add_tracking(r, "san-search-zoo")
    r.set_defaults(func=cmd_zoo_report)

    t = sub.add_parser(
        "train", help="train one SAN candidate on Ray Train and track it in MLflow",
        description="Train one candidate (YAML of CandidateConfig keys) with Ray Train's "
        "TorchTrainer, score it on the val pool (trade-off curve, noise and blur baselines) "
        "and record it as one MLflow run.",
    )
    t.add_argument("--data", required=True, help="prepared dataset folder")
    t.add_argument("--zoo", required=True, help="zoo folder (aux models for training, val "
                   "models for scoring)")
    t.add_argument("--config", default=str(shipped.candidate("default")),
                   help="candidate YAML (default: the built-in default candidate)")
    t.add_argument("--out", default="runs/train", help="Ray Train storage for checkpoints "
                   "(runs/train)")
    t.add_argument("--name", default=None, help="run name (default: san-<time>)")
    t.add_argument("--resume-from", default=None, help="a checkpoint folder to continue from")
    t.add_argument("--max-failures", type=int, default=1,
                   help="restarts of dead workers from the last checkpoint (1)")
    t.add_argument("--ray-address", default=None, help="Ray cluster (default: a local Ray)")
    _add_tracking(t, "san-search-train")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser(
        "evaluate", help="score a trained SAN checkpoint: trade-off curve vs noise and blur",
    )
    e.add_argument("checkpoint", help="checkpoint folder (model.safetensors + trainer.json)")
    e.add_argument("--data", required=True, help="prepared dataset folder")
    e.add_argument("--zoo", required=True, help="zoo folder")
    e.add_argument("--role", choices=["val", "aux"], default="val",
                   help="which pool judges (val; aux = the models it trained against)")
    e.set_defaults(func=cmd_evaluate)

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
    _add_tracking(sr, "san-search")
    sr.set_defaults(func=cmd_search)

    ens = sub.add_parser("ensemble", help="choose, test and export a diverse ensemble")
    ens_sub = ens.add_subparsers(dest="ensemble_command", required=True, metavar="STEP")
    es = ens_sub.add_parser(
        "select", help="pick K members from a finished search",
        description="Pick K members among a search's finished candidates that meet its "
        "constraints and --min-utility, maximising coverage of the val gender classifiers "
        "(each counts the member that fools it best) + diversity + hypervolume contribution; "
        "compare with top-K by privacy and K random from the front on the val pool; then "
        "score both policies on the test pool. Recorded in <search>/ensemble/selection.json "
        "and an MLflow `ensemble` run under the search's parent run.")
    es.add_argument("--search", required=True, help="search name (or a search folder)")
    es.add_argument("--search-dir", default="runs/search",
                    help="where searches live: the search command's --out (runs/search)")
    es.add_argument("--size", type=int, required=True, help="ensemble size K")
    es.add_argument("--min-utility", type=float, default=0.5,
                    help="minimum val utility of every member (0.5)")
    es.add_argument("--diversity-weight", type=float, default=0.2, help="weight of output "
                    "diversity in the objective (0.2)")
    es.add_argument("--hv-weight", type=float, default=0.2, help="weight of the hypervolume "
                    "contribution in the objective (0.2)")
    es.add_argument("--policy", choices=["random", "chain"], default="random",
                    help="the export's default policy (random)")
    es.add_argument("--seed", type=int, default=0, help="seed of the random policy and of "
                    "'K random from the front' (0)")
    es.add_argument("--no-third-party", action="store_true",
                    help="leave dlib and the ONNX gender model out of the test pool")
    es.set_defaults(func=cmd_ensemble_select)
    ee = ens_sub.add_parser(
        "export", help="write the chosen ensemble as a verified folder and register it",
        description="Write manifest.json (SHA-256 of every file), safetensors weights, one "
        "ONNX file per member (checked against PyTorch), the gender predictor, prototypes "
        "and a model card; then log it as an MLflow pyfunc model, register it and set an "
        "alias.")
    ee.add_argument("--search", required=True, help="search name (or a search folder)")
    ee.add_argument("--search-dir", default="runs/search",
                    help="where searches live: the search command's --out (runs/search)")
    ee.add_argument("--out", required=True, help="export folder (must not exist)")
    ee.add_argument("--policy", choices=["random", "chain"], default=None,
                    help="default policy (the one chosen at select)")
    ee.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    ee.add_argument("--registered-name", default="san-search-ensemble",
                    help="MLflow registered model name (san-search-ensemble)")
    ee.add_argument("--alias", default="champion", help="alias of the new version (champion)")
    ee.add_argument("--no-register", action="store_true",
                    help="only write the folder (no MLflow model)")
    ee.set_defaults(func=cmd_ensemble_export)

    pt = sub.add_parser(
        "perturb", help="apply an exported ensemble to images",
        description="Preprocess each image as `data prepare` did for the ensemble's data, "
        "perturb it, and write a PNG under --output (same relative path). Unreadable "
        "images are reported and skipped.")
    pt.add_argument("--ensemble", required=True, help="export folder")
    pt.add_argument("--input", required=True, help="an image file or a folder of images")
    pt.add_argument("--output", required=True, help="output folder (empty or new)")
    pt.add_argument("--policy", choices=["random", "chain"], default=None,
                    help="override the ensemble's policy")
    pt.add_argument("--backend", choices=["torch", "onnx"], default="torch",
                    help="PyTorch or ONNX Runtime (torch)")
    pt.add_argument("--overwrite", action="store_true", help="allow a non-empty --output")
    pt.set_defaults(func=cmd_perturb)

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

    models = sub.add_parser("models", help="list the registered architectures")
    models.set_defaults(func=cmd_models_list)
    return parser


def _raise_on_term(signum: int, frame: FrameType | None) -> None:
    # Turn SIGTERM into an exception so atomic writers remove their temporary folders.
    raise KeyboardInterrupt(f"signal {signum}")


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
        print("interrupted: nothing was written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
