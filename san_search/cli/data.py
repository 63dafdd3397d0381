"""`san-search data prepare` and `data synth`: build a prepared face dataset."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from san_search.cli.options import Subparsers, add_build_options


def add_data_prepare(sub: Subparsers) -> None:
    p = sub.add_parser(
        "prepare", help="raw face images -> prepared dataset (Parquet, splits, pairs)",
        description="Read LFW, CelebA or a CSV manifest; write colour (or grayscale) square "
        "faces split by identity, verification pairs, gender prototypes and dataset.json, "
        "atomically.",
    )
    p.add_argument("--format", required=True, choices=["lfw", "celeba", "manifest"])
    p.add_argument("--root", required=True,
                   help="dataset root (for manifest: the CSV, or a folder with manifest.csv)")
    p.add_argument("--out", required=True, help="output folder (must not exist, or --overwrite of "
                   "one san-search wrote)")
    p.add_argument("--size", type=int, default=64, help="image side in pixels, even (64)")
    p.add_argument("--color", choices=["rgb", "gray"], default="rgb",
                   help="rgb: (size, size, 3) faces; gray: (size, size) (rgb)")
    p.add_argument("--crop", type=float, default=None,
                   help="centred crop side as a fraction of the shorter side "
                   "(lfw 0.5, celeba 0.75, manifest 1.0)")
    p.add_argument("--detect", action="store_true",
                   help="find the face with OpenCV's Haar cascade (in-the-wild images)")
    p.add_argument("--max-per-identity", type=int, default=20,
                   help="keep at most this many images per person, seeded (20; 0 = all)")
    p.add_argument("--workers", type=int, default=None, help="decoding processes (all cores)")
    add_build_options(p)
    p.set_defaults(func=cmd_data_prepare)


def cmd_data_prepare(args: argparse.Namespace) -> int:
    from san_search.data import BuildOptions, prepare, summary_table

    t0 = time.perf_counter()
    info = prepare(
        args.format, Path(args.root), Path(args.out), size=args.size, color=args.color,
        crop=args.crop,
        detect=args.detect, max_per_identity=args.max_per_identity,
        options=BuildOptions(args.seed, args.splits, args.pairs), workers=args.workers,
        overwrite=args.overwrite,
    )
    print(summary_table(info, Path(args.out).absolute()))
    print(f"prepared {Path(args.out).absolute()} in {time.perf_counter() - t0:.1f} s")
    return 0


def add_data_synth(sub: Subparsers) -> None:
    s = sub.add_parser(
        "synth", help="generate procedural synthetic faces (a stand-in for real faces)",
        description="Generate a seeded synthetic face set (grayscale): as a prepared dataset, "
        "or with --files as PNGs + manifest.csv for `data prepare --format manifest`.",
    )
    s.add_argument("--out", required=True,
                   help="output folder (must not exist, or --overwrite of one san-search wrote)")
    s.add_argument("--identities", type=int, default=500, help="number of people (500)")
    s.add_argument("--images-per-identity", type=int, default=20, help="images per person (20)")
    s.add_argument("--size", type=int, default=64, help="image side in pixels, even (64)")
    s.add_argument("--female-share", type=float, default=0.5, help="share of women (0.5)")
    s.add_argument("--files", action="store_true",
                   help="write PNG files + manifest.csv instead of a prepared dataset")
    add_build_options(s)
    s.set_defaults(func=cmd_data_synth)


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
