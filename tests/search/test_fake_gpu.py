"""The GPU path without a GPU: a real search on a Ray started with fake GPU resources.
Trials ask for a fractional GPU, Ray packs them by it, every trial (a one-worker trial trains
in its own Tune process) receives its share, and every trial still trains on the CPU (torch
sees no GPU there; CUDA is never touched)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.gpu_guard import HOOK, RECORD_ENV
from tests.search.spaces import SMOKE, write_space

REPO = Path(__file__).resolve().parents[2]
RESOURCES = "resources: {num_workers: 1, cpus_per_worker: 0.5, max_failures: 1}"


def _max_overlap(spans: list[tuple[float, float]]) -> int:
    edges = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans])
    now = most = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


@pytest.mark.slow
def test_trials_receive_half_a_fake_gpu_and_train_on_the_cpu(
        problem: tuple[Path, Path], tmp_path: Path) -> None:
    import ray

    from san_search import search

    data, zoo = problem
    record = tmp_path / "record"
    record.mkdir()
    text = (SMOKE.replace(RESOURCES, "resources: {num_workers: 1, cpus_per_worker: 0.5, "
                                     "use_gpu: true, gpus_per_worker: 0.5, max_failures: 0}")
            .replace("budget: {trials: 4, epochs: 2, concurrency: 2}",
                     "budget: {trials: 3, epochs: 2, concurrency: 3, final_curve: false}")
            .replace("scheduler: {name: mo_asha, grace_epochs: 1, reduction_factor: 2}",
                     "scheduler: {name: none}"))
    assert "concurrency: 3" in text and "gpus_per_worker: 0.5" in text
    # one fake GPU: CPUs for three trials at once, GPU shares for two
    ray.init(address="local", num_cpus=4, num_gpus=1, include_dashboard=False,
             configure_logging=False,
             runtime_env={"worker_process_setup_hook": HOOK,
                          # the hook lives in tests/: workers import it from the checkout
                          "env_vars": {RECORD_ENV: str(record), "PYTHONPATH": os.pathsep.join(
                              p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}})
    try:
        summary = search.start(write_space(tmp_path, text), data, zoo, out=tmp_path / "runs",
                               name="fakegpu", tracking_uri=f"sqlite:///{tmp_path / 'm.db'}",
                               log=lambda _: None)
    finally:
        ray.shutdown()
    assert len(summary["rows"]) == 3
    events = [json.loads(line) for f in record.glob("*.jsonl")
              for line in f.read_text().splitlines()]
    devices = [e for e in events if e["event"] == "device"]
    assert len({e["trial"] for e in devices}) == 3  # each trial chose its device once
    for e in devices:
        assert e["assigned"]["GPU"] == pytest.approx(0.5)
        assert e["assigned"]["CPU"] == pytest.approx(0.5)
        assert e["gpu_ids"] == ["0"]
        assert e["ray_device"].startswith("cuda")  # what a naive choice would train on
        assert e["device"] == "cpu"
    epochs = [e for e in events if e["event"] == "epoch"]
    assert len(epochs) == 6 and all(e["devices"] == ["cpu"] for e in epochs)
    spans = []
    for d in devices:
        ends = [e["time"] for e in epochs if e["trial"] == d["trial"]]
        spans.append((d["time"], max(ends)))
    assert _max_overlap(spans) <= 2  # the third trial waited for a GPU share
