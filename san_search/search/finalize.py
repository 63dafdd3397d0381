"""The end of a search trial: whether a report is its last (`trial_done`), and its final
evaluation into its MLflow child run (`finalize_trial`: the trade-off curve table and
figure, the image grid and the weights, then the run ended FINISHED). Called by the trial
itself when it trains in its own process (`inprocess`), and by the driver's callback as a Ray
task for a Ray Train trial or one Tune stopped before it could (`callback`)."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from san_search import tracking
from san_search.search.context import TrialContext
from san_search.search.record import fetch_checkpoint

if TYPE_CHECKING:
    from san_search.training.trainer import SanTrainer

CHECKPOINT_TAG = "san_search.checkpoint"
STOPPED_EARLY_TAG = "san_search.stopped_early"
FINAL_CURVE_TAG = "san_search.final_curve"
FINAL_CURVE_SECONDS = "final_curve_seconds"  # metric: scoring the final curve, in seconds
CHECKPOINT_PATH = "checkpoint_path"  # the result key where Tune's report callback puts it


def trial_done(metrics: Mapping[str, Any], epochs: int) -> bool:
    """Whether a trial's report is its last: all `epochs` trained, stopped early by MO-ASHA,
    or a non-finite loss."""
    return bool(metrics.get("non_finite_loss") or metrics.get("early_stopped")
                or int(metrics.get("epoch", 0) or 0) >= epochs)


def finalize_trial(ctx: TrialContext, trial_id: str, checkpoint: str, epochs: int, *,
                   trainer: SanTrainer | None = None) -> dict[str, Any]:
    """Final trade-off curve of a completed trial into its child run: scored by `trainer`
    (the trial's own process: its model and val pool in memory) or, without it, from the
    checkpoint (a Ray task the driver starts). Returns {"trial_id", and "final" (the curve's
    last point), "skipped" or "error"}."""
    from san_search.training.candidate import log_candidate_artifacts

    client = tracking.client_for(ctx.tracking_uri)
    run = tracking.find_child(client, ctx.experiment_id, ctx.parent_run_id, trial_id)
    if run is None:
        return {"trial_id": trial_id, "error": "no child run"}
    run_id = run.info.run_id
    if run.data.tags.get(tracking.FINALIZED_TAG) == "1":
        if run.info.status != "FINISHED":  # reopened or marked KILLED after its final curve
            client.set_terminated(run_id, status="FINISHED")
        return {"trial_id": trial_id, "skipped": True}
    if not ctx.space.budget.final_curve:  # per-epoch metrics only (benchmarks, quick looks)
        client.set_tag(run_id, tracking.EPOCHS_TAG, str(epochs))
        client.set_tag(run_id, FINAL_CURVE_TAG, "skipped (budget.final_curve: false)")
        client.set_terminated(run_id, status="FINISHED")
        return {"trial_id": trial_id, "skipped": True}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / "checkpoint"
            t0 = time.perf_counter()
            ev = _final_curve(ctx, checkpoint, local, trainer)
            client.log_metric(run_id, FINAL_CURVE_SECONDS, time.perf_counter() - t0,
                              step=epochs)
            log_candidate_artifacts(ev, local, run.info.run_name,
                                    tracking_uri=ctx.tracking_uri, run_id=run_id)
        for k, v in {tracking.EPOCHS_TAG: str(epochs), CHECKPOINT_TAG: checkpoint,
                     STOPPED_EARLY_TAG: str(epochs < ctx.space.budget.epochs).lower(),
                     tracking.FINALIZED_TAG: "1"}.items():
            client.set_tag(run_id, k, v)
        client.set_terminated(run_id, status="FINISHED")
    except Exception as exc:
        tracking.fail_run(client, run_id, f"final evaluation: {type(exc).__name__}: {exc}")
        return {"trial_id": trial_id, "error": str(exc)}
    return {"trial_id": trial_id, "final": ev.curve[-1]}


def _final_curve(ctx: TrialContext, checkpoint: str, local: Path,
                 trainer: SanTrainer | None) -> Any:
    """The trial's `FinalEvaluation`; its weights folder (logged with it) is put at
    `local`."""
    from san_search.training.candidate import evaluate_san, final_evaluation

    if trainer is None:
        fetch_checkpoint(checkpoint, ctx.storage, local)
        return final_evaluation(local, ctx.data, ctx.zoo, baselines=ctx.baselines)
    local.mkdir()
    trainer.save(local)  # the state of its last checkpoint
    return evaluate_san(trainer.model, trainer.ds.prototypes, trainer.scorer(),
                        str(trainer.device), ctx.baselines)
