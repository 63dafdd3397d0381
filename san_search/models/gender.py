"""Gender classifiers: the ICB 2018 auxiliary CNN (`paper_cnn`) and timm architectures with
`channels` input channels (1 gray, 3 rgb) and two classes. All take (B, C, H, W) in [0, 1] and
return (B, 2) logits, class 1 = male."""

from __future__ import annotations

from typing import Any

import timm
import torch
import torch.nn.functional as F
from torch import nn

from san_search.models.inputs import MIN_INPUT, normalise
from san_search.models.registry import register


class PaperCNN(nn.Module):
    """The ICB 2018 auxiliary gender CNN, made size-agnostic with global average pooling."""

    def __init__(self, widths: tuple[int, ...] = (32, 64, 128), dropout: float = 0.3,
                 channels: int = 1) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = channels
        for c in widths:
            layers += [nn.Conv2d(cin, c, 3, padding=1), nn.BatchNorm2d(c), nn.LeakyReLU(0.2),
                       nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.LeakyReLU(0.2),
                       nn.MaxPool2d(2)]
            cin = c
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
                                  nn.Linear(cin, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(normalise(x)))


class TimmClassifier(nn.Module):
    """A timm backbone with `channels` inputs and two classes, upsampling small inputs."""

    def __init__(self, arch: str, image_size: int, min_input: int = MIN_INPUT,
                 channels: int = 1, **timm_kwargs: Any) -> None:
        super().__init__()
        self.arch = arch
        self.input_size = max(image_size, min_input)
        self.body = timm.create_model(arch, pretrained=False, in_chans=channels, num_classes=2,
                                      **timm_kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear",
                              align_corners=False)
        out: torch.Tensor = self.body(normalise(x))
        return out


@register("gender")
def paper_cnn(image_size: int = 64, channels: int = 1) -> nn.Module:
    return PaperCNN(channels=channels)


@register("gender")
def paper_cnn_wide(image_size: int = 64, channels: int = 1) -> nn.Module:
    """The paper CNN at 1.5x width (48/96/192): a second, stronger CNN-family judge."""
    return PaperCNN(widths=(48, 96, 192), channels=channels)


@register("gender")
def resnet10t(image_size: int = 64, channels: int = 1) -> nn.Module:
    return TimmClassifier("resnet10t", image_size, channels=channels)


@register("gender")
def mobilenetv3_small_100(image_size: int = 64, channels: int = 1) -> nn.Module:
    return TimmClassifier("mobilenetv3_small_100", image_size, channels=channels)


@register("gender")
def efficientnet_b0(image_size: int = 64, channels: int = 1) -> nn.Module:
    return TimmClassifier("efficientnet_b0", image_size, channels=channels)


@register("gender")
def convnext_atto(image_size: int = 64, channels: int = 1) -> nn.Module:
    return TimmClassifier("convnext_atto", image_size, channels=channels)


@register("gender")
def regnetx_002(image_size: int = 64, channels: int = 1) -> nn.Module:
    return TimmClassifier("regnetx_002", image_size, channels=channels)


@register("gender")
def ghostnet_100(image_size: int = 64, channels: int = 1) -> nn.Module:
    return TimmClassifier("ghostnet_100", image_size, channels=channels)


@register("gender")
def hgnetv2_b0(image_size: int = 64, channels: int = 1) -> nn.Module:
    return TimmClassifier("hgnetv2_b0", image_size, channels=channels)


@register("gender")
def vit_tiny(image_size: int = 64, channels: int = 1) -> nn.Module:
    """A tiny ViT at the image's own size: patches of size/4, so 16 tokens."""
    patch = max(2, image_size // 4)
    return TimmClassifier("vit_tiny_patch16_224", image_size, min_input=image_size,
                          channels=channels, img_size=image_size, patch_size=patch)
