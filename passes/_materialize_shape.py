"""fold-shape-chains' ``materialize-shape`` rule: a partly symbolic shape rebuilt as
``Shape(start:end)`` pieces and one Concat, when that takes fewer nodes than its chain.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from passes import _shape_utils as su
from passes._shape_chain_edit import PASS, Edit, is_std, replace_input
from surgeon import graph as G
from surgeon import graph_ops as K


def _exclusive_chain(edit: Edit, g: gs.Graph, t: gs.Tensor, consumer: gs.Node) -> list:
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
        if id(n) in cand or id(n) not in in_graph or n.op not in su.EVALUATED_OPS or not is_std(n):
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


def materialize(edit: Edit, g: gs.Graph, node: gs.Node, index: int, value: su.SVal) -> bool:
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
    replace_input(edit, node, index, result)
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
