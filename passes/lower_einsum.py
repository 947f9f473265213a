"""``lower-einsum`` (opt-in): Einsum lowered to Transpose/Reshape/MatMul/ReduceSum/Mul.

Why: attention and bilinear layers exported from ``torch.einsum`` keep an Einsum node,
which some engines (older TensorRT, many accelerator compilers, NPUs) lack or run
slowly, while every engine runs MatMul. The lowering is the textbook pairwise
contraction (what ``opt_einsum`` and ONNX Runtime's own Einsum kernel do internally):

1. each operand first sums out the subscripts no one else needs (``ij->i``: ReduceSum);
2. operands are contracted two at a time, left to right. For a pair ``A``, ``B`` the
   subscripts fall into *batch* (in both, still needed), *contracted* (in both, no longer
   needed), *left* (``A`` only) and *right* (``B`` only). ``A`` is transposed to
   ``[batch, left, contracted]`` and ``B`` to ``[batch, contracted, right]``, groups of
   several subscripts are merged by Reshape, one MatMul contracts them (its batch
   broadcasting is Einsum's ellipsis broadcasting), and a Reshape splits the groups
   again. Without contracted subscripts (``ij,ij->ij``, an outer product) a broadcasting
   Mul replaces the MatMul;
3. a final Transpose puts the subscripts in the output's order.

``bhid,bhjd->bhij`` becomes Transpose + MatMul, ``bhij,bhjd->bhid`` a single MatMul.
Dynamic dims stay dynamic: batch dims are copied by Reshape's ``0``, one unknown group
by ``-1``, and when two groups are unknown the target is computed from ``Shape``.

Refused, with the reason: a subscript repeated in one operand (a diagonal or trace), an
ellipsis on an operand of unknown rank, an ellipsis summed out across operands
(broadcast dims contracted), implicit-output equations mixing upper and lower case
(implementations order them differently), element types MatMul lacks, and anything
the equation parser does not accept. Summation order differs from Einsum's by
rounding only.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from surgeon import graph as G
from surgeon import graph_ops as K
from surgeon.pipeline.base import Pass, PassContext, PassLog
from surgeon.pipeline.registry import register
from surgeon.rewrite import Match, Op, Rule, RuleContext, apply_rules, fail, ok

logger = logging.getLogger(__name__)

PASS_NAME = "lower-einsum"
ELLIPSIS = "..."
_TERM = re.compile(r"^(?:[A-Za-z]|\.\.\.)*$")
_MATMUL_TYPES = tuple(np.dtype(t) for t in (np.float16, np.float32, np.float64, np.int32, np.int64,
                                            np.uint32, np.uint64))


# --- parsing ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Plan:
    """The equation with every ellipsis expanded into named subscripts (``…0``, ``…1``, ...)."""

    inputs: tuple[tuple[str, ...], ...]
    output: tuple[str, ...]
    dims: tuple[tuple, ...]  # per operand: int for a static dim, None otherwise (aligned with inputs)


def _split_term(term: str) -> list[str] | None:
    if not _TERM.match(term) or term.count(ELLIPSIS) > 1:
        return None
    out, i = [], 0
    while i < len(term):
        if term.startswith(ELLIPSIS, i):
            out.append(ELLIPSIS)
            i += 3
        else:
            out.append(term[i])
            i += 1
    return out


def plan(equation: str, shapes: list[tuple | None]) -> Plan | str:
    """The lowering plan of ``equation`` for operands of ``shapes`` (None: rank unknown), or why not. Pure."""
    eq = equation.replace(" ", "")
    lhs, arrow, rhs = eq.partition("->")
    terms = [_split_term(t) for t in lhs.split(",")]
    if any(t is None for t in terms) or (arrow and _split_term(rhs) is None):
        return f"equation '{equation}' is not one this pass parses"
    if len(terms) != len(shapes):
        return f"equation '{equation}' names {len(terms)} operands, the node has {len(shapes)}"
    for k, term in enumerate(terms):
        named = [s for s in term if s != ELLIPSIS]
        repeated = sorted({s for s in named if named.count(s) > 1})
        if repeated:
            return (f"subscript '{repeated[0]}' repeats in operand {k} of '{equation}' "
                    f"(a diagonal or trace; not lowered)")
    # Expand the ellipsis of each operand into its trailing broadcast dims.
    widths = []
    for k, term in enumerate(terms):
        named = len(term) - (ELLIPSIS in term)
        shape = shapes[k]
        if ELLIPSIS in term:
            if shape is None:
                return f"operand {k} of '{equation}' has an ellipsis and an unknown rank"
            if len(shape) < named:
                return f"operand {k} has rank {len(shape)}, fewer than the {named} subscripts of '{equation}'"
            widths.append(len(shape) - named)
        else:
            if shape is not None and len(shape) != named:
                return f"operand {k} has rank {len(shape)} but '{equation}' names {named} dims"
            widths.append(0)
    width = max(widths, default=0)
    ell = [f"\u2026{i}" for i in range(width)]
    inputs = []
    for term, w in zip(terms, widths):
        expanded = []
        for s in term:
            expanded.extend(ell[width - w:] if s == ELLIPSIS else [s])
        inputs.append(tuple(expanded))
    if arrow:
        out_term = _split_term(rhs)
        output = []
        for s in out_term:
            output.extend(ell if s == ELLIPSIS else [s])
        if len(set(output)) != len(output):
            return f"the output of '{equation}' repeats a subscript"
        unknown = [s for s in output if not any(s in t for t in inputs)]
        if unknown:
            return f"output subscript '{unknown[0]}' of '{equation}' is in no operand"
        summed_ell = [s for s in ell if s not in output and sum(s in t for t in inputs) > 1]
        if summed_ell:
            return f"'{equation}' sums broadcast (ellipsis) dims across operands; not lowered"
    else:
        letters = [s for t in terms for s in t if s != ELLIPSIS]
        once = {s for s in letters if letters.count(s) == 1}
        if any(s.isupper() for s in once) and any(s.islower() for s in once):
            return f"implicit output of '{equation}' mixes upper- and lower-case subscripts (order is ambiguous)"
        output = ell + sorted(once)
    dims = []
    for t, shape in zip(inputs, shapes):
        if shape is None:
            dims.append(tuple(None for _ in t))
        else:
            dims.append(tuple(d if isinstance(d, (int, np.integer)) and not isinstance(d, bool) else None
                              for d in shape))
    return Plan(tuple(inputs), tuple(output), tuple(dims))


# --- emitting ------------------------------------------------------------------------------

@dataclass
class _Term:
    tensor: gs.Tensor
    subs: list[str]
    dims: list  # int or None per subscript


def _axes_const(b, axes: list[int], name: str) -> gs.Constant:
    return b.const(np.array(axes, np.int64), name=name)


def _reduce_sum(b, t: _Term, drop: list[str]) -> _Term:
    axes = [t.subs.index(s) for s in drop]
    if b.opset >= 13:
        y = b.op("ReduceSum", [t.tensor, _axes_const(b, axes, "axes")], {"keepdims": 0})
    else:
        y = b.op("ReduceSum", [t.tensor], {"axes": axes, "keepdims": 0})
    keep = [i for i in range(len(t.subs)) if i not in axes]
    return _Term(y, [t.subs[i] for i in keep], [t.dims[i] for i in keep])


def _transpose(b, t: _Term, order: list[str]) -> _Term:
    perm = [t.subs.index(s) for s in order]
    if perm == list(range(len(perm))):
        return t
    return _Term(b.op("Transpose", [t.tensor], {"perm": perm}), list(order), [t.dims[i] for i in perm])


def _unsqueeze(b, x: gs.Tensor, axes: list[int]) -> gs.Tensor:
    if b.opset >= 13:
        return b.op("Unsqueeze", [x, _axes_const(b, axes, "axes")])
    return b.op("Unsqueeze", [x], {"axes": axes})


def _squeeze(b, x: gs.Tensor, axes: list[int]) -> gs.Tensor:
    if b.opset >= 13:
        return b.op("Squeeze", [x, _axes_const(b, axes, "axes")])
    return b.op("Squeeze", [x], {"axes": axes})


def _product(dims: list) -> int | None:
    out = 1
    for d in dims:
        if d is None:
            return None
        out *= int(d)
    return out


def _reshape(b, x: gs.Tensor, nbatch: int, pieces: list[tuple]) -> gs.Tensor:
    """Reshape ``x`` to ``[batch dims copied] + pieces``.

    A piece is ``(static value or None, source tensor, start, stop)``: its value is the
    product of ``Shape(source)[start:stop]`` when not static. One unknown piece becomes
    ``-1``; with more, the target is computed from Shape (so dynamic dims stay dynamic).
    """
    unknown = [i for i, p in enumerate(pieces) if p[0] is None]
    if len(unknown) <= 1:
        values = [0] * nbatch + [-1 if p[0] is None else int(p[0]) for p in pieces]
        return b.op("Reshape", [x, b.const(np.array(values, np.int64), name="shape")])
    parts: list[gs.Tensor] = []
    if nbatch:
        parts.append(b.const(np.zeros(nbatch, np.int64), name="batch_copy"))
    shapes: dict[int, gs.Tensor] = {}
    for value, source, start, stop in pieces:
        if value is not None:
            parts.append(b.const(np.array([value], np.int64), name="dim"))
            continue
        if id(source) not in shapes:
            shapes[id(source)] = b.op("Shape", [source])
        sliced = b.op("Slice", [shapes[id(source)], b.const(np.array([start], np.int64), name="start"),
                                b.const(np.array([stop], np.int64), name="stop")])
        parts.append(sliced if stop - start == 1 else b.op("ReduceProd", [sliced], {"keepdims": 1}))
    return b.op("Reshape", [x, b.op("Concat", parts, {"axis": 0})])


def _merge(b, t: _Term, nbatch: int, groups: list[list[int]]) -> gs.Tensor:
    """``t`` (already ordered batch + groups) with each group of dims merged into one."""
    if all(len(g) == 1 for g in groups):
        return t.tensor
    if sum(len(g) for g in groups) == 1 and len(groups) == 2:  # one group empty: just add a dim of 1
        empty = next(i for i, g in enumerate(groups) if not g)
        return _unsqueeze(b, t.tensor, [nbatch + empty])
    pieces = []
    for g in groups:
        start = nbatch + (g[0] if g else 0)
        pieces.append((_product([t.dims[nbatch + i] for i in g]), t.tensor, start, start + len(g)))
    return _reshape(b, t.tensor, nbatch, pieces)


def _contract(b, a: _Term, c: _Term, needed: set[str]) -> _Term:
    batch = [s for s in a.subs if s in c.subs and s in needed]
    summed = [s for s in a.subs if s in c.subs and s not in needed]
    left = [s for s in a.subs if s not in c.subs]
    right = [s for s in c.subs if s not in a.subs]
    nb, nl, nk, nr = len(batch), len(left), len(summed), len(right)
    bdims = []
    for s in batch:  # MatMul/Mul broadcast the batch dims
        da, dc = a.dims[a.subs.index(s)], c.dims[c.subs.index(s)]
        bdims.append(da if da == dc or dc == 1 else dc if da == 1 else None)
    if not summed:  # elementwise or outer product: Mul with broadcasting
        a2, c2 = _transpose(b, a, batch + left), _transpose(b, c, batch + right)
        x = _unsqueeze(b, a2.tensor, list(range(nb + nl, nb + nl + nr))) if nr else a2.tensor
        y = _unsqueeze(b, c2.tensor, list(range(nb, nb + nl))) if nl else c2.tensor
        return _Term(b.op("Mul", [x, y]), batch + left + right, bdims + a2.dims[nb:] + c2.dims[nb:])
    if not left and not right:  # a dot product per batch entry: Mul + ReduceSum is two nodes
        a2, c2 = _transpose(b, a, batch + summed), _transpose(b, c, batch + summed)
        axes = list(range(nb, nb + nk))
        prod = b.op("Mul", [a2.tensor, c2.tensor])
        if b.opset >= 13:
            z = b.op("ReduceSum", [prod, _axes_const(b, axes, "axes")], {"keepdims": 0})
        else:
            z = b.op("ReduceSum", [prod], {"axes": axes, "keepdims": 0})
        return _Term(z, batch, bdims)
    a2, c2 = _transpose(b, a, batch + left + summed), _transpose(b, c, batch + summed + right)
    ldims, kdims, rdims = a2.dims[nb:nb + nl], a2.dims[nb + nl:], c2.dims[nb + nk:]
    if not batch:
        # MatMul broadcasts A's leading dims against a 2-D B and takes a 1-D B: A's left dims
        # stay as they are (a linear layer ``bld,hd->blh`` is Transpose + MatMul).
        x = a2.tensor if nk == 1 else _reshape(b, a2.tensor, nl, [(_product(kdims), a2.tensor, nl, nl + nk)])
        if nk == 1 and nr <= 1:
            y = c2.tensor
        else:
            pieces = [(_product(kdims), c2.tensor, 0, nk)]
            if nr:
                pieces.append((_product(rdims), c2.tensor, nk, nk + nr))
            y = _reshape(b, c2.tensor, 0, pieces)
        z = b.op("MatMul", [x, y])
        if nr > 1:
            z = _reshape(b, z, nl, [(d, c2.tensor, nk + i, nk + i + 1) for i, d in enumerate(rdims)])
        return _Term(z, left + right, list(ldims) + list(rdims))
    x = _merge(b, a2, nb, [list(range(nl)), list(range(nl, nl + nk))])
    y = _merge(b, c2, nb, [list(range(nk)), list(range(nk, nk + nr))])
    z = b.op("MatMul", [x, y])
    if nl == 1 and nr == 1:
        pass
    elif nl + nr == 1:
        z = _squeeze(b, z, [nb] if nl == 0 else [nb + 1])
    else:
        pieces = [(d, a2.tensor, nb + i, nb + i + 1) for i, d in enumerate(ldims)]
        pieces += [(d, c2.tensor, nb + nk + i, nb + nk + i + 1) for i, d in enumerate(rdims)]
        z = _reshape(b, z, nb, pieces)
    return _Term(z, batch + left + right, bdims + list(ldims) + list(rdims))


def emit(b, p: Plan, operands: list[gs.Tensor]) -> gs.Tensor:
    """Build the lowering of plan ``p`` with builder ``b``; returns the output tensor."""
    terms = [_Term(t, list(s), list(d)) for t, s, d in zip(operands, p.inputs, p.dims)]
    output = list(p.output)
    for k, t in enumerate(terms):  # subscripts only this operand has and the output does not keep
        others = set(output).union(*(set(o.subs) for j, o in enumerate(terms) if j != k))
        drop = [s for s in t.subs if s not in others]
        if drop:
            terms[k] = _reduce_sum(b, t, drop)
    current = terms[0]
    for k in range(1, len(terms)):
        needed = set(output).union(*(set(o.subs) for o in terms[k + 1:]))
        current = _contract(b, current, terms[k], needed)
    return _transpose(b, current, output).tensor  # the engine adds an Identity if nothing was built


# --- the rule and the pass -------------------------------------------------------------------

def _equation(node: gs.Node) -> str:
    eq = node.attrs.get("equation", "")
    return eq.decode() if isinstance(eq, bytes) else str(eq)


def _plan_for(node: gs.Node, ctx: RuleContext) -> Plan | str:
    for t in node.inputs:
        dtype = ctx.dtype(t)
        if dtype is not None and dtype not in _MATMUL_TYPES:
            return f"element type {dtype} has no MatMul/ReduceSum kernel in the standard"
    return plan(_equation(node), [ctx.shape(t) for t in node.inputs])


class LowerEinsumRule(Rule):
    name = "lower-einsum"
    pattern = (Op("Einsum"),)

    def check(self, m: Match, ctx: RuleContext):
        p = _plan_for(m.root, ctx)
        return fail(f"Einsum '{_equation(m.root)}': {p}") if isinstance(p, str) else ok(plan=p)

    def rewrite(self, m: Match, b) -> list[gs.Tensor]:
        return [emit(b, m["plan"], list(m.root.inputs))]


RULES = [LowerEinsumRule()]


@register
class LowerEinsum(Pass):
    name = PASS_NAME
    summary = ("Lower Einsum (attention, bilinear, matmul, transpose and reduction equations) to "
               "Transpose/Reshape/MatMul/ReduceSum/Mul for engines without Einsum (opt-in).")
    default_order = None  # opt-in: it trades one node for several

    def run(self, model: G.Model, ctx: PassContext, log: PassLog) -> bool:
        if not any(n.op == "Einsum" and K.is_default_domain(n) for n in G.walk_nodes(model.graph)):
            return False
        return apply_rules(model, RULES, ctx, log, untouched=False)  # replace-custom-ops notes custom ops
