"""Benchmark: the SAN train step's speed with each aux matcher of a zoo, and with the matcher
term scored on a fraction of each batch (`matcher_fraction`). A pretrained aux matcher at
112-160 px costs far more than our own 32 px ones; this measures how much, in one run.

    python bench/aux_speed.py --data data/lfw32 --zoo zoo/pre32 \
        [--matchers matcher_aux_resnet10t,matcher_aux_facenet] [--fractions 1,0.25] \
        [--steps 2 --rounds 3]

Prints images/s per (matcher, fraction), the median of interleaved rounds, and the ratio to
the first matcher at the first fraction, measured in the same run (ratios hold on a shared,
noisy machine; the absolute figures do not).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from san_search.config import CandidateConfig
from san_search.training.trainer import SanTrainer
from san_search.zoo.store import open_zoo


def trainer(data: str, zoo: str, matcher: str, fraction: float, batch: int,
            aux_gender: str) -> SanTrainer:
    cfg = CandidateConfig(autoencoder="san_conv", depth=2, width=16, skip=True,
                          aux_gender=(aux_gender,), aux_matcher=matcher, matcher_warmup=0,
                          matcher_fraction=fraction, batch_size=batch, epochs=1)
    return SanTrainer(cfg, data, zoo)


def images_per_second(t: SanTrainer, steps: int, rng: np.random.Generator) -> float:
    n, batch = len(t.shard.images), t.cfg.batch_size
    t0 = time.perf_counter()
    for _ in range(steps):
        t.step(np.sort(rng.choice(n, batch, replace=False)), use_matcher=True)
    return steps * batch / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--zoo", required=True)
    ap.add_argument("--matchers", default=None,
                    help="comma-separated aux matchers (default: every aux matcher)")
    ap.add_argument("--fractions", default="1,0.25")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    zoo = open_zoo(args.zoo)
    matchers = (args.matchers.split(",") if args.matchers else zoo.names("matcher", "aux"))
    gender = zoo.names("gender", "aux")[0]
    fractions = [float(f) for f in args.fractions.split(",")]
    rng = np.random.default_rng(0)
    runs = {(m, f): trainer(args.data, args.zoo, m, f, args.batch, gender)
            for m in matchers for f in fractions}
    for t in runs.values():  # warm-up step each
        images_per_second(t, 1, rng)
    # interleaved rounds: every configuration sees the same machine load on average
    got: dict[tuple[str, float], list[float]] = {k: [] for k in runs}
    for _ in range(args.rounds):
        for k, t in runs.items():
            got[k].append(images_per_second(t, args.steps, rng))
    base = float(np.median(got[next(iter(runs))]))
    print(f"{'aux matcher':<28} {'input':>7} {'fraction':>8} {'images/s':>9} {'x first':>8}")
    for (m, f), v in got.items():
        size = zoo.entries[m]["training"].get("input_size") or zoo.entries[m]["arch"]
        med = float(np.median(v))
        print(f"{m:<28} {size!s:>7} {f:>8.2f} {med:>9.1f} {med / base:>8.3f}")
    print(f"(SAN san_conv d2 w16, batch {args.batch}, aux gender {gender}; median of "
          f"{args.rounds} interleaved rounds of {args.steps} steps; {args.threads} threads)")


if __name__ == "__main__":
    main()
