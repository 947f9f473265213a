"""When two constants, nodes or bodies are the same value: keys for value numbering.

Why a module of its own: ``merge-duplicates`` (common subexpression elimination) and
``fold-control-flow`` (an If whose two branches are the same) ask the same question and
must answer it the same way.

Constants are compared by content in three steps, so that a model of distinct weights
costs almost nothing: element type and shape first (free), then a fingerprint of a few
sampled elements, and all bytes only when the fingerprints agree. Bytes, not values:
``0.0`` and ``-0.0`` are different constants (``1/x`` tells them apart), and a NaN equals
the same NaN bit pattern only. Weights still held in the protobuf (onnx-graphsurgeon's lazy
values) cannot be sampled cheaply: reading one element copies the whole tensor out of the
protobuf. So a lazily held tensor is read only when another constant has its type and
shape, only up to ``LAZY_READ_LIMIT`` bytes per tensor and ``LAZY_READ_BUDGET`` bytes per
run; the ones left unread are counted (``ContentIndex.unread``) and never merged.

A node is keyed by (domain, op, attributes, the keys of its inputs in order, which outputs
it has); a body (If branch, Loop/Scan body) by its nodes in order with local names replaced
by positions, so two bodies that differ only in names have the same key. Values a body reads
from an enclosing scope are keyed like any input. Only deterministic standard ops get a
key: random ops and ops of other domains (whose determinism is unknown) never do, nor does
a node whose body holds one.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx_graphsurgeon.ir.tensor import LazyValues

from surgeon.weights import DenseSparseValues, WeightValues, release

from surgeon import graph as G
from surgeon import graph_ops as K

SAMPLES = 64
LAZY_READ_LIMIT = 1 << 20  # bytes of one protobuf-held tensor that may be read to compare it
LAZY_READ_BUDGET = 32 << 20  # bytes of protobuf-held tensors read per run, in all

DETERMINISTIC_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml"})
NONDETERMINISTIC_OPS = frozenset({
    "RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli",
    "Dropout",  # random in training mode; eliminate-neutral-ops removes the inference ones
})

ValueKey = Callable[[gs.Tensor], tuple]


def domain_of(node: gs.Node) -> str:
    return K.node_domain(node)


def is_deterministic(node: gs.Node) -> bool:
    """Whether two copies of ``node`` on the same inputs are sure to compute the same outputs."""
    return domain_of(node) in DETERMINISTIC_DOMAINS and node.op not in NONDETERMINISTIC_OPS


def _type_code(holder, values) -> str:
    """The ONNX element type a constant is written with (the same code for protobuf and array)."""
    if isinstance(values, DenseSparseValues):
        values = values.array
    elif isinstance(values, LazyValues):
        return f"onnx:{values.tensor.data_type}"
    export = getattr(holder, "_export_dtype", None) if isinstance(holder, gs.Constant) else None
    if isinstance(export, int):
        return f"onnx:{export}"
    dtype = np.dtype(export) if export is not None else values.dtype
    try:
        return f"onnx:{onnx.helper.np_dtype_to_tensor_dtype(dtype)}"
    except (KeyError, TypeError, ValueError):
        return f"np:{dtype.name}"


def _raw(a: np.ndarray) -> bytes:
    if a.dtype == object:
        return repr([(type(x).__name__, x) for x in a.reshape(-1).tolist()]).encode()
    return np.ascontiguousarray(a).tobytes()


def _fingerprint(a: np.ndarray) -> bytes:
    flat = a.reshape(-1)
    if flat.size <= SAMPLES:
        return _raw(flat)
    picks = np.linspace(0, flat.size - 1, SAMPLES).astype(np.int64)
    return _raw(flat[picks])


def _same_bytes(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype == object:
        return _raw(a) == _raw(b)
    x = np.ascontiguousarray(a).reshape(-1).view(np.uint8)
    y = np.ascontiguousarray(b).reshape(-1).view(np.uint8)
    return bool(np.array_equal(x, y))


class _Entry:
    """One constant seen by the index; its array is read once, and only when needed."""

    __slots__ = ("holder", "array", "fp", "cls", "unreadable")

    def __init__(self, holder, cls: int):
        self.holder, self.cls = holder, cls
        self.array = self.fp = None
        self.unreadable = False


class ContentIndex:
    """Content classes of constant tensors: same class iff same type, shape and bytes.

    Lives for one pass run (never on a pass object). ``class_of`` reads a tensor only when
    another tensor of the same type and shape has been seen.
    """

    def __init__(self, lazy_read_limit: int = LAZY_READ_LIMIT, lazy_read_budget: int = LAZY_READ_BUDGET):
        self.lazy_read_limit = lazy_read_limit
        self.lazy_budget_left = lazy_read_budget
        self.lazy_bytes_read = 0
        self.unread: set[int] = set()  # ids of constants left uncompared (too large to read)
        self._entries: dict[int, _Entry] = {}
        self._buckets: dict[tuple, list[_Entry]] = {}
        self._next = 0

    def _new_class(self) -> int:
        self._next += 1
        return self._next

    def _read(self, entry: _Entry) -> np.ndarray | None:
        if entry.array is not None or entry.unreadable:
            return entry.array
        values = entry.holder._values if isinstance(entry.holder, gs.Constant) else entry.holder
        if isinstance(values, np.ndarray):
            entry.array = values
        elif isinstance(values, (WeightValues, DenseSparseValues)):  # held arrays: reading copies nothing
            entry.array = values.array
        elif isinstance(values, LazyValues) and values.tensor.data_location != onnx.TensorProto.EXTERNAL:
            nbytes = int(values.nbytes)
            if nbytes > self.lazy_read_limit or nbytes > self.lazy_budget_left:
                self.unread.add(id(entry.holder))
            else:
                try:
                    entry.array = onnx.numpy_helper.to_array(values.tensor)
                    self.lazy_budget_left -= nbytes
                    self.lazy_bytes_read += nbytes
                except Exception:  # noqa: BLE001 - a tensor onnx cannot read is simply never merged
                    entry.array = None
        if entry.array is None:
            entry.unreadable = True
        return entry.array

    def _fp(self, entry: _Entry) -> bytes | None:
        if entry.fp is None and self._read(entry) is not None:
            entry.fp = _fingerprint(entry.array)
            release(entry.array)  # a few sampled elements map whole folios of a mapped weight
        return entry.fp

    def class_of(self, holder: "gs.Constant | np.ndarray") -> int:
        """The content class of a constant (a gs.Constant, or an array for attribute values).

        The holder must stay alive while the index is used (ids are the cache keys).
        """
        entry = self._entries.get(id(holder))
        if entry is not None:
            return entry.cls
        values = holder._values if isinstance(holder, gs.Constant) else holder
        if not isinstance(values, (np.ndarray, LazyValues)):  # anything else: compared by identity
            entry = _Entry(holder, self._new_class())
            self._entries[id(holder)] = entry
            return entry.cls
        quick = (_type_code(holder, values), tuple(int(d) for d in values.shape))
        entry = _Entry(holder, 0)
        self._entries[id(holder)] = entry
        bucket = self._buckets.setdefault(quick, [])
        if bucket and self._fp(entry) is not None:
            for rep in bucket:
                if self._fp(rep) == entry.fp and _same_bytes(rep.array, entry.array):
                    entry.cls = rep.cls
                    release((rep.array, entry.array))
                    return entry.cls
        entry.cls = self._new_class()
        bucket.append(entry)
        return entry.cls


# --- keys -------------------------------------------------------------------------------

def _constant_node_value(node: gs.Node):
    """The holder of a standard Constant node's value (for the content index), or None."""
    if node.op != "Constant" or domain_of(node) != "" or len(node.attrs) != 1:
        return None
    (key, value), = node.attrs.items()
    if key == "value" and isinstance(value, gs.Constant):
        return value
    dtypes = {"value_float": np.float32, "value_floats": np.float32, "value_int": np.int64, "value_ints": np.int64}
    if key in dtypes:
        return np.asarray(value, dtype=dtypes[key])
    return None


class Keys:
    """Value, node and body keys over one ContentIndex; lives for one pass run.

    Values computed by a Constant node are keyed by content like initializers, so a node
    reading either kind of constant matches the other. Keys of Constant-node attribute
    arrays are kept alive here (the index caches by id).
    """

    def __init__(self, index: ContentIndex):
        self.index = index
        self._arrays: dict[int, np.ndarray] = {}  # id(Constant node) -> its value_* array, kept alive

    def constant_class(self, node: gs.Node) -> int | None:
        holder = _constant_node_value(node)
        if holder is None:
            return None
        if isinstance(holder, np.ndarray):
            holder = self._arrays.setdefault(id(node), holder)
        return self.index.class_of(holder)

    def value(self, t: gs.Tensor) -> tuple:
        """The key of a value in the scope it is read in: constants by content, others by identity."""
        if isinstance(t, gs.Constant):
            return ("t", id(t)) if G.is_overridable(t) else ("c", self.index.class_of(t))
        if not t.name:
            return ("empty",)
        if len(t.inputs) == 1 and t.inputs[0].op == "Constant":
            cls = self.constant_class(t.inputs[0])
            if cls is not None:
                return ("c", cls)
        return ("t", id(t))

    def attr(self, value, vk: ValueKey, level: int):
        if isinstance(value, gs.Graph):
            body = self.graph(value, vk, level + 1)
            return None if body is None else ("g", body)
        if isinstance(value, gs.Constant):
            return ("T", self.index.class_of(value))
        if isinstance(value, gs.Node.AttributeRef):
            return ("ref", value.name, getattr(value.type, "__name__", str(value.type)))
        if isinstance(value, (bool, np.bool_)):
            return ("i", int(value))
        if isinstance(value, (int, np.integer)):
            return ("i", int(value))
        if isinstance(value, (float, np.floating)):
            return ("f", float(value).hex())
        if isinstance(value, str):
            return ("s", value)
        if isinstance(value, bytes):
            return ("b", value)
        if isinstance(value, (list, tuple)):
            if all(isinstance(v, (int, str, bytes)) and not isinstance(v, bool) for v in value):
                return ("l", tuple(value))  # ints and strings key themselves (a tree ensemble has 100,000s)
            if all(isinstance(v, float) for v in value):
                return ("lf", np.asarray(value, dtype=np.float64).tobytes())
            items = tuple(self.attr(v, vk, level) for v in value)
            return None if any(i is None for i in items) else ("l", items)
        if isinstance(value, (type, np.dtype)):
            return ("dt", str(value))
        return None

    def node(self, node: gs.Node, vk: ValueKey | None = None, level: int = 0) -> tuple | None:
        """Equal keys: the two nodes compute the same outputs. None: never merged."""
        if not is_deterministic(node):
            return None
        vk = vk or self.value
        attrs = []
        for name in sorted(node.attrs):
            k = self.attr(node.attrs[name], vk, level)
            if k is None:
                return None
            attrs.append((name, k))
        return (domain_of(node), node.op, tuple(attrs), tuple(vk(t) for t in node.inputs),
                tuple(bool(t.name) for t in node.outputs))

    def graph(self, graph: gs.Graph, vk: ValueKey | None = None, level: int = 0) -> tuple | None:
        """Equal keys: two bodies compute the same outputs from the same inputs and outer values."""
        outer = vk or self.value
        local: dict[int, tuple] = {}

        def inner(t: gs.Tensor) -> tuple:
            return local.get(id(t)) or outer(t)

        inputs = []
        for i, t in enumerate(graph.inputs):
            local[id(t)] = ("L", level, "in", i)
            inputs.append(str(t.dtype))
        nodes = []
        for j, node in enumerate(graph.nodes):
            k = self.node(node, inner, level)
            if k is None:
                return None
            nodes.append(k)
            for i, t in enumerate(node.outputs):
                if t.name:
                    local[id(t)] = ("L", level, j, i)
        outputs = tuple((inner(t), str(t.dtype)) for t in graph.outputs)
        return (tuple(inputs), tuple(nodes), outputs)
