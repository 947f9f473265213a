"""Weights held once: read-only arrays that every step shares and none copies.

Why this module exists: the weights are the bulk of a model (482 MB against 1,389 nodes
for GPT-2), yet no pass, check or verification needs their bytes in a protobuf. Large
tensors are therefore split off when a model is opened:

- the rest of the model becomes a *skeleton*: a ModelProto in which every large tensor is
  a *stub* (name, element type, dims, ``data_location=EXTERNAL`` and a location key
  ``surgeon-weight:N`` that exists nowhere on disk);
- the data becomes a read-only numpy array per key: a view into the memory-mapped model
  file (embedded weights, found by reading the protobuf wire format) or into the
  memory-mapped external data file.

Read-only arrays make the weights immutable for real: a pass that writes into one fails
loudly and is rolled back; a pass that computes new weights makes a new array.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path
from typing import Iterator

import numpy as np
import onnx
from onnx_graphsurgeon.ir.tensor import LazyValues, SparseValues

# Tensors at least this large are weights: split off, shared, never serialized by a step.
# Shape-like constants a pass or shape inference reads (Reshape targets, axes, scales) are
# a few dozen bytes, far below this.
LARGE_BYTES = 4096
STUB_PREFIX = "surgeon-weight:"

_EXTERNAL = onnx.TensorProto.EXTERNAL


def numpy_dtype(data_type: int) -> np.dtype | None:
    """numpy dtype whose bytes equal ONNX raw_data for ``data_type``, or None (strings, packed 4-bit types)."""
    if data_type in (onnx.TensorProto.STRING, onnx.TensorProto.UNDEFINED):
        return None
    try:
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(data_type))
    except (KeyError, ValueError, TypeError):
        return None
    # int4/uint4/float4 are packed two per byte in raw_data but unpacked in numpy
    packed = {getattr(onnx.TensorProto, n, -1) for n in ("INT4", "UINT4", "FLOAT4E2M1", "INT2", "UINT2")}
    return None if data_type in packed else dtype


def stub_key(tensor: onnx.TensorProto) -> str | None:
    """The weight key of a stub, or None for a tensor that carries its data (or real external data)."""
    if tensor.data_location != _EXTERNAL:
        return None
    for entry in tensor.external_data:
        if entry.key == "location" and entry.value.startswith(STUB_PREFIX):
            return entry.value
    return None


def make_stub(name: str, data_type: int, dims, key: str) -> onnx.TensorProto:
    t = onnx.TensorProto()
    t.name = name
    t.data_type = data_type
    t.dims.extend(int(d) for d in dims)
    t.data_location = _EXTERNAL
    t.external_data.add(key="location", value=key)
    return t


def is_large(array: np.ndarray) -> bool:
    return array.nbytes >= LARGE_BYTES and array.dtype != object


class WeightValues(LazyValues):
    """onnx-graphsurgeon's lazy values over a shared read-only array.

    graphsurgeon loads ``LazyValues`` on first access of ``Constant.values``; this one
    hands out the shared array itself (no copy). ``tensor`` stays the stub, so code that
    only asks for shape and dtype never touches the data.
    """

    def __init__(self, stub: onnx.TensorProto, array: np.ndarray):
        super().__init__(stub)
        self.array = array

    def load(self) -> np.ndarray:
        return self.array


class DenseSparseValues(SparseValues):
    """A sparse initializer, densified once: reading ``Constant.values`` then hands out this
    same array, so a pass that only reads it changes nothing (graphsurgeon would put a fresh
    array in its place). Until a pass replaces the values, it is written back sparse.

    Densified here, not by graphsurgeon's ``SparseValues.load``: that reads only the typed
    fields (``float_data``, ``int64_data``) and gives zeros for ``raw_data``, which is how
    ``numpy_helper.from_array`` stores them (graphsurgeon 0.6.1).
    """

    def __init__(self, tensor: onnx.SparseTensorProto):
        super().__init__(tensor)
        values = onnx.numpy_helper.to_array(tensor.values)
        indices = onnx.numpy_helper.to_array(tensor.indices).astype(np.int64)
        dims = tuple(tensor.dims)
        dense = np.zeros(int(np.prod(dims)), dtype=values.dtype)
        # [NNZ] linear indices, or [NNZ, rank] coordinates (onnx.proto, SparseTensorProto)
        flat = indices if indices.ndim == 1 else np.ravel_multi_index(tuple(indices.T), dims)
        dense[flat] = values
        self.array = dense.reshape(dims)

    def load(self) -> np.ndarray:
        return self.array


def frozen(array: np.ndarray) -> np.ndarray:
    """A read-only view (the array itself when it already is one)."""
    if array.flags.writeable:
        array = array.view()
        array.flags.writeable = False
    return array


# --- the protobuf wire format, just enough to find tensor payloads ------------------------
# Field numbers from onnx.proto (stable since IR 3).
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


def _encode_varint(value: int) -> bytes:
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
    return _encode_varint((number << 3) | 2) + _encode_varint(len(payload)) + payload


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
        chunks.append(_encode_varint((_TENSOR_LOCATION << 3) | 0) + _encode_varint(_EXTERNAL))
        chunks.append(_length_field(_TENSOR_EXTERNAL, entry))
        return b"".join(chunks)


def split_file(path: str | os.PathLike) -> tuple[bytes, dict[str, np.ndarray]]:
    """Skeleton bytes of the model file and its large embedded tensors as read-only views.

    The file is memory-mapped read-only: the views share the page cache with the file,
    so opening a model reads no weight byte until something uses it. Raises ValueError
    on a malformed protobuf.
    """
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise ValueError("the file is empty")
        buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    splitter = _Splitter(memoryview(buf))
    skeleton = splitter.model(0, size)
    return skeleton, splitter.arrays


def map_external(tensor: onnx.TensorProto, target: Path, offset: int, cache: dict) -> np.ndarray:
    """A read-only view of an external data payload (one mapping per data file)."""
    dtype = numpy_dtype(tensor.data_type)
    if dtype is None:
        raise ValueError(f"external data of type {onnx.TensorProto.DataType.Name(tensor.data_type)} cannot be mapped")
    if target not in cache:
        with open(target, "rb") as f:
            cache[target] = memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)) if os.fstat(f.fileno()).st_size else b""
    count = 1
    for d in tensor.dims:
        count *= d
    return np.frombuffer(cache[target], dtype=dtype, count=count, offset=offset).reshape(tuple(tensor.dims))


def iter_graph_tensors(graph: onnx.GraphProto, initializers: bool = True) -> Iterator[onnx.TensorProto]:
    """Initializers and tensor attributes of ``graph`` and its bodies (``initializers=False``:
    all but the main graph's initializers; protobuf wrappers have no stable identity to tell them apart later)."""
    if initializers:
        yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from iter_graph_tensors(attr.g)
            for sub in attr.graphs:
                yield from iter_graph_tensors(sub)
