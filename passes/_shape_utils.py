"""What fold-shape-chains knows about dims: shape inference facts, and dims derived from the graph.

The values of shape chains are computed by the core's registry of per-op evaluators
(:mod:`surgeon.evaluators`, over :mod:`surgeon.symbolic` expressions); this module gives
it what only this pass decides: the dims of a tensor as expressions (:func:`tensor_dims`,
from onnx shape inference plus what Reshape/Expand/broadcast semantics prove where
inference gave up) and which tensors are constants (:func:`surgeon.graph_ops.constant`).

Trust in symbols: two tensors' dims are equal when shape inference gives them the same
``dim_param`` *and* that name is one we trust: declared on a graph input (and not a
placeholder like ``?``), or freshly created by inference. Names found only in the
model's own ``value_info``/outputs are never used: the inference runs on a copy with
them removed, so an exporter's stale or reused names cannot make two dims "equal".
Unnamed dims are only ever equal to themselves ("dim i of this very tensor").
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from surgeon import graph_ops as K
from surgeon import model as model_io
from surgeon.graph_ops import infer_shapes
from surgeon.evaluators import EVALUATED_OPS, Evaluator  # noqa: F401 - EVALUATED_OPS: the shape-chain folder's
from surgeon.symbolic import SVal, Expr, add, is_dim_product, mul, truediv  # noqa: F401 - SVal: the folder's

log = logging.getLogger(__name__)

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1

# ---------------------------------------------------------------------------------------
# Dims from shape inference

_PLACEHOLDER = re.compile(r"^(\?|-?\d+|None|none|)$")


def _graphs(graph: onnx.GraphProto):
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from _graphs(attr.g)
            for sub in attr.graphs:
                yield from _graphs(sub)


def _vi_dims(vi: onnx.ValueInfoProto):
    t = vi.type
    if t.WhichOneof("value") != "tensor_type" or not t.tensor_type.HasField("shape"):
        return t.tensor_type.elem_type if t.WhichOneof("value") == "tensor_type" else None, None
    dims = []
    for d in t.tensor_type.shape.dim:
        if d.HasField("dim_value") and d.dim_value >= 0:
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param") and d.dim_param:
            dims.append(d.dim_param)
        else:
            dims.append(None)
    return t.tensor_type.elem_type, dims


@dataclass(frozen=True)
class ShapeFacts:
    """What shape inference knows: tensor name → (elem_type, dims); dims entries are
    int, a trusted symbol name, or None."""

    dims: dict
    types: dict
    inputs: frozenset = frozenset()  # trusted symbols declared on graph inputs
    aliases: dict = field(default_factory=dict)  # fresh inference symbol -> Expr it provably equals
    derived: dict = field(default_factory=dict, compare=False)  # id(tensor) -> (tensor, dims from its producer)

    def rank(self, name: str) -> int | None:
        d = self.dims.get(name)
        return None if d is None else len(d)


def infer_facts(model: onnx.ModelProto, hints: dict | None = None, hint_types: dict | None = None) -> ShapeFacts:
    """Run onnx shape inference (with data propagation) on a sanitized copy.

    The copy drops ``value_info`` and output shapes so only graph-input symbols and
    symbols created by inference itself can appear; input symbols that look like
    placeholders (``?``, ``-1``) or name more than one distinct input position under a
    generated-looking name (``unk__N``) are not trusted.
    """
    too_large = model_io.needs_external_data(model)
    m = model_io.shape_only_copy(model)  # inference reads dims and small values only
    original_names = set()
    input_positions: dict[str, set] = {}
    inits = {t.name for t in m.graph.initializer}
    for g in _graphs(m.graph):
        for vi in list(g.value_info) + list(g.output):
            _, dims = _vi_dims(vi)
            for d in dims or []:
                if isinstance(d, str):
                    original_names.add(d)
        del g.value_info[:]
        for vi in g.output:
            if vi.type.WhichOneof("value") == "tensor_type":
                vi.type.tensor_type.ClearField("shape")
    for vi in m.graph.input:
        if vi.name in inits:
            continue
        _, dims = _vi_dims(vi)
        for axis, d in enumerate(dims or []):
            if isinstance(d, str):
                input_positions.setdefault(d, set()).add((vi.name, axis))
    trusted_inputs = {
        name for name, pos in input_positions.items()
        if not _PLACEHOLDER.match(name) and not (name.startswith("unk__") and len(pos) > 1)
    }
    untrusted = (original_names | set(input_positions)) - trusted_inputs
    for name, dims in (hints or {}).items():
        elem = (hint_types or {}).get(name)
        if elem:
            shape = [d if d is not None else "" for d in dims]
            vi = onnx.helper.make_tensor_value_info(name, elem, [d if d != "" else None for d in shape])
            m.graph.value_info.append(vi)
    try:
        if too_large:
            raise ValueError("model too large for in-memory shape inference")
        inferred = infer_shapes(m)
    except Exception as exc:  # noqa: BLE001 - inference is an optional source of facts
        log.debug("shape inference failed (%s); using graph structure only", exc)
        inferred = m
    dims: dict = {}
    types: dict = {}
    for g in _graphs(inferred.graph):
        for vi in list(g.input) + list(g.value_info) + list(g.output):
            elem, ds = _vi_dims(vi)
            if elem:
                types[vi.name] = elem
            if ds is not None:
                dims[vi.name] = [None if (isinstance(d, str) and d in untrusted) else d for d in ds]
        for t in g.initializer:
            types[t.name] = t.data_type
            dims[t.name] = [int(x) for x in t.dims]
    return ShapeFacts(dims, types, frozenset(trusted_inputs))


# ---------------------------------------------------------------------------------------
# Evaluation


def tensor_dims(t: gs.Tensor, facts: ShapeFacts, _depth: int = 0) -> list | None:
    """Per-dim Expr list for tensor ``t`` (None when its rank is unknown).

    Dims inference left unknown after a Reshape with a constant target are derived here
    (the ``-1`` entry is the input's element count over the other entries), because a
    ``view(-1, C, 1)`` followed by an expand to the batch is the common tf2onnx/jax shape.
    """
    out = _raw_dims(t, facts)
    if out is None or any(_unknown(e) or _fresh(e, facts) for e in out):
        derived = structural_dims(t, facts)
        if derived is not None and (out is None or len(out) == len(derived)):
            out = [d if d is not None and (_unknown(o) or (_fresh(o, facts) and not _unknown(d) and not _fresh(d, facts)))
                   else o for o, d in zip(out or [None] * len(derived), derived)]
            out = _opaque_unknowns(t, out)
    if _depth < 8 and len(t.inputs) == 1 and t.inputs[0].op == "Reshape" and (out is None or any(not e.is_const and e.atoms[0][0][0] == "dim" for e in out)):
        refined = _reshape_dims(t.inputs[0], facts, _depth)
        if refined is not None and (out is None or len(out) == len(refined)):
            out = _opaque_unknowns(t, [r if (o is None or (not o.is_const and o.atoms[0][0][0] == "dim")) else o
                                       for o, r in zip(out or [None] * len(refined), refined)])
    return out


def _opaque_unknowns(t: gs.Tensor, dims: list) -> list:
    """Entries nothing could tell become "dim i of this very tensor" (a rank known, a dim not).

    Callers compare entries and read ``is_const``/``coef``; a None among them crashed the
    pass (AttributeError, found by bench/fuzz_fix.py on a Loop output nothing inferred).
    """
    return [Expr.atom(("dim", t.name, i)) if e is None else e for i, e in enumerate(dims)]


def _fresh(e: Expr | None, facts: ShapeFacts) -> bool:
    """A symbol shape inference invented (``unk__6``): true, but equal only to itself.

    A broadcast of ``batch`` with an unknown gets a fresh symbol although it is ``batch``;
    where the producer's semantics prove a declared symbol or a number, that is preferred.
    """
    return e is not None and not e.is_const and len(e.atoms) == 1 and e.atoms[0][0][0] == "sym" \
        and e.atoms[0][0][1] not in facts.inputs


def _unknown(e: Expr | None) -> bool:
    """An entry that says only "dim i of this very tensor" (inference knew nothing)."""
    return e is None or (not e.is_const and e.atoms[0][0][0] == "dim")


# Ops whose output 0 has the shape of input 0.
_SAME_SHAPE = frozenset({
    "Abs", "Acos", "Acosh", "Asin", "Asinh", "Atan", "Atanh", "BatchNormalization", "Cast", "CastLike",
    "Ceil", "Celu", "Clip", "Cos", "Cosh", "Dropout", "Elu", "Erf", "Exp", "Floor", "Gelu", "HardSigmoid",
    "HardSwish", "Hardmax", "Identity", "InstanceNormalization", "IsInf", "IsNaN", "LayerNormalization",
    "LeakyRelu", "Log", "LogSoftmax", "LpNormalization", "Mish", "Neg", "Not", "Reciprocal", "Relu",
    "Round", "Selu", "Shrink", "Sigmoid", "Sign", "Sin", "Sinh", "Softmax", "Softplus", "Softsign", "Sqrt",
    "Tan", "Tanh", "ThresholdedRelu", "Trilu",
})
# Ops whose output is the multidirectional broadcast of all inputs.
_BROADCAST = frozenset({
    "Add", "And", "BitShift", "BitwiseAnd", "BitwiseOr", "BitwiseXor", "Div", "Equal", "Greater",
    "GreaterOrEqual", "Less", "LessOrEqual", "Max", "Mean", "Min", "Mod", "Mul", "Or", "Pow", "PRelu", "Sub",
    "Sum", "Where", "Xor",
})
_REDUCE = frozenset({"ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean",
                     "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare"})
_STRUCTURAL = _SAME_SHAPE | _BROADCAST | _REDUCE | {"MatMul", "Transpose", "Concat", "Unsqueeze", "Squeeze",
                                                    "Gather"}


def structural_dims(t: gs.Tensor, facts: ShapeFacts) -> list | None:
    """Dims of ``t`` derived from its producer's semantics and its inputs' dims; None if unknown.

    Why: shape inference gives up on a dim as soon as one broadcast meets an unknown
    (BERT's ``word + position`` embeddings with a sliced position table), and every
    tensor after it is "some size". The exporter's ``Reshape(q, Concat(Shape(h)[0],
    Shape(h)[1], [heads, dim]))`` still reads dims of ``h`` while the Reshape's input is
    ``MatMul(h, W)``: ONNX's own shape rules (MatMul keeps the leading dims, elementwise
    ops keep the shape, a broadcast against 1 keeps the other side) prove the entries
    equal without knowing their values. Memoized per pass run on ``facts``; the walk up
    the producers is iterative (a deep network is a long chain of residual Adds).
    """
    memo = facts.derived  # id -> (tensor, dims): holding the tensor keeps its id from being reused
    if id(t) in memo:
        return memo[id(t)][1]
    order, seen, stack = [], set(), [(t, False)]
    while stack:
        cur, done = stack.pop()
        if done:
            order.append(cur)
            continue
        if id(cur) in seen or id(cur) in memo:
            continue
        seen.add(id(cur))
        stack.append((cur, True))
        node = _structural_producer(cur)
        if node is not None:
            stack.extend((x, False) for x in _data_inputs(node))
    for cur in order:
        memo[id(cur)] = (cur, None)  # cycle guard
        node = _structural_producer(cur)
        if node is not None:
            try:
                memo[id(cur)] = (cur, _derive(node, facts))
            except (ValueError, TypeError, IndexError, KeyError) as exc:
                log.debug("cannot derive dims of %s: %s", cur.name, exc)
    return memo[id(t)][1]


def _structural_producer(t: gs.Tensor) -> gs.Node | None:
    if isinstance(t, gs.Constant) or len(t.inputs) != 1:
        return None
    node = t.inputs[0]
    if node.domain not in (None, "", "ai.onnx") or node.op not in _STRUCTURAL or not node.outputs \
            or node.outputs[0] is not t:
        return None
    return node


def _data_inputs(node: gs.Node) -> list:
    """Inputs whose dims the output's dims are made of."""
    present = [x for x in node.inputs if isinstance(x, gs.Constant) or x.name]
    if node.op in _SAME_SHAPE or node.op in _REDUCE or node.op in ("Transpose", "Unsqueeze", "Squeeze"):
        return present[:1]
    if node.op == "Gather":
        return present[:2]
    return present


def _axes(node: gs.Node, rank: int) -> list[int] | None:
    """Constant ``axes`` (attribute before opset 13/18, input after), normalised; None: not constant."""
    if "axes" in node.attrs:
        values = list(node.attrs["axes"])
    elif len(node.inputs) > 1 and (isinstance(node.inputs[1], gs.Constant) or node.inputs[1].name):
        arr = K.constant(node.inputs[1])
        if arr is None:
            return None
        values = [int(v) for v in np.asarray(arr).ravel()]
    else:
        return []
    return [a + rank if a < 0 else a for a in values]


def _broadcast_dims(shapes: list, facts: ShapeFacts) -> list | None:
    """ONNX multidirectional broadcasting on Expr dims.

    In a model that runs, every input's dim at a position is 1 or the output's: so where
    the known sides other than 1 agree, that is the output's dim even if another side is
    unknown or a symbol inference invented (it must be 1 or the same). Where only
    unknowns and 1s meet, the dim is unknown.
    """
    n = max(len(s) for s in shapes)
    out = []
    for j in range(n):
        seen = [s[j - (n - len(s))] for s in shapes if j - (n - len(s)) >= 0]
        strong = [e for e in seen if not _unknown(e) and not _fresh(e, facts) and e != Expr.const(1)]
        weak = [e for e in seen if _unknown(e) or _fresh(e, facts)]
        if strong:
            out.append(strong[0] if all(e == strong[0] for e in strong) else None)
        elif weak:
            out.append(weak[0] if not _unknown(weak[0]) and all(e == weak[0] for e in weak) else None)
        else:
            out.append(Expr.const(1))
    return out


def _derive(node: gs.Node, facts: ShapeFacts) -> list | None:
    op = node.op
    ins = [tensor_dims(x, facts) for x in _data_inputs(node)]
    if not ins or any(d is None for d in ins):
        return None
    a = ins[0]
    if op in _SAME_SHAPE:
        return list(a)
    if op in _BROADCAST:
        return _broadcast_dims(ins, facts)
    if op == "MatMul":
        b = ins[1]
        if len(a) < 2 or len(b) < 2:
            return None
        batch = _broadcast_dims([a[:-2], b[:-2]], facts) if (len(a) > 2 or len(b) > 2) else []
        return None if batch is None else batch + [a[-2], b[-1]]
    if op == "Transpose":
        perm = node.attrs.get("perm") or list(range(len(a)))[::-1]
        return [a[p] for p in perm] if sorted(perm) == list(range(len(a))) else None
    if op in _REDUCE:
        axes = _axes(node, len(a))
        if axes is None or (not axes and node.attrs.get("noop_with_empty_axes", 0)):
            return None
        axes = set(axes or range(len(a)))
        if node.attrs.get("keepdims", 1):
            return [Expr.const(1) if i in axes else e for i, e in enumerate(a)]
        return [e for i, e in enumerate(a) if i not in axes]
    if op == "Unsqueeze":
        axes = _axes(node, len(a) + len(_axes(node, 0) or []))
        if not axes:
            return None
        out, it = [], iter(a)
        for i in range(len(a) + len(axes)):
            out.append(Expr.const(1) if i in axes else next(it))
        return out
    if op == "Squeeze":
        axes = _axes(node, len(a))
        if not axes:
            return None  # squeeze-all needs static ones
        return [e for i, e in enumerate(a) if i not in set(axes)]
    if op == "Gather":
        axis = node.attrs.get("axis", 0)
        axis = axis + len(a) if axis < 0 else axis
        return list(a[:axis]) + list(ins[1]) + list(a[axis + 1:])
    if op == "Concat":
        axis = node.attrs["axis"]
        rank = len(a)
        axis = axis + rank if axis < 0 else axis
        if any(len(d) != rank for d in ins):
            return None
        out = []
        for j in range(rank):
            col = [d[j] for d in ins]
            if j == axis:
                if any(_unknown(e) for e in col):
                    out.append(None)
                    continue
                total = col[0]
                for e in col[1:]:
                    total = add(total, e)
                out.append(total)
            else:
                known = [e for e in col if not _unknown(e)]
                out.append(known[0] if known else None)  # all inputs share every other dim
        return out
    return None


def _reshape_dims(node: gs.Node, facts: ShapeFacts, depth: int) -> list | None:
    target = K.constant(node.inputs[1]) if len(node.inputs) > 1 else None
    if target is None or target.ndim != 1 or int(node.attrs.get("allowzero", 0)):
        return None
    src = tensor_dims(node.inputs[0], facts, depth + 1)
    if src is None:
        return None
    out: list = []
    free = None
    for i, v in enumerate(int(x) for x in target):
        if v == 0:
            if i >= len(src):
                return None
            out.append(src[i])
        elif v == -1:
            if free is not None:
                return None
            free = i
            out.append(None)
        elif v > 0:
            out.append(Expr.const(v))
        else:
            return None
    if free is not None:
        total = Expr.const(1)
        for e in src:
            total = mul(total, e)
        rest = Expr.const(1)
        for i, e in enumerate(out):
            if i != free:
                rest = mul(rest, e)
        q = truediv(total, rest)
        if q is None or not q.is_int or not is_dim_product(q) or q.coef < 0:
            return None
        out[free] = q
    return out


def _raw_dims(t: gs.Tensor, facts: ShapeFacts) -> list | None:
    if isinstance(t, gs.Constant):
        return [Expr.const(int(d)) for d in t.values.shape]
    dims = facts.dims.get(t.name)
    if dims is None and t.shape is not None:
        dims = [d if isinstance(d, int) and d >= 0 else None for d in t.shape]
    if dims is None:
        return None
    out = []
    for i, d in enumerate(dims):
        if isinstance(d, int):
            out.append(Expr.const(d))
        elif isinstance(d, str):
            out.append(facts.aliases.get(d) or Expr.atom(("sym", d)))
        else:
            out.append(Expr.atom(("dim", t.name, i)))
    return out


def evaluator(facts: ShapeFacts, opset: int) -> Evaluator:
    """The core evaluator (:mod:`surgeon.evaluators`) with this module's dims and constant reader."""
    return Evaluator(opset=opset, dims=lambda t: tensor_dims(t, facts), constant=K.constant)


def learn_aliases(root: gs.Graph, facts: ShapeFacts) -> None:
    """Tie symbols that inference invented for Reshape ``-1`` outputs to what they equal.

    onnx names the inferred ``-1`` dim of ``Reshape(x[N, 2048], [-1, 2048, 1])`` with a
    fresh ``unk__0`` although it is ``N``; recording ``unk__0 = N`` lets a later
    ``Expand(that, [N, 2048, 1])`` be proven a no-op. Only fresh symbols (never one a
    user declared on an input) get an alias, and only with a proven expression.
    """
    for g in K.iter_graphs(root):
        for node in g.nodes:
            if node.op != "Reshape" or node.domain not in (None, "", "ai.onnx") or len(node.inputs) < 2:
                continue
            inferred = facts.dims.get(node.outputs[0].name)
            if not inferred:
                continue
            refined = _reshape_dims(node, facts, 0)
            if refined is None or len(refined) != len(inferred):
                continue
            for d, r in zip(inferred, refined):
                if isinstance(d, str) and d not in facts.inputs and d not in facts.aliases and r != Expr.atom(("sym", d)):
                    facts.aliases[d] = r


def dim_hints(root: gs.Graph, facts: ShapeFacts, opset: int) -> dict:
    """Main-graph Reshape/Expand outputs whose batch-like dims inference lost but we can prove.

    ``Reshape(x[N, 2048], [-1, 2048, 1])`` is ``[N, 2048, 1]``; onnx leaves dim 0
    unnamed, and every later tensor loses ``N`` with it. Written back as value_info
    before a second inference, the proven symbol flows on. Only trusted input symbols
    and literal ints are hinted.
    """
    ev = evaluator(facts, opset)
    hints = {}
    for node in root.nodes:
        if node.domain not in (None, "", "ai.onnx") or len(node.outputs) != 1 or len(node.inputs) < 2:
            continue
        out = node.outputs[0]
        inferred = facts.dims.get(out.name)
        if node.op == "Reshape":
            refined = _reshape_dims(node, facts, 0)
        elif node.op == "Expand":
            refined = _expand_dims(node, facts, ev)
        else:
            continue
        if refined is None or (inferred is not None and len(inferred) != len(refined)):
            continue
        new, better = [], False
        for i, r in enumerate(refined):
            old = inferred[i] if inferred is not None else None
            if isinstance(old, int):
                new.append(old)
            elif r is not None and r.is_const:
                new.append(int(r.coef))
                better = True
            elif r is not None and r.coef == 1 and len(r.atoms) == 1 and r.atoms[0][1] == 1 \
                    and r.atoms[0][0][0] == "sym" and r.atoms[0][0][1] in facts.inputs:
                new.append(r.atoms[0][0][1])
                better = better or old != r.atoms[0][0][1]
            else:
                new.append(old if isinstance(old, str) and old in facts.inputs else None)
        if better:
            hints[out.name] = new
    return hints


def _expand_dims(node: gs.Node, facts: ShapeFacts, ev: "Evaluator") -> list | None:
    shape = ev.value(node.inputs[1])
    src = tensor_dims(node.inputs[0], facts)
    if shape is None or shape.scalar or src is None:
        return None
    n = max(len(shape.entries), len(src))
    a = [Expr.const(1)] * (n - len(src)) + list(src)
    b = [Expr.const(1)] * (n - len(shape.entries)) + list(shape.entries)
    out = []
    for x, y in zip(a, b):
        if y == Expr.const(1) or x == y:
            out.append(x)
        elif x == Expr.const(1):
            out.append(y)
        else:
            out.append(None)
    return out
