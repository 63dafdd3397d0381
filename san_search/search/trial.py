"""One trial of a search: the Tune function trainable that trains a candidate on Ray Train
(per-epoch metrics into the trial's MLflow child run, MO-ASHA asked at rung epochs, every
report forwarded to Tune), and the final evaluation of a completed trial, run as a Ray task.

Who writes what to MLflow:
  - a trial creates its child run (found again by trial id on resume, so no duplicates),
    its Train worker logs per-epoch metrics live, and a trial that raises marks it FAILED
    with the error;
  - when a trial completes (all epochs, or stopped early by MO-ASHA) the driver starts
    `finalize_trial`, which scores the final trade-off curve and logs the curve table and
    figure, the image grid and the weights into the child run, then ends it FINISHED.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from san_search import tracking
from san_search.search.context import TrialContext
from san_search.search.moasha import AskBoard
from san_search.search.record import fetch_checkpoint, join_storage
from san_search.train import EpochHooks

CHECKPOINT_TAG = "san_search.checkpoint"
STOPPED_EARLY_TAG = "san_search.stopped_early"
FINAL_CURVE_TAG = "san_search.final_curve"


def run_trial(config: dict[str, Any], ctx: TrialContext) -> None:
    """The Tune function trainable: one candidate trained by a Ray Train `TorchTrainer`
    whose reports become this trial's results."""
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from san_search.train import fit

    trial_id = ray.tune.get_context().get_trial_id()
    cfg = ctx.space.candidate(config)
    client = tracking.client_for(ctx.tracking_uri)
    run_id = tracking.open_child(
        client, ctx.experiment_id, ctx.parent_run_id, trial_id,
        run_name=f"{ctx.name}-t{trial_id}", params=cfg.as_params(),
        tags={tracking.SEARCH_TAG: ctx.name, tracking.KIND_TAG: "candidate",
              "data_fingerprint": ctx.data_fingerprint})
    early = AskBoard(ctx.board, trial_id, ctx.rungs) if ctx.board else None
    hooks = EpochHooks(log=tracking.EpochLogger(ctx.tracking_uri, run_id), early_stop=early)
    try:
        fit(cfg, ctx.data, ctx.zoo, storage_path=join_storage(ctx.storage, "train"),
            name=trial_id, resources=ctx.space.resources, hooks=hooks,
            callbacks=[TuneReportCallback()])
    except BaseException as exc:
        tracking.fail_run(client, run_id, f"{type(exc).__name__}: {exc}")
        raise


def finalize_trial(ctx: TrialContext, trial_id: str, checkpoint: str, epochs: int
                   ) -> dict[str, Any]:
    """Final trade-off curve of a completed trial into its child run (run as a Ray task).
    Returns {"trial_id", and "final" (the curve's last point), "skipped" or "error"}."""
    from san_search.experiment import final_evaluation, log_candidate_artifacts

    client = tracking.client_for(ctx.tracking_uri)
    run = tracking.find_child(client, ctx.experiment_id, ctx.parent_run_id, trial_id)
    if run is None:
        return {"trial_id": trial_id, "error": "no child run"}
    run_id = run.info.run_id
    if run.data.tags.get(tracking.FINALIZED_TAG) == "1":
        return {"trial_id": trial_id, "skipped": True}
    if not ctx.space.budget.final_curve:  # per-epoch metrics only (benchmarks, quick looks)
        client.set_tag(run_id, tracking.EPOCHS_TAG, str(epochs))
        client.set_tag(run_id, FINAL_CURVE_TAG, "skipped (budget.final_curve: false)")
        client.set_terminated(run_id, status="FINISHED")
        return {"trial_id": trial_id, "skipped": True}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / "checkpoint"
            fetch_checkpoint(checkpoint, ctx.storage, local)
            ev = final_evaluation(local, ctx.data, ctx.zoo, baselines=ctx.baselines)
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
