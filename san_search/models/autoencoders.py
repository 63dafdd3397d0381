"""SAN autoencoders: the ICB 2018 architecture (`san_paper`) and a configurable family
(`san_conv`: depth, width, optional skip connections).

Every autoencoder takes an image and two prototypes and returns two outputs:
``forward(x, proto_same, proto_opp) -> (out_same, out_opp)``, all (B, C, H, W) in [0, 1],
C = `channels` (1 gray, 3 rgb: input and output follow the dataset). The decoder runs once; a
1x1 "prototype combiner" mixes its features with each prototype, per channel: output channel
c sees the decoder features and channel c of the prototype only. The opposite-prototype
output is the privacy-enhanced image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from san_search.errors import ImageSizeError
from san_search.models.registry import register


def check_divisible(size: int, depth: int, name: str) -> None:
    step = 2**depth
    if size <= 0 or size % step:
        ok = ", ".join(str(step * k) for k in range(1, 6) if step * k >= 16) + ", ..."
        raise ImageSizeError(
            f"{name} with depth {depth} needs an image size divisible by {step}; got {size} "
            f"(sizes that work: {ok})"
        )


class SanAutoencoder(nn.Module):
    """Encoder over [image, same-gender prototype], decoder, and the prototype combiner."""

    def __init__(
        self,
        enc_channels: tuple[int, ...],
        dec_channels: tuple[int, ...],
        *,
        skip: bool = False,
        up_first: bool = False,
        image_size: int | None = None,
        channels: int = 1,
        name: str = "san",
        residual: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0 <= residual <= 1:
            raise ValueError(f"{name}: residual must be in [0, 1], got {residual}")
        # 0: the output is the combiner's image (sigmoid); > 0: x + residual * tanh(...)
        self.residual = float(residual)
        if len(enc_channels) != len(dec_channels):
            raise ValueError("encoder and decoder need the same number of levels")
        self.depth = len(enc_channels)
        self.name = name
        self.skip = skip
        if channels not in (1, 3):
            raise ValueError(f"{name}: channels must be 1 (gray) or 3 (rgb), got {channels}")
        self.channels = channels
        # up_first: upsample, then convolve (U-Net order), so the last convolution sees the
        # full resolution; otherwise convolve then upsample (the ICB 2018 order).
        self.up_first = up_first
        if image_size is not None:
            check_divisible(image_size, self.depth, name)
        self.enc = nn.ModuleList()
        cin = 2 * channels  # image + same-gender prototype
        for c in enc_channels:
            self.enc.append(nn.Sequential(nn.Conv2d(cin, c, 3, padding=1), nn.LeakyReLU(0.2)))
            cin = c
        self.pool = nn.AvgPool2d(2)
        self.dec = nn.ModuleList()
        skips = list(reversed(enc_channels))
        for i, c in enumerate(dec_channels):
            extra = skips[i] if skip else 0
            self.dec.append(nn.Sequential(nn.Conv2d(cin + extra, c, 3, padding=1),
                                          nn.LeakyReLU(0.2)))
            cin = c
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        # (decoder features, prototype) -> image; the mask keeps it per channel (gray: all 1)
        self.combiner = nn.Conv2d(cin + channels, channels, 1)
        mask = torch.ones(channels, cin + channels, 1, 1)
        mask[:, cin:] = torch.eye(channels).view(channels, channels, 1, 1)
        self.register_buffer("combiner_mask", mask, persistent=False)

    def decode(self, x: torch.Tensor, proto_same: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 2**self.depth or x.shape[-2] % 2**self.depth:
            check_divisible(int(x.shape[-1]), self.depth, self.name)
        h = torch.cat([x, proto_same], dim=1)  # (B, 2C, H, W)
        feats = []
        for block in self.enc:
            h = block(h)
            feats.append(h)
            h = self.pool(h)
        for block in self.dec:
            if self.up_first:
                h = self.up(h)
                if self.skip:  # the encoder features of this resolution
                    h = torch.cat([h, feats.pop()], dim=1)
                h = block(h)
            else:
                if self.skip:
                    h = torch.cat([h, self.pool(feats.pop())], dim=1)
                h = self.up(block(h))
        return h  # (B, C, H, W)

    def combine(self, feats: torch.Tensor, proto: torch.Tensor, x: torch.Tensor
                ) -> torch.Tensor:
        mask: torch.Tensor = self.combiner_mask  # type: ignore[assignment]
        weight = self.combiner.weight * mask
        z = F.conv2d(torch.cat([feats, proto], dim=1), weight, self.combiner.bias)
        if self.residual:
            return torch.clamp(x + self.residual * torch.tanh(z), 0.0, 1.0)
        return torch.sigmoid(z)

    def forward(
        self, x: torch.Tensor, proto_same: torch.Tensor, proto_opp: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.decode(x, proto_same)
        return self.combine(feats, proto_same, x), self.combine(feats, proto_opp, x)


@register("autoencoder")
def san_paper(image_size: int | None = None, channels: int = 1) -> SanAutoencoder:
    """ICB 2018 SAN: encoder conv 8, conv 12 with average pooling; decoder conv 256, conv 128
    with 2x upsampling; 1x1 prototype combiner with a sigmoid."""
    return SanAutoencoder((8, 12), (256, 128), image_size=image_size, channels=channels,
                          name="san_paper")


@register("autoencoder")
def san_conv(
    depth: int = 2, width: int = 16, skip: bool = False, image_size: int | None = None,
    channels: int = 1, residual: float = 0.0,
) -> SanAutoencoder:
    """Configurable SAN: `depth` levels (1-5); encoder widths width*2^i (capped at 8*width),
    decoder the mirror image in U-Net order (upsample, then convolve at full resolution);
    `skip` adds U-Net connections from the encoder (sharper reconstructions); `residual` > 0
    makes each output the input plus a change bounded by it (x + residual * tanh(...))."""
    if not 1 <= depth <= 5:
        raise ImageSizeError(f"san_conv depth must be 1 to 5, got {depth}")
    if width < 1:
        raise ValueError(f"san_conv width must be positive, got {width}")
    enc = tuple(min(width * 2**i, width * 8) for i in range(depth))
    dec = tuple(reversed(enc))
    return SanAutoencoder(enc, dec, skip=skip, up_first=True, image_size=image_size,
                          channels=channels, name="san_conv", residual=residual)
