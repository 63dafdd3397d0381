"""Beat noise, the ablation: train one SAN setting per lever with the same seeds and budget,
and read each on the val pool (never the test pool) as advantage over noise with its 95%
interval over identities, beside utility, SSIM and training speed.

    python bench/ablation.py --data data/lfw32 --zoo zoo/lfw32 --out runs/ablation \\
        --lever baseline --lever neutral --lever neutral_only --seed 0 --seed 1 --seed 2

Each run trains in this process with the library's trainer (`training.trainer.SanTrainer`,
what a search trial runs), then perturbs the val split as an export would (the ensemble's
gender predictor choosing the prototypes, uint8 outputs) and scores it with the val pool plus
dlib's descriptor (its utility is a column; the headline matcher is the strongest val
matcher, `--matcher` to choose). The aux-side privacy (the aux gender classifiers the SAN
trained against, on the same outputs) tells "did not learn" from "did not transfer". Noise
and blur are swept on the same split once and cached (`zoo.pool.BaselineSweep`).

Writes <out>/runs.jsonl (one line per finished run, so an interrupted ablation keeps what it
finished and a rerun skips those) and prints the table, which <out>/table.md also holds.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from san_search.config import CandidateConfig
from san_search.data import open_dataset
from san_search.ensemble.scoring import best_predictor
from san_search.ensemble.serving import EnsembleRuntime, torch_gender, torch_member
from san_search.images import to_uint8
from san_search.metrics import gender_scores
from san_search.training.trainer import SanTrainer
from san_search.zoo import advantage as adv
from san_search.zoo.evaluators import third_party_evaluators
from san_search.zoo.pool import BaselineSweep, PoolScorer, load_pool
from san_search.zoo.store import open_zoo

# The setting every lever starts from: cpu32's fixed keys and a mid-range point of its space,
# trained against SFace (the CPU-sized pretrained aux matcher) on a quarter of each batch.
BASE: dict[str, Any] = {
    "autoencoder": "san_conv", "depth": 2, "width": 16, "skip": True,
    "aux_gender": ("gender_aux_paper_cnn", "gender_aux_resnet10t"),
    "aux_matcher": "matcher_aux_sface", "matcher_fraction": 0.25, "matcher_distance": "mse",
    "w_rec": 10.0, "w_gender": 1.0, "w_matcher": 1.0, "matcher_warmup": 1, "lr": 2e-3,
    "batch_size": 64, "images_per_epoch": 2000,
}
LEVERS: dict[str, dict[str, Any]] = {
    "baseline": {},
    "neutral": {"gender_target": "neutral"},
    "neutral_only": {"gender_target": "neutral", "same_gender": False},
    "neutral_strong": {"gender_target": "neutral", "w_gender": 5.0},
    "opp_matcher": {"matcher_target": "opp"},
    "balanced": {"balance_gender": True},
    "residual": {"residual": 0.15},
    "neutral_residual": {"gender_target": "neutral", "residual": 0.15,
                         "matcher_target": "opp", "balance_gender": True},
}


def _pool(zoo: Any) -> Any:
    pool = load_pool(zoo, "val")
    pool.matchers += third_party_evaluators(notice=False).matchers  # dlib, for its column
    pool.key += "+dlib"
    return pool


def run_one(lever: str, seed: int, epochs: int, ds: Any, zoo: Any, scorer: PoolScorer,
            sweeps: dict[str, BaselineSweep], head: str, base: dict[str, Any],
            resamples: int) -> dict[str, Any]:
    cfg = CandidateConfig(**{**base, **LEVERS[lever], "epochs": epochs, "seed": seed})
    trainer = SanTrainer(cfg, ds, zoo)
    t0, images, aux_curve = time.perf_counter(), 0, []
    view = scorer.view
    predictor = torch_gender(zoo.load(best_predictor(zoo)).eval())
    for _ in range(epochs):
        trainer.train_epoch()
        trainer.model.eval()  # as an export runs it (train_epoch puts it back in training)
        images += cfg.images_per_epoch or len(ds.split("train"))
        rt = EnsembleRuntime([torch_member(trainer.model)], predictor, ds.prototypes)
        out = to_uint8(rt.perturb(view.images))
        aux_curve.append({g: gender_scores(trainer_score(trainer, i, out), view.gender)[
            "privacy"] for i, g in enumerate(cfg.aux_gender)})
    train_s = time.perf_counter() - t0
    m = scorer.score(out)  # one scoring: its raw outputs feed the advantage
    assert scorer.last_raw is not None
    rep = adv.report(scorer.last_raw, {k: s.curve() for k, s in sweeps.items()},
                     scorer.frame(), resamples=resamples, matcher=head)
    h = rep.headlines[adv.NOISE]
    return {"lever": lever, "seed": seed, "epochs": epochs, "images": images,
            "images_per_s": images / train_s, "train_s": train_s,
            "advantage": h.value, "advantage_low": h.low, "advantage_high": h.high,
            "advantage_mean": h.mean, "weakest_judge": h.weakest_judge,
            "advantage_blur": (rep.headlines[adv.BLUR].value if adv.BLUR in rep.headlines
                               else None),
            "blur_swept": adv.BLUR in rep.headlines,
            "privacy_mean": m["privacy_mean"], "ssim": m["ssim"],
            "utility_head": m[f"utility.{head}"], "utility_dlib": m.get("utility.dlib_resnet"),
            "aux_privacy_per_epoch": aux_curve,
            "cells": {f"{c.judge}@{c.matcher}": c.value for c in rep.cells
                      if c.baseline == adv.NOISE},
            "config": cfg.to_dict()}


def trainer_score(trainer: SanTrainer, i: int, images: np.ndarray) -> np.ndarray:
    """Aux gender classifier i's male score on `images` (uint8), as the trainer holds it."""
    import torch

    from san_search.images import to_nchw

    g = trainer.genders[i]
    with torch.no_grad():
        out = [torch.softmax(g(to_nchw(images[j:j + 256]).to(trainer.device)), 1)[:, 1]
               for j in range(0, len(images), 256)]
    return torch.cat(out).float().cpu().numpy()


def fmt_table(rows: list[dict[str, Any]], head: str) -> str:
    lines = [f"| lever | seed | advantage (min, at {head}) | 95% interval | mean | "
             "vs blur | val privacy | {head} utility | dlib utility | SSIM | images/s | "
             "aux privacy by epoch |".replace("{head}", head),
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        aux = " / ".join(f"{float(np.mean(list(e.values()))):.2f}"
                         for e in r["aux_privacy_per_epoch"])
        swept = r.get("blur_swept", r.get("advantage_blur") is not None)
        blur = adv.fmt(r["advantage_blur"]) if swept else "not swept"
        lines.append(
            f"| {r['lever']} | {r['seed']} | {adv.fmt(r['advantage'])} | "
            f"{adv.fmt_interval(r['advantage_low'], r['advantage_high'])} | "
            f"{adv.fmt(r['advantage_mean'])} | {blur} | "
            f"{r['privacy_mean']:.3f} | {r['utility_head']:.3f} | "
            f"{(r['utility_dlib'] or float('nan')):.3f} | {r['ssim']:.3f} | "
            f"{r['images_per_s']:.1f} | {aux} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--zoo", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--lever", action="append", choices=sorted(LEVERS))
    ap.add_argument("--seed", action="append", type=int)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--val-fraction", type=float, default=0.5,
                    help="identity share of the val split scored (0.5)")
    ap.add_argument("--matcher", default=None, help="headline matcher (the strongest val one)")
    ap.add_argument("--resamples", type=int, default=500)
    ap.add_argument("--baselines", default="noise,blur",
                    help="baselines to sweep and compare with: noise,blur (noise alone is "
                         "half the one-off cost; the blur column then reads out of range)")
    ap.add_argument("--table-only", action="store_true",
                    help="print the table of the runs already in <out>/runs.jsonl")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a base setting (YAML value), e.g. --set w_rec=5")
    args = ap.parse_args()
    import yaml

    base = dict(BASE)
    for kv in args.set:
        k, _, v = kv.partition("=")
        base[k] = yaml.safe_load(v)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.table_only:
        rows = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
        print(fmt_table(rows, args.matcher or "matcher_val_facenet112"))
        return
    ds = open_dataset(args.data)
    zoo = open_zoo(args.zoo, expect=ds)
    view = ds.split("val")
    view = view.identity_subset(args.val_fraction, 0) if args.val_fraction < 1 else view
    pool = _pool(zoo)
    scorer = PoolScorer(pool, view)
    head = args.matcher or max((m for m in scorer.original_tar if m != adv.DLIB),
                               key=lambda m: scorer.original_tar[m])
    print(f"val split: {len(view)} images; pool {[g.name for g in pool.genders]} x "
          f"{[m.name for m in pool.matchers]}; headline matcher {head}", flush=True)
    identity = f"{ds.fingerprint}|val{args.val_fraction}|{pool.key}"
    kinds = [k for k in (adv.NOISE, adv.BLUR) if k in args.baselines.split(",")]
    sweeps = {k: BaselineSweep(scorer, k, identity, log=lambda s: print(s, flush=True))
              for k in kinds}
    # noise: known to 0.05 of utility over the range SANs land in; blur: its grid, and a
    # little more (a secondary column)
    sweeps[adv.NOISE].refine({head: [0.6, 0.7, 0.8, 0.9, 0.95]}, tolerance=0.05)
    if adv.BLUR in sweeps:
        sweeps[adv.BLUR].refine({head: [0.7, 0.9]}, tolerance=0.1, max_added=2)
    done_file = out / "runs.jsonl"
    rows = [json.loads(line) for line in done_file.read_text().splitlines()] \
        if done_file.is_file() else []
    done = {(r["lever"], r["seed"], r["epochs"]) for r in rows}
    for seed in args.seed or [0]:
        for lever in args.lever or ["baseline"]:
            if (lever, seed, args.epochs) in done:
                continue
            t0 = time.perf_counter()
            r = run_one(lever, seed, args.epochs, ds, zoo, scorer, sweeps, head, base,
                        args.resamples)
            r["base"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in base.items()}
            with done_file.open("a") as f:
                f.write(json.dumps(r, default=float) + "\n")
            rows.append(r)
            print(f"{lever} seed {seed}: advantage {adv.fmt(r['advantage'])} "
                  f"{adv.fmt_interval(r['advantage_low'], r['advantage_high'])}, "
                  f"{head} utility {r['utility_head']:.3f}, SSIM {r['ssim']:.3f} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
    table = fmt_table(rows, head)
    (out / "table.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
