"""Launching on a cluster: cluster.yaml against Ray's own cluster-config schema, the KubeRay
manifest, `san-search launch --dry-run`, and the launch orchestration (up, tunnel, submit)
against a stand-in `ray`."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from san_search.cli import build_parser, main
from san_search.search.launch import LaunchError, make_plan, validate_cluster_config
from san_search.tracking import free_port
from tests.helpers import process_tree

REPO = Path(__file__).resolve().parents[2]


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
    from san_search.search.launch import run_plan

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
    assert not process_tree(str(tmp_path / "www")), "the tunnel was left running"


def test_launch_stops_when_ray_up_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from san_search.search.launch import run_plan

    bin_dir, calls = _fake_ray(tmp_path, up_status=3)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    plan = make_plan(REPO / "cluster.yaml", "default", "/d", "/z", storage="s3://b/s",
                     name="run2", port=free_port(0))
    with pytest.raises(LaunchError, match="`ray up` failed"):
        run_plan(plan, log=lambda _: None)
    assert calls.read_text().split() == ["up", "-y", str(REPO / "cluster.yaml")]
