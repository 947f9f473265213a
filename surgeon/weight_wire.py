"""Tensor payloads found in a model file's protobuf wire format, without parsing the model.

Why by hand: ``onnx.load`` copies every embedded weight into Python bytes, so a 2 GB model
costs its size again before anything runs. Walking the wire format of a memory-mapped file
finds each large tensor's bytes and leaves them where they are (read-only numpy views of the
mapping); the rest, the skeleton, is parsed normally. External data files are mapped the same
way. Only the fields needed to reach tensors are read (field numbers from onnx.proto, stable
since IR 3).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import numpy as np
import onnx

from surgeon.weights import _EXTERNAL, LARGE_BYTES, STUB_PREFIX, map_file, numpy_dtype

_MODEL_GRAPH = 7
_GRAPH_NODE, _GRAPH_INITIALIZER = 1, 5
_NODE_ATTRIBUTE = 5
_ATTR_T, _ATTR_G, _ATTR_TENSORS, _ATTR_GRAPHS = 5, 6, 10, 11
_TENSOR_DIMS, _TENSOR_DATA_TYPE, _TENSOR_RAW, _TENSOR_EXTERNAL, _TENSOR_LOCATION = 1, 2, 9, 13, 14


def _varint(buf, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("malformed varint")


def encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _fields(buf, start: int, end: int) -> Iterator[tuple[int, int, int, int, int]]:
    """(field number, wire type, field start, value start, value end) of each field."""
    pos = start
    while pos < end:
        field_start = pos
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, value_end = _varint(buf, pos)
            value_start = pos
        elif wire == 1:
            value_start, value_end = pos, pos + 8
        elif wire == 2:
            length, value_start = _varint(buf, pos)
            value_end = value_start + length
        elif wire == 5:
            value_start, value_end = pos, pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if value_end > end:
            raise ValueError("truncated protobuf field")
        pos = value_end
        yield number, wire, field_start, value_start, value_end


def _length_field(number: int, payload: bytes) -> bytes:
    return encode_varint((number << 3) | 2) + encode_varint(len(payload)) + payload


class _Splitter:
    """Rewrites a serialized model with large raw_data payloads replaced by stubs."""

    def __init__(self, buf):
        self.buf = buf
        self.arrays: dict[str, np.ndarray] = {}

    def model(self, start: int, end: int) -> bytes:
        return self._message(start, end, {_MODEL_GRAPH: self.graph})

    def graph(self, start: int, end: int) -> bytes:
        return self._message(start, end, {_GRAPH_INITIALIZER: self.tensor, _GRAPH_NODE: self.node}, big_only={_GRAPH_NODE})

    def node(self, start: int, end: int) -> bytes:
        return self._message(start, end, {_NODE_ATTRIBUTE: self.attribute}, big_only={_NODE_ATTRIBUTE})

    def attribute(self, start: int, end: int) -> bytes:
        # Walking a large attribute field by field would visit every element of a list
        # (a tree ensemble's 500,000 unpacked floats); protobuf's parser says at once
        # whether it holds a tensor or a graph at all.
        probe = onnx.AttributeProto()
        probe.ParseFromString(bytes(self.buf[start:end]))
        if not (probe.HasField("t") or probe.HasField("g") or len(probe.tensors) or len(probe.graphs)):
            return bytes(self.buf[start:end])
        return self._message(start, end, {_ATTR_T: self.tensor, _ATTR_TENSORS: self.tensor,
                                          _ATTR_G: self.graph, _ATTR_GRAPHS: self.graph})

    def _message(self, start: int, end: int, handlers: dict, big_only: frozenset | set = frozenset()) -> bytes:
        chunks: list = []
        for number, wire, fstart, vstart, vend in _fields(self.buf, start, end):
            handler = handlers.get(number) if wire == 2 else None
            # A node or attribute smaller than a weight cannot hold one: copy it as it is.
            if handler is None or (number in big_only and vend - vstart < LARGE_BYTES):
                chunks.append(self.buf[fstart:vend])
                continue
            chunks.append(_length_field(number, handler(vstart, vend)))
        return b"".join(chunks)

    def tensor(self, start: int, end: int) -> bytes:
        dims: list[int] = []
        data_type = 0
        raw = None
        external = False
        for number, wire, _, vstart, vend in _fields(self.buf, start, end):
            if number == _TENSOR_DIMS:
                if wire == 2:
                    pos = vstart
                    while pos < vend:
                        d, pos = _varint(self.buf, pos)
                        dims.append(d)
                else:
                    dims.append(_varint(self.buf, vstart)[0])
            elif number == _TENSOR_DATA_TYPE:
                data_type = _varint(self.buf, vstart)[0]
            elif number == _TENSOR_RAW:
                raw = (vstart, vend)
            elif number == _TENSOR_LOCATION:
                external = _varint(self.buf, vstart)[0] == _EXTERNAL
        dtype = numpy_dtype(data_type)
        if raw is None or external or dtype is None or raw[1] - raw[0] < LARGE_BYTES:
            return bytes(self.buf[start:end])
        count = int(np.prod(dims, dtype=np.int64)) if dims else 1
        if count * dtype.itemsize != raw[1] - raw[0]:
            return bytes(self.buf[start:end])  # inconsistent: leave it to the checker to say so
        key = f"{STUB_PREFIX}{len(self.arrays)}"
        self.arrays[key] = np.frombuffer(self.buf, dtype=dtype, count=count, offset=raw[0]).reshape(dims)
        chunks = [self.buf[fs:ve] for number, _, fs, _, ve in _fields(self.buf, start, end)
                  if number not in (_TENSOR_RAW, _TENSOR_LOCATION, _TENSOR_EXTERNAL)]
        entry = _length_field(1, b"location") + _length_field(2, key.encode())
        chunks.append(encode_varint((_TENSOR_LOCATION << 3) | 0) + encode_varint(_EXTERNAL))
        chunks.append(_length_field(_TENSOR_EXTERNAL, entry))
        return b"".join(chunks)


def split_file(path: str | os.PathLike) -> tuple[bytes, dict[str, np.ndarray]]:
    """Skeleton bytes of the model file and its large embedded tensors as read-only views.

    The file is memory-mapped read-only: the views share the page cache with the file,
    so opening a model reads no weight byte until something uses it. Raises ValueError
    on a malformed protobuf.
    """
    buf = map_file(path)
    if not buf:
        raise ValueError("the file is empty")
    size = len(buf)
    splitter = _Splitter(memoryview(buf))
    skeleton = splitter.model(0, size)
    return skeleton, splitter.arrays


def map_external(tensor: onnx.TensorProto, target: Path, offset: int, cache: dict) -> np.ndarray:
    """A read-only view of an external data payload (one mapping per data file)."""
    dtype = numpy_dtype(tensor.data_type)
    if dtype is None:
        raise ValueError(f"external data of type {onnx.TensorProto.DataType.Name(tensor.data_type)} cannot be mapped")
    if target not in cache:
        mapping = map_file(target)
        cache[target] = memoryview(mapping) if mapping else b""
    count = 1
    for d in tensor.dims:
        count *= d
    return np.frombuffer(cache[target], dtype=dtype, count=count, offset=offset).reshape(tuple(tensor.dims))
