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
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from passes import _shape_utils as su
from surgeon import graph as G
from surgeon import graph_ops as K
from surgeon.evaluators import Evaluator
from surgeon.pipeline.base import Pass, PassContext, PassLog
from surgeon.pipeline.registry import register

log = logging.getLogger(__name__)

PASS = "fold-shape-chains"
CONST_OF_SHAPE_LIMIT = 1 << 16  # elements; larger fills would bloat the file for one node
QDQ = {"QuantizeLinear", "DequantizeLinear"}


@dataclass
class _Edit:
    """Book-keeping of one pass run (a local object, never stored on the pass)."""

    root: gs.Graph
    facts: su.ShapeFacts
    opset: int
    ctx: PassContext
    log: PassLog
    names: set
    evaluator: Evaluator
    seeds: list = field(default_factory=list)  # tensors whose producers may now be dead
    removed: set = field(default_factory=set)  # ids of nodes taken out of the graph
    reorder: set = field(default_factory=set)  # ids of graphs that got new nodes (to sort)

    def graph_outputs(self) -> set:
        return {id(t) for g in G.iter_graphs(self.root) for t in g.outputs}

    def const(self, node: gs.Node, suffix: str, values: np.ndarray) -> gs.Constant:
        base = f"{node.name or node.outputs[0].name}_{suffix}"
        return gs.Constant(K.unique_name(base, self.names), np.ascontiguousarray(values))


def _std(node: gs.Node) -> bool:
    return K.is_default_domain(node)


def _present(t: gs.Tensor | None) -> bool:
    return t is not None and (isinstance(t, gs.Constant) or bool(t.name))


def _near_qdq(node: gs.Node) -> bool:
    for t in node.inputs:
        if any(p.op in QDQ for p in t.inputs):
            return True
    for t in node.outputs:
        if any(c.op in QDQ for c in t.outputs):
            return True
    return False


def _replace_input(edit: _Edit, node: gs.Node, index: int, new: gs.Tensor) -> None:
    old = node.inputs[index]
    node.inputs[index] = new
    edit.seeds.append(old)


def _bypass(edit: _Edit, g: gs.Graph, node: gs.Node, rule: str) -> bool:
    """Remove a node that passes its first input through unchanged."""
    src, out = node.inputs[0], node.outputs[0]
    if id(out) in edit.graph_outputs():
        edit.log.note(f"{node.op} {node.name} is a no-op but its output '{out.name}' is a graph output; kept")
        return False
    if _near_qdq(node):
        edit.log.note(f"{node.op} {node.name} is a no-op next to Q/DQ nodes; kept for explicit quantization")
        return False
    if not edit.ctx.permit(rule, node.name):
        return False
    K.replace_all_uses(out, src)
    others = list(node.inputs[1:])
    node.inputs.clear()
    node.outputs.clear()
    _remove_node(g, node)
    edit.removed.add(id(node))
    edit.seeds.extend(others)
    edit.log.count(rule)
    return True


def _remove_node(g: gs.Graph, node: gs.Node) -> None:
    """Take ``node`` out of ``g.nodes`` by identity (``list.remove`` would call gs's costly ``Node.__eq__``)."""
    for i, n in enumerate(g.nodes):
        if n is node:
            del g.nodes[i]
            return
    raise ValueError(f"node {node.name} is not in graph {g.name}")


def _stamp(node: gs.Node, rule: str) -> None:
    G.stamp(node, PASS, rule, [node.name])


# --------------------------------------------------------------------------- rules


def _chain_note(edit: _Edit, node: gs.Node, t: gs.Tensor, why: str) -> None:
    if edit.evaluator.is_shape_chain(t):
        edit.log.note(f"{node.op} {node.name} keeps its shape chain: {why}")


def _only_reader(edit: _Edit, t: gs.Tensor, node: gs.Node) -> bool:
    return len(t.outputs) == 1 and t.outputs[0] is node and id(t) not in edit.graph_outputs()


def _dense_sandwich(edit: _Edit, node: gs.Node):
    """``(inner Reshape, Gemm, x, W, C or None)`` when ``node`` ends Reshape→Gemm→Reshape; else None/a note. Pure."""
    gemm = node.inputs[0].inputs[0] if len(node.inputs[0].inputs) == 1 else None
    if gemm is None or gemm.op != "Gemm" or not _std(gemm) or len(gemm.outputs) != 1 or len(gemm.inputs) < 2:
        return None
    inner = gemm.inputs[0].inputs[0] if len(gemm.inputs[0].inputs) == 1 else None
    if inner is None or inner.op != "Reshape" or not _std(inner) or len(inner.inputs) < 2:
        return None
    flat = K.constant(inner.inputs[1])
    if flat is None or flat.ndim != 1 or len(flat) != 2 or int(flat[0]) != -1:
        return None
    if not (_only_reader(edit, gemm.outputs[0], node) and _only_reader(edit, inner.outputs[0], gemm)):
        return None
    what = f"Reshape {inner.name} -> Gemm {gemm.name} -> Reshape {node.name}"
    if gemm.attrs.get("transA", 0) or gemm.attrs.get("transB", 0) or _near_qdq(gemm):
        return f"{what} kept as it is: transposed Gemm operands or Q/DQ neighbours"
    c = gemm.inputs[2] if len(gemm.inputs) > 2 and _present(gemm.inputs[2]) else None
    if float(gemm.attrs.get("alpha", 1.0)) != 1.0 or (c is not None and float(gemm.attrs.get("beta", 1.0)) != 1.0):
        return f"{what} kept as it is: alpha or beta is not 1"
    x, w = inner.inputs[0], gemm.inputs[1]
    dims, wdims = su.tensor_dims(x, edit.facts), su.tensor_dims(w, edit.facts)
    k = int(flat[1])
    if dims is None or len(dims) < 2 or wdims is None or len(wdims) != 2 or wdims[0] != su.Expr.const(k):
        return None
    value = edit.evaluator.value(node.inputs[1])
    lead = len(value.entries) - 1 if value is not None and not value.scalar else 0
    rest = su.Expr.const(1)
    for e in dims[lead:]:
        rest = su.mul(rest, e)
    if value is None or value.kind != "int" or not 1 <= lead < len(dims) or rest != su.Expr.const(k):
        return f"{what} kept as it is: the final shape is not the input's leading dims and the Gemm's width"
    free = [i for i, e in enumerate(value.entries) if e == su.Expr.const(-1)]
    expected = list(dims[:lead]) + [wdims[1]]
    if len(free) > 1 or any(e != want for i, (e, want) in enumerate(zip(value.entries, expected)) if i not in free) \
            or (not int(node.attrs.get("allowzero", 0)) and any(e == su.Expr.const(0) for e in value.entries)):
        return f"{what} kept as it is: the final shape is not the input's leading dims and the Gemm's width"
    if c is not None:
        bias = K.constant(c)
        # Gemm broadcasts C to [M, N] one way; after the MatMul it must broadcast to [..., M', N] alike.
        if bias is None or bias.ndim > 2 or (bias.ndim == 2 and bias.shape[0] != 1):
            return f"{what} kept as it is: the bias is not a constant row"
    return inner, gemm, x, w, c, (None if lead == len(dims) - 1 else [0] * lead + [k])


def _unflatten_dense(edit: _Edit, g: gs.Graph, node: gs.Node) -> bool:
    """``Reshape(Gemm(Reshape(x, [-1, K]), W, C), [*x.shape[:-1], N])`` → ``MatMul(x, W) + C``.

    The dynamo exporter writes every ``nn.Linear`` on a 3-D activation as view → addmm →
    view, the last view's target a Shape→Concat chain. MatMul broadcasts over the leading
    dims itself, so the two Reshapes and the chain go; the bias row is added after it
    (one node fewer per layer, three or more with the chain). Proven by the symbolic
    shapes: the final target must be exactly the input's leading dims and the Gemm's N.
    """
    found = _dense_sandwich(edit, node)
    if found is None or isinstance(found, str):
        if found:
            edit.log.note(found)
        return False
    inner, gemm, x, w, c, merge = found
    if not edit.ctx.permit("unflatten-dense", node.name):
        return False
    y = node.outputs[0]
    sources = [inner.name, gemm.name, node.name]
    seeds = [node.inputs[1], inner.inputs[1]]
    for n in (node, gemm, inner):
        n.inputs.clear()
        n.outputs.clear()
        _remove_node(g, n)
        edit.removed.add(id(n))
    base = gemm.name or y.name
    new = []
    if merge is not None:  # x's trailing dims make K together (heads x head size): join them first
        joined = gs.Variable(K.unique_name(f"{x.name}_joined", edit.names), dtype=x.dtype)
        new.append(gs.Node("Reshape", name=K.unique_name(f"{base}_join", edit.names), attrs={"allowzero": 0},
                           inputs=[x, gs.Constant(K.unique_name(f"{base}_join_shape", edit.names), np.array(merge, dtype=np.int64))],
                           outputs=[joined]))
        x = joined
    if c is None:
        new.append(gs.Node("MatMul", name=K.unique_name(f"{base}_matmul", edit.names), inputs=[x, w], outputs=[y]))
    else:
        mm = gs.Variable(K.unique_name(f"{y.name}_matmul", edit.names), dtype=y.dtype)
        new += [gs.Node("MatMul", name=K.unique_name(f"{base}_matmul", edit.names), inputs=[x, w], outputs=[mm]),
                gs.Node("Add", name=K.unique_name(f"{base}_bias", edit.names), inputs=[mm, c], outputs=[y])]
    for n in new:
        G.stamp(n, PASS, "unflatten-dense", sources)
    g.nodes.extend(new)
    edit.reorder.add(id(g))
    edit.seeds.extend(seeds)
    edit.log.count("unflatten-dense")
    return True


def _reshape(edit: _Edit, g: gs.Graph, node: gs.Node) -> bool:
    if _unflatten_dense(edit, g, node):
        return True
    data, shape = node.inputs[0], node.inputs[1]
    allowzero = int(node.attrs.get("allowzero", 0))
    value = edit.evaluator.value(shape)
    if value is None or value.scalar or value.kind != "int":
        _chain_note(edit, node, shape, "its target cannot be evaluated")
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
            _chain_note(edit, node, shape, f"target entries {what} are not dims of its input at the same position")
            return False
        target[unknown[0]] = -1
    if dims is not None and len(target) == len(dims) and _reshape_is_noop(target, dims, allowzero):
        if _bypass(edit, g, node, "reshape-noop"):
            return True
    old = K.constant(shape)
    if old is not None and old.ndim == 1 and old.tolist() == target:
        return False
    if not _set_int_input(edit, node, 1, "target", target, "reshape-target"):
        return False
    if relaxed and 0 in target:
        node.attrs["allowzero"] = 0  # the copies above need allowzero=0's meaning of 0
    return True


def _set_int_input(edit: _Edit, node: gs.Node, index: int, suffix: str, values: list, rule: str) -> bool:
    """One counted, permitted, stamped rewrite: input ``index`` becomes an int64 constant."""
    if not edit.ctx.permit(rule, node.name):
        return False
    _replace_input(edit, node, index, edit.const(node, suffix, np.array(values, dtype=np.int64)))
    _stamp(node, rule)
    edit.log.count(rule)
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


def _expand(edit: _Edit, g: gs.Graph, node: gs.Node) -> bool:
    data, shape = node.inputs[0], node.inputs[1]
    value = edit.evaluator.value(shape)
    if value is None or value.scalar or value.kind != "int":
        _chain_note(edit, node, shape, "its shape cannot be evaluated")
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
            _chain_note(edit, node, shape, f"entry {j} ({e!r}) is not a dim of its input '{data.name}' "
                                           "(the value genuinely depends on an input size)")
            return _materialize(edit, g, node, 1, value)
    if dims is not None and n <= len(dims) and all(v == 1 for v in new):
        if _bypass(edit, g, node, "expand-noop"):
            return True
    old = K.constant(shape)
    if old is not None and old.ndim == 1 and old.tolist() == new:
        return False
    return _set_int_input(edit, node, 1, "shape", new, "expand-shape")


def _exclusive_chain(edit: _Edit, g: gs.Graph, t: gs.Tensor, consumer: gs.Node) -> list:
    """Chain nodes in ``g`` that would die if ``consumer`` stopped reading ``t``."""
    outputs = edit.graph_outputs()
    in_graph = {id(n) for n in g.nodes}
    cand: dict = {}
    stack = [t]
    while stack:
        cur = stack.pop()
        if isinstance(cur, gs.Constant) or len(cur.inputs) != 1:
            continue
        n = cur.inputs[0]
        if id(n) in cand or id(n) not in in_graph or n.op not in su.EVALUATED_OPS or not _std(n):
            continue
        cand[id(n)] = n
        stack.extend(n.inputs)
    stable = False
    while not stable:
        stable = True
        for key, n in list(cand.items()):
            for o in n.outputs:
                users_ok = all(id(c) in cand or (c is consumer and o is t) for c in o.outputs)
                if id(o) in outputs or not users_ok:
                    del cand[key]
                    stable = False
                    break
    return list(cand.values())


def _materialize(edit: _Edit, g: gs.Graph, node: gs.Node, index: int, value: su.SVal) -> bool:
    """Rebuild a partly symbolic shape as Shape(start:end) pieces + one Concat, when shorter.

    ``expand(B, -1, -1)`` exports Shape→Gather→Unsqueeze→Concat→Equal→Where (six nodes
    for ``[B, 1, 1]``); ``Concat(Shape(x)[0:1], [1, 1])`` says the same in two or three.
    Applied only when strictly fewer nodes result, so it cannot repeat itself.
    """
    t = node.inputs[index]
    if edit.opset < 10 or value.kind != "int" or value.scalar or isinstance(t, gs.Constant):
        return False
    sources = []
    for n in _backward_nodes(t):
        if n.op == "Shape" and not n.attrs.get("start") and n.attrs.get("end") is None:
            dims = su.tensor_dims(n.inputs[0], edit.facts)
            if dims is not None:
                sources.append((n.inputs[0], dims))
    pieces: list = []  # [("const", [ints])] or [("dims", tensor, start, end)]
    for e in value.entries:
        if e.is_const:
            if pieces and pieces[-1][0] == "const":
                pieces[-1][1].append(int(e.coef))
            else:
                pieces.append(("const", [int(e.coef)]))
            continue
        last = pieces[-1] if pieces else None
        if last and last[0] == "dims" and last[3] < len(last[4]) and last[4][last[3]] == e:
            pieces[-1] = ("dims", last[1], last[2], last[3] + 1, last[4])
            continue
        for x, dims in sources:
            if e in dims:
                i = dims.index(e)
                pieces.append(("dims", x, i, i + 1, dims))
                break
        else:
            return False
    per_piece = 1 if edit.opset >= 15 else 2
    cost = sum((1 if (p[2] == 0 and p[3] == len(p[4])) else per_piece) for p in pieces if p[0] == "dims")
    cost += 1 if len(pieces) > 1 else 0
    dead = _exclusive_chain(edit, g, t, node)
    if cost >= len(dead):
        return False
    if not edit.ctx.permit("materialize-shape", node.name):
        return False
    sources_names = [n.name for n in dead]
    parts = []
    new_nodes = []
    for p in pieces:
        if p[0] == "const":
            parts.append(edit.const(node, "dims", np.array(p[1], dtype=np.int64)))
            continue
        _, x, start, end, dims = p
        whole = start == 0 and end == len(dims)
        out = gs.Variable(K.unique_name(f"{x.name}_shape_{start}_{end}", edit.names), dtype=np.int64, shape=[end - start])
        if whole or edit.opset >= 15:
            attrs = {} if whole else {"start": start, "end": end}
            new_nodes.append(gs.Node("Shape", name=K.unique_name(f"{out.name}_node", edit.names), attrs=attrs,
                                     inputs=[x], outputs=[out]))
        else:
            full = gs.Variable(K.unique_name(f"{x.name}_shape", edit.names), dtype=np.int64, shape=[len(dims)])
            new_nodes.append(gs.Node("Shape", name=K.unique_name(f"{full.name}_node", edit.names), inputs=[x], outputs=[full]))
            new_nodes.append(gs.Node("Slice", name=K.unique_name(f"{out.name}_node", edit.names), inputs=[
                full, edit.const(node, "start", np.array([start], np.int64)), edit.const(node, "end", np.array([end], np.int64))],
                outputs=[out]))
        parts.append(out)
    if len(parts) > 1:
        result = gs.Variable(K.unique_name(f"{t.name}_rebuilt", edit.names), dtype=np.int64, shape=[len(value.entries)])
        new_nodes.append(gs.Node("Concat", name=K.unique_name(f"{result.name}_node", edit.names), attrs={"axis": 0},
                                 inputs=parts, outputs=[result]))
    else:
        result = parts[0]
    for n in new_nodes:
        G.stamp(n, PASS, "materialize-shape", sources_names)
    g.nodes.extend(new_nodes)
    _replace_input(edit, node, index, result)
    edit.reorder.add(id(g))
    edit.log.count("materialize-shape")
    return True


def _backward_nodes(t: gs.Tensor, limit: int = 64) -> list:
    seen, out, stack = set(), [], [t]
    while stack and len(out) < limit:
        cur = stack.pop()
        if isinstance(cur, gs.Constant) or len(cur.inputs) != 1:
            continue
        n = cur.inputs[0]
        if id(n) in seen or n.op not in su.EVALUATED_OPS:
            continue
        seen.add(id(n))
        out.append(n)
        stack.extend(n.inputs)
    return out


def _tile(edit: _Edit, g: gs.Graph, node: gs.Node) -> bool:
    reps = node.inputs[1]
    value = edit.evaluator.value(reps)
    if value is None or not value.is_const or value.scalar:
        if value is not None or edit.evaluator.is_shape_chain(reps):
            _chain_note(edit, node, reps, "its repeats depend on an input size")
        return False
    new = value.ints()
    if all(r == 1 for r in new):
        dims = su.tensor_dims(node.inputs[0], edit.facts)
        if dims is not None and len(dims) == len(new) and _bypass(edit, g, node, "tile-noop"):
            return True
    if K.constant(reps) is not None:
        return False
    return _set_int_input(edit, node, 1, "repeats", new, "tile-repeats")


def _constant_of_shape(edit: _Edit, g: gs.Graph, node: gs.Node) -> bool:
    shape = node.inputs[0]
    value = edit.evaluator.value(shape)
    if value is None or not value.is_const:
        _chain_note(edit, node, shape, "its shape depends on an input size")
        return value is not None and _materialize(edit, g, node, 0, value)
    dims = value.ints()
    if any(d < 0 for d in dims) or int(np.prod(dims, dtype=np.int64)) > CONST_OF_SHAPE_LIMIT:
        edit.log.note(f"ConstantOfShape {node.name} not folded: {dims} is larger than {CONST_OF_SHAPE_LIMIT} elements")
        return False
    out = node.outputs[0]
    if id(out) in edit.graph_outputs():
        return K.constant(shape) is None and _set_int_input(edit, node, 0, "shape", dims, "constant-of-shape")
    if not edit.ctx.permit("constant-of-shape", node.name):
        return False
    fill = node.attrs.get("value")
    fill_arr = np.asarray(fill.values).ravel()[:1] if isinstance(fill, gs.Constant) else np.zeros(1, np.float32)
    const = edit.const(node, "value", np.full(dims, fill_arr[0], dtype=fill_arr.dtype))
    K.replace_all_uses(out, const)
    edit.seeds.append(shape)
    node.inputs.clear()
    node.outputs.clear()
    _remove_node(g, node)
    edit.removed.add(id(node))
    edit.log.count("constant-of-shape")
    return True


def _resize(edit: _Edit, g: gs.Graph, node: gs.Node) -> bool:
    if edit.opset < 11 or len(node.inputs) < 4 or not _present(node.inputs[3]):
        return False
    if node.attrs.get("axes") is not None or node.attrs.get("keep_aspect_ratio_policy", "stretch") != "stretch":
        edit.log.note(f"Resize {node.name} keeps 'sizes': axes/keep_aspect_ratio_policy are set")
        return False
    x, sizes = node.inputs[0], node.inputs[3]
    value = edit.evaluator.value(sizes)
    dims = su.tensor_dims(x, edit.facts)
    if value is None or value.kind != "int" or dims is None or len(dims) != len(value.entries):
        _chain_note(edit, node, sizes, "its sizes cannot be evaluated against the input's dims")
        return False
    scales = []
    for i, (e, d) in enumerate(zip(value.entries, dims)):
        ratio = su.truediv(e, d) if d.coef != 0 else None
        if ratio is None or not ratio.is_const or ratio.coef <= 0 or ratio.coef.denominator != 1:
            _chain_note(edit, node, sizes, f"size {i} ({e!r}) is not an integer multiple of input dim {d!r}")
            return False
        scales.append(float(ratio.coef))
    if not edit.ctx.permit("resize-scales", node.name):
        return False
    roi = node.inputs[1]
    if not _present(roi) and edit.opset < 13:
        roi = edit.const(node, "roi", np.zeros(0, dtype=np.float32))
    new_scales = edit.const(node, "scales", np.array(scales, dtype=np.float32))
    old = list(node.inputs[1:])
    node.inputs.clear()
    node.inputs.extend([x, roi, new_scales])
    edit.seeds.extend(old)
    _stamp(node, "resize-scales")
    edit.log.count("resize-scales")
    return True


def _cast(edit: _Edit, g: gs.Graph, node: gs.Node) -> bool:
    src = node.inputs[0]
    elem = edit.facts.types.get(src.name)
    if elem is None and isinstance(src, gs.Constant):
        elem = onnx.helper.np_dtype_to_tensor_dtype(src.values.dtype)
    if elem is None or elem != node.attrs.get("to"):
        return False
    return _bypass(edit, g, node, "cast-noop")


def _slice_params(edit: _Edit, node: gs.Node):
    """(starts, ends, axes, steps) as int lists, or None when any is not constant."""
    out = []
    for i in range(1, 5):
        t = node.inputs[i] if i < len(node.inputs) else None
        if not _present(t):
            out.append(None)
            continue
        arr = K.constant(t)
        if arr is None or arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
            return None
        out.append([int(v) for v in arr])
    return out


def _slice(edit: _Edit, g: gs.Graph, node: gs.Node) -> bool:
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
            return _bypass(edit, g, node, "slice-noop")
    changed = False
    for index, vals in ((1, starts), (2, ends)):
        if all(su.INT32_MIN <= v <= su.INT32_MAX for v in vals):
            continue
        if not edit.ctx.permit("clamp-int64", node.name):
            continue
        clamped = np.clip(np.array(vals, dtype=np.int64), su.INT32_MIN, su.INT32_MAX)
        dtype = K.constant(node.inputs[index]).dtype
        _replace_input(edit, node, index, edit.const(node, "starts" if index == 1 else "ends",
                                                     clamped.astype(dtype)))
        _stamp(node, "clamp-int64")
        edit.log.count("clamp-int64")
        changed = True
    return changed


def _fold_inputs(edit: _Edit, node: gs.Node) -> bool:
    """Any other consumer of a fully static shape chain reads a constant instead."""
    ev = edit.evaluator
    if node.op in su.EVALUATED_OPS and _std(node):
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
        _replace_input(edit, node, i, gs.Constant(K.unique_name(f"{t.name}_folded", edit.names), arr))
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


def _fold_graph(edit: _Edit, g: gs.Graph) -> bool:
    changed = False
    for node in list(g.nodes):
        if id(node) in edit.removed or not _std(node) or node.op in QDQ:
            continue
        rule = _RULES.get(node.op)
        arity = 1 if node.op in ("Cast", "ConstantOfShape") else 2
        if rule is not None and len(node.inputs) >= arity and len(node.outputs) == 1 and rule(edit, g, node):
            changed = True
            continue
        if id(node) not in edit.removed and _fold_inputs(edit, node):
            changed = True
    return changed


def _sweep(edit: _Edit) -> int:
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
        if id(node) not in owner or not _std(node) or node.op not in su.EVALUATED_OPS:
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
        edit = _Edit(root=graph, facts=facts, opset=opset, ctx=ctx, log=log, names=G.all_names(graph),
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
