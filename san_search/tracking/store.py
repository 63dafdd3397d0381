"""Where runs go: the tracking URI (resolved to an absolute store, reachability checked before
any work), experiments with explicit artifact locations, the MLflow client and the types this
package hands out (`Client`, `Run`), and a local `mlflow server` started on demand."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias, TypedDict

from san_search.errors import TrackingError

if TYPE_CHECKING:
    from mlflow.entities import Run as MlflowRun
    from mlflow.tracking import MlflowClient

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

# The types callers hold without importing mlflow (it is slow to import; only this package
# names it).
Client: TypeAlias = "MlflowClient"
Run: TypeAlias = "MlflowRun"

# The MLflow UI opens an experiment of this kind on its training runs, not its GenAI view.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def ui_url(uri: str, experiment_id: str | None = None) -> str:
    """Where a person opens a tracking server's runs. MLflow 3.17's UI starts in its GenAI
    workflow (traces, no runs) whatever the experiment's kind tag says, unless the address
    asks for the model-training one; a SQLite or file store has no UI address."""
    if not uri.startswith(("http://", "https://")):
        return uri
    page = f"#/experiments/{experiment_id}/runs" if experiment_id else "#/experiments"
    return f"{uri.rstrip('/')}/{page}?workflowType=machine_learning"


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


def client_for(uri: str) -> Client:
    """An `MlflowClient` for the tracking URI (imported lazily: mlflow is slow to import)."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri)


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


class LocalServer(TypedDict):
    """A local server `serve_local` started or found: its URI, pid, log, and whether this
    call started it."""

    uri: str
    pid: int
    log: str
    started: bool


def serve_local(folder: str | Path, port: int = 5000, timeout: float = 180.0) -> LocalServer:
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
            return LocalServer(uri=info["uri"], pid=info["pid"], log=info["log"], started=False)
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
    return LocalServer(uri=uri, pid=proc.pid, log=str(log_path), started=True)
