"""A search trial that trains in the Tune trial's own process: the one-worker case
(`resources.num_workers == 1`, every search on one machine), with no Ray Train controller or
worker group per trial. Multi-worker (DDP) trials stay on Ray Train (`train.fit`).

What makes its fixed cost small:
  - the driver asks Tune to reuse trial actors, so imports and `opened` (the dataset, the
    zoo and the val pool scorer, kept per process and keyed by path and fingerprint) survive
    from one trial to the next;
  - each epoch's checkpoint is written by the trial itself (`checkpoints.persist`), under
    the same train/<trial id>/ as a Ray Train run, and reported to Tune with its path as
    Ray Train's report callback does;
  - the final trade-off curve is scored at the end of the trial, by the model in memory on
    the val pool already loaded (`finalize.finalize_trial` with the trainer), instead of by a
    Ray task that opens everything again.

What keeps a reused process small: once a trial's trainer is gone, `release_memory` hands the
heap memory the trial freed back to the OS. Without it glibc kept it mapped, so each reused
process held its largest trial's high-water mark while it waited or ran a smaller trial (on
LFW-32 with SFace as the aux matcher: 3.2 GB after an epoch, 1.0 GB once released).

A trial that Tune restarts (after a crash of its process, or a resumed search) continues
from its newest complete checkpoint; one whose checkpoint is its last report is reported
and finalised, not trained again.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from san_search.search import checkpoints
from san_search.search.checkpoints import Report
from san_search.search.record import fetch_checkpoint

if TYPE_CHECKING:

    from san_search.config import CandidateConfig
    from san_search.data.store import PreparedDataset
    from san_search.search.context import TrialContext
    from san_search.training.trainer import EpochHooks, SanTrainer
    from san_search.zoo.pool import PoolScorer
    from san_search.zoo.store import Zoo

Opened = tuple["PreparedDataset", "Zoo", "PoolScorer"]
# This process's opened dataset, zoo and val scorer: (data, zoo, fingerprint, device) -> them.
_OPENED: dict[tuple[str, str, str, str], Opened] = {}


def opened(ctx: TrialContext, device: str) -> Opened:
    """The search's dataset, zoo and val pool scorer, opened once per process."""
    from san_search.data import open_dataset
    from san_search.errors import SearchError
    from san_search.zoo.pool import PoolScorer, load_pool
    from san_search.zoo.store import open_zoo

    key = (ctx.data, ctx.zoo, ctx.data_fingerprint, device)
    if key not in _OPENED:
        ds = open_dataset(ctx.data)
        if ds.fingerprint != ctx.data_fingerprint:
            raise SearchError(f"the dataset at {ctx.data} changed since the search started "
                              f"(fingerprint {ds.fingerprint} != {ctx.data_fingerprint})")
        z = open_zoo(ctx.zoo, expect=ds)
        _OPENED.clear()  # one search's data per process at a time
        _OPENED[key] = (ds, z, PoolScorer(load_pool(z, "val", device), ds.split("val")))
    return _OPENED[key]


def previous(trial_storage: str, cfg: CandidateConfig) -> Report | None:
    """The newest complete checkpoint of this trial (a restarted trial), or None. One left
    by another candidate (a trial the driver died before recording, whose id was handed out
    again) is removed, so that this trial starts afresh instead of from its weights."""
    from san_search.training.trainer import STATE

    prior = checkpoints.latest(trial_storage)
    if prior is None:
        return None
    saved = json.loads(checkpoints.read_file(trial_storage, prior.checkpoint, STATE))["config"]
    if not checkpoints.same_candidate(saved, cfg):
        checkpoints.remove(trial_storage)
        return None
    return prior


def train_trial(ctx: TrialContext, cfg: CandidateConfig, trial_id: str, hooks: EpochHooks
                ) -> None:
    """Train (or continue) one trial here, reporting each epoch to Tune with its
    checkpoint, then score its final curve into its child run; then release the memory it
    freed, before this reused process takes the next trial."""
    try:
        _train_here(ctx, cfg, trial_id, hooks)
    finally:
        release_memory()


def release_memory() -> int:
    """Collect garbage and return the C heap's free memory to the OS (glibc's `malloc_trim`;
    elsewhere only the collection). Returns malloc_trim's answer: 1 if memory was released,
    0 if none, -1 where there is no malloc_trim."""
    gc.collect()
    trim = _malloc_trim()
    return -1 if trim is None else int(trim(0))


@functools.cache
def _malloc_trim() -> Any:
    """glibc's malloc_trim, looked up once per process (find_library runs ldconfig), or
    None where the C library has none."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None


def _train_here(ctx: TrialContext, cfg: CandidateConfig, trial_id: str, hooks: EpochHooks
                ) -> None:
    import ray.tune
    import torch

    from san_search.errors import NonFiniteLoss
    from san_search.search.finalize import CHECKPOINT_PATH, finalize_trial, trial_done
    from san_search.search.record import join_storage
    from san_search.training.device import choose_device
    from san_search.training.trainer import SanTrainer, run_epochs

    resources = ctx.space.resources
    storage = join_storage(ctx.storage, "train", trial_id)
    prior = previous(storage, cfg)
    device = choose_device(train_worker=False)  # one home for the device rule
    torch.set_num_threads(max(1, int(resources.cpus_per_worker)))
    ds, zoo, scorer = opened(ctx, str(device))
    trainer = SanTrainer(cfg, ds, zoo, device=device, scorer=scorer)
    if prior is not None:
        _load(trainer, prior.checkpoint, ctx.storage)
    last: list[Report] = [prior] if prior is not None else []

    def report(metrics: dict[str, Any]) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            trainer.save(tmp)
            path = checkpoints.persist(Path(tmp), storage, trainer.epoch, metrics)
        last.append(Report(metrics, path))
        ray.tune.report({**metrics, CHECKPOINT_PATH: path})

    if prior is not None and trial_done(prior.metrics, cfg.epochs):
        # Restarted after its last report: hand Tune that report again (its saved state may
        # hold none, or an earlier epoch's), then finalise below if that never happened.
        ray.tune.report({**prior.metrics, CHECKPOINT_PATH: prior.checkpoint})
    else:
        run_epochs(trainer, hooks, report, restarted=prior is not None)
    if not last:
        return  # no epoch to report (epochs: 0)
    final = last[-1]
    if final.metrics.get("non_finite_loss"):
        raise NonFiniteLoss(str(final.metrics["non_finite_loss"]))
    out = finalize_trial(ctx, trial_id, final.checkpoint, int(final.metrics["epoch"]),
                         trainer=trainer)
    if out.get("error"):
        print(f"final evaluation of trial {trial_id} failed: {out['error']}", flush=True)


def _load(trainer: SanTrainer, checkpoint: str, storage: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "checkpoint"
        fetch_checkpoint(checkpoint, storage, local)
        trainer.load(local)
