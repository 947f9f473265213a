"""fold-shape-chains: fold what PyTorch's view/flatten/expand/interpolate exports compute at run time.

Exporters write ``x.view(N, -1)`` as Shape → Gather → Unsqueeze → Concat → Reshape, and
``flatten(x, 2, 3)`` as Shape → Slice → Concat → Reshape. TensorRT and ORT handle these
chains, but they cost nodes, block fusions, and onnxsim cannot remove them when a
dimension is dynamic. This pass evaluates each chain symbolically
(:mod:`surgeon.evaluators` with the dims of :mod:`passes._shape_utils`) and replaces it by a constant whenever the constant means
the same thing for *every* input size:

- a Reshape target entry that is "dim i of the Reshape's own input" becomes ``0``
  (copy; with ``allowzero=1`` only where no entry is a constant 0, and the node then
  gets ``allowzero=0``), one remaining unknown entry becomes ``-1``;
- an Expand entry equal to the input's aligned dim becomes ``1``; an Expand (or Tile,
  Reshape, Slice, Cast) that provably changes nothing is removed;
- Resize ``sizes`` equal to the input's dims times integer factors become ``scales``;
- ``Reshape(x, [-1, K]) → Gemm → Reshape(…, [x's leading dims, N])`` (the dynamo
  exporter's ``nn.Linear`` on a 3-D activation) becomes ``MatMul(x, W)`` (+ the bias);
- ConstantOfShape/Expand/Tile/any consumer whose chain is fully static folds to a constant;
- Slice bounds outside the int32 range (``INT64_MAX`` ends, reversed slices) are
  clamped, since TensorRT casts them down; dims never reach 2**31, so nothing changes.

Where a value genuinely depends on a size (the batch that a CLS token is expanded to),
the chain stays and a note says why. Q/DQ nodes are never touched, nor no-op nodes next
to them, so explicit-quantization patterns survive.

This module holds the pass and its rules per op; the run's book-keeping is in
:mod:`passes._shape_chain_edit`, the two larger rules in :mod:`passes._unflatten_dense`
(``Reshape → Gemm → Reshape``) and :mod:`passes._materialize_shape` (``Shape`` pieces).
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from passes import _shape_utils as su
from passes._materialize_shape import materialize
from passes._shape_chain_edit import (
    PASS, QDQ, Edit, bypass, chain_note, is_std, present, replace_input, set_int_input, stamp,
)
from passes._unflatten_dense import unflatten_dense
from surgeon import graph as G
from surgeon import graph_ops as K
from surgeon.pipeline.base import Pass, PassContext, PassLog
from surgeon.pipeline.registry import register

log = logging.getLogger(__name__)

CONST_OF_SHAPE_LIMIT = 1 << 16  # elements; larger fills would bloat the file for one node


def _reshape(edit: Edit, g: gs.Graph, node: gs.Node) -> bool:
    if unflatten_dense(edit, g, node):
        return True
    data, shape = node.inputs[0], node.inputs[1]
    allowzero = int(node.attrs.get("allowzero", 0))
    value = edit.evaluator.value(shape)
    if value is None or value.scalar or value.kind != "int":
        chain_note(edit, node, shape, "its target cannot be evaluated")
        return False
    dims = su.tensor_dims(data, edit.facts)
    # allowzero=1 (what the dynamo exporter writes) differs from 0 only where the target
    # holds a 0. Without a constant 0 entry, an entry equal to the input's dim there may
    # become 0 (copy) under allowzero=0: both give that dim, even when it is 0 at run time.
    relaxed = bool(allowzero) and not any(e.is_const and e.coef == 0 for e in value.entries)
    if relaxed:
        allowzero = 0
    target: list[int | None] = []
    unknown = []
    for i, e in enumerate(value.entries):
        if e.is_const:
            target.append(int(e.coef))
        elif not allowzero and dims is not None and i < len(dims) and dims[i] == e:
            target.append(0)
        else:
            target.append(None)
            unknown.append(i)
    if unknown:
        if len(unknown) > 1 or -1 in target or (allowzero and 0 in target):
            what = ", ".join(f"{i} ({value.entries[i]!r})" for i in unknown)
            chain_note(edit, node, shape, f"target entries {what} are not dims of its input at the same position")
            return False
        target[unknown[0]] = -1
    if dims is not None and len(target) == len(dims) and _reshape_is_noop(target, dims, allowzero):
        if bypass(edit, g, node, "reshape-noop"):
            return True
    old = K.constant(shape)
    if old is not None and old.ndim == 1 and old.tolist() == target:
        return False
    if not set_int_input(edit, node, 1, "target", target, "reshape-target"):
        return False
    if relaxed and 0 in target:
        node.attrs["allowzero"] = 0  # the copies above need allowzero=0's meaning of 0
    return True


def _reshape_is_noop(target: list, dims: list, allowzero: int) -> bool:
    free = 0
    for t, d in zip(target, dims):
        if t == 0 and not allowzero:
            continue
        if t == -1:
            free += 1
            continue
        if not (d.is_const and int(d.coef) == t):
            return False
    return free <= 1


def _expand(edit: Edit, g: gs.Graph, node: gs.Node) -> bool:
    data, shape = node.inputs[0], node.inputs[1]
    value = edit.evaluator.value(shape)
    if value is None or value.scalar or value.kind != "int":
        chain_note(edit, node, shape, "its shape cannot be evaluated")
        return False
    dims = su.tensor_dims(data, edit.facts)
    n = len(value.entries)
    new = []
    for j, e in enumerate(value.entries):
        k = None if dims is None else j - (n - len(dims))
        if k is not None and k >= 0 and dims[k] == e:
            new.append(1)  # broadcasting a dim against itself == against 1
        elif e.is_const:
            new.append(int(e.coef))
        else:
            chain_note(edit, node, shape, f"entry {j} ({e!r}) is not a dim of its input '{data.name}' "
                                           "(the value genuinely depends on an input size)")
            return materialize(edit, g, node, 1, value)
    if dims is not None and n <= len(dims) and all(v == 1 for v in new):
        if bypass(edit, g, node, "expand-noop"):
            return True
    old = K.constant(shape)
    if old is not None and old.ndim == 1 and old.tolist() == new:
        return False
    return set_int_input(edit, node, 1, "shape", new, "expand-shape")


def _tile(edit: Edit, g: gs.Graph, node: gs.Node) -> bool:
    reps = node.inputs[1]
    value = edit.evaluator.value(reps)
    if value is None or not value.is_const or value.scalar:
        if value is not None or edit.evaluator.is_shape_chain(reps):
            chain_note(edit, node, reps, "its repeats depend on an input size")
        return False
    new = value.ints()
    if all(r == 1 for r in new):
        dims = su.tensor_dims(node.inputs[0], edit.facts)
        if dims is not None and len(dims) == len(new) and bypass(edit, g, node, "tile-noop"):
            return True
    if K.constant(reps) is not None:
        return False
    return set_int_input(edit, node, 1, "repeats", new, "tile-repeats")


def _constant_of_shape(edit: Edit, g: gs.Graph, node: gs.Node) -> bool:
    shape = node.inputs[0]
    value = edit.evaluator.value(shape)
    if value is None or not value.is_const:
        chain_note(edit, node, shape, "its shape depends on an input size")
        return value is not None and materialize(edit, g, node, 0, value)
    dims = value.ints()
    if any(d < 0 for d in dims) or int(np.prod(dims, dtype=np.int64)) > CONST_OF_SHAPE_LIMIT:
        edit.log.note(f"ConstantOfShape {node.name} not folded: {dims} is larger than {CONST_OF_SHAPE_LIMIT} elements")
        return False
    out = node.outputs[0]
    if id(out) in edit.graph_outputs():
        return K.constant(shape) is None and set_int_input(edit, node, 0, "shape", dims, "constant-of-shape")
    if not edit.ctx.permit("constant-of-shape", node.name):
        return False
    fill = node.attrs.get("value")
    fill_arr = np.asarray(fill.values).ravel()[:1] if isinstance(fill, gs.Constant) else np.zeros(1, np.float32)
    const = edit.const(node, "value", np.full(dims, fill_arr[0], dtype=fill_arr.dtype))
    K.replace_all_uses(out, const)
    edit.seeds.append(shape)
    edit.drop(g, node)
    edit.log.count("constant-of-shape")
    return True


def _resize(edit: Edit, g: gs.Graph, node: gs.Node) -> bool:
    if edit.opset < 11 or len(node.inputs) < 4 or not present(node.inputs[3]):
        return False
    if node.attrs.get("axes") is not None or node.attrs.get("keep_aspect_ratio_policy", "stretch") != "stretch":
        edit.log.note(f"Resize {node.name} keeps 'sizes': axes/keep_aspect_ratio_policy are set")
        return False
    x, sizes = node.inputs[0], node.inputs[3]
    value = edit.evaluator.value(sizes)
    dims = su.tensor_dims(x, edit.facts)
    if value is None or value.kind != "int" or dims is None or len(dims) != len(value.entries):
        chain_note(edit, node, sizes, "its sizes cannot be evaluated against the input's dims")
        return False
    scales = []
    for i, (e, d) in enumerate(zip(value.entries, dims)):
        ratio = su.truediv(e, d) if d.coef != 0 else None
        if ratio is None or not ratio.is_const or ratio.coef <= 0 or ratio.coef.denominator != 1:
            chain_note(edit, node, sizes, f"size {i} ({e!r}) is not an integer multiple of input dim {d!r}")
            return False
        scales.append(float(ratio.coef))
    if not edit.ctx.permit("resize-scales", node.name):
        return False
    roi = node.inputs[1]
    if not present(roi) and edit.opset < 13:
        roi = edit.const(node, "roi", np.zeros(0, dtype=np.float32))
    new_scales = edit.const(node, "scales", np.array(scales, dtype=np.float32))
    old = list(node.inputs[1:])
    node.inputs.clear()
    node.inputs.extend([x, roi, new_scales])
    edit.seeds.extend(old)
    stamp(node, "resize-scales")
    edit.log.count("resize-scales")
    return True


def _cast(edit: Edit, g: gs.Graph, node: gs.Node) -> bool:
    src = node.inputs[0]
    elem = edit.facts.types.get(src.name)
    if elem is None and isinstance(src, gs.Constant):
        elem = onnx.helper.np_dtype_to_tensor_dtype(src.values.dtype)
    if elem is None or elem != node.attrs.get("to"):
        return False
    return bypass(edit, g, node, "cast-noop")


def _slice_params(edit: Edit, node: gs.Node):
    """(starts, ends, axes, steps) as int lists, or None when any is not constant."""
    out = []
    for i in range(1, 5):
        t = node.inputs[i] if i < len(node.inputs) else None
        if not present(t):
            out.append(None)
            continue
        arr = K.constant(t)
        if arr is None or arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
            return None
        out.append([int(v) for v in arr])
    return out


def _slice(edit: Edit, g: gs.Graph, node: gs.Node) -> bool:
    if edit.opset < 10 or len(node.inputs) < 3:
        return False
    params = _slice_params(edit, node)
    if params is None:
        return False
    starts, ends, axes, steps = params
    dims = su.tensor_dims(node.inputs[0], edit.facts)
    axes = axes if axes is not None else list(range(len(starts)))
    steps = steps if steps is not None else [1] * len(starts)
    if dims is not None and all(st == 0 and sp == 1 for st, sp in zip(starts, steps)) and all(
        -len(dims) <= a < len(dims) for a in axes
    ):
        if all(en >= su.INT32_MAX or (dims[a].is_const and en >= int(dims[a].coef)) for en, a in zip(ends, axes)):
            return bypass(edit, g, node, "slice-noop")
    changed = False
    for index, vals in ((1, starts), (2, ends)):
        if all(su.INT32_MIN <= v <= su.INT32_MAX for v in vals):
            continue
        if not edit.ctx.permit("clamp-int64", node.name):
            continue
        clamped = np.clip(np.array(vals, dtype=np.int64), su.INT32_MIN, su.INT32_MAX)
        dtype = K.constant(node.inputs[index]).dtype
        replace_input(edit, node, index, edit.const(node, "starts" if index == 1 else "ends",
                                                     clamped.astype(dtype)))
        stamp(node, "clamp-int64")
        edit.log.count("clamp-int64")
        changed = True
    return changed


def _fold_inputs(edit: Edit, node: gs.Node) -> bool:
    """Any other consumer of a fully static shape chain reads a constant instead."""
    ev = edit.evaluator
    if node.op in su.EVALUATED_OPS and is_std(node):
        outs = [ev.value(t) for t in node.outputs]
        if outs and all(v is not None and v.is_const for v in outs):
            return False  # inside a chain; its consumers fold it
    changed = False
    for i, t in enumerate(node.inputs):
        if isinstance(t, gs.Constant) or len(t.inputs) != 1 or t.inputs[0].op == "Constant":
            continue
        if t.inputs[0].op not in su.EVALUATED_OPS:
            continue
        value = ev.value(t)
        if value is None or not value.is_const or not ev.is_shape_chain(t):
            continue
        elem = edit.facts.types.get(t.name)
        if elem is None:
            continue
        dtype = onnx.helper.tensor_dtype_to_np_dtype(elem)
        if value.kind == "float":
            arr = np.array([float(e.coef) for e in value.entries], dtype=dtype)
        else:
            arr = np.array([int(e.coef) for e in value.entries], dtype=dtype)
        if value.scalar:
            arr = arr.reshape(())
        if not edit.ctx.permit("shape-constant", node.name):
            continue
        replace_input(edit, node, i, gs.Constant(K.unique_name(f"{t.name}_folded", edit.names), arr))
        edit.log.count("shape-constant")
        changed = True
    return changed


_RULES = {
    "Reshape": _reshape,
    "Expand": _expand,
    "Tile": _tile,
    "ConstantOfShape": _constant_of_shape,
    "Resize": _resize,
    "Cast": _cast,
    "Slice": _slice,
}


def _fold_graph(edit: Edit, g: gs.Graph) -> bool:
    changed = False
    for node in list(g.nodes):
        if id(node) in edit.removed or not is_std(node) or node.op in QDQ:
            continue
        rule = _RULES.get(node.op)
        arity = 1 if node.op in ("Cast", "ConstantOfShape") else 2
        if rule is not None and len(node.inputs) >= arity and len(node.outputs) == 1 and rule(edit, g, node):
            changed = True
            continue
        if id(node) not in edit.removed and _fold_inputs(edit, node):
            changed = True
    return changed


def _sweep(edit: Edit) -> int:
    """Remove chain nodes that our rewrites left without consumers."""
    owner = {}
    for g in G.iter_graphs(edit.root):
        for n in g.nodes:
            owner[id(n)] = g
    outputs = edit.graph_outputs()
    removed = 0
    dropped: dict[int, tuple[gs.Graph, set]] = {}  # graph id -> (graph, ids of nodes to drop)
    work = list(edit.seeds)
    while work:
        t = work.pop()
        if isinstance(t, gs.Constant) or t.outputs or id(t) in outputs or len(t.inputs) != 1:
            continue
        node = t.inputs[0]
        if id(node) not in owner or not is_std(node) or node.op not in su.EVALUATED_OPS:
            continue
        if any(o.outputs or id(o) in outputs for o in node.outputs):
            continue
        inputs = list(node.inputs)
        node.inputs.clear()
        node.outputs.clear()
        g = owner.pop(id(node))
        dropped.setdefault(id(g), (g, set()))[1].add(id(node))
        removed += 1
        work.extend(inputs)
    for g, ids in dropped.values():
        g.nodes[:] = [n for n in g.nodes if id(n) not in ids]
    return removed


def _facts(model: onnx.ModelProto, graph: gs.Graph, opset: int) -> su.ShapeFacts:
    """Shape inference, then up to two more runs seeded with dims we proved it lost."""
    facts = su.infer_facts(model)
    su.learn_aliases(graph, facts)
    for _ in range(2):
        hints = su.dim_hints(graph, facts, opset)
        if not hints:
            break
        facts = su.infer_facts(model, hints, facts.types)
        su.learn_aliases(graph, facts)
    return facts


def _has_candidates(model: G.Model) -> bool:
    """Whether a rule could apply or note anything: one of its op types, or a Shape to fold from.

    Without a Shape node no value is a shape chain, so only the ops in ``_RULES`` can act.
    """
    for n in G.walk_nodes(model.graph):
        if n.op == "Shape" or (n.op in _RULES and K.is_default_domain(n)):  # any domain for Shape, as is_shape_chain
            return True
    return False


@register
class FoldShapeChains(Pass):
    name = PASS
    summary = "Fold Shape→Gather/Slice→Concat→Reshape/Expand/Resize chains, keeping dynamic dims dynamic."
    default_order = 40

    def run(self, model: G.Model, ctx: PassContext, log: PassLog) -> bool:
        if not _has_candidates(model):
            return False  # skip shape inference
        graph = model.graph
        opset = model.opset() or 1
        facts = _facts(model.export().for_checker(), graph, opset)
        edit = Edit(root=graph, facts=facts, opset=opset, ctx=ctx, log=log, names=G.all_names(graph),
                     evaluator=su.evaluator(facts, opset))
        changed = False
        for _ in range(4):  # later rules see what earlier ones made constant
            step = False
            for g in list(G.iter_graphs(graph)):
                step |= _fold_graph(edit, g)
            if not step:
                break
            changed = True
            for g in G.iter_graphs(graph):
                if id(g) in edit.reorder:
                    g.toposort(recurse_subgraphs=False)
            edit.reorder.clear()
            swept = _sweep(edit)
            edit.seeds.clear()
            if swept:
                log.count("dead-chain-nodes", swept)
            # Folded chains let shape inference see symbols it lost before (an Expand to
            # [B, 1, 1] through Where/Equal hid the batch from every later tensor), so
            # the facts are re-derived from the rewritten graph for the next sweep.
            facts = _facts(model.export().for_checker(), graph, opset)
            edit.facts = facts
            edit.evaluator = su.evaluator(facts, opset)
        return changed
