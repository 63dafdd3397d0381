"""Face matchers: timm backbones (`channels` inputs: 1 gray, 3 rgb) with an L2-normalised
embedding head, trained with a margin softmax (CosFace) over the train identities. `forward`
returns (B, D) unit vectors; the similarity of two faces is the dot product of their
embeddings."""

from __future__ import annotations

from typing import Any

import timm
import torch
import torch.nn.functional as F
from torch import nn

from san_search.models.inputs import MIN_INPUT, normalise
from san_search.models.registry import register


class TimmMatcher(nn.Module):
    """timm backbone (no classifier) -> linear -> batch norm -> L2-normalised embedding."""

    def __init__(self, arch: str, image_size: int, embed_dim: int = 128,
                 min_input: int = MIN_INPUT, channels: int = 1, **timm_kwargs: Any) -> None:
        super().__init__()
        self.arch = arch
        self.embed_dim = embed_dim
        self.input_size = max(image_size, min_input)
        self.body = timm.create_model(arch, pretrained=False, in_chans=channels, num_classes=0,
                                      **timm_kwargs)
        # timm's pooled feature width is not always `num_features` (MobileNetV3, GhostNet add
        # a head layer): measure it.
        self.body.eval()
        with torch.no_grad():
            width = self.body(torch.zeros(2, channels, self.input_size, self.input_size)).shape[1]
        self.body.train()
        self.embed = nn.Sequential(nn.Linear(width, embed_dim),
                                   nn.BatchNorm1d(embed_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear",
                              align_corners=False)
        return F.normalize(self.embed(self.body(normalise(x))), dim=1)


class CosFace(nn.Module):
    """Large-margin cosine loss (CosFace): logits s*(cos θ_j - m·[j = y]) over class centres."""

    def __init__(self, embed_dim: int, n_classes: int, scale: float = 30.0,
                 margin: float = 0.35) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_classes, embed_dim) * 0.01)
        self.scale, self.margin = scale, margin

    def forward(self, emb: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cos = emb @ F.normalize(self.weight, dim=1).T  # (B, n_classes)
        onehot = F.one_hot(labels, cos.shape[1]).to(cos.dtype)
        return F.cross_entropy(self.scale * (cos - self.margin * onehot), labels)


@register("matcher")
def resnet10t(image_size: int = 64, embed_dim: int = 128,
        channels: int = 1) -> nn.Module:
    return TimmMatcher("resnet10t", image_size, embed_dim, channels=channels)


@register("matcher")
def regnetx_002(image_size: int = 64, embed_dim: int = 128,
        channels: int = 1) -> nn.Module:
    return TimmMatcher("regnetx_002", image_size, embed_dim, channels=channels)


@register("matcher")
def mobilenetv3_small_100(image_size: int = 64, embed_dim: int = 128,
        channels: int = 1) -> nn.Module:
    return TimmMatcher("mobilenetv3_small_100", image_size, embed_dim, channels=channels)


@register("matcher")
def ghostnet_100(image_size: int = 64, embed_dim: int = 128,
        channels: int = 1) -> nn.Module:
    return TimmMatcher("ghostnet_100", image_size, embed_dim, channels=channels)


@register("matcher")
def convnext_atto(image_size: int = 64, embed_dim: int = 128,
        channels: int = 1) -> nn.Module:
    return TimmMatcher("convnext_atto", image_size, embed_dim, channels=channels)
