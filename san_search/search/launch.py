"""`san-search launch`: bring a Ray cluster up from a cluster-launcher YAML (cluster.yaml)
and submit a search to it as a Ray job.

Steps, each printed before it runs (`--dry-run` prints them and stops):
  1. check the cluster YAML against Ray's own cluster-config schema (the checks `ray up`
     makes before it touches the cloud) and the search space (a typo fails here, not on the
     cluster);
  2. `ray up -y CLUSTER` (skipped with `--no-up` when the cluster is already up);
  3. `ray dashboard CLUSTER` in the background: an SSH tunnel to the head's dashboard on
     127.0.0.1 (the cluster opens no port to the world);
  4. `ray job submit --address http://127.0.0.1:PORT --submission-id NAME --no-wait --
     san-search search ...` on the head: the driver runs there, trials on the workers, the
     head's $MLFLOW_TRACKING_URI (set by cluster.yaml) records them;
  5. with `--follow`, stream the job's logs until it ends; otherwise print how to.

The repository is synced to ~/san-search on every node (cluster.yaml's file_mounts), so a
space is given by shipped name or by a path inside this repository.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from san_search import shipped
from san_search.errors import LaunchError

REPO = Path(__file__).resolve().parents[2]
REMOTE_REPO = "~/san-search"



def validate_cluster_config(path: str | Path) -> dict[str, Any]:
    """Ray's checks of a cluster-launcher YAML (schema, head node type, worker counts),
    with the provider's defaults filled in as `ray up` does. Returns the prepared config."""
    import logging

    from ray.autoscaler._private.util import prepare_config, validate_config

    logging.getLogger("ray.autoscaler").setLevel(logging.WARNING)
    path = Path(path)
    if not path.is_file():
        raise LaunchError(f"--cluster {path}: no such file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise LaunchError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(raw, dict):
        raise LaunchError(f"{path}: expected a mapping (a Ray cluster-launcher config)")
    try:
        config = prepare_config(raw)
        validate_config(config)
    except Exception as exc:  # jsonschema.ValidationError, ValueError, RuntimeError
        where = "/".join(str(p) for p in getattr(exc, "absolute_path", []))
        message = getattr(exc, "message", None) or str(exc)
        raise LaunchError(f"{path}: not a valid Ray cluster config"
                          f"{f' at {where}' if where else ''}: {message}") from None
    return dict(config)


@dataclass
class Plan:
    """The commands `launch` runs, in order (the tunnel runs in the background)."""

    up: list[str] | None
    tunnel: list[str]
    submit: list[str]
    follow: list[str]
    dashboard: str
    name: str


def remote_space(space: str) -> str:
    """The search space as the head node sees it: a shipped name stays a name; a file must
    live in this repository (synced to ~/san-search) and is checked here first."""
    from san_search.search import load_search_space

    path = Path(space)
    if not path.suffix and not path.is_file():
        names = {p.stem: p for p in shipped.spaces()}
        if space not in names:
            raise LaunchError(f"--space {space!r}: no such file, and not a shipped space "
                              f"({', '.join(sorted(names))})")
        load_search_space(names[space])
        return space
    if not path.is_file():
        raise LaunchError(f"--space {space}: no such file")
    load_search_space(path)  # a typo fails here, before any cloud work
    try:
        rel = path.resolve().relative_to(REPO)
    except ValueError:
        raise LaunchError(f"--space {path}: the cluster gets this repository only; put the "
                          f"file under {REPO / 'search_spaces'}") from None
    return f"{REMOTE_REPO}/{rel.as_posix()}"


def make_plan(cluster: str | Path, space: str, data: str, zoo: str, *, storage: str | None,
              name: str | None = None, out: str = "~/runs/search", port: int = 8265,
              up: bool = True, extra: list[str] | None = None) -> Plan:
    """Check the inputs and build the commands (nothing runs)."""
    validate_cluster_config(cluster)
    remote = remote_space(space)
    name = name or time.strftime("search-%Y%m%d-%H%M%S")
    if not name.replace("-", "").replace("_", "").isalnum():
        raise LaunchError(f"search name {name!r} may use letters, digits, '-' and '_'")
    if storage is None:
        raise LaunchError("--storage is required on a cluster: nodes share no disk, so Ray "
                          "Tune and Train need a URI every node reaches (s3://bucket/path)")
    if "://" not in storage:
        raise LaunchError(f"--storage {storage!r}: give a URI every node reaches, like "
                          "s3://bucket/searches")
    search = ["san-search", "search", remote, "--data", data, "--zoo", zoo, "--out", out,
              "--name", name, "--storage", storage, "--ray-address", "auto", *(extra or [])]
    dashboard = f"http://127.0.0.1:{port}"
    cluster = str(cluster)
    return Plan(
        up=["ray", "up", "-y", cluster] if up else None,
        tunnel=["ray", "dashboard", cluster, "--port", str(port)],
        submit=["ray", "job", "submit", "--address", dashboard, "--submission-id", name,
                "--no-wait", "--", " ".join(_quote(a) for a in search)],
        follow=["ray", "job", "logs", "--address", dashboard, "--follow", name],
        dashboard=dashboard, name=name)


def _quote(arg: str) -> str:
    """Shell quoting that keeps a leading ~/ expandable on the head."""
    if arg.startswith("~/"):
        return "~/" + shlex.quote(arg[2:])
    return shlex.quote(arg)


def _wait_for(url: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise LaunchError(f"the SSH tunnel ({shlex.join(proc.args)}) exited with "  # type: ignore[arg-type]
                              f"{proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/api/version", timeout=3):  # noqa: S310
                return
        except OSError:
            time.sleep(2)
    raise LaunchError(f"the Ray dashboard did not answer on {url} within {timeout:.0f} s")


def run_plan(plan: Plan, *, follow: bool = False, log: Any = print) -> int:
    """Run the plan; returns the exit status of the last command."""
    if plan.up is not None:
        log(f"$ {shlex.join(plan.up)}")
        if subprocess.call(plan.up) != 0:
            raise LaunchError("`ray up` failed (see above); nothing was submitted")
    log(f"$ {shlex.join(plan.tunnel)} &")
    tunnel = subprocess.Popen(plan.tunnel, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_for(plan.dashboard, tunnel, 180)
        log(f"$ {shlex.join(plan.submit)}")
        if subprocess.call(plan.submit) != 0:
            raise LaunchError("`ray job submit` failed (see above)")
        if follow:
            log(f"$ {shlex.join(plan.follow)}")
            return subprocess.call(plan.follow)
        log(f"submitted search {plan.name}. Follow it with: {shlex.join(plan.follow)} "
            "(with `ray dashboard` running); MLflow UI: `ray attach CLUSTER -p 5000`, then "
            "http://127.0.0.1:5000")
        return 0
    finally:  # the tunnel's whole process group: `ray dashboard` runs ssh as a child
        with contextlib.suppress(ProcessLookupError):
            os.killpg(tunnel.pid, signal.SIGTERM)
        try:
            tunnel.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(tunnel.pid, signal.SIGKILL)
