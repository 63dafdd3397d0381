"""`san-search evaluate-photos`: score an exported ensemble on whole pasted-back photos."""

from __future__ import annotations

import argparse

from san_search.cli.options import Subparsers, add_allow_unsigned


def add_evaluate_photos(sub: Subparsers) -> None:
    ep = sub.add_parser(
        "evaluate-photos", help="score an ensemble on whole protected photos, as a third "
        "party would see them",
        description="Protect whole photos of the dataset's test split with `perturb` (the "
        "photos the dataset was prepared from), then run the third-party evaluators with "
        "their own detector and alignment (dlib's HOG detector, 5-point landmarks and face "
        "chips) on the originals and the protected photos. Prints dlib's detection rate, "
        "gender privacy and dlib's verification retention on whole photos beside the same "
        "evaluators on the dataset's crops of the same images. Needs the evaluators extra.")
    ep.add_argument("--ensemble", required=True, help="export folder")
    ep.add_argument("--data", required=True, help="the prepared dataset (its test split)")
    ep.add_argument("--root", default=None, help="the folder the dataset was prepared from "
                    "(default: the root recorded in its dataset.json)")
    ep.add_argument("--limit", type=int, default=300, help="about this many test photos, "
                    "whole identities, seeded (300; 0 = the whole test split)")
    ep.add_argument("--seed", type=int, default=0, help="seed of the identities chosen (0)")
    ep.add_argument("--policy", choices=["random", "chain"], default=None,
                    help="override the ensemble's policy")
    ep.add_argument("--backend", choices=["torch", "onnx"], default="torch")
    ep.add_argument("--keep", default=None, metavar="DIR", help="a new folder that keeps the "
                    "protected photos (out/), their copies (in/) and photo_eval.json")
    add_allow_unsigned(ep)
    ep.set_defaults(func=cmd_evaluate_photos)


def cmd_evaluate_photos(args: argparse.Namespace) -> int:
    from san_search.ensemble.photo_eval import evaluate_photos, format_result

    result = evaluate_photos(args.ensemble, args.data, root=args.root, limit=args.limit,
                             seed=args.seed, policy=args.policy, backend=args.backend,
                             keep=args.keep, allow_unsigned=args.allow_unsigned)
    print(format_result(result))
    return 0
