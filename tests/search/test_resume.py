"""Resuming a search whose driver was stopped at the worst moment: a trial has reported its
last epoch (its Train checkpoint is registered) but is not yet finalised (no final curve in
its child run). SIGTERM (`kill PID`), SIGINT (Ctrl-C: the whole process group) and SIGKILL
(the driver and the local Ray it started) must all resume to the same end: every trial
scored at its last epoch, once, and no run left RUNNING."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from san_search.cli import main
from tests.helpers import default_sigint

pytestmark = pytest.mark.slow

EPOCHS = 2
TRIALS = 2
SPACE = f"""\
sampler: {{name: random, seed: 3}}
scheduler: {{name: none}}
budget: {{trials: {TRIALS}, epochs: {EPOCHS}, concurrency: 2}}
resources: {{num_workers: 1, cpus_per_worker: 0.5}}
fixed: {{autoencoder: san_conv, depth: 1, width: 4, batch_size: 16,
        images_per_epoch: 64, matcher_warmup: 0}}
parameters:
  w_rec: {{type: float, low: 1.0, high: 10.0}}
  aux_gender: {{type: subset, choices: aux, max_size: 1}}
  aux_matcher: {{type: categorical, choices: aux}}
"""


def _children(uri: str) -> list[Any]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("san-search")
    if exp is None:
        return []
    return [r for r in client.search_runs([exp.experiment_id], max_results=1000)
            if r.data.tags.get("mlflow.parentRunId")]


def _reported_epochs(train: Path) -> dict[str, int]:
    """Trial id -> the epoch of its newest complete checkpoint (one-worker trials keep their
    own, see `search.checkpoints`)."""
    from san_search.search import checkpoints

    out = {}
    for run in sorted(train.glob("*")) if train.is_dir() else []:
        last = checkpoints.latest(str(run))
        if last is not None and "epoch" in last.metrics:
            out[run.name] = int(last.metrics["epoch"])
    return out


def _worst_moment(uri: str, folder: Path) -> str | None:
    """A trial that has reported its last epoch and is not finalised, or None."""
    if not (folder / "search.json").exists():  # the store is made before search.json
        return None
    done = _reported_epochs(folder / "train")
    try:
        finalised = {c.data.tags.get("san_search.trial_id") for c in _children(uri)
                     if c.data.tags.get("san_search.finalized") == "1"}
    except Exception:  # the store is still being created
        return None
    return next((t for t, e in done.items() if e == EPOCHS and t not in finalised), None)


def interrupt_at_worst_moment(space: Path, data: Path, zoo: Path, out: Path, uri: str,
                              sig: signal.Signals, log_path: Path) -> str:
    """Start a search in a subprocess, send `sig` at the worst moment, wait for the driver
    to exit; returns the trial that was caught between its last report and finalisation."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    cmd = [sys.executable, "-m", "san_search.cli", "search", str(space), "--data", str(data),
           "--zoo", str(zoo), "--out", str(out), "--name", "w"]
    caught = None
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=default_sigint)
        try:
            deadline = time.monotonic() + 600
            while caught is None and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.5)
                caught = _worst_moment(uri, out / "w")
            assert caught is not None, log_path.read_text()[-3000:]
            if sig == signal.SIGTERM:
                proc.send_signal(sig)  # `kill PID`: the driver alone
            else:
                os.killpg(proc.pid, sig)  # Ctrl-C reaches the whole group; so does a crash
            rc = proc.wait(timeout=180)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert rc == (-signal.SIGKILL if sig == signal.SIGKILL else 130), \
        log_path.read_text()[-3000:]
    time.sleep(3)  # a killed cluster's processes notice their raylet is gone
    return caught


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL],
                         ids=["SIGTERM", "SIGINT", "SIGKILL"])
def test_resume_after_a_signal_at_the_worst_moment_loses_nothing(
        problem: tuple[Path, Path], tmp_path: Path, sig: signal.Signals) -> None:
    from mlflow.tracking import MlflowClient

    data, zoo = problem
    space = tmp_path / "worst.yaml"
    space.write_text(SPACE)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "runs"
    caught = interrupt_at_worst_moment(space, data, zoo, out, uri, sig,
                                       tmp_path / "driver.log")
    before = {c.data.tags["san_search.trial_id"]: c.info.run_id for c in _children(uri)}
    assert caught in before

    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        assert main(["search", "--resume", "w", "--out", str(out)]) == 0
    finally:
        del os.environ["MLFLOW_TRACKING_URI"]

    client = MlflowClient(uri)
    children = _children(uri)
    ids = [c.data.tags["san_search.trial_id"] for c in children]
    assert sorted(ids) == sorted(set(ids)) and len(ids) == TRIALS, ids  # one run per trial
    assert {i: before[i] for i in before} == {
        c.data.tags["san_search.trial_id"]: c.info.run_id for c in children
        if c.data.tags["san_search.trial_id"] in before}  # the same runs, not new ones
    for c in children:
        tid = c.data.tags["san_search.trial_id"]
        assert c.info.status == "FINISHED", (tid, c.info.status, c.data.tags.get("error"))
        assert c.data.tags.get("san_search.finalized") == "1", tid
        assert c.data.tags["san_search.epochs_trained"] == str(EPOCHS), tid
        # the final curve scored the last epoch's checkpoint, not an earlier one
        scored = Path(c.data.tags["san_search.checkpoint"]) / "trainer.json"
        assert json.loads(scored.read_text())["epoch"] == EPOCHS, (tid, scored)
        steps = [m.step for m in client.get_metric_history(c.info.run_id, "loss")]
        assert sorted(set(steps)) == list(range(1, EPOCHS + 1)), (tid, steps)

    summary = json.loads((out / "w" / "summary.json").read_text())
    rows = {r["trial_id"]: r for r in summary["rows"]}
    assert len(summary["rows"]) == TRIALS and set(rows) == set(ids), summary["rows"]
    for tid, row in rows.items():
        assert row["epoch"] == EPOCHS, (tid, row)
        assert row["state"] == "TERMINATED", (tid, row)
        assert isinstance(row["val_privacy_mean"], float), (tid, row)

    parent = client.get_run(summary["parent_run_id"])
    assert parent.info.status == "FINISHED"
    # the interrupted attempt's "how to continue" note is gone once the search finished
    assert "resume" not in parent.data.tags
    trials = json.loads(Path(client.download_artifacts(
        parent.info.run_id, "trials.json", str(tmp_path / "front"))).read_text())
    cols = trials["columns"]
    front_ids = [r[cols.index("trial_id")] for r in trials["data"]]
    assert sorted(front_ids) == sorted(ids)
    assert [r[cols.index("epoch")] for r in trials["data"]] == [EPOCHS] * TRIALS
