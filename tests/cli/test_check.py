"""`search --check`: the resource checks the real start runs (against the resources a local
Ray would have), without starting Ray or any trial."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from san_search.cli import main
from tests.search.spaces import SMOKE, write_space

RESOURCES = "resources: {num_workers: 1, cpus_per_worker: 0.5, max_failures: 1}"


def _check(problem: tuple[Path, Path], space: Path) -> int:
    data, zoo = problem
    return main(["search", str(space), "--data", str(data), "--zoo", str(zoo), "--check"])


@pytest.mark.parametrize(("resources", "message"), [
    ("resources: {num_workers: 1, cpus_per_worker: 1024, max_failures: 1}",
     "the candidate needs 1024 CPU (1 worker(s)); the Ray cluster has {cpus:g}"),
    ("resources: {num_workers: 1, use_gpu: true, gpus_per_worker: 1024, max_failures: 1}",
     "the candidate needs 1024 GPU (1 worker(s)); the Ray cluster has"),
    ("resources: {num_workers: 1, cpus_per_worker: 1, memory_gb: 100000, max_failures: 1}",
     "the candidate needs 100000 GiB of memory (1 worker(s)); the Ray cluster has"),
    ("resources: {num_workers: 2, cpus_per_worker: 0.5, max_failures: 1, custom: {slot: 1}}",
     "resources: custom: a trial needs 2 'slot'; the Ray cluster has 0"),
])
def test_check_refuses_resources_no_local_ray_would_offer(
        problem: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
        resources: str, message: str) -> None:
    import ray

    assert RESOURCES in SMOKE
    space = write_space(tmp_path, SMOKE.replace(RESOURCES, resources))
    assert _check(problem, space) == 2
    out = capsys.readouterr()
    assert "OK" not in out.out
    assert out.err.startswith("error: ")
    assert out.err.startswith(f"error: {space}: resources: ")  # the file and the section
    assert message.format(cpus=float(os.cpu_count() or 1)) in out.err
    assert not ray.is_initialized()  # checked without starting Ray


def test_check_passes_a_space_that_fits_and_names_the_resources_it_checked(
        problem: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    space = write_space(tmp_path, SMOKE)
    assert _check(problem, space) == 0
    out = capsys.readouterr().out
    assert f"{space}: OK against" in out
    assert f"a trial fits a local Ray: {float(os.cpu_count() or 1):g} CPU, " in out
