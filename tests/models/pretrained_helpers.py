"""What the pretrained converter tests share: the installed source file of a converter module
(found and SHA-256-checked by `pretrained.locate`, the test skipped when it is not there),
real LFW faces cropped as `data prepare` crops them, and the check that a converted matcher
agrees with the original on them."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from PIL import Image

from san_search.data.preprocess import crop_square
from san_search.models import pretrained
from san_search.models.pretrained.base import PretrainedNet

LFW_CROP = 0.5  # `data prepare`'s LFW default: the centred half of the 250 px image


def source_of(module_name: str) -> pretrained.Source:
    """The one `SOURCES` entry converted by `san_search.models.pretrained.<module_name>`."""
    (src,) = [s for s in pretrained.SOURCES.values() if s.module == module_name]
    return src


def source_file(module_name: str) -> Path:
    """The checked source file of converter `module_name`; skips the test only when its
    package is not installed (a missing file or another SHA-256 fails it)."""
    src = source_of(module_name)
    try:
        importlib.metadata.distribution(src.package)
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(f"{src.package} is not installed (pip install {src.pip})")
    return pretrained.locate(src)


def lfw_face(lfw_root: Path, rel: str) -> torch.Tensor:
    """(3, S, S) RGB in [0, 1]: the centred square crop of side LFW_CROP * the shorter side of
    the LFW image `rel` (relative to lfw-deepfunneled/)."""
    with Image.open(lfw_root / "lfw-deepfunneled" / rel) as img:
        rgb = img.convert("RGB")
    w, h = rgb.size
    face = crop_square(rgb, w / 2.0, h / 2.0, LFW_CROP * min(w, h))
    return torch.from_numpy(np.asarray(face, dtype=np.float32) / 255.0).permute(2, 0, 1)


def lfw_faces(lfw_root: Path, n: int) -> torch.Tensor:
    """(n, 3, S, S): `lfw_face` of the first image of each of the first `n` people."""
    images = lfw_root / "lfw-deepfunneled"
    people = sorted(d for d in images.iterdir() if d.is_dir())[:n]
    rels = [sorted(p.glob("*.jpg"))[0].relative_to(images).as_posix() for p in people]
    return torch.stack([lfw_face(lfw_root, rel) for rel in rels]).contiguous()


def assert_agrees_on_lfw(converter: ModuleType, source: Path, lfw_root: Path, side: int,
                        dim: int, n: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Run the first `n` LFW faces (`lfw_faces`, preprocessed to (n, 3, side, side)) through
    the converted core of `converter` (strictly loaded, eval mode) and through its `reference`
    run of the original file; assert both give (n, dim) embeddings pointing the same way
    (cosine >= 0.999) and that different faces' embeddings differ (cosine < 0.9: the agreement
    is not two constant outputs). Returns (ours, theirs) for further checks."""
    core = converter.build_core()
    core.load_state_dict(converter.convert(source), strict=True)
    core.eval()
    x = converter.PREPROCESS(lfw_faces(lfw_root, n))
    assert x.shape == (n, 3, side, side)
    with torch.no_grad():
        ours = core(x).numpy()
    theirs = converter.reference(source, x.numpy())
    assert ours.shape == theirs.shape == (n, dim)
    cos = (ours * theirs).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1))
    assert cos.min() >= 0.999, cos
    unit = ours / np.linalg.norm(ours, axis=1, keepdims=True)
    off_diagonal = (unit @ unit.T)[~np.eye(n, dtype=bool)]
    assert off_diagonal.max() < 0.9
    return ours, theirs


def assert_gradient_reaches_input(converter: ModuleType, dim: int) -> None:
    """The matcher of `converter` (random weights, behind its `PretrainedNet` wrapper) turns a
    batch of two gray 32 px images into unit (2, dim) embeddings, and the gradient of a few
    outputs reaches every image of the input, finite."""
    torch.manual_seed(0)
    model = PretrainedNet(converter.build_core(), converter.PREPROCESS, "matcher")
    x = torch.rand(2, 1, 32, 32, requires_grad=True)
    out = model(x)
    assert out.shape == (2, dim)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(2), atol=1e-5, rtol=1.3e-6)
    out[:, :8].sum().backward()
    assert x.grad is not None and x.grad.shape == (2, 1, 32, 32)
    assert torch.isfinite(x.grad).all()
    assert (x.grad.flatten(1).abs().sum(1) > 0).all()
