"""Cluster scale: cluster.yaml against Ray's own cluster-config schema, the KubeRay manifest,
`san-search launch --dry-run`, and a real multi-node run on this machine (a Ray head and a
second Ray node started with `ray start`, an MLflow server, the smoke search with trials
forced onto both nodes, then select and export)."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from san_search.cli import build_parser, main
from san_search.launch import LaunchError, make_plan, validate_cluster_config
from san_search.tracking import free_port

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


# ------------------------------------------------------------------ cluster.yaml

def test_cluster_yaml_passes_rays_schema_and_keeps_ports_closed() -> None:
    config = validate_cluster_config(REPO / "cluster.yaml")
    assert config["provider"]["type"] == "aws"
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert "GPU" not in head["resources"]
    gpu = [t for name, t in types.items() if name != config["head_node_type"]]
    assert len(gpu) == 1 and gpu[0]["resources"]["GPU"] >= 1
    assert gpu[0]["min_workers"] == 0 and gpu[0]["max_workers"] >= 1
    # Only SSH, from one address; the dashboard stays on the head's loopback.
    perms = config["provider"]["security_group"]["IpPermissions"]
    assert [(p["FromPort"], p["ToPort"]) for p in perms] == [(22, 22)]
    assert all(r["CidrIp"].endswith("/32") for p in perms for r in p["IpRanges"])
    start = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in start and "serve-cluster.sh" in start
    setup = " ".join(config["setup_commands"])
    assert "san-search[cluster]" in setup
    for script in ("mlflow/serve-cluster.sh", "mlflow/setup-postgres.sh"):
        assert (REPO / script).is_file()
        subprocess.run(["bash", "-n", str(REPO / script)], check=True)


@pytest.mark.parametrize("change, message", [
    ({"max_worker": 3}, "max_worker"),  # a typo at the top level
    ({"available_node_types": {"head": {"resources": {"CPU": 2}}}}, "node_config"),
    ({"head_node_type": "nope"}, "head_node_type"),
])
def test_a_broken_cluster_yaml_is_refused_with_the_key(tmp_path: Path, change: dict,  # type: ignore[type-arg]
                                                       message: str) -> None:
    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    config.update(change)
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(LaunchError, match=message):
        validate_cluster_config(path)


def test_kuberay_rayjob_runs_our_search_on_a_matching_ray() -> None:
    import ray

    job = yaml.safe_load((REPO / "k8s" / "rayjob.yaml").read_text())
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    spec = job["spec"]["rayClusterSpec"]
    assert spec["rayVersion"] == ray.__version__
    words = shlex.split(job["spec"]["entrypoint"])
    assert words[:2] == ["san-search", "search"]
    args = build_parser().parse_args(words[1:])  # a wrong flag fails here
    assert args.storage.startswith("s3://") and args.ray_address == "auto"
    (group,) = spec["workerGroupSpecs"]
    assert group["minReplicas"] == 0 and group["maxReplicas"] >= 1
    limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "1"
    docs = list(yaml.safe_load_all((REPO / "k8s" / "mlflow.yaml").read_text()))
    assert [d["kind"] for d in docs] == ["Deployment", "Service"]
    assert docs[1]["spec"]["type"] == "ClusterIP"  # not exposed outside the cluster


def test_launch_dry_run_prints_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["launch", "--space", "default", "--data", "~/data/lfw64", "--zoo", "/data/zoo",
               "--storage", "s3://bucket/searches", "--name", "lfw1", "--dry-run", "--",
               "--trials", "64"])
    assert rc == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "ray up -y cluster.yaml"
    assert lines[1] == "ray dashboard cluster.yaml --port 8265 &"
    submit = shlex.split(lines[2])
    assert submit[:6] == ["ray", "job", "submit", "--address", "http://127.0.0.1:8265",
                          "--submission-id"]
    search = submit[submit.index("--") + 1]
    assert search.startswith("san-search search default --data ~/data/lfw64 --zoo /data/zoo")
    assert search.endswith("--storage s3://bucket/searches --ray-address auto --trials 64")
    assert lines[3] == "ray job logs --address http://127.0.0.1:8265 --follow lfw1"


def test_launch_refuses_what_would_fail_on_the_cluster(tmp_path: Path) -> None:
    with pytest.raises(LaunchError, match="not a shipped space"):
        make_plan(REPO / "cluster.yaml", "defualt", "/d", "/z", storage="s3://b/s")
    with pytest.raises(LaunchError, match="every node reaches"):
        make_plan(REPO / "cluster.yaml", "default", "/d", "/z", storage="/local/disk")
    outside = tmp_path / "space.yaml"
    outside.write_text((REPO / "search_spaces" / "smoke.yaml").read_text())
    with pytest.raises(LaunchError, match="gets this repository only"):
        make_plan(REPO / "cluster.yaml", str(outside), "/d", "/z", storage="s3://b/s")
    with pytest.raises(LaunchError, match="no such file"):
        make_plan(tmp_path / "missing.yaml", "default", "/d", "/z", storage="s3://b/s")


# ------------------------------------------------------------------ a real multi-node run

def _process_tree(tag: str) -> set[int]:
    """Processes whose command line mentions `tag`, and all their descendants (/proc)."""
    info: dict[int, tuple[str, int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{d}/cmdline").read_bytes().replace(b"\0", b" ").decode(
                errors="replace")
            ppid = int(Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        info[int(d)] = (cmd, ppid)
    found = {p for p, (cmd, _) in info.items() if tag in cmd and p != os.getpid()}
    grew = True
    while grew:
        kids = {p for p, (_, pp) in info.items() if pp in found} - found
        found |= kids
        grew = bool(kids)
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (OSError, IndexError):
        return False


def _stop_nodes(tag: str) -> None:
    """Stop only this test's Ray nodes (`ray stop` would stop every Ray on the machine)."""
    pids = _process_tree(tag)
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
        assert not any(_alive(p) for p in _process_tree(temp)), "Ray processes left behind"


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


def _fake_ray(tmp_path: Path, up_status: int) -> tuple[Path, Path]:
    """A stand-in `ray` on PATH for the launch orchestration: records each call; `dashboard`
    serves /api/version on the tunnel's port like the real tunnel would."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls.log"
    (tmp_path / "www" / "api").mkdir(parents=True)
    (tmp_path / "www" / "api" / "version").write_text("{}")
    bin_dir.mkdir()
    script = bin_dir / "ray"
    script.write_text(f"""#!{sys.executable}
import subprocess, sys
with open({str(calls)!r}, "a") as f:
    f.write(" ".join(sys.argv[1:]) + "\\n")
if sys.argv[1] == "up":
    sys.exit({up_status})
if sys.argv[1] == "dashboard":
    port = sys.argv[sys.argv.index("--port") + 1]
    subprocess.run([sys.executable, "-m", "http.server", port, "--bind", "127.0.0.1",
                    "--directory", {str(tmp_path / "www")!r}], stderr=subprocess.DEVNULL)
""")
    script.chmod(0o755)
    return bin_dir, calls


def test_launch_runs_up_tunnel_and_submit_in_order(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from san_search.launch import run_plan

    bin_dir, calls = _fake_ray(tmp_path, up_status=0)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    port = free_port(0)
    plan = make_plan(REPO / "cluster.yaml", "default", "/d", "/z", storage="s3://b/s",
                     name="run1", port=port)
    assert run_plan(plan, log=lambda _: None) == 0
    made = calls.read_text().splitlines()
    assert [c.split()[0] for c in made] == ["up", "dashboard", "job"]
    assert made[2].startswith(f"job submit --address http://127.0.0.1:{port} --submission-id "
                              "run1 --no-wait -- san-search search default")
    time.sleep(0.5)
    assert not _process_tree(str(tmp_path / "www")), "the tunnel was left running"


def test_launch_stops_when_ray_up_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from san_search.launch import run_plan

    bin_dir, calls = _fake_ray(tmp_path, up_status=3)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    plan = make_plan(REPO / "cluster.yaml", "default", "/d", "/z", storage="s3://b/s",
                     name="run2", port=free_port(0))
    with pytest.raises(LaunchError, match="`ray up` failed"):
        run_plan(plan, log=lambda _: None)
    assert calls.read_text().split() == ["up", "-y", str(REPO / "cluster.yaml")]
