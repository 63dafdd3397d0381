"""Where a SAN trains and how its steps compute: the device of a Ray Train worker, and the
candidate's speed options `amp` (bfloat16 autocast), `channels_last` (NHWC memory format for
the convolutions) and `torch_compile` (`torch.compile` of the SAN, for long trials).

The device is CUDA only when Ray gave the worker a GPU *and* torch sees one. Ray's own
`ray.train.torch.get_device()` answers `cuda:N` whenever GPU ids are assigned, even where
torch has no GPU (fake GPU resources, a CPU-only node or build): training would then crash
moving the first tensor. Nothing here touches CUDA unless that device was chosen.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from san_search.config import CandidateConfig

CPU = torch.device("cpu")


def choose_device(train_worker: bool = True) -> torch.device:
    """This Ray process's device: its GPU when Ray assigned it one and
    `torch.cuda.is_available()`, else the CPU. In a Ray Train worker the GPU is the one Ray
    Train numbers for it; in a search trial that trains in its own process
    (`train_worker=False`) it is the first visible one (Ray limits CUDA_VISIBLE_DEVICES to the
    trial's GPUs)."""
    import ray

    if not ray.get_gpu_ids() or not torch.cuda.is_available():
        return CPU
    if not train_worker:
        return torch.device("cuda")
    import ray.train.torch

    return ray.train.torch.get_device()


def autocast(cfg: CandidateConfig, device: torch.device) -> contextlib.AbstractContextManager:
    """bfloat16 autocast on `device` when the candidate asks for it (`amp`), else nothing.
    Works on CPU too (see bench/precision.py for whether it pays there)."""
    if not cfg.amp:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def memory_format(cfg: CandidateConfig) -> torch.memory_format:
    """The layout of a step's image batches and the models' weights."""
    return torch.channels_last if cfg.channels_last else torch.contiguous_format


def place(model: nn.Module, device: torch.device, cfg: CandidateConfig) -> nn.Module:
    """`model` on `device`, in the candidate's memory format (4-D weights only)."""
    return model.to(device).to(memory_format=memory_format(cfg))


def compiled(model: nn.Module, cfg: CandidateConfig) -> nn.Module:
    """`torch.compile(model)` when the candidate asks for it (`torch_compile`): the first
    steps pay a compile of tens of seconds, so it is for long trials. The returned module
    shares its parameters with `model` (save and load the original)."""
    if not cfg.torch_compile:
        return model
    return torch.compile(model)  # type: ignore[return-value]
