"""The input conventions the gender classifiers and the face matchers share: how images in
[0, 1] are normalised before a network sees them, and the smallest input size of an
ImageNet-style backbone."""

from __future__ import annotations

import torch

# ImageNet architectures downsample 32x: a 32 px face would end as a 1x1 map. Inputs smaller
# than this are upsampled first (bilinear), trading compute for a usable feature map.
MIN_INPUT = 64


def normalise(x: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] centred and scaled: (x - 0.5) / 0.25."""
    return (x - 0.5) / 0.25
