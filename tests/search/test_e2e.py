"""The search end to end: real Ray Tune trials running Ray Train, a real `mlflow server`
process, Optuna, MO-ASHA; then a driver killed with SIGKILL and resumed."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from san_search.cli import main

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _client(uri: str):  # type: ignore[no-untyped-def]
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri)


def _runs(uri: str, experiment: str) -> tuple[list, list]:  # type: ignore[type-arg]
    client = _client(uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("san_search.kind") == "search"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    return parents, children


def _table(uri: str, run_id: str, name: str, dest: Path) -> dict:  # type: ignore[type-arg]
    import mlflow.artifacts

    local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=name,
                                                dst_path=str(dest), tracking_uri=uri)
    return json.loads(Path(local).read_text())


def test_smoke_search_against_a_real_mlflow_server(problem: tuple[Path, Path], tmp_path: Path,
                                                   mlflow_server: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    data, zoo = problem
    rc = main(["search", "smoke", "--data", str(data), "--zoo", str(zoo),
               "--out", str(tmp_path / "runs"), "--name", "smoke",
               "--tracking-uri", mlflow_server, "--experiment", "search-ci"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "search smoke finished: 4 trials" in out
    assert "privacy  utility   SSIM  front" in out  # the live table

    parents, children = _runs(mlflow_server, "search-ci")
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.params["sampler"] == "tpe" and parent.data.params["trials"] == "4"
    assert parent.data.tags["data_fingerprint"] == json.loads(
        (data / "dataset.json").read_text())["fingerprint"]
    assert len(children) == 4
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert len({c.data.tags["san_search.trial_id"] for c in children}) == 4
    client = _client(mlflow_server)
    keys = None
    for c in children:
        assert c.info.status == "FINISHED", c.data.tags.get("error")
        arts = {a.path for a in client.list_artifacts(c.info.run_id)}
        assert {"trade_off_curve.json", "trade_off_curve.png", "weights"} <= arts
        history = client.get_metric_history(c.info.run_id, "val_privacy_mean")
        epochs = int(c.data.tags["san_search.epochs_trained"])
        assert [m.step for m in history][:epochs] == list(range(1, epochs + 1))
        curve = _table(mlflow_server, c.info.run_id, "trade_off_curve.json",
                       tmp_path / c.info.run_id)
        assert [row[0] for row in curve["data"]] == [0.0, 0.25, 0.5, 0.75, 1.0]
        # Same metric names across children: the compare view lines them up.
        names = {k for k in c.data.metrics if not k.startswith(("final_", "blur_", "noise_"))}
        keys = names if keys is None else keys
        assert names == keys
    assert {"val_privacy_mean", "val_utility_mean", "val_ssim", "loss"} <= (keys or set())

    arts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"pareto_front.json", "pareto_front.png", "trials.json", "smoke.yaml"} <= arts
    trials = _table(mlflow_server, parent.info.run_id, "trials.json", tmp_path / "p")
    cols = trials["columns"]
    assert len(trials["data"]) == 4
    run_ids = {row[cols.index("run_id")] for row in trials["data"]}
    assert run_ids == {c.info.run_id for c in children}
    front = _table(mlflow_server, parent.info.run_id, "pareto_front.json", tmp_path / "f")
    on_front = [row for row in trials["data"] if row[cols.index("on_front")]]
    assert len(front["data"]) == len(on_front) >= 1
    # the UI's filters: every child says whether it is on the front and feasible
    front_ids = {row[cols.index("run_id")] for row in on_front}
    feasible = {row[cols.index("run_id")]: row[cols.index("feasible")] for row in trials["data"]}
    for c in children:
        assert c.data.tags["san_search.front"] == str(c.info.run_id in front_ids).lower()
        assert c.data.tags["san_search.feasible"] == str(feasible[c.info.run_id]).lower()
    listed = client.search_runs([parent.info.experiment_id],
                                filter_string='tags.san_search.front = "true"')
    assert {r.info.run_id for r in listed} == front_ids
    hv = client.get_metric_history(parent.info.run_id, "hypervolume")
    assert hv and hv[-1].step == 4


def _wait_for_children(proc: subprocess.Popen, uri: str, folder: Path,  # type: ignore[type-arg]
                       timeout: float, ready: Callable[[list[Any]], bool]) -> None:
    """Poll the search's child runs until `ready(children)`, the driver exits, or `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(2)
        # search.json appears after the driver created the store and the parent run;
        # opening the SQLite store earlier would race its table creation.
        if not (folder / "search.json").exists():
            continue
        try:
            _, children = _runs(uri, "san-search")
        except Exception:  # the store is still being created
            continue
        if ready(children):
            return


def test_killed_search_resumes_without_duplicates_and_nan_trials_fail(
        problem: tuple[Path, Path], tmp_path: Path) -> None:
    """SIGKILL the driver (and everything it started) once a trial has finished; resume.
    Trials with w_rec 1e39 overflow to an infinite loss and must fail, alone; before the
    kill, every trial's worker dies once and is restarted from its checkpoint."""
    data, zoo = problem
    space = tmp_path / "resume.yaml"
    # RandomSampler(seed=4) draws w_rec 5, 5, 1e39, 1e39 for the four trials.
    space.write_text(
        "sampler: {name: random, seed: 4}\n"
        "scheduler: {name: none}\n"
        "budget: {trials: 4, epochs: 2, concurrency: 2}\n"
        "resources: {num_workers: 1, cpus_per_worker: 0.5, max_failures: 1}\n"
        "fixed: {autoencoder: san_conv, depth: 1, width: 4, batch_size: 16,\n"
        "        images_per_epoch: 64, matcher_warmup: 0}\n"
        "parameters:\n"
        "  w_rec: {type: categorical, choices: [5.0, 1.0e+39]}\n"
        "  aux_gender: {type: subset, choices: aux, max_size: 1}\n"
        "  aux_matcher: {type: categorical, choices: aux}\n")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "runs"
    # Every trial's worker process also dies once, after its first checkpoint: Ray Train
    # must restart it from there (the trial could not finish otherwise).
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "SAN_SEARCH_FAIL_AFTER_EPOCH": "1"}
    cmd = [sys.executable, "-m", "san_search.cli", "search", str(space), "--data", str(data),
           "--zoo", str(zoo), "--out", str(out), "--name", "r"]
    log = (tmp_path / "driver.log").open("w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    finished_before: dict[str, list[int]] = {}
    try:
        _wait_for_children(proc, uri, out / "r", 600, lambda children: any(
            c.data.tags.get("san_search.finalized") == "1" for c in children))
        assert proc.poll() is None, (tmp_path / "driver.log").read_text()[-3000:]
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()
    time.sleep(3)  # the killed cluster's processes notice their raylet is gone
    _, children = _runs(uri, "san-search")
    client = _client(uri)
    for c in children:
        if c.data.tags.get("san_search.finalized") == "1":
            finished_before[c.info.run_id] = [
                m.step for m in client.get_metric_history(c.info.run_id, "loss")]
    assert finished_before

    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        assert main(["search", "--resume", "r", "--out", str(out)]) == 0
    finally:
        del os.environ["MLFLOW_TRACKING_URI"]

    parents, children = _runs(uri, "san-search")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 4
    assert len({c.data.tags["san_search.trial_id"] for c in children}) == 4
    by_w = {"5.0": [], "1e+39": []}  # type: dict[str, list]
    for c in children:
        by_w[c.data.params["w_rec"]].append(c)
    assert len(by_w["5.0"]) == 2 and len(by_w["1e+39"]) == 2  # the seed's draws
    for c in by_w["1e+39"]:
        assert c.info.status == "FAILED"
        assert "NonFiniteLoss: loss is inf at epoch 1" in c.data.tags["error"]
    for c in by_w["5.0"]:
        assert c.info.status == "FINISHED"
        steps = [m.step for m in client.get_metric_history(c.info.run_id, "loss")]
        assert steps == [1, 2]  # each epoch trained and logged once
    for run_id, steps in finished_before.items():  # kept, not retrained
        assert [m.step for m in client.get_metric_history(run_id, "loss")] == steps == [1, 2]
    summary = json.loads((out / "r" / "summary.json").read_text())
    assert len(summary["rows"]) == 4


def test_sigterm_ends_a_search_like_ctrl_c(problem: tuple[Path, Path], tmp_path: Path) -> None:
    """SIGTERM (what `kill` and cluster schedulers send) to the driver alone, mid-trial: the
    driver must mark the parent KILLED with the resume command and leave no run RUNNING, as
    Ctrl-C does. Ray's handler used to replace ours, and the runs stayed RUNNING for good."""
    data, zoo = problem
    space = tmp_path / "term.yaml"
    space.write_text(
        "sampler: {name: random, seed: 0}\n"
        "scheduler: {name: none}\n"
        "budget: {trials: 2, epochs: 30, concurrency: 1}\n"
        "resources: {num_workers: 1, cpus_per_worker: 0.5}\n"
        "fixed: {autoencoder: san_conv, depth: 1, width: 4, batch_size: 16,\n"
        "        images_per_epoch: 64, matcher_warmup: 0}\n"
        "parameters:\n"
        "  w_rec: {type: categorical, choices: [5.0]}\n"
        "  aux_gender: {type: subset, choices: aux, max_size: 1}\n"
        "  aux_matcher: {type: categorical, choices: aux}\n")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "runs"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    cmd = [sys.executable, "-m", "san_search.cli", "search", str(space), "--data", str(data),
           "--zoo", str(zoo), "--out", str(out), "--name", "t"]
    log_path = tmp_path / "driver.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            client = _client(uri)
            # a trial is training: its first epoch is logged
            _wait_for_children(proc, uri, out / "t", 300, lambda children: bool(
                children and client.get_metric_history(children[0].info.run_id, "loss")))
            assert proc.poll() is None, log_path.read_text()[-3000:]
            proc.send_signal(signal.SIGTERM)  # the driver only, as `kill PID` does
            rc = proc.wait(timeout=120)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = log_path.read_text()
    assert rc == 130, text[-3000:]
    assert "interrupted by SIGTERM" in text
    parents, children = _runs(uri, "san-search")
    assert [p.info.status for p in parents] == ["KILLED"]
    assert parents[0].data.tags["resume"] == f"san-search search --resume t --out {out}"
    assert children and all(c.info.status != "RUNNING" for c in children)
