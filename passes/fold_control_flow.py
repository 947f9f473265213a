"""``fold-control-flow``: If and Loop nodes whose outcome is known before the model runs.

- An ``If`` whose condition is a constant runs one branch, always: the branch's nodes
  take the If's place (``constant-condition``).
- An ``If`` whose two branches compute the same thing runs the same nodes whatever the
  condition: one branch takes its place and the condition is no longer needed
  (``same-branches``). "The same" is structural: equal nodes in order, names aside, with
  constants compared by content (``passes/_same_value.py``).
- Two ``If`` nodes on the same condition take the same branch: the later one's branches
  join the earlier one's, when everything they read is computed before the earlier If
  (``same-condition``).
- A ``Loop`` with a constant trip count of 0 or a constant false condition never runs its
  body: its final loop-carried values are the initial ones (``zero-trip-loop``). Refused when
  a scan output (empty, with a shape only the body could tell) is read.

Exporters leave these behind when a Python ``if`` on a flag, a sample rate or a rank was
scripted or traced into the graph, or when constant folding settled a condition that
depended on shapes. A condition that depends on a graph input (silero-vad's sample rate
``sr``) is left alone, with a note naming the input.

Inlining is rename-safe: the branch's outputs become the If's outputs (the node that
computed a branch output writes the If's output name instead), a branch name that is
taken elsewhere in the model gets a fresh one, and outer-scope reads stay as they are
(they are visible in the enclosing graph). Where an If output must keep its name but the
branch returns a constant (or one value for two outputs), an Identity writes it (stamped
with this pass's provenance); ``cleanup`` removes those it can. Nodes that only computed
the condition are removed. A constant-condition If is inlined before its bodies are looked
at (the dropped branch is never visited); any other If has its bodies folded first, so an
If whose branches became equal is folded in the same run.
"""

from __future__ import annotations

import logging

import onnx
import onnx_graphsurgeon as gs
from onnx_graphsurgeon.ir.tensor import LazyValues

from passes import _same_value as V
from passes._scopes import ScopeTree, free_reads, names_in
from surgeon import graph as G
from surgeon import graph_ops as K
from surgeon.graph_ops import iter_graphs, replace_all_uses, unique_name
from surgeon.pipeline.base import Pass, PassContext, PassLog
from surgeon.pipeline.registry import register
from surgeon.weights import DenseSparseValues

logger = logging.getLogger(__name__)

PASS_NAME = "fold-control-flow"
MAX_SWEEPS = 8  # each sweep folds every settled If of every depth; a new sweep sees the inlined ones


def _label(node: gs.Node) -> str:
    return node.name or (node.outputs[0].name if node.outputs else f"<unnamed {node.op}>")


def _scalar(t: gs.Tensor | None):
    """The single element of a constant (never an overridable initializer), or None."""
    value = K.constant(t, max_elements=1)
    return None if value is None or value.size != 1 else value.reshape(-1)[0]


def _inputs_behind(t: gs.Tensor, limit: int = 256) -> list[str]:
    """Names of the graph inputs (of any scope) a value depends on, for notes."""
    seen: set[int] = set()
    found: list[str] = []
    work = [t]
    while work and len(seen) < limit:
        x = work.pop()
        if id(x) in seen or isinstance(x, gs.Constant):
            continue
        seen.add(id(x))
        if not x.inputs:
            if x.name and x.name not in found:
                found.append(x.name)
            continue
        work.extend(x.inputs[0].inputs)
    return sorted(found)


class _Run:
    """What one run of the pass knows; discarded when the run ends."""

    def __init__(self, root: gs.Graph, ctx: PassContext, log: PassLog):
        self.root, self.ctx, self.log = root, ctx, log
        self.keys = V.Keys(V.ContentIndex())
        self.tree = ScopeTree(root)

    # --- shared by the rules: one node's outputs become given values --------------------

    def _write(self, graph: gs.Graph, y: gs.Tensor, src: gs.Tensor, created: list[gs.Node],
               taken_nodes: set[str], origin: gs.Node, rule: str) -> None:
        """Readers of ``y`` read ``src``; an output that must keep its name gets an Identity."""
        if self.tree.is_graph_output(y):
            identity = gs.Node("Identity", name=unique_name(f"{_label(origin)}/{y.name}", taken_nodes),
                               inputs=[src], outputs=[y])
            G.stamp(identity, PASS_NAME, rule, _label(origin))
            if y.dtype is None:
                y.dtype = src.dtype
            created.append(identity)
        else:
            replace_all_uses(y, src)

    def _drop_dead(self, graph: gs.Graph, tensors: list[gs.Tensor]) -> int:
        """Remove the producers of ``tensors`` in ``graph`` as far as nothing reads them."""
        here = {id(n) for n in graph.nodes}
        removed: set[int] = set()
        work = [t for t in tensors if isinstance(t, gs.Variable) and t.name]
        while work:
            t = work.pop()
            if t.outputs or self.tree.is_graph_output(t) or len(t.inputs) != 1:
                continue
            p = t.inputs[0]
            if id(p) not in here or id(p) in removed or K.has_subgraphs(p):
                continue
            if any(o.outputs or self.tree.is_graph_output(o) for o in p.outputs if o.name):
                continue
            ins = [i for i in p.inputs if isinstance(i, gs.Variable) and i.name]
            p.inputs.clear()
            p.outputs.clear()
            removed.add(id(p))
            work.extend(ins)
        if removed:
            graph.nodes = [n for n in graph.nodes if id(n) not in removed]
            self.log.count("dead-node", len(removed))
        return len(removed)

    # --- If -----------------------------------------------------------------------------

    def fold_if(self, graph: gs.Graph, node: gs.Node, settled_only: bool) -> list[gs.Node] | None:
        """Inline the branch that always runs; the nodes now in ``graph``, or None (not folded).

        ``settled_only``: look at constant conditions only (bodies not folded yet).
        """
        then_b, else_b = node.attrs.get("then_branch"), node.attrs.get("else_branch")
        if not node.inputs or not isinstance(then_b, gs.Graph) or not isinstance(else_b, gs.Graph):
            return None
        cond = node.inputs[0]
        value = _scalar(cond)
        if value is not None:
            rule, taken, dropped = "constant-condition", *((then_b, else_b) if bool(value) else (else_b, then_b))
        elif settled_only:
            return None
        else:
            then_key = self.keys.graph(then_b)
            if then_key is None or then_key != self.keys.graph(else_b):
                if isinstance(cond, gs.Constant) and G.is_overridable(cond):
                    why = f"its condition is the initializer {cond.name}, which a user may override"
                else:
                    names = _inputs_behind(cond)
                    why = (f"its condition depends on input {', '.join(names[:3])}" if names
                           else "its condition is not a constant")
                self.log.note(f"If {_label(node)} not inlined: {why}")
                return None
            rule, taken, dropped = "same-branches", then_b, else_b
        if len(taken.outputs) != len(node.outputs):
            self.log.note(f"If {_label(node)} not inlined: its branch has {len(taken.outputs)} outputs "
                          f"for {len(node.outputs)} If outputs")
            return None
        if not self.ctx.permit(rule, node):
            return None
        moved = self._inline(graph, node, taken, dropped, rule)
        self.log.count(rule)
        self._drop_dead(graph, [cond])
        self.tree = ScopeTree(self.root)
        return moved

    def _claim_names(self, branch: gs.Graph, taken_tensors: set[str], taken_nodes: set[str]) -> None:
        """Rename what ``branch`` defines where the name is taken (it is about to change scope)."""
        for n in branch.nodes:
            n.name = unique_name(n.name, taken_nodes) if n.name else n.name
            for t in n.outputs:
                if t.name:
                    t.name = unique_name(t.name, taken_tensors)
        for c in {id(t): t for n in branch.nodes for t in n.inputs if isinstance(t, gs.Constant)}.values():
            if self.tree.home(c) is not branch:
                continue  # an outer constant: visible as it is
            if c.name in taken_tensors:
                replace_all_uses(c, _renamed_constant(c, unique_name(c.name, taken_tensors)))
            else:
                taken_tensors.add(c.name)

    def merge_same_condition(self, graph: gs.Graph, node: gs.Node, earlier: list[gs.Node]) -> bool:
        """Move ``node``'s branches into an earlier If on the same condition (edits the graph).

        Both Ifs take the same branch whatever the condition, so one If can run both; the
        earlier one can take the later one's work only if everything that work reads is
        computed before the earlier If (which also rules out reading its outputs).
        """
        branches = ("then_branch", "else_branch")
        if not all(isinstance(n.attrs.get(a), gs.Graph) for n in (node, *earlier) for a in branches):
            return False
        cond_key = self.keys.value(node.inputs[0])
        pos = {id(n): i for i, n in enumerate(graph.nodes)}
        reads = [t for sub in K.subgraphs(node) for t in free_reads(sub)]
        for first in earlier:
            if self.keys.value(first.inputs[0]) != cond_key:
                continue
            late = [t.name for t in reads if len(t.inputs) == 1 and pos.get(id(t.inputs[0]), -1) >= pos[id(first)]]
            if late:
                self.log.note(f"If {_label(node)} not merged into If {_label(first)} (same condition): "
                              f"its branches read {late[0]}, computed after that If")
                continue
            if not self.ctx.permit("same-condition", node):
                return False
            mine = {id(g) for a in branches for g in iter_graphs(node.attrs[a])}
            taken_tensors, taken_nodes = names_in(g for g in self.tree.graphs if id(g) not in mine)
            outputs = list(node.outputs)
            node.inputs.clear()
            node.outputs.clear()
            for attr in branches:
                mine_b, into = node.attrs[attr], first.attrs[attr]
                self._claim_names(mine_b, taken_tensors, taken_nodes)
                into.nodes.extend(mine_b.nodes)
                into.outputs.extend(mine_b.outputs)
                mine_b.nodes, mine_b.outputs = [], []
            first.outputs.extend(outputs)
            graph.nodes = [n for n in graph.nodes if n is not node]
            self.log.count("same-condition")
            self.tree = ScopeTree(self.root)
            return True
        return False

    def _inline(self, graph: gs.Graph, node: gs.Node, branch: gs.Graph, dropped: gs.Graph,
                rule: str) -> list[gs.Node]:
        """Put ``branch``'s nodes in ``node``'s place (edits the graph); returns the nodes placed."""
        inside = {id(g) for g in iter_graphs(branch)} | {id(g) for g in iter_graphs(dropped)}
        taken_tensors, taken_nodes = names_in(g for g in self.tree.graphs if id(g) not in inside)
        self._claim_names(branch, taken_tensors, taken_nodes)
        own = {id(n) for n in branch.nodes}
        outputs, results = list(node.outputs), list(branch.outputs)
        node.inputs.clear()
        node.outputs.clear()
        created: list[gs.Node] = []
        written: dict[int, gs.Tensor] = {}  # id(branch output) -> If output now written by its producer
        for y, r in zip(outputs, results):
            if not y.name:
                continue
            producer = r.inputs[0] if isinstance(r, gs.Variable) and len(r.inputs) == 1 else None
            if producer is not None and id(producer) in own and id(r) not in written:
                slot = [id(t) for t in producer.outputs].index(id(r))
                replace_all_uses(r, y)
                for g in self.tree.output_of.get(id(r), []):
                    if g is not branch:
                        g.outputs[:] = [y if t is r else t for t in g.outputs]
                producer.outputs[slot] = y
                if y.dtype is None:
                    y.dtype = r.dtype
                if y.shape is None:
                    y.shape = r.shape
                written[id(r)] = y
            else:
                self._write(graph, y, written.get(id(r), r), created, taken_nodes, node, rule)
        moved = list(branch.nodes)
        branch.nodes = []
        new_nodes: list[gs.Node] = []
        for n in graph.nodes:
            if n is node:
                new_nodes.extend(moved)
                new_nodes.extend(created)
            else:
                new_nodes.append(n)
        graph.nodes = new_nodes
        return moved + created

    # --- Loop ---------------------------------------------------------------------------

    def fold_loop(self, graph: gs.Graph, node: gs.Node) -> bool:
        if len(node.inputs) < 2:
            return False
        trip = _scalar(K.present(node, 0))
        keep_going = _scalar(K.present(node, 1))
        if not ((trip is not None and int(trip) == 0) or (keep_going is not None and not bool(keep_going))):
            return False
        initial = list(node.inputs[2:])
        finals, scans = list(node.outputs[:len(initial)]), list(node.outputs[len(initial):])
        read = [s.name for s in scans if s.name and (s.outputs or self.tree.is_graph_output(s))]
        if read:
            self.log.note(f"Loop {_label(node)} runs no iteration but is kept: its scan output {read[0]} "
                          "(empty, of a shape only the body tells) is read")
            return False
        if any(not t.name for t in initial):
            return False
        if not self.ctx.permit("zero-trip-loop", node):
            return False
        _, taken_nodes = names_in(self.tree.graphs)
        controls = [t for t in node.inputs[:2] if t.name]
        node.inputs.clear()
        node.outputs.clear()
        created: list[gs.Node] = []
        for y, v in zip(finals, initial):
            if y.name:
                self._write(graph, y, v, created, taken_nodes, node, "zero-trip-loop")
        graph.nodes = [m for n in graph.nodes for m in ([*created] if n is node else [n])]
        self.log.count("zero-trip-loop")
        self._drop_dead(graph, controls)
        self.tree = ScopeTree(self.root)
        return True

    # --- the walk -----------------------------------------------------------------------

    def sweep(self, graph: gs.Graph) -> bool:
        """Fold ``graph``'s If and Loop nodes, in order, and everything in their bodies.

        A constant-condition If is folded before its bodies are looked at (the other branch
        goes unvisited); otherwise bodies are folded first, so that an If whose branches
        became equal is folded too. Nodes a fold brings into ``graph`` are visited next.
        """
        changed = False
        pending = [n for n in graph.nodes if K.has_subgraphs(n)]
        live = {id(n) for n in graph.nodes}
        kept_ifs: list[gs.Node] = []  # Ifs of this graph left in place, in order
        while pending:
            node = pending.pop(0)
            if id(node) not in live:
                continue
            standard = V.domain_of(node) == ""
            moved = self.fold_if(graph, node, settled_only=True) if standard and node.op == "If" else None
            if moved is None:
                for sub in K.subgraphs(node):
                    changed |= self.sweep(sub)
                if standard and node.op == "If":
                    moved = self.fold_if(graph, node, settled_only=False)
                    if moved is None and self.merge_same_condition(graph, node, kept_ifs):
                        moved = []
                    elif moved is None:
                        kept_ifs.append(node)
                elif standard and node.op == "Loop" and self.fold_loop(graph, node):
                    moved = []
            if moved is not None:
                changed = True
                pending[:0] = [n for n in moved if K.has_subgraphs(n)]
                live = {id(n) for n in graph.nodes}
        return changed


def _renamed_constant(c: gs.Constant, name: str) -> gs.Constant:
    """A copy of ``c`` under another name (the source model's tensor is never renamed)."""
    values = c._values
    if isinstance(values, DenseSparseValues):
        values = values.array
    elif isinstance(values, LazyValues):
        proto = onnx.TensorProto()
        proto.CopyFrom(values.tensor)
        proto.name = name
        values = LazyValues(proto)
    return gs.Constant(name, values, data_location=c.data_location)


def fold_control_flow(root: gs.Graph, ctx: PassContext, log: PassLog) -> bool:
    """Fold settled If and Loop nodes in ``root`` and every body under it (edits the graph)."""
    run = _Run(root, ctx, log)
    changed = False
    for _ in range(MAX_SWEEPS):
        if not run.sweep(root):
            break
        changed = True
    return changed


@register
class FoldControlFlow(Pass):
    name = PASS_NAME
    summary = "Inline If nodes with a constant condition or two equal branches; drop Loops that run no iteration."
    default_order = 33

    def run(self, model: G.Model, ctx: PassContext, log: PassLog) -> bool:
        # A Pass, not a GraphPass: inlining moves a body's nodes into its enclosing graph,
        # and the names taken in every other scope decide what must be renamed.
        if not any(n.op in ("If", "Loop") and K.is_default_domain(n) for n in G.walk_nodes(model.graph)):
            return False
        return fold_control_flow(model.graph, ctx, log)
