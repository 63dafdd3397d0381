"""Several trials per GPU: the GPU memory one trial of a search space may need, and the check
that refuses a packing (`resources.gpus_per_worker` below 1) whose trials cannot all fit in
the GPU they share.

Ray shares a GPU by count only (four workers at 0.25 GPU each), never by memory, so a
packing that does not fit fails later, as CUDA out-of-memory errors in trials. The estimate
is for the space's largest trial: the largest SAN its parameters allow (every autoencoder,
depth and width choice), the aux gender classifiers whose activations weigh most (as many
as a subset may hold), the heaviest aux matcher and the largest batch size. Per trial:

    CUDA context + HEADROOM x (weights + batch_size x activations per image)

weights: the SAN's weights with their gradients and Adam's two moments (4x), the frozen aux
models, and the val pool (trials score it on their GPU); activations: the bytes of every
layer output of one image's forward pass through the SAN, then its two outputs through each
aux classifier and the matcher (what autograd keeps for the backward pass), in float32 (bf16
autocast halves much of it: the estimate is on the safe side). Measured on the CPU at batch
1, so it runs without a GPU.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from san_search.errors import SearchError

if TYPE_CHECKING:
    from san_search.config import CandidateConfig
    from san_search.search.space import SearchSpace
    from san_search.zoo.store import Zoo

GIB = 1024 ** 3
MIB = 1024 ** 2
CUDA_CONTEXT = 512 * MIB  # per worker process: the CUDA context, cuBLAS/cuDNN handles
HEADROOM = 1.25  # the caching allocator's fragmentation, cuDNN workspaces, transient grads
ARCH_KEYS = ("autoencoder", "depth", "width", "skip")  # the settings that size the SAN
INPUT_CHANNELS = 1  # grayscale faces


@dataclass(frozen=True)
class TrialMemory:
    """The GPU memory of a space's largest trial, in bytes."""

    image_size: int
    batch_size: int
    san: str  # the largest SAN, like "san_conv depth 3 width 32"
    weights: int
    activations: int  # per image

    @property
    def total(self) -> int:
        return int(CUDA_CONTEXT + HEADROOM * (self.weights + self.batch_size * self.activations))

    def describe(self) -> str:
        return (f"{self.total / GIB:.2f} GiB = {CUDA_CONTEXT / GIB:.2f} CUDA context + "
                f"{HEADROOM:g} x ({self.weights / MIB:.0f} MiB weights + batch "
                f"{self.batch_size} x {self.activations / MIB:.2f} MiB activations per "
                f"{self.image_size} px image; largest SAN {self.san})")


@dataclass(frozen=True)
class Packing:
    """How trials share a GPU: `per_gpu` workers of `gpus_per_worker` each, and whether
    the largest trial fits in its share of `gpu_memory` (bytes; 0 = unknown)."""

    gpus_per_worker: float
    gpu_memory: int
    need: TrialMemory

    @property
    def per_gpu(self) -> int:
        """Workers Ray may put on one GPU."""
        return max(1, math.floor(1 / self.gpus_per_worker + 1e-9))

    @property
    def share(self) -> int:
        """Bytes of GPU memory each of them may use (0 = unknown)."""
        return self.gpu_memory // self.per_gpu

    @property
    def fits(self) -> bool:
        return not self.gpu_memory or self.need.total <= self.share

    def describe(self) -> str:
        head = (f"gpus_per_worker {self.gpus_per_worker:g}: {self.per_gpu} trial(s) per GPU")
        if not self.gpu_memory:
            return (f"{head}; GPU memory unknown (no GPU here: set resources.gpu_memory_gb to "
                    f"check the packing); a trial needs about {self.need.describe()}")
        return (f"{head}, {self.share / GIB:.2f} GiB each of the {self.gpu_memory / GIB:.1f} "
                f"GiB GPU; a trial needs about {self.need.describe()}")


def gpu_memory(space: SearchSpace) -> int:
    """The memory of the GPUs trials run on, in bytes: `resources.gpu_memory_gb`, else the
    first GPU torch sees here, else 0 (unknown)."""
    if space.resources.gpu_memory_gb:
        return int(space.resources.gpu_memory_gb * GIB)
    if torch.cuda.is_available():
        return int(torch.cuda.get_device_properties(0).total_memory)
    return 0


def plan(space: SearchSpace, zoo: Zoo, image_size: int) -> Packing | None:
    """The packing of a bound space's trials (None when they use no GPU)."""
    if not space.resources.use_gpu:
        return None
    return Packing(space.resources.gpus_per_worker, gpu_memory(space),
                   estimate(space, zoo, image_size))


def check_packing(space: SearchSpace, zoo: Zoo, image_size: int) -> Packing | None:
    """`plan`, refusing a packing whose largest trial does not fit its share of the GPU."""
    packing = plan(space, zoo, image_size)
    if packing is not None and not packing.fits:
        fewer = 1 / max(1, packing.per_gpu // 2)
        raise SearchError(
            f"{space.path}: resources: trials do not fit their GPU: {packing.describe()}. "
            f"Raise gpus_per_worker (to {fewer:g}: fewer trials per GPU) or lower the batch "
            "size or the SAN's width")
    return packing


# ------------------------------------------------------------------ the estimate

def estimate(space: SearchSpace, zoo: Zoo, image_size: int) -> TrialMemory:
    """The GPU memory of the largest trial of a bound space (see the module's note)."""
    from san_search.models import create

    sans = []
    for cfg in _san_candidates(space):
        san = create("autoencoder", cfg.autoencoder, image_size=image_size,
                     **cfg.autoencoder_kwargs())
        label = " ".join([cfg.autoencoder, *(f"{k} {v}" for k, v in
                                             cfg.autoencoder_kwargs().items())])
        sans.append((_san_activations(san, image_size), _bytes(san), label))
    san_act, san_weights, label = max(sans)
    genders, size = _choices(space, "aux_gender")
    gender_load = sorted((_load(zoo.load(n), image_size) for n in genders), reverse=True)
    matchers, _ = _choices(space, "aux_matcher")
    matcher_load = max(_load(zoo.load(n), image_size) for n in matchers)
    val = sum(_bytes(zoo.load(n)) for kind in ("gender", "matcher")
              for n in zoo.names(kind, "val"))
    gender_load = gender_load[:size]  # the heaviest that one trial may train against
    weights = (4 * max(s[1] for s in sans) + sum(w for _, w in gender_load) + matcher_load[1]
               + val)
    activations = san_act + sum(a for a, _ in gender_load) + matcher_load[0]
    return TrialMemory(image_size, _largest_batch(space), label, weights, activations)


def _san_candidates(space: SearchSpace) -> list[CandidateConfig]:
    """One candidate per combination of the SAN-shaping values the space allows."""
    params = {p.name: p for p in space.parameters if p.name in ARCH_KEYS}
    grids = [[(name, v) for v in p.values()] for name, p in params.items()]
    return [space.candidate(dict(combo)) for combo in itertools.product(*grids)]


def _choices(space: SearchSpace, key: str) -> tuple[list[str], int]:
    """The zoo names a trial may use for `key`, and how many at once."""
    for p in space.parameters:
        if p.name == key:
            return list(p.choices), (p.max_size or len(p.choices)) if p.type == "subset" else 1
    value = getattr(space.candidate({}), key)
    names = [value] if isinstance(value, str) else list(value)
    return names, len(names)


def _largest_batch(space: SearchSpace) -> int:
    for p in space.parameters:
        if p.name == "batch_size":
            return int(max(p.values()))
    return space.candidate({}).batch_size


def _load(model: nn.Module, image_size: int) -> tuple[int, int]:
    """(activations, weights) of a frozen aux model: it sees the SAN's two outputs."""
    return 2 * _activations(model, image_size), _bytes(model)


def _bytes(model: nn.Module) -> int:
    return sum(t.numel() * t.element_size()
               for t in itertools.chain(model.parameters(), model.buffers()))


@contextmanager
def _counting(model: nn.Module) -> Iterator[list[int]]:
    """Sums the bytes of every leaf module's tensor output while the block runs."""
    total = [0]

    def hook(_m: nn.Module, _i: Any, out: Any) -> None:
        for t in (out if isinstance(out, (tuple, list)) else (out,)):
            if torch.is_tensor(t):
                total[0] += t.numel() * t.element_size()

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if not list(m.children())]
    try:
        yield total
    finally:
        for h in handles:
            h.remove()


def _activations(model: nn.Module, image_size: int) -> int:
    """Bytes of the layer outputs of one image's forward pass."""
    x = torch.rand(1, INPUT_CHANNELS, image_size, image_size)
    with _counting(model.eval()) as total, torch.no_grad():
        model(x)
    return total[0] + x.numel() * x.element_size()


def _san_activations(san: nn.Module, image_size: int) -> int:
    x = torch.rand(1, INPUT_CHANNELS, image_size, image_size)
    with _counting(san.train()) as total, torch.no_grad():
        san(x, x, x)
    return total[0]
