"""A real multi-node search on this machine: a Ray head and a second Ray node started with
`ray start`, an MLflow server, the smoke search with trials forced onto both nodes, then
select and export."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from san_search.cli import main
from san_search.tracking import free_port
from tests.helpers import process_tree

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (OSError, IndexError):
        return False


def _stop_nodes(tag: str) -> None:
    """Stop only this test's Ray nodes (`ray stop` would stop every Ray on the machine)."""
    pids = process_tree(tag)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, sig)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.2)


@pytest.fixture
def two_nodes() -> Iterator[tuple[str, dict[str, str]]]:
    """A Ray head and a second node (separate `ray start` processes), 1 CPU and one
    `trial_slot` each, on 127.0.0.1; torn down on success and failure alike."""
    temp = tempfile.mkdtemp(prefix="sanray-", dir="/tmp")  # short: Ray's socket paths
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
           "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}
    port = free_port(0)
    common = ["--num-cpus", "1", "--resources", json.dumps({"trial_slot": 1}),
              "--memory", str(4 * 1024**3), "--object-store-memory", str(200 * 1024**2),
              "--temp-dir", temp, "--node-ip-address", "127.0.0.1"]
    try:
        subprocess.run([str(BIN / "ray"), "start", "--head", "--port", str(port),
                        "--include-dashboard", "false", "--disable-usage-stats", *common],
                       env=env, check=True, capture_output=True, timeout=180)
        subprocess.run([str(BIN / "ray"), "start", "--address", f"127.0.0.1:{port}",
                        *common], env=env, check=True, capture_output=True, timeout=180)
        yield f"127.0.0.1:{port}", env
    finally:
        _stop_nodes(temp)
        assert not any(_alive(p) for p in process_tree(temp)), "Ray processes left behind"


def _node_ids(address: str, env: dict[str, str]) -> set[str]:
    code = (f"import json, ray; ray.init(address={address!r}, log_to_driver=False); "
            "print(json.dumps([n['NodeID'] for n in ray.nodes() if n['Alive']]))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=120, check=True).stdout
    return set(json.loads(out.strip().splitlines()[-1]))


@pytest.mark.slow
def test_search_runs_trials_on_two_ray_nodes_and_exports(
        problem: tuple[Path, Path], mlflow_server: str, two_nodes: tuple[str, dict[str, str]],
        tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from san_search.ensemble.serving import load_ensemble

    address, env = two_nodes
    nodes = _node_ids(address, env)
    assert len(nodes) == 2
    data, zoo = problem
    space = yaml.safe_load((REPO / "search_spaces" / "smoke.yaml").read_text())
    space["resources"]["custom"] = {"trial_slot": 1}  # one trial per node at a time
    space["budget"]["trials"] = 2  # started together: one on each node
    path = tmp_path / "multinode.yaml"
    path.write_text(yaml.safe_dump(space))
    out = tmp_path / "runs"
    proc = subprocess.run(
        [str(BIN / "san-search"), "search", str(path), "--data", str(data), "--zoo", str(zoo),
         "--out", str(out), "--name", "mn", "--tracking-uri", mlflow_server,
         "--experiment", "multinode", "--ray-address", address],
        env=env, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "search mn finished: 2 trials" in proc.stdout

    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("multinode")
    assert exp is not None
    runs = client.search_runs([exp.experiment_id], max_results=100)
    children = [r for r in runs if r.data.tags.get("san_search.kind") == "candidate"]
    assert len(children) == 2
    for c in children:
        assert c.info.status == "FINISHED", c.data.tags.get("error")
        arts = {a.path for a in client.list_artifacts(c.info.run_id)}
        assert {"trade_off_curve.json", "trade_off_curve.png", "weights"} <= arts
    used = {c.data.tags["san_search.node_id"] for c in children}
    assert used == nodes, f"trials ran on {used}, cluster nodes {nodes}"

    assert main(["ensemble", "select", "--search", "mn", "--search-dir", str(out),
                 "--size", "2", "--min-utility", "0", "--no-third-party"]) == 0
    export = tmp_path / "ensemble"
    assert main(["ensemble", "export", "--search", "mn", "--search-dir", str(out),
                 "--out", str(export), "--no-register"]) == 0
    import numpy as np

    faces = np.random.default_rng(0).integers(0, 256, (3, 16, 16), dtype=np.uint8)
    a = load_ensemble(export, "torch").runtime.perturb(faces)
    b = load_ensemble(export, "onnx").runtime.perturb(faces)
    assert a.shape == (3, 16, 16) and np.abs(a - b).max() < 1e-3
    ensemble_runs = [r for r in client.search_runs([exp.experiment_id], max_results=100)
                     if r.data.tags.get("san_search.kind") == "ensemble"]
    assert len(ensemble_runs) == 1
