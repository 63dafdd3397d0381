"""One trial of a search: the Tune function trainable that trains a candidate (per-epoch
metrics into the trial's MLflow child run, MO-ASHA asked at rung epochs, every report
forwarded to Tune), and the final evaluation of a completed trial.

A one-worker trial trains in the Tune trial's own process (`inprocess.train_trial`); a
multi-worker (DDP) trial runs a Ray Train `TorchTrainer` whose reports Tune receives.

Who writes what to MLflow:
  - a trial creates its child run (found again by trial id on resume, so no duplicates),
    its training loop logs per-epoch metrics live, and a trial that raises marks it FAILED
    with the error;
  - a trial that Tune restarts after the driver died, but whose checkpoints already hold
    its last report (its last epoch, its early stop, or a non-finite loss), is not trained
    again: that last report goes to Tune as the trial's result;
  - when a trial completes (all epochs, or stopped early by MO-ASHA), `finalize_trial`
    scores the final trade-off curve and logs the curve table and figure, the image grid
    and the weights into the child run, then ends it FINISHED: a one-worker trial does it
    itself before it ends, on the model and val pool it has in memory; for a Ray Train
    trial (or one stopped by Tune before it could) the driver's callback runs it as a Ray
    task.
"""

from __future__ import annotations

import json
import shutil
from typing import TYPE_CHECKING, Any

from san_search import tracking
from san_search.search.checkpoints import Report, same_candidate
from san_search.search.context import TrialContext
from san_search.search.finalize import CHECKPOINT_PATH, trial_done
from san_search.search.moasha import AskBoard
from san_search.search.record import join_storage
from san_search.training.trainer import EpochHooks

if TYPE_CHECKING:
    from san_search.config import CandidateConfig



def in_process(ctx: TrialContext) -> bool:
    """Whether the search's trials train in their own Tune process (one worker each)."""
    return ctx.space.resources.num_workers == 1


def run_trial(config: dict[str, Any], ctx: TrialContext) -> None:
    """The Tune function trainable: one candidate, trained here (one worker) or by a Ray
    Train `TorchTrainer` (several), whose reports become this trial's results."""
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from san_search.errors import NonFiniteLoss
    from san_search.training.trainer import fit

    trial_id = ray.tune.get_context().get_trial_id()
    cfg = ctx.space.candidate(config)
    storage = join_storage(ctx.storage, "train")
    prior = None if in_process(ctx) else previous_result(storage, trial_id, cfg)
    client = tracking.client_for(ctx.tracking_uri)
    run_id = tracking.open_child(
        client, ctx.experiment_id, ctx.parent_run_id, trial_id,
        run_name=f"{ctx.name}-t{trial_id}", params=cfg.as_params(),
        tags={tracking.SEARCH_TAG: ctx.name, tracking.KIND_TAG: "candidate",
              "data_fingerprint": ctx.data_fingerprint})
    early = AskBoard(ctx.board, trial_id, ctx.rungs) if ctx.board else None
    hooks = EpochHooks(log=tracking.EpochLogger(ctx.tracking_uri, run_id), early_stop=early)
    try:
        if in_process(ctx):
            from san_search.search.inprocess import train_trial

            train_trial(ctx, cfg, trial_id, hooks)
            return
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


def previous_result(storage: str, trial_id: str, cfg: CandidateConfig) -> Report | None:
    """The Ray Train run this trial already has under `storage` (a restarted trial): its
    latest checkpointed report, or None when it has none. A run left there by another
    candidate (a trial the driver died before recording, whose id was handed out again) is
    removed, so that this trial starts afresh instead of from its weights."""
    import ray.train

    from san_search.training.trainer import STATE

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
    if not same_candidate(saved, cfg):
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
