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

Applied only when the inner node then has no reader left (every reader merges and its
output is no graph output and read by no subgraph), so each application removes a node;
otherwise a note says why. The outer node keeps its output (graph output names stay)
and is stamped with provenance. Bodies of If/Loop/Scan are handled like the main graph.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_graphsurgeon as gs

from surgeon import graph_ops as K
from surgeon import graph as G
from surgeon.pipeline.base import GraphPass, PassContext, PassLog
from surgeon.pipeline.registry import register

logger = logging.getLogger(__name__)

PASS_NAME = "collapse-shape-ops"
_RESHAPING = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze"})
_OUTER = frozenset({"Unsqueeze", "Reshape", "Slice"})


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
    return None


def _set_axes(outer: gs.Node, axes: list[int], names: set[str]) -> None:
    if "axes" in outer.attrs:
        outer.attrs["axes"] = axes
        return
    base = f"{outer.name or outer.outputs[0].name}_axes"
    name, k = base, 0
    while name in names:
        k += 1
        name = f"{base}_{k}"
    names.add(name)
    outer.inputs[1] = gs.Constant(name, np.array(axes, dtype=np.int64))


def _set_slice(outer: gs.Node, params: list[list[int]], names: set[str], scope: K.Scope) -> None:
    old = [K.present(outer, i) for i in range(1, len(outer.inputs))]
    new = []
    for suffix, values in zip(("starts", "ends", "axes", "steps"), params):
        base = f"{outer.name or outer.outputs[0].name}_{suffix}"
        name, k = base, 0
        while name in names:
            k += 1
            name = f"{base}_{k}"
        names.add(name)
        new.append(gs.Constant(name, np.array(values, dtype=np.int64)))
    while len(outer.inputs) > 1:
        outer.inputs.pop()  # graphsurgeon's input list keeps tensor readers in sync per item
    outer.inputs.extend(new)
    for t in old:
        if t is not None:
            K.drop_if_dead(scope, t)


def collapse(graph: gs.Graph, ctx: PassContext, log: PassLog) -> bool:
    candidates = [n for n in graph.nodes if n.op in _OUTER and K.is_default_domain(n) and n.inputs]
    if not candidates:
        return False
    scope = K.Scope(graph)
    hidden = G.body_reads(graph)
    names = {t.name for t in graph.tensors().values()} | hidden
    changed = False
    for outer in candidates:
        if id(outer) in scope.removed:
            continue
        y = outer.inputs[0]
        inner = K.producer(y)
        if inner is None or not scope.contains(inner):
            continue
        first = _check(outer, inner)
        if first is None:
            continue
        if isinstance(first, str):
            log.note(first)
            continue
        if id(y) in scope.outputs or id(y) in scope.nested_outputs or y.name in hidden:
            log.note(f"{outer.op} {outer.name} not merged with {inner.name}: {y.name} is also a graph output "
                     "or read by a subgraph")
            continue
        plans = []
        for reader in list(y.outputs):
            found = _check(reader, inner) if reader.inputs and reader.inputs[0] is y else None
            if not isinstance(found, tuple) or any(t is y for t in reader.inputs[1:]):
                plans = None
                break
            plans.append((reader, found))
        if not plans:
            log.note(f"{outer.op} {outer.name} not merged with {inner.name}: {y.name} has other readers, "
                     "so no node would go")
            continue
        x = inner.inputs[0]
        for reader, (rule, values) in plans:
            if not ctx.permit(rule, reader):
                continue  # the others still merge (each is exact); the inner node then stays
            reader.inputs[0] = x
            if rule == "slice-merge":
                _set_slice(reader, values, names, scope)
            if rule == "unsqueeze-merge":
                old_axes = K.present(reader, 1)
                _set_axes(reader, values, names)
                if old_axes is not None and old_axes is not K.present(reader, 1):
                    K.drop_if_dead(scope, old_axes)
            G.stamp(reader, PASS_NAME, rule, [inner.name, reader.name])
            log.count(rule)
            changed = True
        K.drop_if_dead(scope, y)
    scope.finish()
    return changed


@register
class CollapseShapeOps(GraphPass):
    name = PASS_NAME
    summary = ("Merge Unsqueeze chains and Slice chains on different axes into one node, and "
               "Reshape/Flatten/Squeeze/Unsqueeze into a following Reshape.")
    default_order = 45
    candidate_ops = _OUTER

    def run_on_graph(self, graph: gs.Graph, ctx: PassContext, log: PassLog) -> bool:
        return collapse(graph, ctx, log)
