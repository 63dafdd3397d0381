"""The device a Train worker picks and the candidate's speed options (`amp`, `channels_last`,
`torch_compile`), on the CPU: nothing here needs or touches a GPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from san_search.config import CandidateConfig
from san_search.training import device
from san_search.training.trainer import SanTrainer
from tests.helpers import tiny_candidate


@pytest.mark.parametrize(("gpu_ids", "cuda", "expected"), [
    ([], False, "cpu"),
    (["0"], False, "cpu"),  # fake GPU resources, or a CPU-only node: never cuda
    ([], True, "cpu"),  # a GPU in the machine, but Ray gave this worker none
    (["1"], True, "cuda:0"),  # as Ray Train numbers the worker's GPU
])
def test_cuda_only_when_ray_gave_a_gpu_and_torch_sees_one(
        monkeypatch: pytest.MonkeyPatch, gpu_ids: list[str], cuda: bool, expected: str) -> None:
    import ray
    import ray.train.torch

    monkeypatch.setattr(ray, "get_gpu_ids", lambda: gpu_ids)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    # Ray's own answer is cuda whenever GPU ids are assigned, whether or not torch sees one
    monkeypatch.setattr(ray.train.torch, "get_device", lambda: torch.device("cuda:0"))
    assert device.choose_device() == torch.device(expected)


def test_autocast_is_bf16_on_the_cpu_only_when_asked() -> None:
    cpu = torch.device("cpu")
    with device.autocast(CandidateConfig(amp=True), cpu):
        assert torch.is_autocast_enabled("cpu")
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16
        assert (torch.ones(4, 4) @ torch.ones(4, 4)).dtype == torch.bfloat16
    with device.autocast(CandidateConfig(amp=False), cpu):
        assert not torch.is_autocast_enabled("cpu")


def _nhwc_differs(p: torch.Tensor) -> bool:
    """A 4-D weight whose two memory formats differ (not 1 channel, not 1x1)."""
    return p.dim() == 4 and p.shape[1] > 1 and p.shape[-1] > 1


@pytest.mark.parametrize(("amp", "channels_last"), [(True, True), (True, False), (False, True)])
def test_speed_options_train_on_the_cpu(problem: tuple[Path, Path], amp: bool,
                                        channels_last: bool) -> None:
    data, zoo = problem
    cfg = tiny_candidate(amp=amp, channels_last=channels_last, epochs=1)
    t = SanTrainer(cfg, data, zoo)
    conv = next(p for p in t.model.parameters() if _nhwc_differs(p))
    assert conv.is_contiguous(memory_format=torch.channels_last) == channels_last
    frozen = next(p for p in t.matcher.parameters() if _nhwc_differs(p))
    assert frozen.is_contiguous(memory_format=torch.channels_last) == channels_last
    before = conv.detach().clone()
    metrics = t.train_epoch()
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
    assert not torch.equal(before, conv.detach())  # it trained
    assert conv.dtype == torch.float32  # autocast computes in bf16, the weights stay fp32
    assert 0 <= t.evaluate()["val_ssim"] <= 1
    assert all(p.device.type == "cpu" for p in t.model.parameters())


@pytest.mark.slow
def test_torch_compile_trains_the_same_parameters(problem: tuple[Path, Path],
                                                  tmp_path: Path) -> None:
    data, zoo = problem
    t = SanTrainer(tiny_candidate(torch_compile=True, epochs=1, images_per_epoch=32), data, zoo)
    assert t.net is not t.model
    before = [p.detach().clone() for p in t.model.parameters()]
    t.train_epoch()
    assert any(not torch.equal(b, p) for b, p in zip(before, t.model.parameters(), strict=True))
    t.save(tmp_path)  # the plain module's state dict: loads without compile
    plain = SanTrainer(tiny_candidate(epochs=1, images_per_epoch=32), data, zoo)
    plain.load(tmp_path)
    for a, b in zip(plain.model.parameters(), t.model.parameters(), strict=True):
        assert torch.equal(a, b)
