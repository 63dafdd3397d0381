"""`SearchCallback`, the Tune callback in the driver: the live table, the parent run's
trials and Pareto tables, figure and hypervolume as trials finish, and the final evaluation
of each completed trial that did not score it itself (a Ray task, collected as it ends)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ray.tune import Callback
from ray.tune.experiment import Trial

from san_search import tracking
from san_search.search.context import TrialContext
from san_search.search.finalize import CHECKPOINT_PATH, FINAL_CURVE_TAG, finalize_trial
from san_search.search.front import (
    format_table,
    front_figure,
    front_hypervolume,
    plain,
    trial_rows,
)

if TYPE_CHECKING:
    from ray import ObjectRef

TRIALS_FINISHED = ("TERMINATED", "ERROR")


@dataclass
class _Runtime:
    """Driver-side state that is not pickled with the experiment."""

    printed: float = 0.0  # time.monotonic() of the last table
    pending: dict[str, ObjectRef[dict[str, Any]]] = field(default_factory=dict)  # by trial
    reconciled: bool = False
    # When this driver's first hook ran (before it started any trial): child runs older
    # than this that no trial of Tune's state owns are orphans of a killed driver.
    started: float = field(default_factory=time.time)


def refresh_parent(ctx: TrialContext, trials: list[Trial]) -> None:
    """The parent run's tables (every trial, with `on_front` and its child run id; the
    front), figure and metrics (hypervolume, front size, trials finished)."""
    space = ctx.space
    rows = trial_rows(space, trials)
    child = {r.data.tags.get(tracking.TRIAL_TAG): r.info.run_id
             for r in tracking.child_runs(ctx.tracking_uri, ctx.experiment_id,
                                          ctx.parent_run_id)}
    flat = [r.to_dict() for r in rows]
    columns = sorted({k for r in flat for k in r})
    table = {c: [plain(r.get(c)) for r in flat] for c in columns}
    table["run_id"] = [child.get(r.trial_id, "") for r in rows]
    front = [i for i, r in enumerate(rows) if r.on_front]
    finished = sum(r.state in TRIALS_FINISHED for r in rows)
    tracking.log_front(
        tracking.client_for(ctx.tracking_uri), ctx.parent_run_id, trials=table,
        front={c: [table[c][i] for i in front] for c in table},
        figure=front_figure(space, rows, ctx.baselines, f"search {ctx.name}"),
        metrics={"hypervolume": front_hypervolume(space, rows),
                 "front_size": float(len(front)), "trials_finished": float(finished)},
        step=finished)


class SearchCallback(Callback):
    """Tune pickles it with the experiment, so runtime state is rebuilt lazily."""

    def __init__(self, ctx: TrialContext, interval: float = 15.0) -> None:
        self.ctx, self.interval = ctx, interval
        self._runtime: _Runtime | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"ctx": self.ctx, "interval": self.interval, "_runtime": None}

    @property
    def rt(self) -> _Runtime:
        if self._runtime is None:
            self._runtime = _Runtime()
        return self._runtime

    # --------------------------------------------------------- Tune hooks
    def on_step_begin(self, iteration: int, trials: list[Trial], **info: Any) -> None:
        if not self.rt.reconciled:
            self.rt.reconciled = True
            self._reconcile(trials)
        self._collect(block=False)

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial,
                        result: dict[str, Any], **info: Any) -> None:
        if time.monotonic() - self.rt.printed > self.interval:
            self._print(trials)

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial,
                          **info: Any) -> None:
        self._finalize(trial)
        self._refresh_parent(trials)
        self._print(trials)

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial,
                       **info: Any) -> None:
        self._mark_failed(trial)
        self._refresh_parent(trials)
        self._print(trials)

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        if not self.rt.reconciled:  # a resumed search whose trials had all ended: no step
            self.rt.reconciled = True
            self._reconcile(trials)
        self._collect(block=True)
        self._refresh_parent(trials)
        self._print(trials)

    # --------------------------------------------------------- work
    def _finalize(self, trial: Trial) -> None:
        import ray

        if self._finalized(trial):  # a one-worker trial scored its own final curve
            return
        last = trial.last_result or {}
        ckpt = last.get(CHECKPOINT_PATH)
        if not ckpt or not all(m in last for m in self.ctx.space.metrics):
            # Nothing to score; its run must not stay RUNNING for good.
            self._mark_failed(trial, "the trial ended without a checkpointed epoch to score")
            return
        task = ray.remote(finalize_trial).options(num_cpus=0, max_retries=1)
        self.rt.pending[trial.trial_id] = task.remote(self.ctx, trial.trial_id, ckpt,
                                                      int(last["epoch"]))

    def _finalized(self, trial: Trial) -> bool:
        """Whether the trial's child run is FINISHED with its final curve (or with the curve
        skipped by `budget.final_curve: false`)."""
        run = tracking.find_child(tracking.client_for(self.ctx.tracking_uri),
                                  self.ctx.experiment_id, self.ctx.parent_run_id,
                                  trial.trial_id)
        tags = run.data.tags if run is not None else {}
        return (run is not None and run.info.status == "FINISHED"
                and (tags.get(tracking.FINALIZED_TAG) == "1" or FINAL_CURVE_TAG in tags))

    def _collect(self, block: bool) -> None:
        import ray

        pending = self.rt.pending
        if not pending:
            return
        refs = list(pending.values())
        done, _ = ray.wait(refs, num_returns=len(refs), timeout=None if block else 0)
        for tid, ref in list(pending.items()):
            if ref in done:
                out = ray.get(ref)
                if out.get("error"):
                    print(f"final evaluation of trial {tid} failed: {out['error']}",
                          flush=True)
                del pending[tid]

    def _reconcile(self, trials: list[Trial]) -> None:
        """After a resume, what the dead driver left half done in MLflow: trials that
        completed but whose final evaluation never reached MLflow get it now; failed trials
        whose run was not marked FAILED are; child runs of trials that Tune's saved state
        never recorded (created in the seconds before the driver died) are deleted."""
        ctx = self.ctx
        client = tracking.client_for(ctx.tracking_uri)
        runs = tracking.child_runs(ctx.tracking_uri, ctx.experiment_id, ctx.parent_run_id)
        known = {t.trial_id for t in trials}
        for run in runs:
            tid = run.data.tags.get(tracking.TRIAL_TAG)
            if (tid is not None and tid not in known
                    and run.info.start_time < self.rt.started * 1000):
                client.delete_run(run.info.run_id)
        by_trial = {r.data.tags.get(tracking.TRIAL_TAG): r for r in runs}
        for t in trials:
            child = by_trial.get(t.trial_id)
            if child is None:
                continue
            if t.status == "TERMINATED" and child.data.tags.get(tracking.FINALIZED_TAG) != "1":
                self._finalize(t)
            elif t.status == "ERROR" and child.info.status != "FAILED":
                self._mark_failed(t)

    def _mark_failed(self, trial: Trial, reason: str = "trial failed") -> None:
        client = tracking.client_for(self.ctx.tracking_uri)
        run = tracking.find_child(client, self.ctx.experiment_id, self.ctx.parent_run_id,
                                  trial.trial_id)
        if run is None or run.info.status == "FAILED":
            return
        message = ""
        if trial.error_file and os.path.isfile(trial.error_file):
            message = Path(trial.error_file).read_text()[-tracking.MAX_TAG:]
        tracking.fail_run(client, run.info.run_id, message or reason)

    def _refresh_parent(self, trials: list[Trial]) -> None:
        try:
            refresh_parent(self.ctx, trials)
        except Exception as exc:  # the search goes on; the next refresh retries
            print(f"could not refresh the parent run's front: {exc}", flush=True)

    def _print(self, trials: list[Trial]) -> None:
        self.rt.printed = time.monotonic()
        print(format_table(trial_rows(self.ctx.space, trials)), flush=True)
