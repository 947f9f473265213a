"""``collapse-shape-ops``: merge chains of ops that only move or cut dims into one node.

Exporters write ``x[None, :, None, None]`` (attention masks, position ids, causal masks)
as ``Unsqueeze(Unsqueeze(Unsqueeze(x, 0), 2), 3)``, one node per ``None`` or per
``unsqueeze`` call, and ``x.view(-1).view(a, b)`` as two Reshapes. One Unsqueeze with all
the axes, or one Reshape straight from ``x``, computes the same tensor with fewer nodes.

Rules, each exact (no value changes, only how the shape is reached):

- ``unsqueeze-merge``: ``Unsqueeze(Unsqueeze(x, a1), a2)`` becomes ``Unsqueeze(x, a)``,
  where ``a`` is ``a2`` plus the positions of ``a1``'s new dims in the final output. Axes
  must be constants; negative axes need the ranks (from the inferred shapes).
- ``slice-merge``: ``Slice(Slice(x, ...), ...)`` that cut different axes become one
  Slice with both axes (YOLOv5's space-to-depth ``x[..., ::2, ::2]``; a Slice cuts each
  axis independently). Bounds must be constants; an axis cut twice is left alone.
- ``reshape-merge``: ``Reshape(P(x), t)`` with ``P`` a Reshape, Flatten, Squeeze or
  Unsqueeze and ``t`` a constant becomes ``Reshape(x, t)``: a Reshape reads only the
  element order, which ``P`` does not change. A ``0`` in ``t`` (copy the input's dim,
  ``allowzero=0``) is allowed only where ``P`` is a Reshape that copies the same dim of
  ``x`` (its own target is ``0`` there).
- A ``Transpose`` that moves only size-1 axes (the other axes keep their order) does not
  change the element order either, so it is a reshape: before a Reshape it merges too
  (``reshape-merge``; the target's ``0`` entries are translated through the permutation
  and its ``-1`` solved where the dims allow), and alone it becomes a ``Reshape``
  (``transpose-to-reshape``) when at most one moved dim is dynamic. Exported LSTMs write
  ``Transpose(perm=[0, 2, 1, 3])`` on ``[seq, 1, batch, hidden]`` outputs: that one.

The merges apply only when the inner node then has no reader left (every reader merges
and its output is no graph output and read by no subgraph), so each application removes
a node; otherwise a note says why. The outer node keeps its output (graph output names
stay) and is stamped with provenance. Bodies of If/Loop/Scan are handled like the main
graph. The rules are patterns on the rewrite engine: the inner node is matched but kept
(``keep=True``), and goes with its last reader.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx_graphsurgeon as gs

from surgeon import graph_ops as K
from surgeon.pipeline.registry import register
from surgeon.rewrite import Match, RulePass, Node, Rule, RuleContext, fail, ok

PASS_NAME = "collapse-shape-ops"
_RESHAPING = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze"})


def _const_ints(t: gs.Tensor | None) -> list[int] | None:
    value = K.constant(t, K.SMALL)
    if value is None or value.ndim > 1 or value.dtype.kind not in "iu":
        return None
    return [int(v) for v in value.ravel()]


def _unsqueeze_axes(node: gs.Node) -> list[int] | None:
    """Constant axes of an Unsqueeze (attribute before opset 13, input after); None: unknown."""
    if "axes" in node.attrs:
        return [int(a) for a in node.attrs["axes"]]
    return _const_ints(K.present(node, 1))


def _rank(t: gs.Tensor) -> int | None:
    shape = K.shape_of(t)
    return None if shape is None else len(shape)


def merged_unsqueeze_axes(a1: list[int], a2: list[int], rank: int | None) -> list[int] | None:
    """Axes of one Unsqueeze equal to ``Unsqueeze(Unsqueeze(x, a1), a2)``; ``rank`` is x's. Pure.

    ``a2`` are positions in the final output; ``a1`` are positions in the middle tensor,
    whose dims fill the final positions not in ``a2``, in order.
    """
    if any(a < 0 for a in a1 + a2) and rank is None:
        return None
    r1 = (rank or 0) + len(a1)
    r2 = r1 + len(a2)
    a1 = sorted(a + r1 if a < 0 else a for a in a1)
    a2 = sorted(a + r2 if a < 0 else a for a in a2)
    if len(set(a1)) != len(a1) or len(set(a2)) != len(a2) or (rank is not None and (
            any(not 0 <= a < r1 for a in a1) or any(not 0 <= a < r2 for a in a2))):
        return None
    middle_to_final = []
    position = 0
    needed = max(a1, default=-1) + 1
    while len(middle_to_final) < needed:
        if position not in a2:
            middle_to_final.append(position)
        position += 1
    return sorted(set(a2) | {middle_to_final[a] for a in a1})


def _check_unsqueeze(outer: gs.Node, inner: gs.Node) -> list[int] | str:
    a1, a2 = _unsqueeze_axes(inner), _unsqueeze_axes(outer)
    if a1 is None or a2 is None:
        return f"Unsqueeze {outer.name} not merged with {inner.name}: axes are not constants"
    merged = merged_unsqueeze_axes(a1, a2, _rank(inner.inputs[0]))
    if merged is None:
        return (f"Unsqueeze {outer.name} not merged with {inner.name}: axes out of range, or negative "
                "on a value of unknown rank")
    return merged


def _check_reshape(outer: gs.Node, inner: gs.Node) -> list[int] | str:
    target = _const_ints(K.present(outer, 1))
    if target is None:
        return f"Reshape {outer.name} not merged with {inner.op} {inner.name}: its target is not a constant"
    if 0 in target and not outer.attrs.get("allowzero", 0):
        inner_target = _const_ints(K.present(inner, 1)) if inner.op == "Reshape" else None
        copies = inner_target is not None and not inner.attrs.get("allowzero", 0)
        for i, v in enumerate(target):
            if v == 0 and not (copies and i < len(inner_target) and inner_target[i] == 0):
                return (f"Reshape {outer.name} not merged with {inner.op} {inner.name}: its target copies dim {i} "
                        "of the intermediate tensor, which need not be that of the input")
    return target


def _slice_params(node: gs.Node) -> tuple[list, list, list | None, list | None] | None:
    """(starts, ends, axes or None, steps or None) when all given are constants (opset >= 10 form)."""
    params = []
    for i in range(1, 5):
        t = K.present(node, i)
        if t is None:
            if i < 3:
                return None
            params.append(None)
            continue
        values = _const_ints(t)
        if values is None:
            return None
        params.append(values)
    return tuple(params)  # type: ignore[return-value]


def _check_slice(outer: gs.Node, inner: gs.Node) -> list | str | None:
    """Two Slices on different axes are one Slice over both (each axis is cut once)."""
    if "starts" in inner.attrs or "starts" in outer.attrs:
        return None  # opset < 10: bounds are attributes; not worth a second code path
    p_in, p_out = _slice_params(inner), _slice_params(outer)
    if p_in is None or p_out is None:
        return f"Slice {outer.name} not merged with {inner.name}: bounds are not constants"
    rank = _rank(inner.inputs[0])
    merged: dict[int, tuple[int, int, int]] = {}
    for starts, ends, axes, steps in (p_in, p_out):
        axes = axes if axes is not None else list(range(len(starts)))
        steps = steps if steps is not None else [1] * len(starts)
        if not len(starts) == len(ends) == len(axes) == len(steps):
            return f"Slice {outer.name} not merged with {inner.name}: malformed bounds"
        for start, end, axis, step in zip(starts, ends, axes, steps):
            if axis < 0:
                if rank is None:
                    return f"Slice {outer.name} not merged with {inner.name}: negative axis on a value of unknown rank"
                axis += rank
            if axis in merged:
                return f"Slice {outer.name} not merged with {inner.name}: both cut axis {axis}"
            merged[axis] = (start, end, step)
    axes = sorted(merged)
    return [[merged[a][0] for a in axes], [merged[a][1] for a in axes], axes, [merged[a][2] for a in axes]]


def _check(outer: gs.Node, inner: gs.Node) -> tuple[str, list[int]] | str | None:
    """(rule, merged axes or target) when ``outer`` can read ``inner``'s input directly, a note, or None."""
    if not K.is_default_domain(inner) or len(inner.outputs) != 1 or not inner.inputs:
        return None
    if outer.op == "Unsqueeze" and inner.op == "Unsqueeze":
        found = _check_unsqueeze(outer, inner)
        return found if isinstance(found, str) else ("unsqueeze-merge", found)
    if outer.op == "Slice" and inner.op == "Slice":
        found = _check_slice(outer, inner)
        return found if found is None or isinstance(found, str) else ("slice-merge", found)
    if outer.op == "Reshape" and inner.op in _RESHAPING and len(outer.inputs) >= 2:
        found = _check_reshape(outer, inner)
        return found if isinstance(found, str) else ("reshape-merge", found)
    if outer.op == "Reshape" and inner.op == "Transpose" and len(outer.inputs) >= 2 and _unit_moves(inner):
        target = _const_ints(K.present(outer, 1))
        if target is None:
            return f"Reshape {outer.name} not merged with Transpose {inner.name}: its target is not a constant"
        x_dims = _tokens(inner.inputs[0])
        found = translate_target(x_dims, [x_dims[p] for p in _perm(inner, len(x_dims))], target,
                                 int(outer.attrs.get("allowzero", 0)))
        if found is None:
            return (f"Reshape {outer.name} not merged with Transpose {inner.name}: its target cannot be written "
                    "over the Transpose's input (two dynamic dims would need -1)")
        return "reshape-merge", found
    return None


# --- Transposes that only move size-1 axes --------------------------------------------------

def _tokens(t: gs.Tensor) -> list | None:
    """Dims of ``t``: the int where static, else a token naming the position (equal only to itself)."""
    shape = K.shape_of(t)
    if shape is None:
        return None
    return [int(d) if isinstance(d, (int, np.integer)) and int(d) >= 0 else ("dim", i) for i, d in enumerate(shape)]


def _perm(node: gs.Node, rank: int) -> list[int]:
    perm = node.attrs.get("perm")
    return list(range(rank))[::-1] if perm is None else [int(p) % rank for p in perm]


def _unit_moves(node: gs.Node) -> bool:
    """Whether a Transpose moves only axes of static size 1 (the others keep their order). Pure."""
    dims = _tokens(node.inputs[0]) if node.inputs else None
    if dims is None or not dims or not K.is_default_domain(node):
        return False
    perm = _perm(node, len(dims))
    if sorted(perm) != list(range(len(dims))) or perm == list(range(len(dims))):
        return False
    kept = [p for p in perm if dims[p] != 1]
    return kept == sorted(kept)


def translate_target(x_dims: list, mid_dims: list, target: list[int], allowzero: int) -> list[int] | None:
    """A Reshape target over ``x`` giving what ``Reshape(mid, target)`` gives, where ``mid`` has ``x``'s
    elements in ``x``'s order (dims as from :func:`_tokens`); None when it cannot be written. Pure.

    ``0`` entries copy ``mid``'s dim there; ``-1`` is solved where ``mid``'s dims divided by
    the other entries leave a static number. The result copies ``x``'s dim (``0``) where it
    is that very dim at the same place, and uses ``-1`` for at most one other dynamic dim.
    """
    if x_dims is None or (allowzero and 0 in target):
        return None
    out: list = []
    for i, v in enumerate(target):
        if v == 0:
            if i >= len(mid_dims):
                return None
            out.append(mid_dims[i])
        elif v == -1 or v > 0:
            out.append(v if v > 0 else None)
        else:
            return None
    if out.count(None) > 1:
        return None
    if None in out:
        symbols = Counter(d for d in mid_dims if not isinstance(d, int))
        known = int(np.prod([d for d in mid_dims if isinstance(d, int)], dtype=np.int64))
        other = 1
        for d in out:
            if isinstance(d, int):
                other *= d
            elif d is not None:
                symbols[d] -= 1
        if not any(symbols.values()) and other and known % other == 0:
            out[out.index(None)] = known // other
    final = []
    for i, d in enumerate(out):
        if isinstance(d, int):
            final.append(d)
        elif d is not None and i < len(x_dims) and x_dims[i] == d:
            final.append(0)
        else:
            final.append(-1)
    return final if final.count(-1) <= 1 else None


# --- rules ----------------------------------------------------------------------------------

class _Merge(Rule):
    """``outer(inner(x))`` → ``outer(x)`` where every reader of ``inner`` merges (see the module docstring)."""

    outer_op = ""
    inner_ops: tuple[str, ...] = ()

    def __init__(self):
        self.pattern = Node(self.outer_op, Node(self.inner_ops, "x", bind="inner", keep=True, more=True),
                            bind="outer", more=True)

    def match(self, node: gs.Node, scope: K.Scope) -> Match | None:
        m = super().match(node, scope)
        if m is None or len(m["inner"].outputs) != 1:
            return None
        found = _check(node, m["inner"])
        return None if found is None or (not isinstance(found, str) and found[0] != self.name) else m

    def check(self, m: Match, ctx: RuleContext):
        outer, inner = m["outer"], m["inner"]
        found = _check(outer, inner)
        if isinstance(found, str):
            return fail(found)
        y = outer.inputs[0]
        if m.scope.escapes(y):
            return fail(f"{outer.op} {outer.name} not merged with {inner.name}: {y.name} is also a graph output "
                        "or read by a subgraph")
        for reader in y.outputs:
            other = _check(reader, inner) if reader.inputs and reader.inputs[0] is y else None
            if not isinstance(other, tuple) or any(t is y for t in reader.inputs[1:]):
                return fail(f"{outer.op} {outer.name} not merged with {inner.name}: {y.name} has other readers, "
                            "so no node would go")
        return ok(values=found[1])

    def note(self, node, reason: str) -> str:
        return reason


class UnsqueezeMerge(_Merge):
    name, outer_op, inner_ops = "unsqueeze-merge", "Unsqueeze", ("Unsqueeze",)

    def rewrite(self, m: Match, b) -> list[gs.Tensor]:
        outer = m["outer"]
        if "axes" in outer.attrs:
            return [b.copy_of(outer, [m["x"]], dict(outer.attrs, axes=m["values"]))]
        return [b.copy_of(outer, [m["x"], b.named(f"{_label(outer)}_axes", np.array(m["values"], dtype=np.int64))])]


class SliceMerge(_Merge):
    name, outer_op, inner_ops = "slice-merge", "Slice", ("Slice",)

    def rewrite(self, m: Match, b) -> list[gs.Tensor]:
        outer = m["outer"]
        params = [b.named(f"{_label(outer)}_{suffix}", np.array(values, dtype=np.int64))
                  for suffix, values in zip(("starts", "ends", "axes", "steps"), m["values"])]
        return [b.copy_of(outer, [m["x"], *params])]


class ReshapeMerge(_Merge):
    name, outer_op, inner_ops = "reshape-merge", "Reshape", tuple(sorted(_RESHAPING)) + ("Transpose",)

    def rewrite(self, m: Match, b) -> list[gs.Tensor]:
        outer = m["outer"]
        target = outer.inputs[1]
        if list(m["values"]) != _const_ints(target):
            target = b.named(f"{_label(outer)}_shape", np.array(m["values"], dtype=np.int64))
        return [b.copy_of(outer, [m["x"], target])]


class TransposeToReshape(Rule):
    """A Transpose moving only size-1 axes, not read by a Reshape that absorbs it, becomes a Reshape."""

    name = "transpose-to-reshape"
    pattern = Node("Transpose", "x", bind="outer")

    def match(self, node: gs.Node, scope: K.Scope) -> Match | None:
        m = super().match(node, scope)
        if m is None or not _unit_moves(node) or len(node.outputs) != 1:
            return None
        readers = node.outputs[0].outputs
        if readers and all(r.op == "Reshape" and isinstance(_check(r, node), tuple) for r in readers):
            return None  # reshape-merge removes it instead
        return m

    def check(self, m: Match, ctx: RuleContext):
        x_dims = _tokens(m["x"])
        mid = [x_dims[p] for p in _perm(m["outer"], len(x_dims))]
        target = translate_target(x_dims, mid, [0] * len(mid), 0)
        if target is None:
            return fail(f"Transpose {m['outer'].name} moves only size-1 axes but stays: two moved dims are dynamic")
        return ok(target=target)

    def rewrite(self, m: Match, b) -> list[gs.Tensor]:
        outer = m["outer"]
        shape = b.named(f"{_label(outer)}_shape", np.array(m["target"], dtype=np.int64))
        return [b.op("Reshape", [m["x"], shape], {}, name=outer.name or None)]

    def note(self, node, reason: str) -> str:
        return reason


def _label(node: gs.Node) -> str:
    return node.name or node.outputs[0].name


RULES = [UnsqueezeMerge(), SliceMerge(), ReshapeMerge(), TransposeToReshape()]


@register
class CollapseShapeOps(RulePass):
    name = PASS_NAME
    summary = ("Merge Unsqueeze chains and Slice chains on different axes into one node, and "
               "Reshape/Flatten/Squeeze/Unsqueeze (and Transposes of size-1 axes) into a following Reshape.")
    default_order = 45
    rules, sweeps = tuple(RULES), 1
