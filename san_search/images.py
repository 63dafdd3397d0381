"""The image conventions every part shares: the colour modes, how a batch of stored images
becomes the float NCHW tensor a network takes (and back), luminance, and the check that a
zoo, a candidate or an ensemble was made for the dataset's colour mode.

Stored images (a dataset's `image` column, the arrays transforms and evaluators pass around)
are (N, S, S) for `gray` and (N, S, S, 3) for `rgb`, uint8 in 0..255 or float in [0, 1].
Networks take float (N, C, S, S) with C = 1 (gray) or 3 (rgb, in R, G, B order).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

COLORS = ("rgb", "gray")
CHANNELS = {"gray": 1, "rgb": 3}
LUMA = (0.299, 0.587, 0.114)  # Y of ITU-R BT.601 (PIL's YCbCr and its "L" conversion)


def check_color(color: str) -> str:
    """`color` if it is a colour mode, else ValueError naming the modes."""
    if color not in CHANNELS:
        raise ValueError(f"colour mode must be one of {', '.join(COLORS)}, got {color!r}")
    return color


def channels(color: str) -> int:
    """Channels of a colour mode: gray 1, rgb 3."""
    return CHANNELS[check_color(color)]


def color_of(info: dict[str, Any]) -> str:
    """The colour mode a dataset.json, zoo entry or manifest records (none recorded: gray,
    what every record written before colour was)."""
    return str(info.get("color") or "gray")


def color_of_images(images: np.ndarray) -> str:
    """The colour mode of a batch of stored images: (N, S, S) gray, (N, S, S, 3) rgb."""
    if images.ndim == 3:
        return "gray"
    if images.ndim == 4 and images.shape[-1] == 3:
        return "rgb"
    raise ValueError(f"images must be (N, S, S) gray or (N, S, S, 3) rgb, got {images.shape}")


def as_float(images: np.ndarray) -> np.ndarray:
    """uint8 or float images -> float32 in [0, 1] (same shape)."""
    if images.dtype == np.uint8:
        return images.astype(np.float32) / 255.0
    return np.asarray(images, dtype=np.float32)


def to_uint8(images: np.ndarray) -> np.ndarray:
    """The 8-bit pixels an image is written as, and identified by (floats are rounded)."""
    if images.dtype == np.uint8:
        return images
    return np.clip(np.rint(np.asarray(images, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)


def to_nchw(images: np.ndarray) -> torch.Tensor:
    """A batch of stored images (gray (N, S, S) or rgb (N, S, S, 3), uint8 or float) ->
    float32 tensor (N, C, S, S) in [0, 1], C = 1 or 3."""
    x = torch.from_numpy(np.ascontiguousarray(as_float(np.asarray(images))))
    if color_of_images(x.numpy()) == "gray":
        return x.unsqueeze(1)
    return x.permute(0, 3, 1, 2).contiguous()


def from_nchw(t: torch.Tensor | np.ndarray) -> np.ndarray:
    """The inverse of `to_nchw` (a tensor or a numpy array): (N, 1, S, S) -> (N, S, S);
    (N, 3, S, S) -> (N, S, S, 3); float32 numpy."""
    if t.ndim != 4 or t.shape[1] not in (1, 3):
        raise ValueError(f"expected (N, 1 or 3, H, W), got {tuple(t.shape)}")
    if isinstance(t, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(t))
    t = t.detach().float().cpu()
    return (t[:, 0] if t.shape[1] == 1 else t.permute(0, 2, 3, 1)).contiguous().numpy()


def luminance(images: np.ndarray) -> np.ndarray:
    """Y = 0.299 R + 0.587 G + 0.114 B of rgb images (..., 3); gray images unchanged."""
    a = np.asarray(images)
    if a.ndim >= 4 and a.shape[-1] == 3:
        return (as_float(a) @ np.asarray(LUMA, np.float32)).astype(np.float32)
    return as_float(a)


def mismatch(what: str, path: Any, color: str, data: Any, data_color: str) -> str:
    """The refusal text for a zoo, candidate or ensemble of another colour mode than the
    dataset, naming both modes and both paths."""
    return (f"{what} {path} was made for {color} images, but the dataset {data} is "
            f"{data_color}; prepare the data with `--color {color}` or use a {what} made for "
            f"{data_color} images")
