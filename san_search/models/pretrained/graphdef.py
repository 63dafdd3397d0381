"""A reader for frozen TensorFlow GraphDef files (`.pb`) that needs no TensorFlow: a small
protobuf wire-format decoder of our own that yields each node's name, op, inputs and the
attributes a converter needs (constants as numpy arrays, ints, floats, strings, lists).

Only the parts of the GraphDef schema that frozen inference graphs use are decoded; unknown
fields are skipped, so a newer file still parses. Constant tensors are read without copying
the file more than once (numpy views over the bytes, copied out as float32/int arrays).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


class GraphDefError(ValueError):
    """The bytes are not a GraphDef this reader understands."""


# TensorFlow DataType enum values -> numpy dtypes (the ones frozen graphs carry).
_DTYPES: dict[int, np.dtype[Any]] = {
    1: np.dtype("<f4"),   # DT_FLOAT
    2: np.dtype("<f8"),   # DT_DOUBLE
    3: np.dtype("<i4"),   # DT_INT32
    4: np.dtype("u1"),    # DT_UINT8
    5: np.dtype("<i2"),   # DT_INT16
    6: np.dtype("i1"),    # DT_INT8
    9: np.dtype("<i8"),   # DT_INT64
    10: np.dtype("?"),    # DT_BOOL
    19: np.dtype("<f2"),  # DT_HALF
}


@dataclass
class Node:
    """One NodeDef: name, op, inputs (as written, e.g. "x:1", "^ctrl") and decoded attrs."""

    name: str
    op: str
    inputs: list[str] = field(default_factory=list)
    attrs: dict[str, Any] = field(default_factory=dict)


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(buf):
            raise GraphDefError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 70:
            raise GraphDefError("varint too long")


def _fields(buf: memoryview) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value) for each field of one message; length-delimited
    values are memoryviews, varints ints, fixed32/64 the raw 4/8 bytes."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        num, wire = key >> 3, key & 7
        if num == 0:
            raise GraphDefError("field number 0")
        if wire == 0:
            val, pos = _varint(buf, pos)
            yield num, wire, val
        elif wire == 2:
            n, pos = _varint(buf, pos)
            if pos + n > end:
                raise GraphDefError("length-delimited field runs past its message")
            yield num, wire, buf[pos:pos + n]
            pos += n
        elif wire == 5:
            if pos + 4 > end:
                raise GraphDefError("truncated fixed32")
            yield num, wire, buf[pos:pos + 4]
            pos += 4
        elif wire == 1:
            if pos + 8 > end:
                raise GraphDefError("truncated fixed64")
            yield num, wire, buf[pos:pos + 8]
            pos += 8
        else:
            raise GraphDefError(f"unsupported wire type {wire}")


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _packed_varints(buf: memoryview) -> list[int]:
    out, pos = [], 0
    while pos < len(buf):
        v, pos = _varint(buf, pos)
        out.append(_signed(v))
    return out


def _shape(buf: memoryview) -> list[int] | None:
    dims: list[int] = []
    for num, _, val in _fields(buf):
        if num == 2:  # Dim
            size = 0
            for dnum, dwire, dval in _fields(val):
                if dnum == 1 and dwire == 0:
                    size = _signed(dval)
            dims.append(size)
        elif num == 3 and val:  # unknown_rank
            return None
    return dims


def _tensor(buf: memoryview) -> np.ndarray:
    dtype_code = 0
    shape: list[int] = []
    content: memoryview | None = None
    floats: list[float] = []
    ints: list[int] = []
    for num, wire, val in _fields(buf):
        if num == 1:
            dtype_code = val
        elif num == 2:
            shape = _shape(val) or []
        elif num == 4:
            content = val
        elif num == 5:  # float_val, packed or not
            if wire == 2:
                floats.extend(np.frombuffer(val, "<f4").tolist())
            else:
                floats.append(float(np.frombuffer(val, "<f4")[0]))
        elif num == 6:  # double_val
            if wire == 2:
                floats.extend(np.frombuffer(val, "<f8").tolist())
            else:
                floats.append(float(np.frombuffer(val, "<f8")[0]))
        elif num in (7, 10, 11):  # int_val, int64_val, bool_val
            if wire == 2:
                ints.extend(_packed_varints(val))
            else:
                ints.append(_signed(val))
    if dtype_code not in _DTYPES:
        raise GraphDefError(f"unsupported tensor dtype {dtype_code}")
    dtype = _DTYPES[dtype_code]
    count = int(np.prod(shape)) if shape else 1
    if content is not None:
        arr = np.frombuffer(content, dtype).copy()
    else:
        vals = floats if floats else ints
        arr = np.asarray(vals, dtype)
        if arr.size == 0:
            arr = np.zeros(1, dtype)
        if arr.size not in (1, count):
            raise GraphDefError(f"tensor has {arr.size} values for shape {shape}")
        if arr.size != count:  # a single value fills the whole tensor
            arr = np.full(count, arr[0], dtype)
    if arr.size != count:
        raise GraphDefError(f"tensor has {arr.size} values for shape {shape}")
    return arr.reshape(shape)


def _list(buf: memoryview) -> list[Any]:
    out: list[Any] = []
    for num, wire, val in _fields(buf):
        if num == 2:
            out.append(bytes(val).decode("utf-8", "replace"))
        elif num in (3, 6):  # i, type
            if wire == 2:
                out.extend(_packed_varints(val))
            else:
                out.append(_signed(val))
        elif num == 4:  # f
            if wire == 2:
                out.extend(np.frombuffer(val, "<f4").tolist())
            else:
                out.append(float(np.frombuffer(val, "<f4")[0]))
        elif num == 5:
            if wire == 2:
                out.extend(bool(v) for v in _packed_varints(val))
            else:
                out.append(bool(val))
        elif num == 7:
            out.append(_shape(val))
        elif num == 8:
            out.append(_tensor(val))
    return out


def _attr_value(buf: memoryview) -> Any:
    value: Any = None
    for num, _, val in _fields(buf):
        if num == 1:
            value = _list(val)
        elif num == 2:
            value = bytes(val).decode("utf-8", "replace")
        elif num == 3:
            value = _signed(val)
        elif num == 4:
            value = float(np.frombuffer(val, "<f4")[0])
        elif num == 5:
            value = bool(val)
        elif num == 6:
            value = int(val)
        elif num == 7:
            value = _shape(val)
        elif num == 8:
            value = _tensor(val)
        elif num == 9:
            value = bytes(val).decode("utf-8", "replace")
    return value


def _node(buf: memoryview) -> Node:
    node = Node(name="", op="")
    for num, wire, val in _fields(buf):
        if wire != 2:
            continue
        if num == 1:
            node.name = bytes(val).decode("utf-8")
        elif num == 2:
            node.op = bytes(val).decode("utf-8")
        elif num == 3:
            node.inputs.append(bytes(val).decode("utf-8"))
        elif num == 5:  # map<string, AttrValue> entry
            key, value = "", None
            for enum_, _, eval_ in _fields(val):
                if enum_ == 1:
                    key = bytes(eval_).decode("utf-8")
                elif enum_ == 2:
                    value = _attr_value(eval_)
            node.attrs[key] = value
    return node


def parse_graphdef(data: bytes) -> list[Node]:
    """All nodes of a serialised GraphDef, in file order. Raises GraphDefError when the bytes
    do not decode as one (or decode to no nodes)."""
    buf = memoryview(data)
    nodes: list[Node] = []
    try:
        for num, wire, val in _fields(buf):
            if num == 1:
                if wire != 2:
                    raise GraphDefError("GraphDef.node is not a message")
                node = _node(val)
                if not node.name or not node.op:
                    raise GraphDefError("a node without a name or op")
                nodes.append(node)
    except UnicodeDecodeError as e:
        raise GraphDefError(f"not a GraphDef: {e}") from e
    if not nodes:
        raise GraphDefError("no nodes")
    return nodes


def read_graphdef(path: Path) -> list[Node]:
    """`parse_graphdef` on a file; errors name the file."""
    try:
        return parse_graphdef(Path(path).read_bytes())
    except GraphDefError as e:
        raise GraphDefError(f"{path}: not a readable TensorFlow GraphDef ({e})") from e


def _encode_varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field_end(buf: memoryview, pos: int) -> int:
    """Where the one field that starts at `pos` ends."""
    key, pos = _varint(buf, pos)
    wire = key & 7
    if wire == 0:
        _, pos = _varint(buf, pos)
    elif wire == 2:
        n, pos = _varint(buf, pos)
        pos += n
    elif wire == 5:
        pos += 4
    elif wire == 1:
        pos += 8
    else:
        raise GraphDefError(f"unsupported wire type {wire}")
    if pos > len(buf):
        raise GraphDefError("field runs past its message")
    return pos


def strip_control_inputs(data: bytes) -> bytes:
    """The same GraphDef without control-dependency inputs ("^node"), byte for byte
    otherwise. Frozen graphs keep a few on folded constants; they order execution and change
    no value, but some runtimes (OpenCV DNN 4.x) cannot load a graph that has them."""
    buf = memoryview(data)
    out = bytearray()
    pos = 0
    node_key = 1 << 3 | 2
    input_key = 3 << 3 | 2
    while pos < len(buf):
        start = pos
        key, body = _varint(buf, pos)
        pos = _field_end(buf, start)
        if key != node_key:
            out += buf[start:pos]
            continue
        _, body = _varint(buf, body)
        node = buf[body:pos]
        kept = bytearray()
        dropped = False
        npos = 0
        while npos < len(node):
            fstart = npos
            fkey, vpos = _varint(node, npos)
            npos = _field_end(node, fstart)
            if fkey == input_key:
                _, vpos = _varint(node, vpos)
                if node[vpos:npos].tobytes().startswith(b"^"):
                    dropped = True
                    continue
            kept += node[fstart:npos]
        if dropped:
            out += _encode_varint(node_key) + _encode_varint(len(kept)) + kept
        else:
            out += buf[start:pos]
    return bytes(out)
