"""MLflow, in one place: where runs go (tracking URI resolution, reachability checked before
any work), experiments with explicit artifact locations, the tags this tool sets, a search's
child runs (created, found again, failed), per-epoch logging from a Train worker
(`EpochLogger`, a picklable epoch hook), a candidate's artefacts and tables, and the search
parent run's front."""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from san_search.errors import TrackingError

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

# Tags this tool sets on its runs (one spelling, read back by resume and selection).
TRIAL_TAG = "san_search.trial_id"  # a candidate's Tune trial id
SEARCH_TAG = "san_search.search"  # the search a run belongs to
FINALIZED_TAG = "san_search.finalized"  # "1" once a candidate's final curve is logged
KIND_TAG = "san_search.kind"  # search | candidate | ensemble | zoo
ERROR_TAG = "error"  # why a run failed (the exception, cut to MAX_TAG)
EPOCHS_TAG = "san_search.epochs_trained"
MAX_TAG = 5000  # characters of an error message kept in a tag
# The MLflow UI opens an experiment of this kind on its training runs, not its GenAI view.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}



def resolve_tracking_uri(uri: str | None = None, workdir: str | Path | None = None) -> str:
    """`uri`, else $MLFLOW_TRACKING_URI, else a SQLite file `mlflow.db` in the working folder.

    Always absolute: Ray runs trials in their own folders, where a relative default would
    scatter runs over many databases."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        db = Path(workdir or os.getcwd()).absolute() / "mlflow.db"
        return f"sqlite:///{db}"
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        rel = uri[len("sqlite:///"):]
        return f"sqlite:///{Path(rel).absolute()}"
    if "://" not in uri:  # a plain folder path means a file store there
        return Path(uri).absolute().as_uri()
    return uri


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail within `timeout` seconds when an HTTP tracking server does not answer."""
    if not uri.startswith(("http://", "https://")):
        if uri.startswith("sqlite:///"):
            folder = Path(uri[len("sqlite:///"):]).parent
            if not folder.is_dir():
                raise TrackingError(f"MLflow store folder does not exist: {folder} ({uri})")
        return
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (user's URI)
            if resp.status != 200:
                raise TrackingError(f"MLflow server {uri} answered {resp.status} on /health")
    except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
        raise TrackingError(
            f"MLflow tracking server {uri} is unreachable ({getattr(exc, 'reason', exc)}); "
            "start it (see mlflow/README.md) or pass another --tracking-uri"
        ) from None


def artifact_location(uri: str, experiment: str) -> str | None:
    """For a local SQLite store, artifacts go beside the database (`mlartifacts/`)."""
    if uri.startswith("sqlite:///"):
        root = Path(uri[len("sqlite:///"):]).parent / "mlartifacts" / experiment
        return root.as_uri()
    return None


def setup(uri: str | None, experiment: str) -> str:
    """Point MLflow at the resolved store and experiment (created if missing); returns the
    experiment id. Raises `TrackingError` quickly when the store is unreachable."""
    import mlflow

    resolved = resolve_tracking_uri(uri)
    check_reachable(resolved)
    mlflow.set_tracking_uri(resolved)
    exp = mlflow.get_experiment_by_name(experiment)
    if exp is None:
        exp_id = mlflow.create_experiment(experiment,
                                          artifact_location=artifact_location(resolved, experiment))
    else:
        exp_id = exp.experiment_id
    tags = mlflow.get_experiment(exp_id).tags
    for k, v in EXPERIMENT_KIND.items():
        if k not in tags:  # a kind the user chose in the UI stays
            client_for(resolved).set_experiment_tag(exp_id, k, v)
    mlflow.set_experiment(experiment_id=exp_id)
    return str(exp_id)


def client_for(uri: str) -> Any:
    """An `MlflowClient` for the tracking URI (imported lazily: mlflow is slow to import)."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri)


def find_child(client: Any, experiment_id: str, parent_run_id: str, trial_id: str) -> Any:
    """The child run of a search's parent run for one Tune trial, or None."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{TRIAL_TAG}` = '{trial_id}' and "
                      f"tags.`mlflow.parentRunId` = '{parent_run_id}'",
        max_results=5)
    return runs[0] if runs else None


def child_runs(uri: str, experiment_id: str, parent_run_id: str) -> list[Any]:
    """Every child run of a parent run (a search's candidates and ensembles)."""
    return list(client_for(uri).search_runs(
        [experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'",
        max_results=10000))


def metric_key(*parts: str) -> str:
    """MLflow metric names: dot-joined, characters MLflow accepts."""
    key = ".".join(parts)
    return "".join(c if c.isalnum() or c in "._-/ " else "_" for c in key)


def flat_params(prefix: str, values: dict[str, Any]) -> dict[str, str]:
    return {f"{prefix}.{k}": str(v) for k, v in values.items()}


def replace_table(client: Any, run_id: str, data: dict[str, list[Any]], artifact_file: str
                  ) -> None:
    """Write a table artifact the way `log_table` does (JSON, pandas split orient, listed in
    the run's table tag so the UI shows it) but replacing, not appending to, an earlier
    version: a search refreshes its front table as trials finish."""
    import json
    import tempfile

    import pandas as pd
    from mlflow.utils.mlflow_tags import MLFLOW_LOGGED_ARTIFACTS

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(artifact_file).name
        pd.DataFrame(data).to_json(path, orient="split", index=False, date_format="iso")
        folder = str(Path(artifact_file).parent)
        client.log_artifact(run_id, str(path), None if folder == "." else folder)
    tags = client.get_run(run_id).data.tags
    listed = json.loads(tags.get(MLFLOW_LOGGED_ARTIFACTS, "[]"))
    entry = {"path": artifact_file, "type": "table"}
    if entry not in listed:
        client.set_tag(run_id, MLFLOW_LOGGED_ARTIFACTS, json.dumps([*listed, entry]))


# ------------------------------------------------------------------ runs of this tool

def fail_run(client: Any, run_id: str, message: str) -> None:
    """Mark a run FAILED with the reason in its `error` tag."""
    client.set_tag(run_id, ERROR_TAG, message[:MAX_TAG])
    client.set_terminated(run_id, status="FAILED")


def log_params(client: Any, run_id: str, params: Mapping[str, Any]) -> None:
    from mlflow.entities import Param

    client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])


def open_child(client: Any, experiment_id: str, parent_run_id: str, trial_id: str, *,
               run_name: str, tags: Mapping[str, str], params: Mapping[str, str]) -> str:
    """The child run of one search trial: found again by trial id (a restored trial keeps
    its run) or created; returns its run id, RUNNING."""
    run = find_child(client, experiment_id, parent_run_id, trial_id)
    if run is not None and any(run.data.params.get(k) != v for k, v in params.items()):
        # A child created just before the driver was killed, for a trial the restored search
        # never recorded: its id was handed out again. Drop the orphan.
        client.delete_run(run.info.run_id)
        run = None
    if run is None:
        run = client.create_run(experiment_id, run_name=run_name, tags={
            "mlflow.parentRunId": parent_run_id, TRIAL_TAG: trial_id, **tags})
        log_params(client, run.info.run_id, params)
    else:
        client.update_run(run.info.run_id, status="RUNNING")
    return str(run.info.run_id)


@contextmanager
def candidate_run(uri: str, experiment_id: str, name: str, tags: Mapping[str, str],
                  params: Mapping[str, str]) -> Iterator[str]:
    """A top-level candidate run (`san-search train`): FINISHED when the block ends, FAILED
    with the error when it raises."""
    client = client_for(uri)
    run_id = client.create_run(experiment_id, run_name=name,
                               tags={KIND_TAG: "candidate", **tags}).info.run_id
    log_params(client, run_id, params)
    try:
        yield str(run_id)
    except BaseException as exc:
        fail_run(client, run_id, f"{type(exc).__name__}: {exc}")
        raise
    client.set_terminated(run_id, status="FINISHED")


@dataclass
class EpochLogger:
    """An epoch hook for the Train loop (rank 0): each epoch's metrics straight into the
    candidate's run, as they happen. Picklable: Ray ships it to the worker, where the client
    is made on first use, and the run is tagged with the node that trains it."""

    tracking_uri: str
    run_id: str
    _client: Any = field(default=None, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        return {"tracking_uri": self.tracking_uri, "run_id": self.run_id, "_client": None}

    def __call__(self, metrics: Mapping[str, Any]) -> None:
        from mlflow.entities import Metric

        if self._client is None:
            self._client = client_for(self.tracking_uri)
            self._tag_node()
        step, now = int(metrics["epoch"]), int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()
                 if k != "epoch" and isinstance(v, (int, float)) and not isinstance(v, bool)
                 and np.isfinite(v)]
        self._client.log_batch(self.run_id, metrics=batch)

    def _tag_node(self) -> None:
        try:  # where rank 0 trains: shows which node of a cluster ran the candidate
            import ray

            node = {"san_search.node_id": ray.get_runtime_context().get_node_id(),
                    "san_search.node_ip": ray.util.get_node_ip_address()}
            for k, v in node.items():
                self._client.set_tag(self.run_id, k, v)
        except Exception:  # noqa: S110 (outside Ray: nothing to record)
            pass


def log_candidate(client: Any, run_id: str, *, tables: Mapping[str, dict[str, list[Any]]],
                  figures: Mapping[str, Any], images: Mapping[str, np.ndarray],
                  weights: str | Path, metrics: Mapping[str, float]) -> None:
    """A candidate's final artefacts: tables (MLflow's table JSON), figures (closed after
    logging), images, the weights folder and metrics."""
    import matplotlib.pyplot as plt
    from mlflow.entities import Metric

    for name, table in tables.items():
        client.log_table(run_id, table, artifact_file=name)
    for name, fig in figures.items():
        client.log_figure(run_id, fig, name)
        plt.close(fig)
    for name, image in images.items():
        client.log_image(run_id, image, artifact_file=name)
    client.log_artifacts(run_id, str(weights), artifact_path="weights")
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])


def log_front(client: Any, parent_run_id: str, *, trials: dict[str, list[Any]],
              front: dict[str, list[Any]], figure: Any, metrics: Mapping[str, float],
              step: int) -> None:
    """A search parent run's refresh: the trials and Pareto-front tables (replaced, not
    appended), the front figure, and metrics such as the hypervolume at `step`."""
    import matplotlib.pyplot as plt

    replace_table(client, parent_run_id, trials, "trials.json")
    replace_table(client, parent_run_id, front, "pareto_front.json")
    client.log_figure(parent_run_id, figure, "pareto_front.png")
    plt.close(figure)
    for k, v in metrics.items():
        client.log_metric(parent_run_id, k, float(v), step=step)


# ------------------------------------------------------------------ a local server

def healthy(uri: str, timeout: float = 2.0) -> bool:
    """True when the MLflow server at `uri` answers /health with 200."""
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as r:  # noqa: S310
            return bool(r.status == 200)
    except (urllib.error.URLError, TimeoutError, ConnectionError, OSError):
        return False


def free_port(preferred: int = 5000) -> int:
    """`preferred` when nothing listens on it on 127.0.0.1, else a free port."""
    import socket

    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise TrackingError("no free TCP port on 127.0.0.1")


def serve_local(folder: str | Path, port: int = 5000, timeout: float = 180.0) -> dict[str, Any]:
    """A detached `mlflow server` on 127.0.0.1 with a SQLite backend and a local artifact
    folder under `folder` (the settings of mlflow/serve-local.sh). A server this function
    started earlier for the same folder is reused while it answers. It keeps running after
    the caller exits (so the UI stays up); `server.json` in `folder` has its pid and URI.
    Returns {"uri", "pid", "log", "started"}."""
    import json
    import shutil
    import subprocess
    import sys
    import time

    folder = Path(folder).absolute()
    state = folder / "server.json"
    if state.is_file():
        info = json.loads(state.read_text())
        if healthy(info["uri"]):
            return {**info, "started": False}
    (folder / "artifacts").mkdir(parents=True, exist_ok=True)
    port = free_port(port)
    exe = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or shutil.which("mlflow")
    if exe is None:
        raise TrackingError("the `mlflow` command is not installed beside this Python")
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true",
           "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log_path = folder / "server.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(  # noqa: S603 (fixed arguments)
            [exe, "server", "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
             "--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1",
             "--port", str(port), "--workers", "1"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while not healthy(uri):
        if proc.poll() is not None or time.monotonic() > deadline:
            if proc.poll() is None:
                proc.terminate()
            tail = log_path.read_text(errors="replace")[-1500:]
            raise TrackingError(f"the MLflow server in {folder} did not start within "
                                f"{timeout:.0f} s (log {log_path}):\n{tail}")
        time.sleep(0.5)
    info = {"uri": uri, "pid": proc.pid, "log": str(log_path)}
    state.write_text(json.dumps(info))
    return {**info, "started": True}
