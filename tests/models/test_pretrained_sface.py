"""SFace converted to PyTorch: the converted core agrees with onnxruntime on real LFW faces,
gradients reach the input through the wrapper, and convert refuses files that are not SFace."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from san_search.models.pretrained import sface
from san_search.models.pretrained.base import PretrainedNet

LFW_CROP = 0.5  # `data prepare`'s LFW default: the centred half of the 250 px image


def _package_file(name: str) -> Path:
    spec = importlib.util.find_spec(sface.PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"package {sface.PACKAGE} is not installed")
    path = Path(list(spec.submodule_search_locations)[0]) / name
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path


@pytest.fixture(scope="module")
def source() -> Path:
    return _package_file(sface.SOURCE_FILE)


def _lfw_faces(lfw_root: Path, n: int) -> torch.Tensor:
    """The first image of the first `n` people: centre crop LFW_CROP, RGB in [0, 1]."""
    people = sorted(d for d in (lfw_root / "lfw-deepfunneled").iterdir() if d.is_dir())[:n]
    faces = []
    for person in people:
        img = Image.open(sorted(person.glob("*.jpg"))[0]).convert("RGB")
        side = round(min(img.size) * LFW_CROP)
        left, top = (img.width - side) // 2, (img.height - side) // 2
        faces.append(np.asarray(img.crop((left, top, left + side, top + side)), np.float32))
    return torch.from_numpy(np.stack(faces) / 255.0).permute(0, 3, 1, 2).contiguous()


@pytest.mark.slow
def test_converted_core_agrees_with_onnxruntime_on_lfw(lfw_root: Path, source: Path) -> None:
    core = sface.build_core()
    core.load_state_dict(sface.convert(source), strict=True)
    core.eval()
    x = sface.PREPROCESS(_lfw_faces(lfw_root, 16))
    assert x.shape == (16, 3, 112, 112)
    with torch.no_grad():
        ours = core(x).numpy()
    theirs = sface.reference(source, x.numpy())
    assert ours.shape == theirs.shape == (16, 128)
    cos = (ours * theirs).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1))
    assert cos.min() >= 0.999, cos
    # Different people's embeddings differ: the agreement is not two constant outputs.
    unit = ours / np.linalg.norm(ours, axis=1, keepdims=True)
    off_diagonal = (unit @ unit.T)[~np.eye(16, dtype=bool)]
    assert off_diagonal.max() < 0.9


def test_convert_reads_the_graphs_input_normalisation(source: Path) -> None:
    sd = sface.convert(source)
    assert all(v.dtype == torch.float32 for v in sd.values() if v.is_floating_point())
    assert float(sd["input_shift"]) == 127.5
    assert float(sd["input_scale"]) == 1 / 128
    assert sd["fc.weight"].shape == (128, 1024 * 7 * 7)
    # Dequantised weights are not all equal to the random initialisation of build_core.
    assert not torch.equal(sd["units.0.conv.weight"],
                           sface.build_core().state_dict()["units.0.conv.weight"])


def test_gradient_reaches_the_input_through_the_wrapper() -> None:
    torch.manual_seed(0)
    model = PretrainedNet(sface.build_core(), sface.PREPROCESS, "matcher")
    x = torch.rand(2, 1, 32, 32, requires_grad=True)
    out = model(x)
    assert out.shape == (2, 128)
    assert torch.allclose(out.norm(dim=1), torch.ones(2), atol=1e-5)
    out[:, :8].sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert (x.grad.flatten(1).abs().sum(1) > 0).all()


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("batch", [1, 3])
def test_core_takes_any_batch_in_train_and_eval(train: bool, batch: int) -> None:
    core = sface.build_core().train(train)
    out = core(torch.rand(batch, 3, 112, 112) * 255)
    assert out.shape == (batch, 128)
    assert torch.isfinite(out).all()


def test_core_refuses_another_input_size() -> None:
    with pytest.raises(ValueError, match=r"\(B, 3, 112, 112\).*\(2, 3, 96, 96\)"):
        sface.build_core()(torch.rand(2, 3, 96, 96))


def test_convert_refuses_a_file_that_is_not_onnx(tmp_path: Path) -> None:
    bogus = tmp_path / "not_a_model.onnx"
    bogus.write_bytes(b"this is not a protobuf \xff\xfe" * 10)
    with pytest.raises(ValueError, match="not_a_model.onnx") as err:
        sface.convert(bogus)
    assert "not an ONNX model" in str(err.value)


def test_convert_refuses_another_onnx_model() -> None:
    detector = _package_file("models/face_detection_yunet_2023mar_int8bq.onnx")
    with pytest.raises(ValueError, match="face_detection_yunet_2023mar_int8bq.onnx") as err:
        sface.convert(detector)
    assert "not the SFace model" in str(err.value)


def test_convert_refuses_sface_weights_in_another_layout(source: Path, tmp_path: Path) -> None:
    import onnx

    model = onnx.load(str(source))
    conv = next(n for n in model.graph.node
                if n.op_type == "Conv" and n.input[1].startswith("conv_3_dw_"))
    strides = next(a for a in conv.attribute if a.name == "strides")
    del strides.ints[:]
    strides.ints.extend([1, 1])
    altered = tmp_path / "sface_stride1.onnx"
    onnx.save(model, str(altered))
    with pytest.raises(ValueError, match=r"sface_stride1.onnx.*'conv_3_dw'.*\(1, 64\).*\(2, 64\)"):
        sface.convert(altered)
