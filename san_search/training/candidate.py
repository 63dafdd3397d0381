"""One SAN candidate end to end: train it on Ray Train, evaluate its final weights on the val
pool (trade-off curve, noise and blur baselines at matched utility) and record it all as one
MLflow run: params, per-epoch metrics, the curve as a table and a figure, an image grid,
the weights, and the data and zoo fingerprints. The MLflow calls themselves live in
`tracking`; this module builds what they log."""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from san_search import tracking
from san_search.config import CandidateConfig, TrainResources
from san_search.console import Log
from san_search.data import open_dataset
from san_search.data.groups import check_group_weights, present_groups
from san_search.errors import CandidateError
from san_search.metric_names import (
    ADVANTAGE,
    ADVANTAGE_BLUR,
    ADVANTAGE_BLUR_MEAN,
    ADVANTAGE_MEAN,
    ALPHA,
    CURVE_COLUMNS,
    PRIVACY_MEAN,
    SSIM,
    UTILITY_MEAN,
    WORST_GROUP_PRIVACY,
    final,
    val,
)
from san_search.raylocal import start_ray
from san_search.training.trainer import EpochHooks, check_candidate, check_san_color, fit, load_san
from san_search.zoo.advantage import BLUR, NOISE, from_scores
from san_search.zoo.pool import (
    PoolScorer,
    baseline_curves,
    load_pool,
    privacy_at_utility,
    san_transform,
    strongest_matcher,
    trade_off_curve,
)
from san_search.zoo.store import open_zoo


@dataclasses.dataclass(frozen=True)
class FinalEvaluation:
    curve: list[dict[str, float]]
    baselines: dict[str, list[dict[str, float]]]
    matched: dict[str, float]  # privacy of each baseline at the SAN's utility
    originals: np.ndarray
    perturbed: np.ndarray
    gender: np.ndarray


def final_evaluation(checkpoint: str | Path, data: str | Path, zoo: str | Path,
                     device: str = "cpu", role: str = "val",
                     baselines: dict[str, list[dict[str, float]]] | None = None
                     ) -> FinalEvaluation:
    """The candidate's trade-off curve on the val images, judged by the `role` pool (`val`
    normally; `aux` shows how it does against the models it trained with), and the naive
    baselines judged by the same pool (`baselines` passes ones already computed: a search
    scores them once for all its trials)."""
    if role not in ("aux", "val"):
        raise ValueError(f"role {role!r}: candidates are scored by the aux or val pool; the "
                         "test pool is kept for the final report of an exported ensemble")
    ds = open_dataset(data)
    z = open_zoo(zoo, expect=ds)
    check_san_color(checkpoint, ds)
    model, _ = load_san(checkpoint, device)
    scorer = PoolScorer(load_pool(z, role, device), ds.split("val"))
    return evaluate_san(model, ds.prototypes, scorer, device, baselines)


def evaluate_san(model: Any, prototypes: dict[str, np.ndarray], scorer: PoolScorer,
                 device: str = "cpu",
                 baselines: dict[str, list[dict[str, float]]] | None = None
                 ) -> FinalEvaluation:
    """`final_evaluation` of a SAN already in memory, by a `scorer` already built (a search
    trial scores its final curve on the val pool it trained against)."""
    val = scorer.view
    x = scorer.original
    x_san = san_transform(model, prototypes, val.gender, device)(val.images)
    curve = trade_off_curve(scorer, x, x_san)
    base = baselines if baselines is not None else baseline_curves(scorer)
    head = strongest_matcher(scorer)
    for p in curve:  # each alpha's advantage over noise and blur at the strongest matcher
        for kind, key in ((NOISE, ADVANTAGE), (BLUR, ADVANTAGE_BLUR)):
            got = from_scores(p, base[kind], head, key)
            p.update({k: v for k, v in got.items() if k in (key, f"{key}_mean")})
    u = curve[-1][UTILITY_MEAN]
    matched = {f"{k}_privacy_at_san_utility": privacy_at_utility(v, u) for k, v in base.items()}
    return FinalEvaluation(curve, base, matched, x, x_san, val.gender)


def curve_figure(ev: FinalEvaluation, title: str) -> Any:
    """Privacy against utility: the SAN's alpha curve beside the noise and blur curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    ax.plot([p[UTILITY_MEAN] for p in ev.curve], [p[PRIVACY_MEAN] for p in ev.curve],
            "o-", label="SAN (alpha 0 to 1)")
    for a, p in zip((p["alpha"] for p in ev.curve), ev.curve, strict=True):
        ax.annotate(f"{a:g}", (p[UTILITY_MEAN], p[PRIVACY_MEAN]), fontsize=7,
                    textcoords="offset points", xytext=(3, 3))
    for name, style in (("noise", "s--"), ("blur", "^--")):
        pts = ev.baselines[name]
        ax.plot([p[UTILITY_MEAN] for p in pts], [p[PRIVACY_MEAN] for p in pts], style,
                label=f"Gaussian {name}", alpha=0.8)
    ax.set_xlabel("utility (TAR@1%FAR retention, val pool mean)")
    ax.set_ylabel("privacy (1 - |2 AUC - 1|, val pool mean)")
    ax.set_xlim(-0.05, 1.1)
    ax.set_ylim(-0.05, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def image_grid(ev: FinalEvaluation, n: int = 8) -> np.ndarray:
    """Originals (top row) above the SAN's privacy outputs (bottom row), uint8."""
    rng = np.random.default_rng(0)
    idx = np.concatenate([rng.choice(np.flatnonzero(ev.gender == g), n // 2, replace=False)
                          for g in (0, 1)])
    top = np.concatenate(list(ev.originals[idx]), axis=1)
    bottom = np.concatenate(list(ev.perturbed[idx]), axis=1)
    return (np.clip(np.concatenate([top, bottom], axis=0), 0, 1) * 255).astype(np.uint8)


def curve_columns(points: list[dict[str, float]]) -> tuple[str, ...]:
    """A trade-off curve table's columns: `CURVE_COLUMNS`, then `worst_group_privacy` when
    the val split has skin-tone groups."""
    extra = (WORST_GROUP_PRIVACY,) if points and WORST_GROUP_PRIVACY in points[0] else ()
    shown = [k for k in (ADVANTAGE, ADVANTAGE_MEAN, ADVANTAGE_BLUR, ADVANTAGE_BLUR_MEAN)
             if any(k in p for p in points)]
    return (*CURVE_COLUMNS, *extra, *shown)


def log_candidate_artifacts(ev: FinalEvaluation, checkpoint: str | Path, title: str, *,
                            tracking_uri: str, run_id: str) -> None:
    """Into the candidate's MLflow run: curve table + figure, baselines, image grid,
    weights, the final point's metrics and each baseline's privacy at the SAN's utility."""
    cols = curve_columns(ev.curve)
    # an alpha whose advantage is out of range has no entry: null in the table
    tables = {"trade_off_curve.json": {c: [p.get(c) for p in ev.curve] for c in cols}}
    for name, pts in ev.baselines.items():
        tables[f"baseline_{name}.json"] = {c: [p.get(c) for p in pts]
                                           for c in ("strength", *cols[1:])
                                           if not c.startswith(ADVANTAGE)}
    metrics = {final(k): float(v) for k, v in ev.curve[-1].items() if k != ALPHA}
    metrics.update({k: float(v) for k, v in ev.matched.items()})
    tracking.log_candidate(tracking.client_for(tracking_uri), run_id, tables=tables,
                           figures={"trade_off_curve.png": curve_figure(ev, title)},
                           images={"originals_vs_perturbed.png": image_grid(ev)},
                           weights=checkpoint, metrics=metrics)


def check_resources(resources: TrainResources, available: dict[str, float]) -> None:
    """Ray waits forever for resources that do not exist: say so instead."""
    n = resources.num_workers
    need = {"CPU": n * resources.cpus_per_worker}
    if resources.use_gpu:
        need["GPU"] = n * resources.gpus_per_worker
    if resources.memory_gb:
        need["memory"] = n * resources.memory_gb * 2**30
    knob = {"CPU": "cpus_per_worker", "GPU": "gpus_per_worker", "memory": "memory_gb"}
    for res, amount in need.items():
        if available.get(res, 0.0) < amount:
            gib = 1.0 if res != "memory" else 2.0**30
            unit = " GiB of" if res == "memory" else ""
            raise CandidateError(
                f"the candidate needs {amount / gib:g}{unit} {res} ({n} worker(s)); the Ray "
                f"cluster has {available.get(res, 0.0) / gib:g}. Lower num_workers / "
                f"{knob[res]}")


def run_candidate(cfg: CandidateConfig, data: str | Path, zoo: str | Path, *,
                  tracking_uri: str | None, experiment: str, out: str | Path,
                  resources: TrainResources | None = None, name: str | None = None,
                  resume_from: str | Path | None = None, ray_address: str | None = None,
                  log: Log = print) -> dict[str, Any]:
    """Train, evaluate and track one candidate; returns a summary (run id, final metrics)."""
    import ray

    resources = resources or TrainResources()
    ds = open_dataset(data)
    z = open_zoo(zoo, expect=ds)
    check_candidate(cfg, z, ds.size, ds.channels)
    check_group_weights(cfg.group_weights, present_groups(ds), "candidate")
    if resume_from is not None:
        check_san_color(resume_from, ds)
    exp_id = tracking.setup(tracking_uri, experiment)  # unreachable server: fails in seconds
    uri = tracking.resolve_tracking_uri(tracking_uri)
    name = name or time.strftime("san-%Y%m%d-%H%M%S")
    started = start_ray(ray_address)
    try:
        check_resources(resources, ray.cluster_resources())
        tags = {"data_fingerprint": ds.fingerprint, "zoo_fingerprint": z.fingerprint,
                "data": str(ds.path), "zoo": str(z.path)}
        with tracking.candidate_run(uri, exp_id, name, tags, cfg.as_params()) as run_id:
            log(f"training {name}: {cfg.autoencoder} against {', '.join(cfg.aux_gender)} + "
                f"{cfg.aux_matcher}, {cfg.epochs} epochs on {resources.num_workers} worker(s)")
            result = fit(cfg, ds.path, z.path, storage_path=out, name=name,
                         resources=resources, resume_from=resume_from,
                         hooks=EpochHooks(log=tracking.EpochLogger(uri, run_id)))
            return _finish(result, ds.path, z.path, name, uri, run_id, log)
    finally:
        if started:
            ray.shutdown()


def _finish(result: Any, data: Path, zoo: Path, name: str, uri: str, run_id: str,
            log: Log) -> dict[str, Any]:
    """A trained candidate's final evaluation into its run; the summary."""
    last = result.metrics or {}
    log(f"  trained {last.get('epoch', '?')} epochs: val privacy "
        f"{last.get(val(PRIVACY_MEAN), float('nan')):.3f} utility "
        f"{last.get(val(UTILITY_MEAN), float('nan')):.3f} SSIM "
        f"{last.get(val(SSIM), float('nan')):.3f}")
    with result.checkpoint.as_directory() as ckpt, tempfile.TemporaryDirectory() as t:
        local = Path(t) / "checkpoint"
        shutil.copytree(ckpt, local)
        ev = final_evaluation(local, data, zoo)
        log_candidate_artifacts(ev, local, name, tracking_uri=uri, run_id=run_id)
    summary = {"run_id": run_id, "name": name, "checkpoint": result.checkpoint.path,
               "final": ev.curve[-1], "curve": ev.curve, "matched": ev.matched}
    tracking.client_for(uri).log_text(run_id, json.dumps(summary, indent=2, default=float),
                                      "summary.json")
    return summary
