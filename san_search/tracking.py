"""MLflow: where runs go (tracking URI resolution, reachability checked before any work),
experiments with explicit artifact locations, and small logging helpers."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from san_search.errors import SanSearchError

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


class TrackingError(SanSearchError):
    """MLflow cannot be reached or used."""


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
    mlflow.set_experiment(experiment_id=exp_id)
    return str(exp_id)


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
