"""One trial of a search: the Tune function trainable that trains a candidate on Ray Train
(per-epoch metrics into the trial's MLflow child run, MO-ASHA asked at rung epochs, every
report forwarded to Tune), and the final evaluation of a completed trial, run as a Ray task.

Who writes what to MLflow:
  - a trial creates its child run (found again by trial id on resume, so no duplicates),
    its Train worker logs per-epoch metrics live, and a trial that raises marks it FAILED
    with the error;
  - a trial that Tune restarts after the driver died, but whose Train run had already
    reported its last epoch (or its early stop, or a non-finite loss), is not trained again:
    that last report goes to Tune as the trial's result (`previous_result`);
  - when a trial completes (all epochs, or stopped early by MO-ASHA) the driver starts
    `finalize_trial`, which scores the final trade-off curve and logs the curve table and
    figure, the image grid and the weights into the child run, then ends it FINISHED.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from san_search import tracking
from san_search.search.context import TrialContext
from san_search.search.moasha import AskBoard
from san_search.search.record import fetch_checkpoint, join_storage
from san_search.train import EpochHooks

if TYPE_CHECKING:
    from san_search.config import CandidateConfig

CHECKPOINT_TAG = "san_search.checkpoint"
STOPPED_EARLY_TAG = "san_search.stopped_early"
FINAL_CURVE_TAG = "san_search.final_curve"
CHECKPOINT_PATH = "checkpoint_path"  # the result key where Tune's report callback puts it


def run_trial(config: dict[str, Any], ctx: TrialContext) -> None:
    """The Tune function trainable: one candidate trained by a Ray Train `TorchTrainer`
    whose reports become this trial's results."""
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from san_search.errors import NonFiniteLoss
    from san_search.train import fit

    trial_id = ray.tune.get_context().get_trial_id()
    cfg = ctx.space.candidate(config)
    storage = join_storage(ctx.storage, "train")
    prior = previous_result(storage, trial_id, cfg)
    client = tracking.client_for(ctx.tracking_uri)
    run_id = tracking.open_child(
        client, ctx.experiment_id, ctx.parent_run_id, trial_id,
        run_name=f"{ctx.name}-t{trial_id}", params=cfg.as_params(),
        tags={tracking.SEARCH_TAG: ctx.name, tracking.KIND_TAG: "candidate",
              "data_fingerprint": ctx.data_fingerprint})
    early = AskBoard(ctx.board, trial_id, ctx.rungs) if ctx.board else None
    hooks = EpochHooks(log=tracking.EpochLogger(ctx.tracking_uri, run_id), early_stop=early)
    try:
        if prior is not None and trial_done(prior.metrics, cfg.epochs):
            # Restarted after its last report: Train would run no epoch and report nothing,
            # and Tune would keep whatever result its saved state held (none, or an earlier
            # epoch's). Hand Tune that last report, with its checkpoint, as Train would have.
            ray.tune.report({**prior.metrics, CHECKPOINT_PATH: prior.checkpoint})
            if prior.metrics.get("non_finite_loss"):
                raise NonFiniteLoss(str(prior.metrics["non_finite_loss"]))
            return
        fit(cfg, ctx.data, ctx.zoo, storage_path=storage,
            name=trial_id, resources=ctx.space.resources, hooks=hooks,
            callbacks=[TuneReportCallback()])
    except BaseException as exc:
        tracking.fail_run(client, run_id, f"{type(exc).__name__}: {exc}")
        raise


def trial_done(metrics: Mapping[str, Any], epochs: int) -> bool:
    """Whether a trial's report is its last: all `epochs` trained, stopped early by MO-ASHA,
    or a non-finite loss."""
    return bool(metrics.get("non_finite_loss") or metrics.get("early_stopped")
                or int(metrics.get("epoch", 0) or 0) >= epochs)


@dataclass(frozen=True)
class Report:
    """A checkpointed report of a trial's Train run: its metrics and checkpoint path (as
    Ray gives it: no scheme on remote storage)."""

    metrics: dict[str, Any]
    checkpoint: str


def previous_result(storage: str, trial_id: str, cfg: CandidateConfig) -> Report | None:
    """The Ray Train run this trial already has under `storage` (a restarted trial): its
    latest checkpointed report, or None when it has none. A run left there by another
    candidate (a trial the driver died before recording, whose id was handed out again) is
    removed, so that this trial starts afresh instead of from its weights."""
    import ray.train

    from san_search.train import STATE

    path = join_storage(storage, trial_id)
    try:
        result = ray.train.Result.from_path(path)
    except (RuntimeError, ValueError):  # no run there, none registered, or a torn snapshot
        return None  # (Train itself decides what to do with it)
    ckpt = result.checkpoint
    if ckpt is None or not result.metrics:
        return None
    with ckpt.filesystem.open_input_stream(f"{ckpt.path}/{STATE}") as f:
        saved = json.loads(f.read())["config"]
    if saved != json.loads(json.dumps(cfg.to_dict())):
        _remove(path)
        return None
    return Report(dict(result.metrics), str(ckpt.path))


def _remove(path: str) -> None:
    if "://" in path:
        import pyarrow.fs

        fs, inner = pyarrow.fs.FileSystem.from_uri(path)
        fs.delete_dir(inner)
    else:
        shutil.rmtree(path, ignore_errors=True)


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
