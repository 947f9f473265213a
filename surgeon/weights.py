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
loudly and is rolled back; a pass that computes new weights makes a new array, or, when the
new weight is large and computed from others (a Conv folded with its BatchNormalization, a
Transpose or Cast of a weight folded as a constant), a :class:`Derived` recipe over the
source arrays that is evaluated a block of rows at a time when the model is written, and
materialized only while ONNX Runtime needs it. So no weight is ever resident twice.

Memory follows the working set, not the file: mapped weights cost address space, not
memory, until something reads them; :func:`release` hands the pages of weights a step has
read back to the kernel (``madvise(MADV_DONTNEED)``; the data stays in the page cache and
on disk), and :func:`file_extent` tells the writer where an unchanged weight's bytes lie in
the input, so that saving copies them file to file without reading them through the
process. docs/large-models.md describes the whole memory model.
"""

from __future__ import annotations

import logging
import mmap
import os
from typing import Callable, Iterator, Sequence

import numpy as np
import onnx
from onnx_graphsurgeon.ir.tensor import LazyValues, SparseValues

log = logging.getLogger(__name__)

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


def frozen(array: "np.ndarray | Derived") -> "np.ndarray | Derived":
    """A read-only view (the array itself when it already is one, or a recipe)."""
    if isinstance(array, Derived):
        return array
    if array.flags.writeable:
        array = array.view()
        array.flags.writeable = False
    return array


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


# --- mapped files: where a weight's bytes lie, and handing its pages back -----------------

PAGE = mmap.PAGESIZE


class FileMap(mmap.mmap):
    """A read-only mapping of a whole file that remembers which file it maps.

    Every weight read from disk is a view into one of these (the model file for embedded
    weights, a data file for external ones), so from any such view the writer can find the
    file and offset of its bytes (:func:`file_extent`) and copy them file to file.
    """

    path: str


def map_file(path: str | os.PathLike) -> "FileMap | bytes":
    """``path`` mapped read-only (an empty file gives ``b""``: mmap refuses length 0)."""
    with open(path, "rb") as f:
        if not os.fstat(f.fileno()).st_size:
            return b""
        mapping = FileMap(f.fileno(), 0, access=mmap.ACCESS_READ)
    mapping.path = str(path)
    return mapping


def _mapping(array: np.ndarray) -> FileMap | None:
    base = array
    while isinstance(base, np.ndarray) and base.base is not None:
        base = base.base
    if isinstance(base, memoryview):
        base = base.obj
    return base if isinstance(base, FileMap) and not base.closed else None


def _offset_in(mapping: FileMap, array: np.ndarray) -> int:
    start = np.frombuffer(mapping, dtype=np.uint8, count=1).ctypes.data
    return array.ctypes.data - start


def file_extent(array: object) -> tuple[str, int] | None:
    """(file path, byte offset) of a weight's bytes in the file it was mapped from, or None
    (an array in memory, a recipe, or a view whose bytes are not one contiguous range)."""
    if not isinstance(array, np.ndarray) or not array.flags.c_contiguous or not array.nbytes:
        return None
    mapping = _mapping(array)
    return None if mapping is None else (mapping.path, _offset_in(mapping, array))


def release(arrays: "Iterator | Sequence | np.ndarray | Derived") -> None:
    """Hand the resident pages of mapped weights back to the kernel (recipes: their sources).

    A weight read once (by ONNX Runtime, or to compute a derived weight) stays resident in
    this process until the kernel needs the memory; ``MADV_DONTNEED`` drops it from the
    process now, so peak memory follows what one step reads, not the whole file. The data
    stays in the page cache and on disk: reading it again costs a minor fault per page.
    Arrays in memory are left alone.
    """
    if isinstance(arrays, (np.ndarray, Derived)):
        arrays = [arrays]
    seen: set[int] = set()
    for array in arrays:
        if isinstance(array, Derived):
            release(array.sources)
            continue
        if not isinstance(array, np.ndarray) or not array.nbytes or id(array) in seen:
            continue
        seen.add(id(array))
        mapping = _mapping(array)
        if mapping is None:
            continue
        offset = _offset_in(mapping, array)
        lo = max(0, offset - offset % PAGE)
        hi = min(len(mapping), offset + _span(array))
        if hi > lo:
            try:
                mapping.madvise(mmap.MADV_DONTNEED, lo, hi - lo)
            except (OSError, ValueError, AttributeError):  # not Linux, or a closed map: nothing to give back
                return


def _span(array: np.ndarray) -> int:
    """Bytes from the array's first element to the end of its last (strided views too)."""
    if not array.size:
        return 0
    last = sum((n - 1) * s for n, s in zip(array.shape, array.strides) if s > 0)
    return last + array.itemsize


def _anonymous(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A writable array in its own anonymous mapping: unmapped (memory returned) as soon as
    the array is dropped, whatever malloc would have kept."""
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if nbytes < (1 << 20):
        return np.empty(shape, dtype)
    return np.frombuffer(mmap.mmap(-1, nbytes), dtype=dtype).reshape(shape)


# --- derived weights: recipes over other weights -------------------------------------------

CHUNK_BYTES = 16 << 20  # rows of a derived weight evaluated at a time


class Derived:
    """A weight computed from other weights, held as a recipe rather than as bytes.

    ``rows(start, stop)`` computes rows ``start:stop`` (along axis 0) of the result from
    ``sources`` (mapped or in-memory arrays, or other recipes). The result is never kept:

    - writing the model evaluates it a block of rows at a time (:meth:`chunks`), then
      releases the sources' pages;
    - ONNX Runtime gets :meth:`materialize` (a fresh array, dropped with the session);
    - code that treats it as an array (``np.asarray``, indexing, ``reshape``) gets the
      values it asks for: whole rows are computed alone, anything else materializes.

    Identity is what the engine compares (signatures, digests, stub keys), so a recipe is
    created once per change and then shared like any weight. ``what`` says what it
    computes, for logs and reports.
    """

    __slots__ = ("shape", "dtype", "sources", "what", "_rows", "whole")

    def __init__(self, shape: Sequence[int], dtype, rows: Callable[[int, int], np.ndarray],
                 sources: Sequence, what: str = "", *, whole: bool = False):
        self.shape = tuple(int(d) for d in shape)
        if not self.shape:
            raise ValueError("a derived weight has at least one axis")
        self.dtype = np.dtype(dtype)
        self._rows = rows
        self.sources = tuple(sources)
        self.what = what
        self.whole = whole  # computed in one piece (its rows are not separable cheaply)

    # array-like facts; none of them evaluates anything
    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def itemsize(self) -> int:
        return self.dtype.itemsize

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"Derived({self.what or 'recipe'}, shape={list(self.shape)}, dtype={self.dtype})"

    # evaluation
    def rows(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` of the result, computed now."""
        start, stop = max(0, start), min(self.shape[0], stop)
        if self.whole and (start, stop) != (0, self.shape[0]):
            return self.materialize()[start:stop]
        block = np.asarray(self._rows(start, stop))
        want = (stop - start,) + self.shape[1:]
        if block.shape != want:
            block = np.broadcast_to(block, want)
        return block.astype(self.dtype, copy=False)

    def row_step(self, max_bytes: int = CHUNK_BYTES) -> int:
        """How many rows one block of at most ``max_bytes`` holds (at least one)."""
        if self.whole:
            return self.shape[0]
        row = max(1, self.nbytes // max(1, self.shape[0]))
        return max(1, min(self.shape[0], max_bytes // row))

    def chunks(self, max_bytes: int = CHUNK_BYTES) -> Iterator[np.ndarray]:
        """The result as C-contiguous blocks of rows, in order; the sources' pages are released after."""
        step = self.row_step(max_bytes)
        for start in range(0, self.shape[0], step):
            yield np.ascontiguousarray(self.rows(start, start + step))
        release(self)

    def materialize(self) -> np.ndarray:
        """The whole result as a new read-only array (not kept: the caller holds it)."""
        log.debug("derived weight materialized: %r", self)
        out = _anonymous(self.shape, self.dtype)
        step = self.row_step()
        for start in range(0, self.shape[0], step):
            out[start:start + step] = self.rows(start, start + step)
        release(self)
        out.flags.writeable = False
        return out

    def __array__(self, dtype=None, copy=None):
        if copy is False:
            raise ValueError("a derived weight cannot be viewed without computing it")
        out = self.materialize()
        return out if dtype is None else out.astype(dtype)

    def tobytes(self) -> bytes:
        return b"".join(chunk.tobytes() for chunk in self.chunks())

    def __getitem__(self, index):
        """Whole rows (an int or a step-1 slice first) are computed alone; a 1-D integer
        array on a 1-D recipe picks those elements only (sampling); else it materializes."""
        first, rest = (index[0], index[1:]) if isinstance(index, tuple) and index else (index, ())
        if isinstance(first, (int, np.integer)):
            i = int(first) + (self.shape[0] if first < 0 else 0)
            if not 0 <= i < self.shape[0]:
                raise IndexError(f"index {int(first)} is out of bounds for axis 0 with size {self.shape[0]}")
            return self.rows(i, i + 1)[0][rest] if rest else self.rows(i, i + 1)[0]
        if isinstance(first, slice) and first.step in (None, 1):
            start, stop, _ = first.indices(self.shape[0])
            block = self.rows(start, max(start, stop))
            return block[(slice(None), *rest)] if rest else block
        if self.ndim == 1 and not rest and isinstance(first, (list, np.ndarray)):
            picks = np.asarray(first, dtype=np.int64).reshape(-1)
            picks = np.where(picks < 0, picks + self.shape[0], picks)
            out = np.empty(picks.shape, self.dtype)
            for i, p in enumerate(picks):
                out[i] = self.rows(int(p), int(p) + 1)[0]
            release(self)
            return out.reshape(np.shape(first))
        return self.materialize()[index]

    def reshape(self, *shape) -> "Derived":
        """The same values in another shape, still a recipe (rows map onto flat ranges)."""
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        new = _resolve_shape(shape, self.size)
        return reshaped(self, new)

    def ravel(self) -> "Derived":
        return self.reshape(-1)

    # Anything else an ndarray offers (sum, astype, arithmetic, comparisons) is answered by
    # the materialized values, so code written for arrays stays right on a recipe.
    def __getattr__(self, name: str):
        if name.startswith("__") or not hasattr(np.ndarray, name):
            raise AttributeError(name)
        return getattr(self.materialize(), name)

    def _values_op(name: str):  # noqa: N805 - a helper for the class body below
        def op(self, *args):
            return getattr(self.materialize(), name)(*args)
        op.__name__ = name
        return op

    for _op in ("__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__", "__truediv__", "__rtruediv__",
                "__pow__", "__matmul__", "__rmatmul__", "__neg__", "__abs__", "__eq__", "__ne__", "__lt__", "__le__",
                "__gt__", "__ge__"):
        locals()[_op] = _values_op(_op)
    del _op, _values_op
    __hash__ = object.__hash__  # identity, like the engine's other weights

    def flat_range(self, start: int, stop: int) -> np.ndarray:
        """Elements ``start:stop`` of the flattened result."""
        row = self.size // self.shape[0] if self.shape[0] else 1
        first, last = start // row, -(-stop // row)
        block = self.rows(first, last).reshape(-1)
        return block[start - first * row: stop - first * row]


def _resolve_shape(shape: Sequence[int], size: int) -> tuple[int, ...]:
    shape = [int(d) for d in shape]
    if shape.count(-1) == 1:
        known = int(np.prod([d for d in shape if d != -1], dtype=np.int64))
        shape[shape.index(-1)] = size // known if known else 0
    if int(np.prod(shape, dtype=np.int64)) != size:
        raise ValueError(f"cannot reshape {size} elements into {shape}")
    return tuple(shape)


def is_derived(value: object) -> bool:
    return isinstance(value, Derived)


def derive(shape: Sequence[int], dtype, rows: Callable[[int, int], np.ndarray], sources: Sequence,
           what: str = "", *, whole: bool = False) -> Derived:
    """A weight whose rows ``start:stop`` are ``rows(start, stop)``, computed from ``sources``.

    The one constructor passes need when their arithmetic is row-separable (a Conv weight
    scaled per output channel: rows are output channels). ``sources``: the arrays or
    recipes it reads, whose pages are released after each evaluation. ``whole``: the rows
    are not separable, ``rows`` is only ever called for all of them at once.
    """
    return Derived(shape, dtype, rows, sources, what, whole=whole)


def reshaped(source: "np.ndarray | Derived", shape: Sequence[int]) -> "np.ndarray | Derived":
    """``source`` in another shape: a view for an array (a mapped one stays mapped), a recipe over a recipe."""
    shape = _resolve_shape(shape, int(np.prod(source.shape, dtype=np.int64)))
    if isinstance(source, np.ndarray):
        return frozen(source.reshape(shape))
    if not shape:
        raise ValueError("a derived weight has at least one axis")
    if shape == source.shape:
        return source
    row = int(np.prod(shape[1:], dtype=np.int64))
    return Derived(shape, source.dtype,
                   lambda a, b: source.flat_range(a * row, b * row).reshape((b - a,) + shape[1:]),
                   [source], source.what, whole=source.whole)


def transposed(source: "np.ndarray | Derived", perm: Sequence[int] | None = None) -> Derived:
    """``np.transpose(source, perm)`` as a recipe: each block of output rows reads one slab of the source."""
    perm = list(range(source.ndim))[::-1] if perm is None else [int(p) for p in perm]
    shape = [source.shape[p] for p in perm]
    axis = perm[0]
    whole = isinstance(source, Derived) and axis != 0  # a recipe's other axes are not cheap to slice

    def rows(a: int, b: int) -> np.ndarray:
        if isinstance(source, Derived):
            block = source.rows(a, b) if axis == 0 else source.materialize()[(slice(None),) * axis + (slice(a, b),)]
        else:
            block = source[(slice(None),) * axis + (slice(a, b),)]
        return np.transpose(block, perm)

    return Derived(shape, source.dtype, rows, [source], f"Transpose{perm}", whole=whole)


def elementwise(fn: Callable[..., np.ndarray], operands: Sequence, what: str = "") -> Derived | None:
    """``fn(*operands)`` (numpy broadcasting) as a recipe, or None when it is not row-separable.

    Operands whose axis 0 is the result's axis 0 are sliced per block of rows; the others
    (per-channel vectors, scalars) must broadcast along axis 0 and are passed whole, and
    must be arrays (a recipe that is not sliced per block would be computed per block).
    """
    shapes = [tuple(np.shape(o)) for o in operands]
    try:
        shape = tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        return None
    if not shape:
        return None
    rank = len(shape)
    sliced = [len(s) == rank and s[0] == shape[0] for s in shapes]
    if any(isinstance(o, Derived) and not cut for o, cut in zip(operands, sliced)):
        return None

    def rows(a: int, b: int) -> np.ndarray:
        pieces = [o.rows(a, b) if isinstance(o, Derived) and cut else (o[a:b] if cut else o)
                  for o, cut in zip(operands, sliced)]
        return np.asarray(fn(*pieces))

    probe = np.asarray(rows(0, 1))
    return Derived(shape, probe.dtype, rows, [o for o in operands if isinstance(o, (np.ndarray, Derived))], what)


def held(value: "np.ndarray | Derived") -> "np.ndarray | WeightValues":
    """What to give ``gs.Constant`` for a new weight: an array as it is, a recipe wrapped
    the way graphsurgeon accepts lazily held values (its stub carries type and dims)."""
    if isinstance(value, Derived):
        if value.nbytes < LARGE_BYTES:  # small enough to be an ordinary constant
            return frozen(value.materialize())
        stub = make_stub("", onnx.helper.np_dtype_to_tensor_dtype(value.dtype), value.shape, "")
        return WeightValues(stub, value)
    return value


def resident(value: "np.ndarray | Derived") -> np.ndarray:
    """An array ONNX Runtime can read: a recipe is materialized (the caller holds the result
    only as long as it needs it), an array is itself."""
    return value.materialize() if isinstance(value, Derived) else value
