"""One SAN candidate end to end: train it on Ray Train, evaluate its final weights on the val
pool (trade-off curve, noise and blur baselines at matched utility) and record it all as one
MLflow run: params, per-epoch metrics, the curve as a table and a figure, an image grid,
the weights, and the data and zoo fingerprints."""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from san_search.config import CandidateConfig
from san_search.console import Log
from san_search.data import open_dataset
from san_search.evaluate import (
    PoolScorer,
    baseline_curves,
    load_pool,
    privacy_at_utility,
    san_transform,
    trade_off_curve,
)
from san_search.train import check_candidate, fit, load_san
from san_search.zoo import open_zoo

CURVE_COLUMNS = ("alpha", "privacy_mean", "privacy_min", "error_mean", "utility_mean",
                 "utility_min", "ssim")


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
    z = open_zoo(zoo, expect_fingerprint=ds.fingerprint)
    model, _ = load_san(checkpoint, device)
    val = ds.split("val")
    scorer = PoolScorer(load_pool(z, role, device), val)
    x = scorer.original
    x_san = san_transform(model, ds.prototypes, val.gender, device)(val.images)
    curve = trade_off_curve(scorer, x, x_san)
    base = baselines if baselines is not None else baseline_curves(scorer)
    u = curve[-1]["utility_mean"]
    matched = {f"{k}_privacy_at_san_utility": privacy_at_utility(v, u) for k, v in base.items()}
    return FinalEvaluation(curve, base, matched, x, x_san, val.gender)


def curve_figure(ev: FinalEvaluation, title: str) -> Any:
    """Privacy against utility: the SAN's alpha curve beside the noise and blur curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    ax.plot([p["utility_mean"] for p in ev.curve], [p["privacy_mean"] for p in ev.curve],
            "o-", label="SAN (alpha 0 to 1)")
    for a, p in zip((p["alpha"] for p in ev.curve), ev.curve, strict=True):
        ax.annotate(f"{a:g}", (p["utility_mean"], p["privacy_mean"]), fontsize=7,
                    textcoords="offset points", xytext=(3, 3))
    for name, style in (("noise", "s--"), ("blur", "^--")):
        pts = ev.baselines[name]
        ax.plot([p["utility_mean"] for p in pts], [p["privacy_mean"] for p in pts], style,
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


def log_candidate_artifacts(ev: FinalEvaluation, checkpoint: str | Path, title: str) -> None:
    """Into the active MLflow run: curve table + figure, baselines, image grid, weights."""
    import mlflow

    mlflow.log_table({c: [p[c] for p in ev.curve] for c in CURVE_COLUMNS},
                     artifact_file="trade_off_curve.json")
    for name, pts in ev.baselines.items():
        mlflow.log_table({c: [p[c] for p in pts] for c in ("strength", *CURVE_COLUMNS[1:])},
                         artifact_file=f"baseline_{name}.json")
    fig = curve_figure(ev, title)
    mlflow.log_figure(fig, "trade_off_curve.png")
    import matplotlib.pyplot as plt

    plt.close(fig)
    mlflow.log_image(image_grid(ev), "originals_vs_perturbed.png")
    mlflow.log_artifacts(str(checkpoint), artifact_path="weights")
    final = ev.curve[-1]
    mlflow.log_metrics({f"final_{k}": float(v) for k, v in final.items() if k != "alpha"})
    mlflow.log_metrics({k: float(v) for k, v in ev.matched.items()})


def check_resources(cfg: CandidateConfig, available: dict[str, float]) -> None:
    """Ray waits forever for resources that do not exist: say so instead."""
    from san_search.train import CandidateError

    need = {"CPU": cfg.num_workers * cfg.cpus_per_worker}
    if cfg.use_gpu:
        need["GPU"] = cfg.num_workers * cfg.gpus_per_worker
    for res, amount in need.items():
        if available.get(res, 0.0) < amount:
            raise CandidateError(
                f"the candidate needs {amount:g} {res} ({cfg.num_workers} worker(s)); the Ray "
                f"cluster has {available.get(res, 0.0):g}. Lower num_workers / "
                f"cpus_per_worker{' / gpus_per_worker' if res == 'GPU' else ''}")


def run_candidate(cfg: CandidateConfig, data: str | Path, zoo: str | Path, *,
                  tracking_uri: str | None, experiment: str, out: str | Path,
                  name: str | None = None, resume_from: str | Path | None = None,
                  max_failures: int = 0, ray_address: str | None = None,
                  log: Log = print) -> dict[str, Any]:
    """Train, evaluate and track one candidate; returns a summary (run id, final metrics)."""
    import ray

    import mlflow
    from san_search import tracking

    ds = open_dataset(data)
    z = open_zoo(zoo, expect_fingerprint=ds.fingerprint)
    check_candidate(cfg, z, ds.size)
    tracking.setup(tracking_uri, experiment)  # unreachable server: fails here, in seconds
    name = name or time.strftime("san-%Y%m%d-%H%M%S")
    started = not ray.is_initialized()
    if started:
        ray.init(address=ray_address or "local", include_dashboard=False,
                 configure_logging=False)
    try:
        check_resources(cfg, ray.cluster_resources())
        with mlflow.start_run(run_name=name) as run:
            mlflow.set_tags({"san_search.kind": "candidate",
                             "data_fingerprint": ds.fingerprint,
                             "zoo_fingerprint": z.data_fingerprint,
                             "data": str(ds.path), "zoo": str(z.path)})
            mlflow.log_params(cfg.as_params())
            log(f"training {name}: {cfg.autoencoder} against {', '.join(cfg.aux_gender)} + "
                f"{cfg.aux_matcher}, {cfg.epochs} epochs on {cfg.num_workers} worker(s)")
            try:
                result = fit(cfg, ds.path, z.path, storage_path=out, name=name,
                             max_failures=max_failures, resume_from=resume_from,
                             mlflow_run=(mlflow.get_tracking_uri(), run.info.run_id))
            except Exception as exc:
                mlflow.set_tag("error", f"{type(exc).__name__}: {exc}"[:5000])
                raise
            last = result.metrics or {}
            log(f"  trained {last.get('epoch', '?')} epochs: val privacy "
                f"{last.get('val_privacy_mean', float('nan')):.3f} utility "
                f"{last.get('val_utility_mean', float('nan')):.3f} SSIM "
                f"{last.get('val_ssim', float('nan')):.3f}")
            with result.checkpoint.as_directory() as ckpt, tempfile.TemporaryDirectory() as t:
                local = Path(t) / "checkpoint"
                shutil.copytree(ckpt, local)
                ev = final_evaluation(local, ds.path, z.path)
                log_candidate_artifacts(ev, local, name)
            summary = {"run_id": run.info.run_id, "name": name,
                       "checkpoint": result.checkpoint.path, "final": ev.curve[-1],
                       "curve": ev.curve, "matched": ev.matched}
            mlflow.log_text(json.dumps(summary, indent=2, default=float), "summary.json")
            return summary
    finally:
        if started:
            ray.shutdown()
