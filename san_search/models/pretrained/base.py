"""What every pretrained model shares: its own preprocessing (`Preprocess`) and the wrapper
(`PretrainedNet`) that turns our images — (B, 1 or 3, S, S) in [0, 1], any S — into the
input its network was trained on, differentiably, so that a SAN can train against it.

A converted network (`core`) takes the already-preprocessed (B, 3, size, size) tensor and
returns a raw embedding (matchers) or (B, 2) logits with class 1 = male (gender models).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class Preprocess:
    """One network's input convention.

    size: its input side in pixels; channels: "rgb" or "bgr" order; mean and std in 0-255
    units per channel (in that order); crop: the centred fraction of our face crop it sees
    (1.0 = all of it)."""

    size: int
    channels: str = "rgb"
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (255.0, 255.0, 255.0)
    crop: float = 1.0

    def __post_init__(self) -> None:
        if self.channels not in ("rgb", "bgr"):
            raise ValueError(f"channels must be 'rgb' or 'bgr', not {self.channels!r}")
        if not 0 < self.crop <= 1:
            raise ValueError(f"crop must be in (0, 1], not {self.crop}")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1|3, S, S) in [0, 1] -> (B, 3, size, size) normalised, differentiable."""
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"expected (B, 1 or 3, H, W) images, got {tuple(x.shape)}")
        if self.crop < 1:
            h, w = x.shape[-2:]
            ch, cw = max(1, round(h * self.crop)), max(1, round(w * self.crop))
            top, left = (h - ch) // 2, (w - cw) // 2
            x = x[..., top : top + ch, left : left + cw]
        if x.shape[-2:] != (self.size, self.size):
            shrink = x.shape[-1] > self.size
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear",
                              align_corners=False, antialias=shrink)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        elif self.channels == "bgr":
            x = x.flip(1)
        mean = x.new_tensor(self.mean).view(1, 3, 1, 1)
        std = x.new_tensor(self.std).view(1, 3, 1, 1)
        return (x * 255.0 - mean) / std


class PretrainedNet(nn.Module):
    """A converted pretrained network behind its own preprocessing. Matchers return unit
    (B, D) embeddings; gender models return (B, 2) logits, class 1 = male."""

    def __init__(self, core: nn.Module, preprocess: Preprocess, kind: str) -> None:
        super().__init__()
        if kind not in ("matcher", "gender"):
            raise ValueError(f"kind must be 'matcher' or 'gender', not {kind!r}")
        self.core = core
        self.preprocess = preprocess
        self.kind = kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.core(self.preprocess(x))
        return F.normalize(out, dim=1) if self.kind == "matcher" else out
