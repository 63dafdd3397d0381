"""Several trials per GPU: the memory estimate of a space's largest trial and the check that
refuses a packing which cannot fit (`search.packing`), run on the CPU."""

from __future__ import annotations

from pathlib import Path

import pytest

from san_search.cli import main
from san_search.data import open_dataset
from san_search.errors import SearchError
from san_search.search.packing import CUDA_CONTEXT, GIB, check_packing, estimate, plan
from san_search.search.space import SearchSpace, load_search_space
from san_search.zoo.store import Zoo, open_zoo
from tests.search.spaces import SMOKE, write_space

RESOURCES = "resources: {num_workers: 1, cpus_per_worker: 0.5, max_failures: 1}"


def _space(problem: tuple[Path, Path], tmp_path: Path, resources: str,
           edit: tuple[str, str] = ("", "")) -> tuple[SearchSpace, Zoo, int]:
    data, zoo = problem
    text = SMOKE.replace(RESOURCES, resources).replace(*edit) if edit[0] else \
        SMOKE.replace(RESOURCES, resources)
    z, size = open_zoo(zoo), open_dataset(data).size
    return load_search_space(write_space(tmp_path, text)).bind(z, size), z, size


def test_no_packing_without_gpus(problem: tuple[Path, Path], tmp_path: Path) -> None:
    space, z, size = _space(problem, tmp_path, RESOURCES)
    assert plan(space, z, size) is None


def test_the_estimate_grows_with_the_san_and_the_batch(problem: tuple[Path, Path],
                                                       tmp_path: Path) -> None:
    small, z, size = _space(problem, tmp_path, RESOURCES)
    wide, _, _ = _space(problem, tmp_path, RESOURCES,
                        ("width: {type: int, low: 4, high: 8, step: 4}",
                         "width: {type: int, low: 4, high: 64, step: 4}"))
    big_batch, _, _ = _space(problem, tmp_path, RESOURCES, ("batch_size: 16", "batch_size: 256"))
    a, b, c = (estimate(s, z, size) for s in (small, wide, big_batch))
    assert (a.san, b.san) == ("san_conv depth 1 width 8 skip False",
                              "san_conv depth 1 width 64 skip False")
    assert b.activations > a.activations and b.weights > a.weights
    assert (c.batch_size, a.batch_size) == (256, 16)
    assert c.total - a.total == pytest.approx(1.25 * 240 * a.activations, rel=1e-6)
    assert a.total > CUDA_CONTEXT


def test_a_packing_that_cannot_fit_is_refused_with_the_numbers(problem: tuple[Path, Path],
                                                               tmp_path: Path) -> None:
    quarter = ("resources: {num_workers: 1, cpus_per_worker: 0.5, use_gpu: true, "
               "gpus_per_worker: 0.25, gpu_memory_gb: 2}")
    space, z, size = _space(problem, tmp_path, quarter)
    with pytest.raises(SearchError) as err:
        check_packing(space, z, size)
    msg = str(err.value)
    assert msg.startswith(f"{space.path}: resources: trials do not fit their GPU: ")
    assert "gpus_per_worker 0.25: 4 trial(s) per GPU, 0.50 GiB each of the 2.0 GiB GPU" in msg
    need = estimate(space, z, size)
    assert f"a trial needs about {need.total / GIB:.2f} GiB = 0.50 CUDA context" in msg
    assert "Raise gpus_per_worker (to 0.5" in msg
    # half a GPU each: two trials per GPU, 1 GiB each, which fits
    half = quarter.replace("0.25", "0.5")
    space, z, size = _space(problem, tmp_path, half)
    packing = check_packing(space, z, size)
    assert packing is not None and packing.fits and packing.per_gpu == 2
    assert packing.share == GIB


def test_unknown_gpu_memory_is_said_not_guessed(problem: tuple[Path, Path], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    space, z, size = _space(problem, tmp_path, "resources: {use_gpu: true, gpus_per_worker: "
                                               "0.125, cpus_per_worker: 0.5}")
    packing = check_packing(space, z, size)
    assert packing is not None and packing.fits and packing.per_gpu == 8
    assert "GPU memory unknown (no GPU here: set resources.gpu_memory_gb" in packing.describe()


def test_search_check_shows_the_packing(problem: tuple[Path, Path], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    import ray

    data, zoo = problem
    text = SMOKE.replace(RESOURCES, "resources: {use_gpu: true, gpus_per_worker: 0.5, "
                                    "cpus_per_worker: 0.5, gpu_memory_gb: 80}")

    def check(body: str) -> int:
        return main(["search", str(write_space(tmp_path, body)), "--data", str(data), "--zoo",
                     str(zoo), "--check"])

    # a Ray already running in this process, with two fake GPUs: `--check` asks it
    ray.init(address="local", num_cpus=1, num_gpus=2, include_dashboard=False,
             configure_logging=False)
    try:
        assert check(text) == 0
        out = capsys.readouterr().out
        assert "a trial fits a local Ray: 1 CPU, 2 GPU" in out
        assert "  GPU packing: gpus_per_worker 0.5: 2 trial(s) per GPU, 40.00 GiB each of the " \
               "80.0 GiB GPU; a trial needs about " in out
        assert check(text.replace("gpu_memory_gb: 80", "gpu_memory_gb: 0.5")) == 2
        err = capsys.readouterr().err
        assert "resources: trials do not fit their GPU: gpus_per_worker 0.5: 2 trial(s) per " \
               "GPU, 0.25 GiB each of the 0.5 GiB GPU" in err
    finally:
        ray.shutdown()
