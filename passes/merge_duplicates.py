"""``merge-duplicates``: common subexpression elimination, bodies and outer scopes included.

Exporters repeat themselves: the same ``Shape(x)``, the same ``Unsqueeze(x, [0])`` once per
reader, one ``[1]``-shaped axes constant per node, LayerNorm weights of random-init layers
that are all ones, two If branches that read the same outer value through the same Squeeze.
Every copy is a node a runtime schedules and a report names.

What is merged (each kept once, its readers moved to the copy that stays):

- initializers and Constant values of the same type, shape and bytes (see
  ``passes/_same_value.py`` for why comparing them costs almost nothing on large models),
  within the graph they belong to;
- nodes with the same op, domain, attributes (bodies compared structurally) and inputs, in
  order, by value numbering in topological order: once two nodes are merged their readers
  become equal too, so chains collapse in one sweep;
- a node inside an If/Loop/Scan body identical to one of an enclosing graph, computed
  before the node holding the body, on values visible there: the body reads the outer value.

Never merged: random ops (RandomNormal, RandomUniform, Multinomial, Bernoulli, Dropout and
their ``Like`` forms) and ops outside the standard domains, whose determinism is unknown,
and any node with such an op in a body; initializers a user may override (listed as graph
inputs, IR >= 4); two nodes that both write graph outputs (one output name would have to
go). When the duplicate writes a graph output, the node that stays writes that name
instead, so output names never change. Constants shared by an outer graph and a body are
not moved between scopes: onnx-graphsurgeon would write them into every body that reads
them; nor is a body's Constant node replaced by an enclosing graph's (onnx's shape
inference would not see its value from the body, and the checker rejects what it infers).
"""

from __future__ import annotations

import logging
from collections import ChainMap

import onnx_graphsurgeon as gs

from passes import _same_value as V
from passes._scopes import ScopeTree, in_order
from surgeon import graph as G
from surgeon import graph_ops as K
from surgeon.pipeline.base import Pass, PassContext, PassLog
from surgeon.pipeline.registry import register

logger = logging.getLogger(__name__)

PASS_NAME = "merge-duplicates"
MAX_SWEEPS = 4  # a sweep reaches the fixed point except when a merge in a body makes two bodies equal


def _label(node: gs.Node) -> str:
    return node.name or (node.outputs[0].name if node.outputs else f"<unnamed {node.op}>")


class _Run:
    """What one run of the pass knows; discarded when the run ends."""

    def __init__(self, root: gs.Graph, ctx: PassContext, log: PassLog):
        self.root, self.ctx, self.log = root, ctx, log
        self.keys = V.Keys(V.ContentIndex())
        self.refresh()

    def refresh(self) -> None:
        """Recompute the scope facts (after a sweep changed the graph)."""
        self.tree = ScopeTree(self.root)
        counts: dict[str, int] = {}
        for g in self.tree.graphs:
            for t in g.inputs:
                counts[t.name] = counts.get(t.name, 0) + 1
            for n in g.nodes:
                for t in n.outputs:
                    if t.name:
                        counts[t.name] = counts.get(t.name, 0) + 1
        self.defined = counts

    # --- initializers and constants -----------------------------------------------------

    def merge_constants(self) -> bool:
        """Readers of a constant read the first one of its content class in its home graph."""
        changed = False
        first: dict[tuple[int, int], gs.Constant] = {}  # (id(home graph), class) -> kept constant
        seen: set[int] = set()
        for g in self.tree.graphs:
            for node in g.nodes:
                for t in list(node.inputs):
                    if not isinstance(t, gs.Constant) or id(t) in seen or G.is_overridable(t):
                        continue
                    seen.add(id(t))
                    home = self.tree.home(t)
                    slot = (id(home), self.keys.index.class_of(t))
                    kept = first.setdefault(slot, t)
                    if kept is t or self.tree.is_graph_output(t) or self.tree.is_graph_output(kept):
                        continue
                    if not self.ctx.permit("same-initializer", t.name):
                        continue
                    K.replace_all_uses(t, kept)
                    self.log.count("same-initializer")
                    changed = True
        return changed

    # --- nodes --------------------------------------------------------------------------

    def refusal(self, dup: gs.Node, dup_graph: gs.Graph, kept: gs.Node, kept_graph: gs.Graph) -> str | None:
        """Why ``dup`` cannot be replaced by ``kept`` (None: it can). Pure."""
        for t_dup, t_kept in zip(dup.outputs, kept.outputs):
            if not t_dup.name:
                continue
            homes = self.tree.output_of.get(id(t_dup), [])
            if any(g is not dup_graph for g in homes):
                return f"its output {t_dup.name} is also a body's output"
            if homes:  # a graph output of dup_graph: the kept node must write that name
                if kept_graph is not dup_graph:
                    return f"its output {t_dup.name} is a graph output and the copy is in an enclosing graph"
                if self.tree.is_graph_output(t_kept):
                    return f"both write graph outputs ({t_kept.name}, {t_dup.name})"
                if self.defined.get(t_dup.name, 0) > 1:
                    return f"the name {t_dup.name} is defined in more than one graph"
            elif self.defined.get(t_kept.name, 0) > 1:
                return f"the name {t_kept.name} is defined in more than one graph"
        return None

    def merge(self, dup: gs.Node, kept: gs.Node) -> None:
        """Replace ``dup`` by ``kept`` (edits the graph; ``refusal`` said yes)."""
        pairs = list(zip(list(dup.outputs), list(kept.outputs)))
        dup.inputs.clear()
        dup.outputs.clear()
        for t_dup, t_kept in pairs:
            if not t_dup.name:
                continue
            if self.tree.is_graph_output(t_dup):
                K.write_instead(t_kept, t_dup)  # the output keeps its name
            else:
                K.replace_all_uses(t_dup, t_kept)

    def near_miss(self, node: gs.Node, graph_table: dict, what: str) -> None:
        """Note a random or non-standard node that would otherwise have been merged."""
        key = ("near", V.domain_of(node), node.op, tuple(self.keys.value(t) for t in node.inputs),
               tuple(sorted((k, repr(v)) for k, v in node.attrs.items() if not isinstance(v, gs.Graph))))
        other = graph_table.get(key)
        if other is None:
            graph_table[key] = node
            return
        self.log.note(f"{node.op} {_label(node)} not merged with {_label(other)}: {what}")

    def walk(self, graph: gs.Graph, outer: ChainMap) -> bool:
        """One value-numbering sweep over ``graph``; bodies see what precedes their node."""
        if not in_order(graph):
            self.log.note(f"graph '{graph.name}' is not in topological order; run cleanup first (not merged)")
            return False
        table = outer.new_child()
        near: dict = {}
        removed: set[int] = set()
        changed = False
        for node in graph.nodes:
            for sub in K.subgraphs(node):
                changed |= self.walk(sub, table)
            key = self.keys.node(node)
            if key is None:
                if not V.is_deterministic(node) and not K.has_subgraphs(node):
                    what = ("a random op draws new values each time" if V.domain_of(node) in V.DETERMINISTIC_DOMAINS
                            else f"ops of domain '{V.domain_of(node)}' may not be deterministic")
                    self.near_miss(node, near, what)
                continue
            found = table.get(key)
            if found is None:
                table[key] = (node, graph)
                continue
            kept, kept_graph = found
            if kept_graph is not graph and node.op == "Constant":
                # A body keeps its own constants: onnx's shape inference does not see the value
                # of an enclosing graph's Constant from inside a body, and then infers wrong
                # shapes the checker rejects (a Slice's axes, then a Resize's sizes).
                table[key] = (node, graph)
                continue
            reason = self.refusal(node, graph, kept, kept_graph)
            if reason:
                self.log.note(f"{node.op} {_label(node)} not merged with {_label(kept)}: {reason}")
                continue
            rule = "same-node" if kept_graph is graph else "same-node-in-outer-scope"
            if not self.ctx.permit(rule, node):
                continue
            self.merge(node, kept)
            removed.add(id(node))
            self.log.count(rule)
            changed = True
        if removed:
            graph.nodes = [n for n in graph.nodes if id(n) not in removed]
        return changed


def merge_duplicates(root: gs.Graph, ctx: PassContext, log: PassLog) -> bool:
    """Merge duplicate constants and nodes in ``root`` and every body under it (edits the graph)."""
    run = _Run(root, ctx, log)
    changed = run.merge_constants()
    for _ in range(MAX_SWEEPS):
        run.refresh()
        if not run.walk(root, ChainMap()):
            break
        changed = True
    if run.keys.index.unread:
        log.note(f"{len(run.keys.index.unread)} constant(s) not compared: over "
                 f"{V.LAZY_READ_LIMIT >> 20} MiB, or past the {V.LAZY_READ_BUDGET >> 20} MiB read budget, "
                 "while another constant has the same type and shape")
    return changed


@register
class MergeDuplicates(Pass):
    name = PASS_NAME
    summary = "Merge identical initializers, Constant values and nodes (common subexpressions), bodies included."
    default_order = 67

    def run(self, model: G.Model, ctx: PassContext, log: PassLog) -> bool:
        # A Pass, not a GraphPass: a body node merges with a node of its enclosing graph,
        # so one walk has to see the scopes nested in each other.
        return merge_duplicates(model.graph, ctx, log)
