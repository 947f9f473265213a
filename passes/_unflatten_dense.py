"""fold-shape-chains' ``unflatten-dense`` rule: ``Reshape → Gemm → Reshape`` (the dynamo
exporter's ``nn.Linear`` on a 3-D activation) becomes ``MatMul`` (+ the bias).
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from passes import _shape_utils as su
from passes._shape_chain_edit import PASS, Edit, is_std, near_qdq, only_reader, present
from surgeon import graph as G
from surgeon import graph_ops as K


def _dense_sandwich(edit: Edit, node: gs.Node):
    """``(inner Reshape, Gemm, x, W, C or None)`` when ``node`` ends Reshape→Gemm→Reshape; else None/a note. Pure."""
    gemm = node.inputs[0].inputs[0] if len(node.inputs[0].inputs) == 1 else None
    if gemm is None or gemm.op != "Gemm" or not is_std(gemm) or len(gemm.outputs) != 1 or len(gemm.inputs) < 2:
        return None
    inner = gemm.inputs[0].inputs[0] if len(gemm.inputs[0].inputs) == 1 else None
    if inner is None or inner.op != "Reshape" or not is_std(inner) or len(inner.inputs) < 2:
        return None
    flat = K.constant(inner.inputs[1])
    if flat is None or flat.ndim != 1 or len(flat) != 2 or int(flat[0]) != -1:
        return None
    if not (only_reader(edit, gemm.outputs[0], node) and only_reader(edit, inner.outputs[0], gemm)):
        return None
    what = f"Reshape {inner.name} -> Gemm {gemm.name} -> Reshape {node.name}"
    if gemm.attrs.get("transA", 0) or gemm.attrs.get("transB", 0) or near_qdq(gemm):
        return f"{what} kept as it is: transposed Gemm operands or Q/DQ neighbours"
    c = gemm.inputs[2] if len(gemm.inputs) > 2 and present(gemm.inputs[2]) else None
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


def unflatten_dense(edit: Edit, g: gs.Graph, node: gs.Node) -> bool:
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
        edit.drop(g, n)
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
