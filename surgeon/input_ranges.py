"""Valid values for integer inputs, inferred from how the graph uses them.

Why: random integers break models whose integer inputs are indices, axes, counts or
shapes (token ids into an embedding table, a Slice's axes, a Reshape target, a TopK
``k``); the model then fails on every generated sample and nothing can be verified
numerically. The graph says what is valid: a Gather's indices must lie within the
data's size on its axis, axes within the rank, a shape must fit the data.

For every integer graph input this module follows its value forward through ops that
pass values on unchanged or shifted (Cast, Identity, Unsqueeze/Squeeze/Reshape/Flatten,
Concat, Gather/Slice of it, Neg, Add/Sub/Mul with a constant), collects each *use* that
constrains it, and intersects them into one :class:`Constraint`: an inclusive range, a
set of distinct values in a range (axes), or one exact value (shapes). A use whose
demand cannot be met or worked out is recorded as a ``problem`` with the reason, so
that the report can say why no valid sample could be made.

Sizes of intermediate tensors come from onnx shape inference on a weightless skeleton
of the model with the inputs pinned to the sample's concrete shapes, run only when a
use needs one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from surgeon import graph_ops as K
from surgeon.graph_ops import infer_shapes

log = logging.getLogger(__name__)

INT_TYPES = frozenset({TensorProto.INT8, TensorProto.INT16, TensorProto.INT32, TensorProto.INT64, TensorProto.UINT8,
                       TensorProto.UINT16, TensorProto.UINT32, TensorProto.UINT64, TensorProto.INT4, TensorProto.UINT4,
                       *(t for t in (getattr(TensorProto, "INT2", None), getattr(TensorProto, "UINT2", None)) if t)})
_SKELETON_MAX_ELEMENTS = 1024  # larger initializers are data; shape inference needs only their type and dims


@dataclass(frozen=True)
class Constraint:
    """What values an integer input may take, and which use of it said so.

    ``lo``/``hi`` is where generated values are drawn from, which can be narrower than
    what is valid (``valid_lo``/``valid_hi``): a Tile's repeats may be any count, but
    small ones keep samples small. ``exact``: the one value to feed (flattened), for
    shape-like uses. ``distinct``: every element different (axes lists). ``problem``: no
    valid value could be made, and why.
    """

    lo: int | None = None  # the range samples are drawn from
    hi: int | None = None
    distinct: bool = False
    exact: tuple[float, ...] | None = None
    why: tuple[str, ...] = ()
    problem: str | None = None
    valid_lo: int | None = None  # what the graph accepts at all (loaded data is checked against it)
    valid_hi: int | None = None
    mask: bool = False  # a 0/1 mask: samples hold both values, ones first on the last axis
    choices: tuple[int, ...] = ()  # values the graph tests for (Equal with a constant): samples take them

    def describe(self) -> str:
        if self.problem:
            return self.problem
        if self.exact is not None:
            return f"exactly {list(self.exact)} ({'; '.join(self.why)})"
        if self.mask:
            return f"a 0/1 mask ({'; '.join(self.why)})"
        if self.choices:
            return f"one of {list(self.choices)} ({'; '.join(self.why)})"
        what = "distinct values" if self.distinct else "values"
        return f"{what} in [{self.lo}, {self.hi}] ({'; '.join(self.why)})"


def _intersect(a: Constraint, b: Constraint) -> Constraint:
    if a.problem or b.problem:
        return a if a.problem else b
    why = a.why + tuple(w for w in b.why if w not in a.why)
    lo = b.lo if a.lo is None else a.lo if b.lo is None else max(a.lo, b.lo)
    hi = b.hi if a.hi is None else a.hi if b.hi is None else min(a.hi, b.hi)
    exact = a.exact if a.exact is not None else b.exact
    if a.exact is not None and b.exact is not None and a.exact != b.exact:
        return Constraint(why=why, problem=f"two uses need different exact values ({'; '.join(why)})")
    if exact is not None:
        bad = [v for v in exact if (lo is not None and v < lo) or (hi is not None and v > hi)]
        if bad:
            return Constraint(why=why, problem=f"the value one use needs ({list(exact)}) is outside the range another "
                                               f"allows ([{lo}, {hi}]): {'; '.join(why)}")
    if lo is not None and hi is not None and lo > hi:
        return Constraint(why=why, problem=f"no integer satisfies every use ({'; '.join(why)})")
    vlo = b.valid_lo if a.valid_lo is None else a.valid_lo if b.valid_lo is None else max(a.valid_lo, b.valid_lo)
    vhi = b.valid_hi if a.valid_hi is None else a.valid_hi if b.valid_hi is None else min(a.valid_hi, b.valid_hi)
    choices = tuple(dict.fromkeys(a.choices + b.choices))
    choices = tuple(c for c in choices if (lo is None or c >= lo) and (hi is None or c <= hi))
    mask = (a.mask or b.mask) and (lo is None or lo <= 0) and (hi is None or hi >= 1)
    return Constraint(lo, hi, a.distinct or b.distinct, exact, why, None, vlo, vhi, mask, choices)


@dataclass(frozen=True)
class _Path:
    """How the value at a use relates to the input: ``seen = scale * x + offset``.

    ``exact_ok``: the elements reach the use in order and unmixed (no Concat, Gather,
    Slice on the way), so an exact value for the use is an exact value for the input.
    ``sure``: every element reaches the use unchanged in range (not only a Gather'd or
    Slice'd part, not clamped by Max/Min), so what the use accepts bounds what a user may
    feed; otherwise the bounds only guide generation.
    """

    scale: int = 1
    offset: int = 0
    exact_ok: bool = True
    via: tuple[str, ...] = ()
    sure: bool = True


@dataclass
class _Graph:
    """Every node (subgraphs included) and who reads each name."""

    nodes: list[onnx.NodeProto]
    consumers: dict[str, list[tuple[onnx.NodeProto, int]]]
    constants: dict[str, np.ndarray]  # small initializers and Constant outputs
    dims: dict[str, tuple[int | None, ...]]  # known static dims (initializers, Constants)
    loop_bodies: dict[int, onnx.GraphProto] = field(default_factory=dict)  # id(node) -> body (Loop/Scan)
    conditional: set[int] = field(default_factory=set)  # id(node) of nodes inside an If branch: may never run


def _walk(graph: onnx.GraphProto, in_branch: bool = False) -> Iterator[tuple[onnx.NodeProto, bool]]:
    """Every node, subgraphs included, and whether it sits inside an If branch."""
    for node in graph.node:
        yield node, in_branch
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from _walk(attr.g, in_branch or node.op_type == "If")
            for sub in attr.graphs:
                yield from _walk(sub, in_branch or node.op_type == "If")


def _index(model: onnx.ModelProto) -> _Graph:
    nodes, consumers, constants, dims = [], {}, {}, {}
    bodies: dict[int, onnx.GraphProto] = {}

    def add_tensor(t: onnx.TensorProto) -> None:
        dims[t.name] = tuple(int(d) for d in t.dims)
        n = int(np.prod(t.dims)) if t.dims else 1
        if n <= _SKELETON_MAX_ELEMENTS and t.data_location != TensorProto.EXTERNAL:
            try:
                constants[t.name] = numpy_helper.to_array(t)
            except Exception:  # an exotic type we need no values of
                pass

    for t in model.graph.initializer:
        add_tensor(t)
    conditional: set[int] = set()
    for node, in_branch in _walk(model.graph):  # one walk: the node objects keyed here are the ones stored below
        if in_branch:
            conditional.add(id(node))
        for attr in node.attribute:
            if attr.HasField("g"):
                for t in attr.g.initializer:
                    add_tensor(t)
                if node.op_type in ("Loop", "Scan"):
                    bodies[id(node)] = attr.g
        nodes.append(node)
        for i, name in enumerate(node.input):
            if name:
                consumers.setdefault(name, []).append((node, i))
        if node.op_type == "Constant" and node.output:
            for attr in node.attribute:
                if attr.name == "value" and attr.HasField("t"):
                    t = onnx.TensorProto()
                    t.CopyFrom(attr.t)
                    t.name = node.output[0]
                    add_tensor(t)
                elif attr.name in ("value_int", "value_ints"):
                    value = np.array(attr.i if attr.name == "value_int" else list(attr.ints), dtype=np.int64)
                    constants[node.output[0]] = value
                    dims[node.output[0]] = value.shape
    return _Graph(nodes, consumers, constants, dims, bodies, conditional)


def _attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _label(node: onnx.NodeProto) -> str:
    return f"{node.op_type} '{node.name}'" if node.name else node.op_type


def _scalar_constant(g: _Graph, name: str) -> int | None:
    value = g.constants.get(name)
    if value is None or value.size == 0 or value.dtype.kind not in "iu":
        return None
    flat = value.reshape(-1)
    return int(flat[0]) if (flat == flat[0]).all() else None


# Ops whose output holds the input's values (order kept when exact_ok stays True).
_PASS_ORDERED = {"Identity": (0,), "Cast": (0,), "CastLike": (0,), "Unsqueeze": (0,), "Squeeze": (0,),
                 "Reshape": (0,), "Flatten": (0,)}
_PASS_MIXED = {"Concat": None, "Gather": (0,), "GatherElements": (0,), "GatherND": (0,), "Slice": (0,),
               "Expand": (0,), "Tile": (0,), "Transpose": (0,), "Max": None, "Min": None}
_PASS_PART = {"Gather", "GatherElements", "GatherND", "Slice", "Max", "Min"}  # not every value arrives unchanged
_INT_CAST_TARGETS = INT_TYPES


def _uses(g: _Graph, name: str) -> Iterator[tuple[onnx.NodeProto, int, _Path]]:
    """Every (node, input index, path) where the input's values are read, followed through pass-on ops."""
    seen: set[str] = set()
    stack = [(name, _Path())]
    while stack:
        current, path = stack.pop()
        if current in seen or len(path.via) > 12:
            continue
        seen.add(current)
        for node, idx in g.consumers.get(current, []):
            op = node.op_type
            yield node, idx, path
            nxt: _Path | None = None
            if op in _PASS_ORDERED and idx in _PASS_ORDERED[op]:
                if op == "Cast" and _attr(node, "to", 0) not in _INT_CAST_TARGETS:
                    continue  # a float copy of the value: its uses need no integer
                nxt = replace(path, via=path.via + (_label(node),))
            elif op in _PASS_MIXED and (_PASS_MIXED[op] is None or idx in _PASS_MIXED[op]):
                nxt = replace(path, exact_ok=False, via=path.via + (_label(node),), sure=path.sure and op not in _PASS_PART)
            elif op == "Neg":
                nxt = replace(path, scale=-path.scale, offset=-path.offset, via=path.via + (_label(node),))
            elif op in ("Add", "Sub", "Mul") and len(node.input) == 2:
                c = _scalar_constant(g, node.input[1 - idx])
                if c is None:
                    continue
                if op == "Add":
                    nxt = replace(path, offset=path.offset + c)
                elif op == "Sub" and idx == 0:
                    nxt = replace(path, offset=path.offset - c)
                elif op == "Sub":
                    nxt = replace(path, scale=-path.scale, offset=c - path.offset)
                elif c > 0:
                    nxt = replace(path, scale=path.scale * c, offset=path.offset * c)
                else:
                    continue
                nxt = replace(nxt, via=path.via + (_label(node),))
            elif op in ("Loop", "Scan") and id(node) in g.loop_bodies and idx >= (2 if op == "Loop" else 0):
                body = g.loop_bodies[id(node)]
                # Loop: inputs (M, cond, v...) map to body inputs (iter, cond, v...); Scan: state vars in order.
                if idx < len(body.input):
                    stack.append((body.input[idx].name, replace(path, via=path.via + (_label(node),))))
                continue
            if nxt is not None:
                for out in node.output[:1]:
                    if out:
                        stack.append((out, nxt))


# --- roles: (op type, input index) -> the constraint on the value seen there ----------------------------------------

ShapeOf = Callable[[str], "tuple[int | None, ...] | None"]


@dataclass(frozen=True)
class _Use:
    node: onnx.NodeProto
    index: int
    shape_of: ShapeOf
    seen_shape: tuple[int, ...]  # the input's own concrete shape (for exact values)
    seq_len: Callable[[str], "int | None"]

    def dim(self, input_index: int, axis: int) -> tuple[int | None, str]:
        """Size of the node's input ``input_index`` on ``axis`` (negative counts from the back)."""
        name = self.node.input[input_index] if input_index < len(self.node.input) else ""
        shape = self.shape_of(name) if name else None
        if shape is None:
            return None, f"the shape of '{name}' is unknown"
        r = len(shape)
        if not -r <= axis < r:
            return None, f"axis {axis} is outside the rank {r} of '{name}'"
        d = shape[axis % r]
        return d, "" if d is not None else f"the size of '{name}' on axis {axis % r} is unknown"

    def rank(self, input_index: int) -> tuple[int | None, str]:
        name = self.node.input[input_index] if input_index < len(self.node.input) else ""
        shape = self.shape_of(name) if name else None
        return (None, f"the rank of '{name}' is unknown") if shape is None else (len(shape), "")


_SAME = "same"


def _need(use: _Use, what: str, lo: int | None, hi: int | None, *, distinct: bool = False,
          valid: tuple[int | None, int | None] | str = _SAME) -> Constraint:
    """Draw from [lo, hi]; ``valid``: what the op accepts at all (default: the same range)."""
    vlo, vhi = (lo, hi) if valid == _SAME else valid
    return Constraint(lo, hi, distinct, why=(f"{what} of {_label(use.node)}",), valid_lo=vlo, valid_hi=vhi)


def _fail(use: _Use, what: str, reason: str) -> Constraint:
    return Constraint(problem=f"used as {what} of {_label(use.node)}, but {reason}")


def _index_into(use: _Use, data_index: int, axis: int, what: str, *, negatives: bool = True) -> Constraint:
    d, why = use.dim(data_index, axis)
    if d is None:
        return _fail(use, what, why)
    if d == 0:
        return _fail(use, what, f"'{use.node.input[data_index]}' is empty on axis {axis}: no index is valid")
    return _need(use, f"{what} (size {d})", -d if negatives else 0, d - 1)


def _axes(use: _Use, data_index: int, what: str, extra_rank: int = 0) -> Constraint:
    r, why = use.rank(data_index)
    if r is None:
        return _fail(use, what, why)
    r += extra_rank
    n = int(np.prod(use.seen_shape)) if use.seen_shape else 1
    if n > r:
        return _fail(use, what, f"{n} distinct axes cannot fit rank {r}")
    return _need(use, f"{what} (rank {r})", -r, r - 1, distinct=n > 1)


def _exact(use: _Use, what: str, values: list[int]) -> Constraint:
    n = int(np.prod(use.seen_shape)) if use.seen_shape else 1
    if len(values) != n:
        return _fail(use, what, f"it needs {len(values)} values and has {n}")
    return Constraint(exact=tuple(values), why=(f"{what} of {_label(use.node)}",))


def _reshape_shape(use: _Use) -> Constraint:
    k = int(np.prod(use.seen_shape)) if use.seen_shape else 1
    data = use.shape_of(use.node.input[0])
    if data is not None and len(data) == k and all(d is not None for d in data):
        return _exact(use, "the target shape", list(data))  # the data's own shape: always valid
    return _exact(use, "the target shape", [1] * (k - 1) + [-1] if k else [])  # valid for any element count


def _expand_shape(use: _Use) -> Constraint:
    k = int(np.prod(use.seen_shape)) if use.seen_shape else 1
    return _exact(use, "the target shape", [1] * k)  # ones broadcast against anything


def _split_sizes(use: _Use, data_index: int, what: str, parts: int | None = None) -> Constraint:
    axis = int(_attr(use.node, "axis", 0))
    d, why = use.dim(data_index, axis)
    if d is None:
        return _fail(use, what, why)
    k = parts if parts is not None else (int(np.prod(use.seen_shape)) if use.seen_shape else 1)
    if k <= 0:
        return _fail(use, what, "it has no elements")
    base, extra = divmod(d, k)
    return _exact(use, f"{what} (size {d} on axis {axis})", [base + (1 if i < extra else 0) for i in range(k)])


def _squeeze_axes(use: _Use) -> Constraint:
    shape = use.shape_of(use.node.input[0])
    if shape is None:
        return _fail(use, "the axes", f"the shape of '{use.node.input[0]}' is unknown")
    ones = [i for i, d in enumerate(shape) if d == 1]
    k = int(np.prod(use.seen_shape)) if use.seen_shape else 1
    if len(ones) < k:
        return _fail(use, "the axes", f"'{use.node.input[0]}' has {len(ones)} dims of size 1 and {k} are needed")
    return _exact(use, "the axes (dims of size 1)", ones[:k])


def _sequence_position(use: _Use, insert: bool) -> Constraint:
    n = use.seq_len(use.node.input[0])
    if n is None:
        return _fail(use, "the position", f"the length of the sequence '{use.node.input[0]}' is unknown")
    return _need(use, f"the position (sequence of {n})", -n, n if insert else n - 1)


def _gather_nd(use: _Use, data_index: int, batch_dims: int) -> Constraint:
    shape = use.shape_of(use.node.input[data_index])
    if shape is None or any(d is None for d in shape[batch_dims:]):
        return _fail(use, "the indices", f"the shape of '{use.node.input[data_index]}' is unknown")
    if not shape[batch_dims:] or min(shape[batch_dims:]) == 0:
        return _fail(use, "the indices", f"'{use.node.input[data_index]}' has an empty dim")
    d = min(shape[batch_dims:])  # valid on every indexed axis
    return _need(use, f"the indices (smallest indexed size {d})", -d, d - 1)


def _kv_length(use: _Use) -> Constraint:
    r, why = use.rank(1)
    if r is None:
        return _fail(use, "nonpad_kv_seqlen", why)
    d, why = use.dim(1, -2 if r == 4 else 1)
    if d is None:
        return _fail(use, "nonpad_kv_seqlen", why)
    return _need(use, f"nonpad_kv_seqlen (KV length {d})", 1, d, valid=(0, d))


def _resize_input(use: _Use) -> Constraint | None:
    """roi, scales, sizes of Resize: linear and cubic modes resize only the last two dims."""
    node, i = use.node, use.index
    shape = use.shape_of(node.input[0])
    k = int(np.prod(use.seen_shape)) if use.seen_shape else 0
    full = shape is not None and k and (i != 1 and k == len(shape) or i == 1 and k == 2 * len(shape))
    if i == 1:  # roi, for tf_crop_and_resize: the whole tensor
        return _exact(use, "the region of interest (whole tensor)", [0] * (k // 2) + [1] * (k // 2)) if full else None
    if i == 2:
        if not k:
            return None  # an empty scales input: sizes decide
        if full:
            return _exact(use, "the scales (last two dims doubled)", [1] * (k - 2) + [2] * min(k, 2))
        return _need(use, "the scales", 1, 2, valid=(None, None))
    if full and all(d is not None for d in shape):
        return _exact(use, "the output sizes (last two dims doubled)", list(shape[:-2]) + [2 * d for d in shape[-2:]])
    return _need(use, "the output sizes", 1, 6, valid=(0, None))


def _role(use: _Use) -> Constraint | None:
    node, i, op = use.node, use.index, use.node.op_type
    domain = node.domain if not K.is_default_domain(node) else ""
    if domain == "com.microsoft":
        if op == "EmbedLayerNormalization" and i in (0, 1):
            return _index_into(use, 2 if i == 0 else 3, 0, "the ids" if i == 0 else "the segment ids", negatives=False)
        return None
    if domain == "ai.onnx.ml":
        if op == "ArrayFeatureExtractor" and i == 1:
            return _index_into(use, 0, -1, "the indices on the last axis", negatives=False)
        return None
    if domain:
        return None
    axis = int(_attr(node, "axis", 0))
    if op == "Gather" and i == 1:
        return _index_into(use, 0, axis, f"the indices on axis {axis}")
    if op in ("GatherElements", "ScatterElements", "Scatter") and i == 1:
        return _index_into(use, 0, axis, f"the indices on axis {axis}")
    if op == "GatherND" and i == 1:
        return _gather_nd(use, 0, int(_attr(node, "batch_dims", 0)))
    if op == "ScatterND" and i == 1:
        return _gather_nd(use, 0, 0)
    if op == "TopK" and i == 1:
        d, why = use.dim(0, int(_attr(node, "axis", -1)))
        return _need(use, f"k (size {d})", 1, d, valid=(0, d)) if d is not None else _fail(use, "k", why)
    if op.startswith("Reduce") and i == 1:
        return _axes(use, 0, "the axes")
    if op == "Unsqueeze" and i == 1:
        k = int(np.prod(use.seen_shape)) if use.seen_shape else 1
        return _axes(use, 0, "the axes", extra_rank=k)
    if op == "Squeeze" and i == 1:
        return _squeeze_axes(use)
    if op == "Slice":
        if i == 3:
            return _axes(use, 0, "the axes")
        if i == 4:
            return _need(use, "the steps (nonzero)", 1, 2, valid=(None, None))
        return None  # starts/ends are clamped: any value is valid
    if op == "Pad":
        if i == 1:
            hi = 2
            if _attr(node, "mode", b"constant") in (b"reflect", "reflect"):
                shape = use.shape_of(node.input[0])  # reflect pads must stay below the dim they mirror
                if shape is None or any(d is None for d in shape):
                    return _fail(use, "the reflect pads", f"the shape of '{node.input[0]}' is unknown")
                hi = max(0, min(hi, min(shape) - 1))
            return _need(use, "the pads", 0, hi, valid=(None, None))
        if i == 3:
            return _axes(use, 0, "the axes")
        return None
    if op in ("CumSum", "CumProd") and i == 1:
        return _axes(use, 0, "the axis")
    if op == "Reshape" and i == 1:
        return _reshape_shape(use)
    if op == "Expand" and i == 1:
        return _expand_shape(use)
    if op == "Tile" and i == 1:
        return _need(use, "the repeats", 1, 2, valid=(0, None))
    if op == "ConstantOfShape" and i == 0:
        return _need(use, "the output shape", 1, 3, valid=(0, None))
    if op == "Resize" and i in (1, 2, 3):
        return _resize_input(use)
    if op == "Upsample" and i == 1:
        k = int(np.prod(use.seen_shape)) if use.seen_shape else 0
        return _exact(use, "the scales (last two dims doubled)", [1] * (k - 2) + [2] * min(k, 2)) if k else None
    if op in ("LSTM", "GRU", "RNN") and i == 4:
        layout = int(_attr(node, "layout", 0))
        d, why = use.dim(0, 1 if layout else 0)
        return _need(use, f"the sequence lengths (sequence length {d})", 1, d, valid=(0, d)) if d else _fail(
            use, "the sequence lengths", why or "the sequence is empty")
    if op == "NonMaxSuppression" and i == 3:
        return _need(use, "the IoU threshold", 0, 1)
    if op == "Dropout" and i == 1:
        return _need(use, "the ratio", 0, 0, valid=(0, 1))
    if op == "Dropout" and i == 2:
        return _exact(use, "training_mode (off: outputs must be deterministic)", [0])
    if op == "MelWeightMatrix" and i < 5:
        # The five scalars must agree (edges within the Nyquist band): one consistent choice.
        value = (8, 16, 8000, 0, 4000)[i]
        return _exact(use, f"{('num_mel_bins', 'dft_length', 'sample_rate', 'lower_edge_hertz', 'upper_edge_hertz')[i]}",
                      [value])
    if op == "TensorScatter" and i == 2:
        ax = int(_attr(node, "axis", -2))
        cache, why = use.dim(0, ax)
        upd, why2 = use.dim(1, ax)
        if cache is None or upd is None:
            return _fail(use, "the write indices", why or why2)
        return _need(use, f"the write indices (cache {cache}, update {upd})", 0, cache - upd)
    if op == "CenterCropPad" and i == 1:
        return _need(use, "the output shape", 1, 4, valid=(0, None))
    if op == "Range" and i == 2:
        return _need(use, "delta (nonzero, and not so small that the output explodes)", 1, 2, valid=(None, None))
    if op == "OneHot" and i == 1:
        return _need(use, "the depth", 2, 8, valid=(1, None))
    if op == "Loop" and i == 0:
        return _need(use, "the trip count", 1, 3, valid=(None, None))
    if op == "Split" and i == 1:
        return _split_sizes(use, 0, "the split sizes", parts=len(node.output))
    if op == "SplitToSequence" and i == 1:
        if not use.seen_shape:
            d, why = use.dim(0, axis)
            return _need(use, f"the chunk size (size {d})", 1, d, valid=(1, None)) if d else _fail(use, "the chunk size", why or "empty")
        return _split_sizes(use, 0, "the split sizes")
    if op in ("NegativeLogLikelihoodLoss", "SoftmaxCrossEntropyLoss") and i == 1:
        c = _index_into(use, 0, 1, "the class labels", negatives=False)
        if _attr(node, "ignore_index", None) is not None and not c.problem:
            c = replace(c, valid_lo=None, valid_hi=None)  # the ignored label may lie anywhere
        return c
    if op == "RotaryEmbedding" and i == 3:
        return _index_into(use, 1, 0, "the position ids", negatives=False)
    if op == "RoiAlign" and i == 2:
        return _index_into(use, 0, 0, "the batch indices", negatives=False)
    if op == "ReverseSequence" and i == 1:
        d, why = use.dim(0, int(_attr(node, "time_axis", 0)))
        return _need(use, f"the sequence lengths (time size {d})", 1, d, valid=(0, d)) if d else _fail(use, "the sequence lengths", why or "empty")
    if op == "SequenceAt" and i == 1 or op == "SequenceErase" and i == 1:
        return _sequence_position(use, insert=False)
    if op == "SequenceInsert" and i == 2:
        return _sequence_position(use, insert=True)
    if op == "STFT" and i in (1, 3):
        d, why = use.dim(0, 1)
        what = "the frame step" if i == 1 else "the frame length"
        return _need(use, f"{what} (signal length {d})", 1, d, valid=(1, None)) if d else _fail(use, what, why or "empty")
    if op == "DFT" and i == 1:
        d, why = use.dim(0, int(_attr(node, "axis", 1)) if len(node.input) < 3 else 1)
        return _need(use, "the DFT length", 1, d, valid=(1, None)) if d else _fail(use, "the DFT length", why or "empty")
    if op == "DFT" and i == 2:
        r, why = use.rank(0)
        return _need(use, "the axis", 1, r - 2) if r and r >= 3 else _fail(use, "the axis", why or "the rank is too small")
    if op == "Attention" and i == 6:
        return _kv_length(use)
    if op == "AffineGrid" and i == 1:
        n, why = use.dim(0, 0)
        k = int(np.prod(use.seen_shape)) if use.seen_shape else 1
        return _exact(use, "the output size", [n] + [1] + [3] * (k - 2)) if n else _fail(use, "the output size", why)
    if op == "Col2Im" and i in (1, 2):
        what = "the image shape" if i == 1 else "the block shape"
        shape = use.shape_of(node.input[0])
        if shape is None or len(shape) != 3 or any(d is None for d in shape):
            return _fail(use, what, f"the shape of '{node.input[0]}' is unknown")
        k = int(np.prod(use.seen_shape)) if use.seen_shape else 0
        solution = _col2im_shapes(node, shape[1], shape[2], k)
        if solution is None:
            return _fail(use, what, f"no image and block shape of {k} dims up to size {_COL2IM_MAX} fit "
                                    f"'{node.input[0]}' {list(shape)}")
        return _exact(use, what, solution[i - 1])
    if op == "ImageDecoder" and i == 0:
        return _fail(use, "the encoded image", "random bytes are not an image")
    if op == "MaxUnpool" and i in (1, 2):
        shape = use.shape_of(node.input[0])
        if shape is None or any(d is None for d in shape):
            return _fail(use, "the indices" if i == 1 else "the output shape", f"the shape of '{node.input[0]}' is unknown")
        spatial = _unpool_spatial(node, shape)
        if i == 2:
            return _exact(use, "the output shape (the default one)", list(shape[:2]) + spatial)
        return _need(use, "the indices (positions in one output plane)", 0, int(np.prod(spatial)) - 1)
    return None


_COL2IM_MAX = 16


def _col2im_shapes(node: onnx.NodeProto, channels_x_block: int, blocks: int, k: int) -> tuple[list[int], list[int]] | None:
    """An (image_shape, block_shape) pair Col2Im accepts for an input [N, C*prod(block), L].

    The block must divide the channel dim, and the sliding-block counts per spatial dim
    must multiply to L. Searched small-first, the same for both inputs (deterministic).
    """
    import itertools

    if k <= 0:
        return None
    dil = list(_attr(node, "dilations", [1] * k))
    strides = list(_attr(node, "strides", [1] * k))
    pads = list(_attr(node, "pads", [0] * 2 * k))
    for block in itertools.product(range(1, 5), repeat=k):
        if channels_x_block % int(np.prod(block)):
            continue
        # per dim: block count -> the smallest image size giving it
        counts: list[dict[int, int]] = []
        for d in range(k):
            options: dict[int, int] = {}
            for img in range(1, _COL2IM_MAX + 1):
                span = img + pads[d] + pads[k + d] - dil[d] * (block[d] - 1) - 1
                if span >= 0:
                    options.setdefault(span // strides[d] + 1, img)
            counts.append(options)

        def split(d: int, rest: int) -> list[int] | None:
            if d == k:
                return [] if rest == 1 else None
            for n, img in sorted(counts[d].items()):
                if rest % n == 0:
                    tail = split(d + 1, rest // n)
                    if tail is not None:
                        return [img] + tail
            return None

        image = split(0, blocks)
        if image is not None:
            return image, list(block)
    return None


def _unpool_spatial(node: onnx.NodeProto, shape: tuple[int, ...]) -> list[int]:
    kernel = list(_attr(node, "kernel_shape", []))
    r = len(kernel)
    strides = list(_attr(node, "strides", [1] * r))
    pads = list(_attr(node, "pads", [0] * 2 * r))
    return [(shape[2 + j] - 1) * strides[j] - pads[j] - pads[r + j] + kernel[j] for j in range(r)]


def _through(c: Constraint, path: _Path) -> Constraint:
    """A constraint on ``seen = scale * x + offset`` as one on x."""
    if c.problem or (path.scale == 1 and path.offset == 0 and path.exact_ok):
        if c.problem and path.via:
            return replace(c, problem=f"{c.problem} (reached through {', '.join(path.via)})")
        return c
    via = (f"through {', '.join(path.via)}",) if path.via else ()
    if c.exact is not None:
        if not path.exact_ok:
            return Constraint(problem=f"{c.why[0]} needs an exact value, and it reaches there through "
                                      f"{', '.join(path.via)}: a valid value cannot be inferred")
        xs = []
        for v in c.exact:
            x, rem = divmod(v - path.offset, path.scale)
            if rem:
                return Constraint(problem=f"{c.why[0]} needs {list(c.exact)}, which no integer input gives")
            xs.append(x)
        return Constraint(exact=tuple(xs), why=c.why + via)
    new_lo, new_hi = _map_bounds(c.lo, c.hi, path)
    valid_lo, valid_hi = _map_bounds(c.valid_lo, c.valid_hi, path)
    choices = tuple(x for x, rem in (divmod(v - path.offset, path.scale) for v in c.choices) if not rem)
    return Constraint(new_lo, new_hi, c.distinct and path.exact_ok, None, c.why + via, None, valid_lo, valid_hi,
                      choices=choices)


def _map_bounds(lo: int | None, hi: int | None, path: _Path) -> tuple[int | None, int | None]:
    bounds = [None if b is None else (b - path.offset) / path.scale for b in (lo, hi)]
    if path.scale < 0:
        bounds.reverse()
    return (None if bounds[0] is None else int(np.ceil(bounds[0])),
            None if bounds[1] is None else int(np.floor(bounds[1])))


# --- shapes of intermediate tensors ---------------------------------------------------------------------------------


def _skeleton(model: onnx.ModelProto, shapes: Mapping[str, tuple[int, ...]]) -> onnx.ModelProto:
    """The model without its large initializers' data (they become typed inputs), inputs pinned."""
    m = onnx.ModelProto(ir_version=max(model.ir_version, 4), opset_import=model.opset_import)
    g = m.graph
    g.node.extend(model.graph.node)
    g.output.extend(model.graph.output)
    g.value_info.extend(model.graph.value_info)
    for f in model.functions:
        m.functions.add().CopyFrom(f)
    inits = {t.name for t in model.graph.initializer}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        new = g.input.add()
        new.CopyFrom(vi)
        if vi.name in shapes and vi.type.HasField("tensor_type"):
            new.type.tensor_type.ClearField("shape")
            for d in shapes[vi.name]:
                new.type.tensor_type.shape.dim.add().dim_value = int(d)
    for t in model.graph.initializer:
        n = int(np.prod(t.dims)) if t.dims else 1
        if n <= _SKELETON_MAX_ELEMENTS and t.data_location != TensorProto.EXTERNAL:
            g.initializer.add().CopyFrom(t)
        else:
            g.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    return m


def _shape_oracle(model: onnx.ModelProto, g: _Graph, shapes: Mapping[str, tuple[int, ...]]) -> ShapeOf:
    """name -> concrete dims (None where unknown); shape inference runs on first need only."""
    inferred: dict[str, tuple[int | None, ...]] | None = None

    def infer() -> dict[str, tuple[int | None, ...]]:
        out: dict[str, tuple[int | None, ...]] = {}
        try:
            m = infer_shapes(_skeleton(model, shapes))
        except Exception as exc:  # inference refusing the model only means fewer known sizes
            log.debug("shape inference failed: %s", exc)
            return out
        graphs = [m.graph] + [a.g for n, _ in _walk(m.graph) for a in n.attribute if a.HasField("g")]
        for graph in graphs:
            for vi in list(graph.value_info) + list(graph.output) + list(graph.input):
                tt = vi.type.tensor_type
                if vi.type.HasField("tensor_type") and tt.HasField("shape"):
                    out.setdefault(vi.name, tuple(d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim))
        return out

    def shape_of(name: str) -> tuple[int | None, ...] | None:
        nonlocal inferred
        if name in shapes:
            return tuple(shapes[name])
        if name in g.dims:
            return g.dims[name]
        if inferred is None:
            inferred = infer()
        return inferred.get(name)

    return shape_of


def _sequence_lengths(g: _Graph, lengths: Mapping[str, int]) -> Callable[[str], int | None]:
    def seq_len(name: str) -> int | None:
        if name in lengths:
            return lengths[name]
        for node in g.nodes:
            if name in node.output and node.op_type == "SequenceConstruct":
                return len(node.input)
        return None

    return seq_len


def int_input_names(model: onnx.ModelProto) -> list[str]:
    return _input_names(model, INT_TYPES)


def constrained_input_names(model: onnx.ModelProto) -> list[str]:
    """Inputs whose values some use may constrain: integers, and the few float or boolean
    inputs that act as counts, thresholds or switches (a OneHot depth, an IoU threshold,
    Dropout's training_mode)."""
    return _input_names(model, INT_TYPES | _FLOAT_TYPES | {TensorProto.BOOL})


_FLOAT_TYPES = frozenset({TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16})


def _input_names(model: onnx.ModelProto, types: frozenset[int]) -> list[str]:
    inits = {t.name for t in model.graph.initializer}
    return [vi.name for vi in model.graph.input if vi.name not in inits and vi.type.HasField("tensor_type")
            and vi.type.tensor_type.elem_type in types]


def index_model(model: onnx.ModelProto) -> _Graph:
    """The use index of a model, to pass to several :func:`infer_constraints` calls (one per sample size)."""
    return _index(model)


def infer_constraints(
    model: onnx.ModelProto,
    shapes: Mapping[str, tuple[int, ...]],
    sequence_lengths: Mapping[str, int] | None = None,
    names: list[str] | None = None,
    index: _Graph | None = None,
) -> dict[str, Constraint]:
    """A Constraint for every integer input some use constrains (others are absent: any value works).

    ``shapes``: the concrete shape of every tensor input in the sample being made.
    ``sequence_lengths``: the length of every sequence input in it.
    """
    names = constrained_input_names(model) if names is None else names
    if not names:
        return {}
    g = index if index is not None else _index(model)
    shape_of = _shape_oracle(model, g, shapes)
    seq_len = _sequence_lengths(g, dict(sequence_lengths or {}))
    out: dict[str, Constraint] = {}
    integer = set(_input_names(model, INT_TYPES | {TensorProto.BOOL}))
    for name in names:
        acc: Constraint | None = _mask_constraint(g, name, name in integer)
        for node, idx, path in _uses(g, name):
            use = _Use(node, idx, shape_of, tuple(shapes.get(name, ())), seq_len)
            c = _role(use) if node.op_type != "Equal" else _tested_value(g, node, idx)
            if c is None:
                continue
            c = _through(c, path)
            if not path.sure or id(node) in g.conditional:
                c = replace(c, valid_lo=None, valid_hi=None)  # a guide for generation, not a rule for users' data
            acc = c if acc is None else _intersect(acc, c)
        if acc is not None:
            out[name] = acc
    return out


# --- masks: inputs whose values switch positions on and off ----------------------------------------------------------

# Ops a mask's values pass through unchanged (as any dtype: a mask is often cast to float first).
_MASK_PASS = {"Identity": (0,), "Cast": (0,), "CastLike": (0,), "Unsqueeze": (0,), "Squeeze": (0,), "Reshape": (0,),
              "Flatten": (0,), "Expand": (0,), "Tile": (0,), "Transpose": (0,), "Slice": (0,), "Gather": (0,),
              "Concat": None}
_BIG = 1e4  # |c| of a constant that turns a 0/1 mask into "off" (-1e4, -1e9, finfo.min = -3.4e38)
_BOOL = TensorProto.BOOL


def _float_constant(g: _Graph, name: str) -> float | None:
    value = g.constants.get(name)
    if value is None or value.size == 0 or value.dtype.kind not in "fiu":
        return None
    flat = value.reshape(-1).astype(np.float64)
    return float(flat[0]) if (flat == flat[0]).all() else None


def _feeds_softmax(g: _Graph, name: str, hops: int = 2) -> bool:
    for node, _ in g.consumers.get(name, []):
        if node.op_type in ("Softmax", "LogSoftmax"):
            return True
        if hops and node.op_type in ("Add", "Reshape", "Cast", "Where") and node.output:
            if _feeds_softmax(g, node.output[0], hops - 1):
                return True
    return False


def _mask_role(g: _Graph, node: onnx.NodeProto, idx: int, was_integer: bool) -> str | None:
    """How ``node`` uses the value at input ``idx`` as a 0/1 mask, or None."""
    op = node.op_type
    other = node.input[1 - idx] if op in ("Add", "Sub", "Mul", "Equal", "Greater", "Less") and len(node.input) == 2 else ""
    c = _float_constant(g, other) if other else None
    if op == "Sub" and idx == 1 and c == 1:
        return f"used as 1 - x by {_label(node)}"
    if op == "Mul" and c is not None and abs(c) >= _BIG:
        return f"multiplied by {c:.3g} in {_label(node)}"
    if op == "Mul" and c is None and was_integer:
        return f"multiplies activations in {_label(node)}"
    if op == "Where" and idx == 0:
        return f"the condition of {_label(node)}"
    if op in ("Not", "And", "Or", "Xor"):
        return f"a boolean operand of {_label(node)}"
    if op in ("Equal", "Greater", "Less") and c in (0, 1):
        return f"compared with {c:g} in {_label(node)}"
    if op == "Add" and c is None and node.output and _feeds_softmax(g, node.output[0]):
        return f"added to attention scores in {_label(node)}"
    return None


def _mask_constraint(g: _Graph, name: str, integer: bool) -> Constraint | None:
    """A mask constraint when the input's values reach a mask use (``1 - x``, ``x * -big``, a
    Where condition, a bool cast, a bias added before a Softmax), through shape ops and casts.

    ``integer``: the input is an integer or boolean tensor; only such an input (cast to
    float) multiplying activations is taken for a mask, a float input doing so is data."""
    seen: set[str] = set()
    stack = [(name, integer, 0)]
    while stack:
        current, integer, depth = stack.pop()
        if current in seen or depth > 12:
            continue
        seen.add(current)
        for node, idx in g.consumers.get(current, []):
            op = node.op_type
            if node.domain not in ("", "ai.onnx"):
                continue
            if op == "Cast" and _attr(node, "to", 0) == _BOOL:
                return Constraint(0, 1, why=(f"cast to bool by {_label(node)}",), mask=True)
            why = _mask_role(g, node, idx, integer)
            if why:
                return Constraint(0, 1, why=(why,), mask=True)
            passes = _MASK_PASS.get(op, ())
            if passes is None or idx in (passes or ()):
                still_int = integer and not (op == "Cast" and _attr(node, "to", 0) not in INT_TYPES | {_BOOL})
                for out in node.output[:1]:
                    if out:
                        stack.append((out, still_int, depth + 1))
    return None


def _tested_value(g: _Graph, node: onnx.NodeProto, idx: int) -> Constraint | None:
    """``Equal(x, c)`` with a constant integer ``c``: the graph branches on x being c (a sample
    rate, a mode flag), so samples should take that value."""
    if len(node.input) != 2:
        return None
    c = _scalar_constant(g, node.input[1 - idx])
    if c is None:
        return None
    return Constraint(why=(f"tested for {c} by {_label(node)}",), choices=(c,))


# --- dims fixed by weights ------------------------------------------------------------------------------------------


def _symbolic_skeleton(model: onnx.ModelProto, symbols_of: Mapping[str, tuple]) -> onnx.ModelProto:
    """The weightless skeleton with every input dim named by its symbol (``x:1`` for unnamed dims)."""
    m = _skeleton(model, {})
    for vi in m.graph.input:
        dims = symbols_of.get(vi.name)
        if dims is None or not vi.type.HasField("tensor_type"):
            continue
        for d, sym in zip(vi.type.tensor_type.shape.dim, dims):
            if isinstance(sym, str):
                d.ClearField("dim_value")
                d.dim_param = sym
    return m


def _inferred_dims(model: onnx.ModelProto) -> dict[str, tuple[int | str | None, ...]]:
    out: dict[str, tuple[int | str | None, ...]] = {}
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception as exc:  # noqa: BLE001 - inference refusing the model only means no fixed dims
        log.debug("shape inference failed: %s", exc)
        return out
    for vi in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        tt = vi.type.tensor_type
        if vi.type.HasField("tensor_type") and tt.HasField("shape"):
            out[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim)
    for t in inferred.graph.initializer:
        out[t.name] = tuple(int(d) for d in t.dims)
    return out


def fixed_dims(model: onnx.ModelProto, symbols_of: Mapping[str, tuple]) -> dict[str, tuple[int, str]]:
    """Dynamic input dims whose size the weights fix: symbol -> (size, why).

    ``symbols_of``: input name -> its dims (ints, or symbol keys for dynamic dims), as
    :func:`surgeon.input_data.input_specs` gives them. Symbolic shape inference carries
    the symbols to the nodes that read them; a dim is fixed where a node's weight says
    what it must be: an LSTM/GRU/RNN's input size (W), a Conv's input channels, the
    inner dim of a MatMul/Gemm against a weight, a normalization's channels, an
    elementwise op against a constant of that size, and the one unknown of a Reshape to
    a constant shape (an exporter's baked size). Main graph only; the first fix of a
    symbol wins (a second, different one is a model that runs at no size).
    """
    symbols = {d for dims in symbols_of.values() for d in dims if isinstance(d, str)}
    if not symbols:
        return {}
    dims = _inferred_dims(_symbolic_skeleton(model, symbols_of))
    weights = _weights(model)
    found: dict[str, tuple[int, str]] = {}

    def fix(sym: Any, size: int, why: str) -> None:
        if isinstance(sym, str) and sym in symbols and sym not in found and size > 0:
            found[sym] = (int(size), why)

    def shape(name: str) -> tuple | None:
        return dims.get(name) if name else None

    for node in model.graph.node:
        op, ins = node.op_type, list(node.input)
        if node.domain not in ("", "ai.onnx") or not ins:
            continue
        x = shape(ins[0])
        if op in ("LSTM", "GRU", "RNN") and x and len(ins) > 1 and (w := shape(ins[1])) and len(w) == 3 and len(x) == 3:
            if isinstance(w[2], int):
                fix(x[2], w[2], f"the input size of {_label(node)} (its W is {list(w)})")
        elif op == "Conv" and x and len(ins) > 1 and (w := shape(ins[1])) and len(x) >= 2 and isinstance(w[1], int):
            fix(x[1], w[1] * int(_attr(node, "group", 1)), f"the input channels of {_label(node)} (weight {list(w)})")
        elif op == "ConvTranspose" and x and len(ins) > 1 and (w := shape(ins[1])) and len(x) >= 2 and isinstance(w[0], int):
            fix(x[1], w[0], f"the input channels of {_label(node)} (weight {list(w)})")
        elif op == "MatMul" and len(ins) == 2:
            a, b = x, shape(ins[1])
            if a and b and ins[1] in weights and isinstance(b[-2 if len(b) >= 2 else 0], int):
                fix(a[-1], b[-2 if len(b) >= 2 else 0], f"the inner dim of {_label(node)} (weight {list(b)})")
            if a and b and ins[0] in weights and len(b) >= 2 and isinstance(a[-1], int):
                fix(b[-2], a[-1], f"the inner dim of {_label(node)} (weight {list(a)})")
        elif op == "Gemm" and len(ins) >= 2 and x and len(x) == 2 and (b := shape(ins[1])) and len(b) == 2 \
                and ins[1] in weights:
            k = b[1] if _attr(node, "transB", 0) else b[0]
            if isinstance(k, int):
                fix(x[0] if _attr(node, "transA", 0) else x[1], k, f"the inner dim of {_label(node)} (weight {list(b)})")
        elif op in ("BatchNormalization", "InstanceNormalization") and x and len(x) >= 2 and len(ins) > 1 \
                and (sc := shape(ins[1])) and len(sc) == 1 and isinstance(sc[0], int):
            fix(x[1], sc[0], f"the channels of {_label(node)} (scale {list(sc)})")
        elif op == "LayerNormalization" and x and len(ins) > 1 and (sc := shape(ins[1])):
            for sym, size in zip(reversed(x), reversed(sc)):
                if isinstance(size, int) and size > 1:
                    fix(sym, size, f"the normalized dims of {_label(node)} (scale {list(sc)})")
        elif op in ("Add", "Sub", "Mul", "Div") and len(ins) == 2:
            for i in (0, 1):
                mine, other = shape(ins[i]), shape(ins[1 - i])
                if mine and other and ins[1 - i] in weights:
                    for sym, size in zip(reversed(mine), reversed(other)):
                        if isinstance(size, int) and size > 1:
                            fix(sym, size, f"broadcast against the constant '{ins[1 - i]}' {list(other)} in {_label(node)}")
        elif op == "Reshape" and x and len(ins) == 2:
            _reshape_fix(node, x, _target(model, ins[1]), fix)
    return found


def _weights(model: onnx.ModelProto) -> set[str]:
    names = {t.name for t in model.graph.initializer}
    names.update(o for n in model.graph.node if n.op_type == "Constant" for o in n.output)
    return names


def _target(model: onnx.ModelProto, name: str) -> list[int] | None:
    for t in model.graph.initializer:
        if t.name == name and t.data_type == TensorProto.INT64 and t.data_location != TensorProto.EXTERNAL:
            return [int(v) for v in numpy_helper.to_array(t).reshape(-1)]
    for n in model.graph.node:
        if n.op_type == "Constant" and n.output and n.output[0] == name:
            for a in n.attribute:
                if a.name == "value" and a.HasField("t"):
                    return [int(v) for v in numpy_helper.to_array(a.t).reshape(-1)]
    return None


def _reshape_fix(node: onnx.NodeProto, x: tuple, target: list[int] | None, fix) -> None:
    """A Reshape to a constant shape without -1 fixes the element count: one unknown dim of x follows."""
    if target is None or -1 in target:
        return
    allowzero = int(_attr(node, "allowzero", 0))
    out_dims = []
    for i, t in enumerate(target):
        if t == 0 and not allowzero:
            if i >= len(x):
                return
            out_dims.append(x[i])
        else:
            out_dims.append(t)
    unknown_in = [d for d in x if not isinstance(d, int)]
    unknown_out = [d for d in out_dims if not isinstance(d, int)]
    for d in unknown_out:  # a dim copied through 0 cancels on both sides
        if d in unknown_in:
            unknown_in.remove(d)
        else:
            return
    if len(unknown_in) != 1:
        return
    total = int(np.prod([d for d in out_dims if isinstance(d, int)], dtype=np.int64))
    known = int(np.prod([d for d in x if isinstance(d, int)], dtype=np.int64))
    if known and total % known == 0:
        fix(unknown_in[0], total // known, f"the element count of {_label(node)}'s constant target {target}")
