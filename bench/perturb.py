"""Benchmark: `perturb` throughput of an exported ensemble, ONNX Runtime against PyTorch,
on this CPU, both policies. Run on demand:

    python bench/perturb.py --ensemble EXPORT_DIR [--data PREPARED_DATASET] [--images 1024]
    python bench/perturb.py --ensemble EXPORT_DIR --photos FOLDER [--images 50]

Times the ensemble on preprocessed faces (the test split of --data, else random faces of the
ensemble's size), after one warm-up pass, with every core and with one thread. Prints
images/s and the ONNX/PyTorch ratio measured in the same run (compare ratios, not seconds:
the machine is shared).

With --photos: whole photos, as `san-search perturb` writes them (read, detect, crop,
perturb, paste back, encode, write), both backends in the same run; prints photos/s for
(1) the first --images image files under FOLDER as they are (e.g. LFW: 250x250, one face),
and (2) --scenes 1920x1080 JPEGs made from them, each holding 5 of those photos (enlarged
to 360 px, so 5 faces of about 180 px) on a plain background.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from san_search.ensemble.serving import load_ensemble


def rate(runtime, x: np.ndarray, policy: str, repeats: int) -> float:  # type: ignore[no-untyped-def]
    runtime.perturb(x[:64], policy)  # warm-up
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        runtime.perturb(x, policy)
        best = max(best, len(x) / (time.perf_counter() - t0))
    return best


SCENE = (1920, 1080)
SCENE_FACES = 5


def make_scenes(files: list, out, count: int) -> None:  # type: ignore[no-untyped-def]
    """`count` 1920x1080 JPEGs, each with SCENE_FACES of `files` enlarged to 360 px in a row."""
    from PIL import Image

    for k in range(count):
        scene = Image.new("RGB", SCENE, (128, 128, 120))
        for j in range(SCENE_FACES):
            with Image.open(files[(k * SCENE_FACES + j) % len(files)]) as img:
                face = img.convert("RGB").resize((360, 360), Image.Resampling.BICUBIC)
            scene.paste(face, (20 + j * 380, 360))
        scene.save(out / f"scene{k:03d}.jpg", quality=95)


def time_folder(ensemble: str, src, work, label: str) -> None:  # type: ignore[no-untyped-def]
    from san_search.ensemble.perturb import perturb_files

    for backend in ("torch", "onnx"):
        for run in ("warm-up", "timed"):
            rep = perturb_files(ensemble, src, work / f"{label}-{backend}-{run}",
                                backend=backend, progress=lambda _: None)
        faces = sum(r.faces for r in rep.rows)
        print(f"{label:<22} {backend:<5}: {len(rep.written)} of {len(rep.rows)} written, "
              f"{faces} faces, {len(rep.written) / rep.seconds:.2f} photos/s "
              f"({os.cpu_count()} cores)")


def photo_rates(ensemble: str, folder: str, images: int, scenes: int) -> None:
    import shutil
    import tempfile
    from pathlib import Path

    from san_search.ensemble.perturb import IMAGE_SUFFIXES

    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    with tempfile.TemporaryDirectory() as tmp:
        src, big = Path(tmp) / "in", Path(tmp) / "scenes"
        src.mkdir()
        big.mkdir()
        for i, p in enumerate(files[:images]):
            shutil.copyfile(p, src / f"{i:05d}{p.suffix}")
        time_folder(ensemble, src, Path(tmp), "as they are")
        if scenes:
            make_scenes(files[:images], big, scenes)
            time_folder(ensemble, big, Path(tmp), f"1920x1080, {SCENE_FACES} faces")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ensemble", required=True)
    ap.add_argument("--data", default=None)
    ap.add_argument("--images", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--photos", default=None, help="time whole photos from this folder")
    ap.add_argument("--scenes", type=int, default=10,
                    help="with --photos: also this many 1920x1080 photos of 5 faces (10)")
    args = ap.parse_args()
    if args.photos:
        photo_rates(args.ensemble, args.photos, args.images, args.scenes)
        return
    probe = load_ensemble(args.ensemble)
    s = probe.image_size
    if args.data:
        from san_search.data import open_dataset

        x = open_dataset(args.data).split("test").images[: args.images]
    else:
        x = np.random.default_rng(0).integers(0, 256, (args.images, s, s), dtype=np.uint8)
    print(f"{len(x)} faces at {s} px, {len(probe.manifest['members'])} members, "
          f"{os.cpu_count()} cores")
    for threads in (os.cpu_count() or 1, 1):
        for policy in ("random", "chain"):
            got = {b: rate(load_ensemble(args.ensemble, b, threads=threads).runtime, x,
                           policy, args.repeats) for b in ("torch", "onnx")}
            print(f"threads {threads:>2} policy {policy:<6}: PyTorch {got['torch']:7.0f} "
                  f"images/s, ONNX Runtime {got['onnx']:7.0f} images/s, ratio "
                  f"{got['onnx'] / got['torch']:.2f}")


if __name__ == "__main__":
    main()
