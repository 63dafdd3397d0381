"""MLflow: where runs go (tracking URI resolution, reachability checked before any work),
experiments with explicit artifact locations, and small logging helpers."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from san_search.errors import TrackingError

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

# Tags this tool sets on its runs (one spelling, read back by resume and selection).
TRIAL_TAG = "san_search.trial_id"  # a candidate's Tune trial id
SEARCH_TAG = "san_search.search"  # the search a run belongs to
FINALIZED_TAG = "san_search.finalized"  # "1" once a candidate's final curve is logged
KIND_TAG = "san_search.kind"  # search | candidate | ensemble | zoo
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
