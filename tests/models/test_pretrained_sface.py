"""SFace converted to PyTorch: the converted core agrees with onnxruntime on real LFW faces,
gradients reach the input through the wrapper, and convert refuses files that are not SFace."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from san_search.models.pretrained import sface
from tests.models.pretrained_helpers import (
    assert_agrees_on_lfw,
    assert_gradient_reaches_input,
    source_file,
)

YUNET = "face_detection_yunet_2023mar_int8bq.onnx"  # another model shipped beside SFace


@pytest.fixture(scope="module")
def source() -> Path:
    return source_file("sface")


@pytest.mark.slow
def test_converted_core_agrees_with_onnxruntime_on_lfw(lfw_root: Path, source: Path) -> None:
    assert_agrees_on_lfw(sface, source, lfw_root, side=112, dim=128)


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
    assert_gradient_reaches_input(sface, dim=128)


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


def test_convert_refuses_another_onnx_model(source: Path) -> None:
    detector = source.parent / YUNET
    if not detector.is_file():
        pytest.skip(f"{detector} is missing")
    with pytest.raises(ValueError, match=YUNET) as err:
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
