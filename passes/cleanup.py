"""``cleanup``: the housekeeping every exported model needs before anything else.

Exporters leave dead nodes, unused initializers, pass-through Identity nodes (PyTorch's
legacy exporter emits one per deduplicated parameter), unnamed or duplicate node names,
and sometimes nodes out of order. Later passes, debug reports and TensorRT's parser all
work better on a tidy graph, and names must be unique for bisection and provenance to
point at one node.

What it never does: change the graph inputs or outputs (names, order), remove a tensor a
subgraph reads from an enclosing scope, or remove a node that feeds a subgraph's outputs.
ONNX nodes are pure, so a node none of whose outputs is used is removed whatever its
domain (custom ops included).
"""

from __future__ import annotations

import logging

import onnx
import onnx_graphsurgeon as gs

from surgeon import graph as G
from surgeon import graph_ops as K
from surgeon.pipeline.base import Pass, PassContext, PassLog
from surgeon.pipeline.registry import register

logger = logging.getLogger(__name__)

# Removing a node inside a body can free nodes of the enclosing graph; a few sweeps
# reach the fixed point on real models (each sweep is linear in the graph size).
MAX_SWEEPS = 8


def _is_identity(node: gs.Node) -> bool:
    return node.op == "Identity" and K.is_default_domain(node) and len(node.inputs) == 1 and len(node.outputs) == 1


def _detach(node: gs.Node) -> None:
    """Disconnect ``node``; the caller drops it from its graph's node list.

    Removal from ``graph.nodes`` is done in one filtering step per graph: ``list.remove``
    compares graphsurgeon nodes with their (expensive) ``__eq__``, which made removing k
    nodes O(k * n).
    """
    node.inputs.clear()
    node.outputs.clear()


def _drop(graph: gs.Graph, removed: set[int]) -> None:
    graph.nodes[:] = [n for n in graph.nodes if id(n) not in removed]


# --- Identity elimination --------------------------------------------------------------

def _eliminate_identities(graph: gs.Graph, ctx: PassContext, log: PassLog, kept: dict[str, dict[str, None]]) -> bool:
    """Bypass every Identity the kernel's rules allow (:func:`surgeon.graph_ops.bypass`)."""
    identities = [n for n in graph.nodes if _is_identity(n)]
    if not identities:
        return False
    scope = K.Scope(graph)
    changed = False
    for node in identities:
        x, y = node.inputs[0], node.outputs[0]
        reason = scope.bypass_refusal(x, y)
        if reason:
            kept.setdefault(reason, {})[node.name or f"<unnamed {node.op}>"] = None
            continue
        if not ctx.permit("identity", node.name):
            continue
        K.bypass(scope, node, x, y)
        log.count("identity removed")
        changed = True
    scope.finish()
    return changed


# --- dead nodes ----------------------------------------------------------------------

def _live_nodes(graph: gs.Graph, roots: list[gs.Node]) -> set[int]:
    """Nodes that (transitively) feed the graph's outputs or one of ``roots``."""
    producer = {t.name: n for n in graph.nodes for t in n.outputs if t.name}
    live: set[int] = set()
    work = [producer[t.name] for t in graph.outputs if t.name in producer] + list(roots)
    while work:
        node = work.pop()
        if id(node) in live:
            continue
        live.add(id(node))
        names = {t.name for t in node.inputs if t.name} | K.node_outer_reads(node)
        work.extend(producer[n] for n in names if n in producer)
    return live


def _remove_dead_nodes(graph: gs.Graph, ctx: PassContext, log: PassLog) -> bool:
    live = _live_nodes(graph, [])
    dead = [n for n in graph.nodes if id(n) not in live]
    if not dead:
        return False
    refused = [n for n in dead if not ctx.permit("dead-node", n.name)]
    if refused:
        live = _live_nodes(graph, refused)
    gone = {id(node) for node in dead if id(node) not in live}
    for node in dead:
        if id(node) in gone:
            _detach(node)
    if gone:
        _drop(graph, gone)
        log.count("dead node removed", len(gone))
    return bool(gone)


# --- order and names --------------------------------------------------------------------

def _in_order(graph: gs.Graph) -> bool:
    """Whether every node comes after the producers of what it reads (bodies included)."""
    produced_here = {t.name for n in graph.nodes for t in n.outputs if t.name}
    seen: set[str] = set()
    for node in graph.nodes:
        needs = {t.name for t in node.inputs if t.name} | K.node_outer_reads(node)
        if any(name in produced_here and name not in seen for name in needs):
            return False
        seen |= {t.name for t in node.outputs if t.name}
    return True


def _toposort(graph: gs.Graph, ctx: PassContext, log: PassLog) -> bool:
    if _in_order(graph):
        return False
    if not ctx.permit("toposort", graph.name or "main"):
        return False
    graph.toposort(recurse_subgraphs=False)
    if not _in_order(graph):
        log.note(f"graph '{graph.name}' could not be sorted topologically (a cycle?)")
    log.count("graph sorted topologically")
    return True


def _name_nodes(graph: gs.Graph, ctx: PassContext, log: PassLog) -> bool:
    """Give every node (bodies included) a non-empty name unique in the whole model."""
    nodes = list(G.walk_nodes(graph))
    taken = {n.name for n in nodes if n.name}
    seen: set[str] = set()
    changed = False
    for node in nodes:
        if node.name and node.name not in seen:
            seen.add(node.name)
            continue
        new = K.unique_name(node.name or node.op, taken)  # reserved even if not permitted: harmless
        if not ctx.permit("unique-name", new):
            seen.add(node.name)
            continue
        log.count("duplicate node name made unique" if node.name else "unnamed node named")
        node.name = new
        seen.add(new)
        changed = True
    return changed


# --- the pass ---------------------------------------------------------------------------

def _sweep(graph: gs.Graph, ctx: PassContext, log: PassLog, kept: dict[str, dict[str, None]]) -> bool:
    """One pre-order sweep over ``graph`` and the bodies of its surviving nodes."""
    changed = _eliminate_identities(graph, ctx, log, kept)
    changed |= _remove_dead_nodes(graph, ctx, log)
    for node in list(graph.nodes):
        for sub in G.subgraphs(node):
            changed |= _sweep(sub, ctx, log, kept)
    return changed


def _constants(graph: gs.Graph) -> set[int]:
    """ids of the constants nodes read, bodies included."""
    return {id(t) for n in G.walk_nodes(graph) for t in n.inputs if isinstance(t, gs.Constant)}


def _remove_unused_initializers(model: G.Model, ctx: PassContext, log: PassLog) -> bool:
    """Main-graph initializers no node reads (graphsurgeon would drop them without a word)."""
    kept, removed = [], 0
    for t in model.unused_initializers:
        if ctx.permit("unused-initializer", t.name):
            removed += 1
        else:
            kept.append(t)
    if removed:
        model.unused_initializers = kept
        log.count("unused initializer removed", removed)
    return bool(removed)


_ONNX_DOMAINS = frozenset({"", "ai.onnx.ml", "ai.onnx.training", "ai.onnx.preview.training"})


def _repair_header(model: G.Model, ctx: PassContext, log: PassLog) -> bool:
    """Opset imports the checker would reject, where the right value is certain.

    Duplicated imports keep the last version listed (what protobuf readers see); a custom
    domain used without an import gets version 1 (custom domains start there). A missing
    import of an ONNX domain is not guessed: the checker's sentence stays. The IR version
    is left alone: the checker and ONNX Runtime accept an old one, and raising it would
    make IR < 4 initializers listed as inputs overridable.
    """
    changed = False
    duplicates = len(model.header.opset_import) - len(model.opsets)
    if duplicates > 0 and ctx.permit("opset-imports", "model"):
        del model.header.opset_import[:]
        model.header.opset_import.extend(onnx.helper.make_opsetid(d, v) for d, v in model.opsets.items())
        log.count("duplicate opset import removed", duplicates)
        changed = True
    used = {n.domain or "" for n in G.walk_nodes(model.graph)} - {"ai.onnx"}
    for domain in sorted(used - set(model.opsets)):
        if domain in _ONNX_DOMAINS:
            log.note(f"nodes of domain '{domain or 'ai.onnx'}' are used but no opset of it is imported; not guessed")
        elif ctx.permit("opset-imports", domain):
            model.opsets[domain] = 1
            log.count("missing opset import added")
            changed = True
    return changed


def _note_unused_inputs(graph: gs.Graph, log: PassLog) -> None:
    used = {t.name for n in G.walk_nodes(graph) for t in n.inputs} | {t.name for t in graph.outputs}
    for t in graph.inputs:
        if t.name not in used:
            log.note(f"graph input '{t.name}' is unused (kept: the inputs are the model's interface)")


@register
class Cleanup(Pass):
    name = "cleanup"
    summary = "Remove dead nodes, unused initializers and Identity nodes; sort topologically; name nodes uniquely."
    default_order = 10

    def run(self, model: G.Model, ctx: PassContext, log: PassLog) -> bool:
        graph = model.graph
        read_before = _constants(graph)
        changed = False
        kept: dict[str, dict[str, None]] = {}  # why an Identity stayed -> node names
        for _ in range(MAX_SWEEPS):
            if not _sweep(graph, ctx, log, kept):
                break
            changed = True
        live = {n.name for n in G.walk_nodes(graph)}
        for reason, names in kept.items():
            names = [n for n in names if n in live or n.startswith("<unnamed")]
            if names:
                log.note(f"{len(names)} Identity node(s) kept because {reason} (first: '{names[0]}')")
        orphaned = len(read_before - _constants(graph))
        if orphaned:
            log.count("unused initializer removed", orphaned)
        for g in list(G.iter_graphs(graph)):
            changed |= _toposort(g, ctx, log)
        changed |= _name_nodes(graph, ctx, log)
        _note_unused_inputs(graph, log)
        changed |= _remove_unused_initializers(model, ctx, log)
        changed |= _repair_header(model, ctx, log)
        return changed
