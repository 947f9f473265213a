"""Constant evaluation as a registry of small per-op evaluators, keyed by (domain, op) and opset range.

What it is for: deciding what a shape computation (``Shape → Gather → Unsqueeze → Concat``,
``ConstantOfShape``, ``Where(Equal(s, -1), …)``) equals without running the model, in
:mod:`surgeon.symbolic` values whose entries may stay symbolic (a dynamic batch). The
shape-chain folder asks it whether a Reshape target is "dim 0 of the input, then 2048";
constant folding asks it for the value of ``Gather(Shape(x), 1)`` when dim 1 is static
while dim 0 is not, without building an ONNX Runtime session.

How it is built (onnxscript's ``optimizer/_constant_folding.py`` is the model): each op
has one small function ``(node, inputs, env) -> SVal | None``, registered with
:func:`evaluates` for the opsets where its semantics hold (``Unsqueeze`` reads its axes
from an attribute before opset 13 and from an input from 13 on: two evaluators). A
function gets the values of the node's inputs (``None`` for one that is absent or not
evaluable) and an :class:`Env` that says the opset and the symbolic dims of a tensor; it
returns ``None`` whenever it cannot prove the result. The :class:`Evaluator` walks a
tensor's producers, memoizes per run, and reads constants through the one reader it is
given (the caller decides what counts as a constant: never an overridable default).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from surgeon.symbolic import (MAX_ENTRIES, Expr, SVal, add, ceil, const_sval, floor, is_dim_product, kind_of, mul,
                              trunc, truediv)

log = logging.getLogger(__name__)

Reader = Callable[[gs.Tensor], "np.ndarray | None"]
DimsOf = Callable[[gs.Tensor], "list[Expr] | None"]
OpEvaluator = Callable[[gs.Node, list, "Env"], "SVal | None"]


@dataclass(frozen=True)
class Env:
    """What an evaluator may ask besides its inputs' values: the opset, and a tensor's dims."""

    opset: int
    dims: DimsOf


@dataclass(frozen=True)
class _Entry:
    since: int
    until: int | None  # inclusive; None: still current
    fn: OpEvaluator


_TABLE: dict[tuple[str, str], list[_Entry]] = {}


def evaluates(op: str, *, since: int = 1, until: int | None = None, domain: str = ""):
    """Register the decorated function as the evaluator of ``domain::op`` for opsets ``since..until``."""
    def register(fn: OpEvaluator) -> OpEvaluator:
        entries = _TABLE.setdefault((domain, op), [])
        for e in entries:
            if e.since <= (until or 10**6) and since <= (e.until or 10**6):
                raise ValueError(f"two evaluators of {domain or 'ai.onnx'}::{op} overlap at opset {max(since, e.since)}")
        entries.append(_Entry(since, until, fn))
        return fn
    return register


def _domain(node: gs.Node) -> str:
    return "" if node.domain in (None, "ai.onnx") else node.domain


def lookup(node: gs.Node, opset: int) -> OpEvaluator | None:
    """The evaluator of ``node``'s op at ``opset``, or None."""
    for e in _TABLE.get((_domain(node), node.op), ()):
        if e.since <= opset and (e.until is None or opset <= e.until):
            return e.fn
    return None


class Evaluator:
    """Computes :class:`SVal` for tensors, memoized for one run (a local object, never kept).

    ``constant`` reads a tensor's constant value (or None); ``dims`` gives a tensor's dims as
    expressions (or None when its rank is unknown); both are the caller's rules.
    """

    def __init__(self, *, opset: int, dims: DimsOf, constant: Reader):
        self.env = Env(opset, dims)
        self.constant = constant
        self.memo: dict[int, SVal | None] = {}

    def value(self, t: gs.Tensor) -> SVal | None:
        key = id(t)
        if key not in self.memo:
            self.memo[key] = None  # cycle guard
            try:
                self.memo[key] = self._compute(t)
            except (ValueError, TypeError, ZeroDivisionError, OverflowError, IndexError, KeyError) as exc:
                log.debug("cannot evaluate %s: %s", t.name, exc)
                self.memo[key] = None
        return self.memo[key]

    def _compute(self, t: gs.Tensor) -> SVal | None:
        if isinstance(t, gs.Constant) and (len(t.shape) > 1 or int(np.prod(t.shape)) > MAX_ENTRIES):
            return None  # what const_sval refuses, decided without reading a weight (or computing a recipe)
        arr = self.constant(t)
        if arr is not None:
            return const_sval(arr)
        if isinstance(t, gs.Constant) or len(t.inputs) != 1:
            return None
        node = t.inputs[0]
        fn = lookup(node, self.env.opset)
        if fn is None or not node.outputs or node.outputs[0] is not t:
            return None
        vals = [self.value(x) if _present(x) else None for x in node.inputs]
        return fn(node, vals, self.env)

    def is_shape_chain(self, t: gs.Tensor, limit: int = 64) -> bool:
        """True when ``t`` is computed (through evaluated ops) from a Shape node."""
        seen, stack = set(), [t]
        while stack and len(seen) < limit:
            cur = stack.pop()
            if id(cur) in seen or isinstance(cur, gs.Constant) or len(cur.inputs) != 1:
                continue
            seen.add(id(cur))
            node = cur.inputs[0]
            if node.op == "Shape":
                return True
            if node.op in EVALUATED_OPS:
                stack.extend(node.inputs)
        return False


def _present(t: gs.Tensor) -> bool:
    return isinstance(t, gs.Constant) or bool(t.name)


def _attr_or_input_ints(node: gs.Node, vals: list, key: str, index: int, *, from_input: bool):
    """Constant int list from an attribute (older opsets) or input ``index`` (newer); None: unknown."""
    if not from_input:
        return node.attrs.get(key)
    v = vals[index] if index < len(vals) else None
    return v.ints() if v is not None and v.is_const else None


# --- the evaluators -------------------------------------------------------------------

def _dims(env: Env, t: gs.Tensor) -> list[Expr] | None:
    """``env.dims(t)``; an entry the caller left None is "dim i of this very tensor" (equal only to itself)."""
    dims = env.dims(t)
    return None if dims is None else [Expr.atom(("dim", t.name, i)) if d is None else d for i, d in enumerate(dims)]


@evaluates("Shape")
def _shape(node, vals, env):
    dims = _dims(env, node.inputs[0])
    if dims is None:
        return None
    r = len(dims)
    start, end = node.attrs.get("start", 0), node.attrs.get("end", r)
    start = max(0, min(r, start + r if start < 0 else start))
    end = max(0, min(r, end + r if end < 0 else end))
    return SVal(tuple(dims[start:end]), False, "int")


@evaluates("Size")
def _size(node, vals, env):
    dims = _dims(env, node.inputs[0])
    if dims is None:
        return None
    total = Expr.const(1)
    for d in dims:
        total = mul(total, d)
    return SVal((total,), True, "int")


@evaluates("Identity")
def _identity(node, vals, env):
    return vals[0]


@evaluates("Cast")
def _cast(node, vals, env):
    v = vals[0]
    if v is None:
        return None
    kind = kind_of(onnx.helper.tensor_dtype_to_np_dtype(node.attrs["to"]))
    if kind is None:
        return None
    if kind == "int" and v.kind == "float":
        return SVal(tuple(trunc(e) for e in v.entries), v.scalar, "int")
    if kind == "bool":
        if not v.is_const:
            return None
        return SVal(tuple(Expr.const(int(e.coef != 0)) for e in v.entries), v.scalar, "bool")
    return SVal(v.entries, v.scalar, kind)


@evaluates("Gather")
def _gather(node, vals, env):
    data, idx = vals[0], vals[1]
    if data is None or idx is None or data.scalar or not idx.is_const or node.attrs.get("axis", 0) != 0:
        return None
    n = len(data.entries)
    picked = []
    for i in idx.ints():
        i = i + n if i < 0 else i
        if not 0 <= i < n:
            return None
        picked.append(data.entries[i])
    return SVal(tuple(picked), idx.scalar, data.kind)


def _slice_of(data: SVal | None, starts, ends, axes, steps) -> SVal | None:
    """One 1-D slice along axis 0 with constant parameters (ONNX clamps like Python once in range)."""
    if data is None or data.scalar or starts is None or ends is None:
        return None
    axes = axes if axes is not None else [0]
    steps = steps if steps is not None else [1]
    if len(starts) != 1 or list(axes) not in ([0], [-1]) or len(steps) != 1 or steps[0] == 0:
        return None
    n, step = len(data.entries), steps[0]
    start = max(-n - 1, min(n + 1, starts[0]))
    end = max(-n - 1, min(n + 1, ends[0]))
    if step < 0 and end < -n:
        end = None
    return SVal(tuple(data.entries[start:end:step]), False, data.kind)


@evaluates("Slice", until=9)
def _slice_attrs(node, vals, env):
    return _slice_of(vals[0], node.attrs.get("starts"), node.attrs.get("ends"), node.attrs.get("axes", [0]), [1])


@evaluates("Slice", since=10)
def _slice_inputs(node, vals, env):
    params = []
    for i in range(1, 5):
        if i < len(node.inputs) and _present(node.inputs[i]):
            v = vals[i]
            if v is None or not v.is_const:
                return None
            params.append(v.ints())
        else:
            params.append(None)
    return _slice_of(vals[0], *params)


@evaluates("Concat")
def _concat(node, vals, env):
    if any(v is None or v.scalar for v in vals):
        return None
    entries = tuple(e for v in vals for e in v.entries)
    kinds = {v.kind for v in vals}
    if len(entries) > MAX_ENTRIES or len(kinds) != 1:
        return None
    return SVal(entries, False, kinds.pop())


def _unsqueeze(v: SVal | None, axes) -> SVal | None:
    if v is None or not v.scalar or axes is None or list(axes) not in ([0], [-1]):
        return None
    return SVal(v.entries, False, v.kind)


@evaluates("Unsqueeze", until=12)
def _unsqueeze_attr(node, vals, env):
    return _unsqueeze(vals[0], _attr_or_input_ints(node, vals, "axes", 1, from_input=False))


@evaluates("Unsqueeze", since=13)
def _unsqueeze_input(node, vals, env):
    return _unsqueeze(vals[0], _attr_or_input_ints(node, vals, "axes", 1, from_input=True))


@evaluates("Squeeze")
def _squeeze(node, vals, env):
    v = vals[0]  # a 1-D vector of one entry: axis 0 is the only one there is
    if v is None or v.scalar or len(v.entries) != 1:
        return None
    return SVal(v.entries, True, v.kind)


@evaluates("Reshape")
def _reshape(node, vals, env):
    v, shape = vals[0], vals[1]
    if v is None or shape is None or not shape.is_const:
        return None
    target = shape.ints()
    if target in ([-1], [len(v.entries)]):
        return SVal(v.entries, False, v.kind)
    if target == [] and len(v.entries) == 1:
        return SVal(v.entries, True, v.kind)
    return None


def _broadcast(a: SVal, b: SVal):
    la, lb = len(a.entries), len(b.entries)
    if la == lb:
        return list(zip(a.entries, b.entries))
    if la == 1:
        return [(a.entries[0], e) for e in b.entries]
    if lb == 1:
        return [(e, b.entries[0]) for e in a.entries]
    return None


def _elementwise(combine: Callable[[Expr, Expr, str], "Expr | None"]) -> OpEvaluator:
    """A binary arithmetic evaluator: same kind (not bool), broadcast entry by entry."""
    def evaluate(node, vals, env):
        if len(vals) != 2 or vals[0] is None or vals[1] is None:
            return None
        a, b = vals
        pairs = _broadcast(a, b) if a.kind == b.kind and a.kind != "bool" else None
        if pairs is None:
            return None
        out = [combine(x, y, a.kind) for x, y in pairs]
        return None if any(e is None for e in out) else SVal(tuple(out), a.scalar and b.scalar, a.kind)
    return evaluate


def _div(x: Expr, y: Expr, kind: str) -> Expr | None:
    q = truediv(x, y)
    if q is None or kind != "int":
        return q
    if q.is_const:
        return Expr.const(int(q.coef))  # ONNX integer Div truncates
    return trunc(q) if x.nonneg and y.nonneg else None


def _extremum(pick) -> Callable[[Expr, Expr, str], "Expr | None"]:
    def combine(x: Expr, y: Expr, kind: str) -> Expr | None:
        if x.is_const and y.is_const:
            return Expr.const(pick(x.coef, y.coef))
        return x if x == y else None
    return combine


evaluates("Add")(_elementwise(lambda x, y, k: add(x, y, 1)))
evaluates("Sub")(_elementwise(lambda x, y, k: add(x, y, -1)))
evaluates("Mul")(_elementwise(lambda x, y, k: mul(x, y)))
evaluates("Div")(_elementwise(_div))
evaluates("Max")(_elementwise(_extremum(max)))
evaluates("Min")(_elementwise(_extremum(min)))


def _rounding(f: Callable[[Expr], Expr]) -> OpEvaluator:
    def evaluate(node, vals, env):
        v = vals[0]
        if v is None or v.kind != "float":
            return None
        return SVal(tuple(f(e) for e in v.entries), v.scalar, "float")
    return evaluate


evaluates("Floor")(_rounding(floor))
evaluates("Ceil")(_rounding(ceil))


@evaluates("Equal")
def _equal(node, vals, env):
    a, b = vals[0], vals[1]
    pairs = _broadcast(a, b) if a is not None and b is not None else None
    if pairs is None:
        return None
    out = []
    for x, y in pairs:
        if x == y:
            out.append(Expr.const(1))
        elif x.is_const and y.is_const:
            out.append(Expr.const(int(x.coef == y.coef)))
        elif (x.is_const and x.coef < 0 and y.nonneg and not y.is_const and is_dim_product(y)) or \
                (y.is_const and y.coef < 0 and x.nonneg and not x.is_const and is_dim_product(x)):
            out.append(Expr.const(0))  # a dimension is never negative
        else:
            return None
    return SVal(tuple(out), a.scalar and b.scalar, "bool")


@evaluates("Not")
def _not(node, vals, env):
    v = vals[0]
    if v is None or not v.is_const:
        return None
    return SVal(tuple(Expr.const(1 - int(e.coef)) for e in v.entries), v.scalar, "bool")


@evaluates("Where")
def _where(node, vals, env):
    c, a, b = vals
    if c is None or a is None or b is None or not c.is_const or a.kind != b.kind:
        return None
    n = max(len(c.entries), len(a.entries), len(b.entries))
    if any(len(v.entries) not in (1, n) for v in (c, a, b)):
        return None

    def pick(v: SVal, i: int) -> Expr:
        return v.entries[0] if len(v.entries) == 1 else v.entries[i]

    out = tuple(pick(a, i) if pick(c, i).coef else pick(b, i) for i in range(n))
    return SVal(out, c.scalar and a.scalar and b.scalar, a.kind)


@evaluates("ConstantOfShape")
def _constant_of_shape(node, vals, env):
    shape = vals[0]
    if shape is None or not shape.is_const or len(shape.entries) != 1:
        return None
    n = shape.ints()[0]
    if not 0 <= n <= MAX_ENTRIES:
        return None
    fill = node.attrs.get("value")
    arr = np.asarray(fill.values).ravel() if isinstance(fill, gs.Constant) else np.zeros(1, np.float32)
    one = const_sval(arr[:1].reshape(()))
    return None if one is None else SVal(one.entries * n, False, one.kind)


def _reduce_prod(v: SVal | None, axes, keepdims: int) -> SVal | None:
    if v is None or v.scalar or axes not in (None, [], [0], [-1]):
        return None
    prod = Expr.const(1)
    for e in v.entries:
        prod = mul(prod, e)
    return SVal((prod,), not keepdims, v.kind)


@evaluates("ReduceProd", until=17)
def _reduce_prod_attr(node, vals, env):
    return _reduce_prod(vals[0], node.attrs.get("axes"), node.attrs.get("keepdims", 1))


@evaluates("ReduceProd", since=18)
def _reduce_prod_input(node, vals, env):
    axes = None
    if len(node.inputs) > 1 and _present(node.inputs[1]):
        axes = _attr_or_input_ints(node, vals, "axes", 1, from_input=True)
        if axes is None:
            return None
    if not axes and node.attrs.get("noop_with_empty_axes", 0):
        return None
    return _reduce_prod(vals[0], axes, node.attrs.get("keepdims", 1))


# Every op some evaluator handles (at some opset), plus Constant (read by the constant reader).
EVALUATED_OPS = frozenset(op for _, op in _TABLE) | {"Constant"}
