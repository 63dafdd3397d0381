"""`san-search ensemble select`, `ensemble export` and `perturb`: choose, ship and apply an
ensemble of SAN candidates."""

from __future__ import annotations

import argparse

from san_search.cli.attack import add_budget_options, budget_of
from san_search.cli.options import Subparsers, add_allow_unsigned


def add_ensemble_select(sub: Subparsers) -> None:
    es = sub.add_parser(
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
    es.add_argument("--attack", action="store_true",
                    help="also run the adaptive attacker on the chosen ensemble (as `san-search "
                    "attack`; its budget: the --attack-* options); its table follows the test "
                    "table and ships with the export")
    add_budget_options(es)
    es.set_defaults(func=cmd_ensemble_select)


def cmd_ensemble_select(args: argparse.Namespace) -> int:
    from san_search.ensemble.orchestration import select
    from san_search.ensemble.selection import Weights

    select(args.search, search_dir=args.search_dir, size=args.size,
           min_utility=args.min_utility,
           weights=Weights(args.diversity_weight, args.hv_weight), seed=args.seed,
           policy=args.policy, third_party=not args.no_third_party,
           attack=budget_of(args) if args.attack else None)
    return 0


def add_ensemble_export(sub: Subparsers) -> None:
    ee = sub.add_parser(
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
    ee.add_argument("--overwrite", action="store_true",
                    help="replace --out if it is an export (its .san-search-output marker, or "
                    "a 0.1 export's manifest.json); any other folder is refused")
    ee.add_argument("--registered-name", default="san-search-ensemble",
                    help="MLflow registered model name (san-search-ensemble)")
    ee.add_argument("--alias", default="champion", help="alias of the new version (champion)")
    ee.add_argument("--no-register", action="store_true",
                    help="only write the folder (no MLflow model)")
    ee.add_argument("--sign", default=None, metavar="KEY",
                    help="Ed25519 private key (`san-search keys generate`): sign manifest.json "
                    "into manifest.sig.json, so `perturb --trust` can prove who wrote the "
                    "export")
    ee.set_defaults(func=cmd_ensemble_export)


def cmd_ensemble_export(args: argparse.Namespace) -> int:
    from san_search import tracking
    from san_search.ensemble.export import export_ensemble, register
    from san_search.ensemble.orchestration import Selection, search_folder

    sel = Selection.load(search_folder(args.search, args.search_dir))
    if not args.no_register:  # fail fast, before exporting
        tracking.check_reachable(sel.tracking_uri)
    out = export_ensemble(sel, args.out, policy=args.policy, overwrite=args.overwrite,
                          sign=args.sign)
    if not args.no_register:
        register(out, sel.tracking_uri, sel.ensemble_run_id, args.registered_name, args.alias)
    print(f"model card: {out / 'README.md'}")
    return 0


def add_perturb(sub: Subparsers) -> None:
    pt = sub.add_parser(
        "perturb", help="apply an exported ensemble to photos",
        description="Find the faces in each photo (OpenCV's Haar cascade, as `data prepare "
        "--detect`), cut each as `data prepare` cut the ensemble's faces, perturb it and paste "
        "it back into the photo at full size with a feathered edge; a gray ensemble changes "
        "the faces' luminance only. Each photo is written under --output with its relative "
        "path and name, upright (EXIF orientation applied, no EXIF kept), in its format: JPEG "
        "at quality 95, PNG, other formats as PNG. Pixels outside the face boxes are kept. "
        "--output/report.csv lists every file with its status, faces, boxes and member. "
        "Unreadable images and photos without a face are reported and skipped.")
    pt.add_argument("--ensemble", required=True, help="export folder")
    pt.add_argument("--input", required=True, help="an image file or a folder of images "
                    "(searched recursively)")
    pt.add_argument("--output", required=True,
                    help="output folder (empty or new), outside --input")
    pt.add_argument("--faces", choices=["all", "largest"], default=None,
                    help="perturb every face found, or only the largest one (all)")
    pt.add_argument("--aligned", action="store_true",
                    help="no detection: each image is one already-cropped face, cut as the "
                    "ensemble's data was (its centred crop)")
    pt.add_argument("--crops-only", action="store_true",
                    help="write only the perturbed crops, as PNGs at the ensemble's size "
                    "(a/b.jpg -> a/b.png), as perturb did before whole photos")
    pt.add_argument("--sheet", default=None, metavar="PATH",
                    help="also write a before/after contact sheet (PNG) of the first 8 "
                    "photos written")
    pt.add_argument("--policy", choices=["random", "chain"], default=None,
                    help="override the ensemble's policy")
    pt.add_argument("--backend", choices=["torch", "onnx"], default="torch",
                    help="PyTorch or ONNX Runtime (torch)")
    pt.add_argument("--overwrite", action="store_true",
                    help="allow a non-empty --output that an earlier perturb wrote (its "
                    ".san-search-output marker); only the files this run writes are "
                    "replaced (and an existing --sheet inside --output)")
    pt.add_argument("--trust", default=None, metavar="PUBKEY",
                    help="Ed25519 public key: refuse the ensemble unless its manifest.sig.json "
                    "is a valid signature by this key (an unsigned ensemble is refused too, "
                    "unless --allow-unsigned); default $SAN_SEARCH_TRUST_KEY")
    add_allow_unsigned(pt)
    pt.set_defaults(func=cmd_perturb)


def cmd_perturb(args: argparse.Namespace) -> int:
    import sys

    from san_search.ensemble.perturb import REPORT, perturb_files

    rep = perturb_files(args.ensemble, args.input, args.output, policy=args.policy,
                        backend=args.backend, overwrite=args.overwrite, trust=args.trust,
                        crops_only=args.crops_only, aligned=args.aligned,
                        faces=args.faces or "all", sheet=args.sheet,
                        allow_unsigned=args.allow_unsigned)
    rate = len(rep.written) / rep.seconds if rep.seconds > 0 else 0.0
    if args.crops_only:
        print(f"wrote {len(rep.written)} PNG(s) to {args.output} in {rep.seconds:.1f} s "
              f"({rate:.0f} images/s); skipped {len(rep.skipped)}")
    else:
        print(f"wrote {len(rep.written)} photo(s) to {args.output} in {rep.seconds:.1f} s "
              f"({rate:.1f} photos/s); skipped {len(rep.skipped)}; every file: "
              f"{args.output}/{REPORT}")
    for path, why in rep.skipped:
        print(f"  skipped {path}: {why}")
    if not rep.written:  # every input skipped: a failure, not a success
        print(f"error: nothing was written: all {len(rep.skipped)} input image(s) were "
              "skipped (reasons above)", file=sys.stderr)
        return 2
    return 0
