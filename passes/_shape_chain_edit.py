"""fold-shape-chains' edit of one run: the book-keeping (:class:`Edit`) and the few edits
every rule of the pass makes (a counted, permitted input replacement; removing a no-op node
unless a graph output or a Q/DQ neighbour forbids it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from passes import _shape_utils as su
from surgeon import graph as G
from surgeon import graph_ops as K
from surgeon.evaluators import Evaluator
from surgeon.pipeline.base import PassContext, PassLog

PASS = "fold-shape-chains"
QDQ = {"QuantizeLinear", "DequantizeLinear"}


@dataclass
class Edit:
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

    def drop(self, g: gs.Graph, node: gs.Node) -> None:
        """Disconnect ``node`` and take it out of ``g.nodes`` by identity (``list.remove``
        would call graphsurgeon's costly ``Node.__eq__``)."""
        node.inputs.clear()
        node.outputs.clear()
        for i, n in enumerate(g.nodes):
            if n is node:
                del g.nodes[i]
                break
        else:
            raise ValueError(f"node {node.name} is not in graph {g.name}")
        self.removed.add(id(node))


def is_std(node: gs.Node) -> bool:
    return K.is_default_domain(node)


def present(t: gs.Tensor | None) -> bool:
    return t is not None and (isinstance(t, gs.Constant) or bool(t.name))


def near_qdq(node: gs.Node) -> bool:
    for t in node.inputs:
        if any(p.op in QDQ for p in t.inputs):
            return True
    for t in node.outputs:
        if any(c.op in QDQ for c in t.outputs):
            return True
    return False


def replace_input(edit: Edit, node: gs.Node, index: int, new: gs.Tensor) -> None:
    old = node.inputs[index]
    node.inputs[index] = new
    edit.seeds.append(old)


def bypass(edit: Edit, g: gs.Graph, node: gs.Node, rule: str) -> bool:
    """Remove a node that passes its first input through unchanged."""
    src, out = node.inputs[0], node.outputs[0]
    if id(out) in edit.graph_outputs():
        edit.log.note(f"{node.op} {node.name} is a no-op but its output '{out.name}' is a graph output; kept")
        return False
    if near_qdq(node):
        edit.log.note(f"{node.op} {node.name} is a no-op next to Q/DQ nodes; kept for explicit quantization")
        return False
    if not edit.ctx.permit(rule, node.name):
        return False
    K.replace_all_uses(out, src)
    others = list(node.inputs[1:])
    edit.drop(g, node)
    edit.seeds.extend(others)
    edit.log.count(rule)
    return True


def stamp(node: gs.Node, rule: str) -> None:
    G.stamp(node, PASS, rule, [node.name])


def chain_note(edit: Edit, node: gs.Node, t: gs.Tensor, why: str) -> None:
    if edit.evaluator.is_shape_chain(t):
        edit.log.note(f"{node.op} {node.name} keeps its shape chain: {why}")


def only_reader(edit: Edit, t: gs.Tensor, node: gs.Node) -> bool:
    return len(t.outputs) == 1 and t.outputs[0] is node and id(t) not in edit.graph_outputs()


def set_int_input(edit: Edit, node: gs.Node, index: int, suffix: str, values: list, rule: str) -> bool:
    """One counted, permitted, stamped rewrite: input ``index`` becomes an int64 constant."""
    if not edit.ctx.permit(rule, node.name):
        return False
    replace_input(edit, node, index, edit.const(node, suffix, np.array(values, dtype=np.int64)))
    stamp(node, rule)
    edit.log.count(rule)
    return True
