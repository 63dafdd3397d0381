"""Benchmark: the SAN train step's speed with each aux matcher of a zoo, and with the matcher
term scored on a fraction of each batch (`matcher_fraction`). A pretrained aux matcher at
112-160 px costs far more than our own 32 px ones; this measures how much, in one run.

    python bench/aux_speed.py --data data/lfw32 --zoo zoo/pre32 \
        [--matchers matcher_aux_resnet10t,matcher_aux_facenet] [--fractions 1,0.25] [--steps 6]

Prints images/s per (matcher, fraction) and the ratio to the first matcher at fraction 1,
measured in the same run (ratios hold on a shared, noisy machine; the absolute figures do not).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from san_search.config import CandidateConfig
from san_search.train import SanTrainer
from san_search.zoo import open_zoo


def images_per_second(data: str, zoo: str, matcher: str, fraction: float, steps: int,
                      batch: int, aux_gender: str) -> float:
    cfg = CandidateConfig(autoencoder="san_conv", depth=2, width=16, skip=True,
                          aux_gender=(aux_gender,), aux_matcher=matcher, matcher_warmup=0,
                          matcher_fraction=fraction, batch_size=batch, epochs=1)
    trainer = SanTrainer(cfg, data, zoo)
    rng = np.random.default_rng(0)
    n = len(trainer.shard.images)
    trainer.step(np.sort(rng.choice(n, batch, replace=False)), use_matcher=True)  # warm-up
    t0 = time.perf_counter()
    for _ in range(steps):
        trainer.step(np.sort(rng.choice(n, batch, replace=False)), use_matcher=True)
    return steps * batch / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--zoo", required=True)
    ap.add_argument("--matchers", default=None,
                    help="comma-separated aux matchers (default: every aux matcher)")
    ap.add_argument("--fractions", default="1,0.25")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    zoo = open_zoo(args.zoo)
    matchers = (args.matchers.split(",") if args.matchers else zoo.names("matcher", "aux"))
    gender = zoo.names("gender", "aux")[0]
    fractions = [float(f) for f in args.fractions.split(",")]
    base = None
    print(f"{'aux matcher':<28} {'input':>5} {'fraction':>8} {'images/s':>9} {'x first':>8}")
    for m in matchers:
        size = zoo.entries[m]["training"].get("input_size") or zoo.entries[m]["arch"]
        for f in fractions:
            ips = images_per_second(args.data, args.zoo, m, f, args.steps, args.batch, gender)
            base = base or ips
            print(f"{m:<28} {size!s:>5} {f:>8.2f} {ips:>9.1f} {ips / base:>8.3f}", flush=True)
    print(f"(SAN san_conv d2 w16, batch {args.batch}, aux gender {gender}, {args.steps} steps "
          f"after one warm-up, {args.threads} threads)")


if __name__ == "__main__":
    main()
