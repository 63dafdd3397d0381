"""Benchmark: `data prepare` on the full LFW, one decoding process against all cores, and
synthetic generation. Run on demand: `python bench/prepare_lfw.py [--lfw PATH] [--size 64]`.

Prints wall times and the parallel/serial ratio measured in the same run (the machine is
shared and noisy: compare ratios, not absolute seconds).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from san_search.data import BuildOptions, prepare, synth

HERE = Path(__file__).resolve().parent


def _time(fn) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lfw", default=str(HERE.parents[1] / "shared" / "datasets" / "lfw"))
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--color", choices=["gray", "rgb"], default="gray",
                    help="colour mode (gray: the README's figures)")
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        def run(workers: int, out: str) -> None:
            prepare("lfw", Path(args.lfw), Path(tmp) / out, size=args.size, color=args.color,
                    max_per_identity=0, workers=workers, progress=lambda _: None)

        run(cores, "warm")  # warm the page cache so both timed runs read from memory
        serial = _time(lambda: run(1, "serial"))
        parallel = _time(lambda: run(cores, "parallel"))
        gen = _time(lambda: synth(Path(tmp) / "synth", identities=500, images_per_identity=20,
                                  size=64, options=BuildOptions(pairs=3000)))
    print(f"LFW full (13,233 files) at {args.size} px, page cache warm:")
    print(f"  1 process        {serial:6.1f} s")
    print(f"  {cores} processes      {parallel:6.1f} s   speed-up x{serial / parallel:.2f}")
    print(f"synthetic 10,000 images at 64 px: {gen:.1f} s")


if __name__ == "__main__":
    main()
