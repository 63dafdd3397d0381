"""`san-search train` and `evaluate`: one SAN candidate, trained on Ray Train or scored."""

from __future__ import annotations

import argparse
from pathlib import Path

from san_search import shipped
from san_search.cli.options import Subparsers, add_tracking_options


def add_train(sub: Subparsers) -> None:
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
    t.add_argument("--max-failures", type=int, default=None,
                   help="restarts of dead workers from the last checkpoint (default: the "
                        "config's resources.max_failures, 1)")
    t.add_argument("--ray-address", default=None, help="Ray cluster (default: a local Ray)")
    add_tracking_options(t, "san-search-train")
    t.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    import dataclasses

    from san_search.config import load_candidate_file
    from san_search.training.candidate import run_candidate

    cfg, resources = load_candidate_file(args.config)
    if args.max_failures is not None:  # the flag wins over the file
        resources = dataclasses.replace(resources, max_failures=args.max_failures)
    summary = run_candidate(
        cfg, Path(args.data), Path(args.zoo), tracking_uri=args.tracking_uri,
        experiment=args.experiment, out=Path(args.out), name=args.name,
        resume_from=args.resume_from, ray_address=args.ray_address, resources=resources,
    )
    print(f"{'alpha':>5} {'privacy':>8} {'utility':>8} {'SSIM':>6}   (val pool means)")
    for p in summary["curve"]:
        print(f"{p['alpha']:>5.2f} {p['privacy_mean']:>8.3f} {p['utility_mean']:>8.3f} "
              f"{p['ssim']:>6.3f}")
    for k, v in summary["matched"].items():
        print(f"{k}: {v:.3f}")
    print(f"MLflow run {summary['run_id']} ({summary['name']}); checkpoint {summary['checkpoint']}")
    return 0


def add_evaluate(sub: Subparsers) -> None:
    e = sub.add_parser(
        "evaluate", help="score a trained SAN checkpoint: trade-off curve vs noise and blur",
    )
    e.add_argument("checkpoint", help="checkpoint folder (model.safetensors + trainer.json)")
    e.add_argument("--data", required=True, help="prepared dataset folder")
    e.add_argument("--zoo", required=True, help="zoo folder")
    e.add_argument("--role", choices=["val", "aux"], default="val",
                   help="which pool judges (val; aux = the models it trained against)")
    e.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from san_search.training.candidate import final_evaluation
    from san_search.zoo.pool import privacy_at_utility

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
