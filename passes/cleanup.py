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
from collections import Counter
from typing import Iterator

import onnx
import onnx_graphsurgeon as gs

from passes import _proto_scan as scan
from surgeon import graph as G
from surgeon.pipeline.base import Pass, PassContext, PassLog
from surgeon.pipeline.registry import register

logger = logging.getLogger(__name__)

# Removing a node inside a body can free nodes of the enclosing graph; a few sweeps
# reach the fixed point on real models (each sweep is linear in the graph size).
MAX_SWEEPS = 8


def _subgraphs(node: gs.Node) -> Iterator[gs.Graph]:
    for value in node.attrs.values():
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(item, gs.Graph):
                yield item


def _nested(graph: gs.Graph) -> Iterator[gs.Graph]:
    """Every graph strictly inside ``graph``."""
    for node in graph.nodes:
        for sub in _subgraphs(node):
            yield from G.iter_graphs(sub)


def _outer_reads(node: gs.Node) -> set[str]:
    """Names the node's bodies read from the scope the node lives in (or further out)."""
    names: set[str] = set()
    for sub in _subgraphs(node):
        names |= G.outer_scope_names(sub)
    return names


def _is_identity(node: gs.Node) -> bool:
    return (node.op == "Identity" and node.domain in ("", "ai.onnx", None)
            and len(node.inputs) == 1 and len(node.outputs) == 1)


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

def _identity_refusal(graph: gs.Graph, node: gs.Node, nested_outputs: set[int], nested_names: set[str],
                      producers: Counter) -> str | None:
    """Why this Identity must stay (None: it can go). Pure: looks, never changes.

    ``producers``: id(tensor) -> how many nodes of ``graph`` write it.
    """
    x, y = node.inputs[0], node.outputs[0]
    graph_outputs = [id(t) for t in graph.outputs]
    if id(y) in nested_outputs:
        return "its output is also a subgraph's output"
    if x.name in nested_names:
        return "a subgraph defines a value with its input's name"
    if id(y) not in graph_outputs:
        return None
    # y is a graph output: its name must survive, so x's producer has to write y instead.
    if producers[id(x)] - sum(1 for t in node.outputs if t is x) <= 0:
        where = "a graph input" if x in graph.inputs else ("a constant" if isinstance(x, gs.Constant) else "an outer-scope value")
        return f"a (sub)graph output copies {where}"
    if id(x) in graph_outputs:
        return "its input and output are both graph outputs"
    if id(x) in nested_outputs:
        return "its input is also a subgraph's output"
    if any(x.name in _outer_reads(n) for n in graph.nodes):
        return "it names a graph output and its input is read by a subgraph"
    return None


def _replace_input(old: gs.Tensor, new: gs.Tensor) -> None:
    """Every reader of ``old`` (in this graph or a nested one: gs shares the tensor) reads ``new``."""
    for n in list(old.outputs):
        for i, t in enumerate(n.inputs):
            if t is old:
                n.inputs[i] = new


def _eliminate_identities(graph: gs.Graph, ctx: PassContext, log: PassLog, kept: dict[str, dict[str, None]]) -> bool:
    identities = [n for n in graph.nodes if _is_identity(n)]
    if not identities:
        return False
    # Removing an Identity of this graph changes neither the nested graphs' outputs nor
    # the names they define, so these are computed once.
    nested_graphs = list(_nested(graph))
    nested_outputs = {id(t) for sub in nested_graphs for t in sub.outputs}
    nested_names = {t.name for sub in nested_graphs for t in sub.inputs}
    nested_names |= {t.name for sub in nested_graphs for n in sub.nodes for t in n.outputs}
    producers = Counter(id(t) for n in graph.nodes for t in n.outputs)
    removed: set[int] = set()
    for node in identities:
        reason = _identity_refusal(graph, node, nested_outputs, nested_names, producers)
        if reason:
            kept.setdefault(reason, {})[node.name or f"<unnamed {node.op}>"] = None
            continue
        if not ctx.permit("identity", node.name):
            continue
        x, y = node.inputs[0], node.outputs[0]
        producers.subtract(id(t) for t in node.outputs)
        if any(t is y for t in graph.outputs):
            producer = x.inputs[0]
            _detach(node)
            _replace_input(x, y)
            producer.outputs[[id(t) for t in producer.outputs].index(id(x))] = y
            producers[id(x)] -= 1
            producers[id(y)] += 1
            if y.dtype is None:
                y.dtype = x.dtype
            if y.shape is None:
                y.shape = x.shape
        else:
            _detach(node)
            _replace_input(y, x)
        removed.add(id(node))
        log.count("identity removed")
    if removed:
        _drop(graph, removed)
    return bool(removed)


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
        names = {t.name for t in node.inputs if t.name} | _outer_reads(node)
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
        needs = {t.name for t in node.inputs if t.name} | _outer_reads(node)
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
    nodes = list(G._walk_gs_nodes(graph))
    taken = {n.name for n in nodes if n.name}
    seen: set[str] = set()
    changed = False
    for node in nodes:
        if node.name and node.name not in seen:
            seen.add(node.name)
            continue
        base = node.name or node.op
        k = 0
        while f"{base}_{k}" in taken:
            k += 1
        new = f"{base}_{k}"
        if not ctx.permit("unique-name", new):
            seen.add(node.name)
            continue
        log.count("duplicate node name made unique" if node.name else "unnamed node named")
        node.name = new
        taken.add(new)
        seen.add(new)
        changed = True
    return changed


# --- the pass ---------------------------------------------------------------------------

def _sweep(graph: gs.Graph, ctx: PassContext, log: PassLog, kept: dict[str, dict[str, None]]) -> bool:
    """One pre-order sweep over ``graph`` and the bodies of its surviving nodes."""
    changed = _eliminate_identities(graph, ctx, log, kept)
    changed |= _remove_dead_nodes(graph, ctx, log)
    for node in list(graph.nodes):
        for sub in _subgraphs(node):
            changed |= _sweep(sub, ctx, log, kept)
    return changed


def _initializers(graph: onnx.GraphProto) -> Iterator[tuple[onnx.GraphProto, onnx.TensorProto]]:
    for t in graph.initializer:
        yield graph, t
    for node in graph.node:
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from _initializers(sub)


def _account_initializers(before: onnx.ModelProto, after: onnx.ModelProto, ctx: PassContext, log: PassLog) -> bool:
    """Count the initializers that graphsurgeon's export dropped as unused; put back refused ones.

    Compared by name over the whole model: on export graphsurgeon moves an outer
    initializer that only a body reads into that body, which is not a removal.
    """
    kept = {t.name for _, t in _initializers(after.graph)}
    changed = False
    for owner, t in _initializers(before.graph):
        if t.name in kept:
            continue
        if ctx.permit("unused-initializer", t.name) or owner is not before.graph:
            log.count("unused initializer removed")
            changed = True
        else:
            after.graph.initializer.append(t)
    G.keep_initializer_inputs(after, before)
    return changed


def _note_unused_inputs(graph: gs.Graph, log: PassLog) -> None:
    used = {t.name for n in G._walk_gs_nodes(graph) for t in n.inputs} | {t.name for t in graph.outputs}
    for t in graph.inputs:
        if t.name not in used:
            log.note(f"graph input '{t.name}' is unused (kept: the inputs are the model's interface)")


# --- the common case: nothing to clean ---------------------------------------------------
# Importing a model into graphsurgeon and exporting it again costs more than the rest of
# this pass on large models (and on huge attribute lists, such as a tree ensemble's).
# These checks read the protobuf and say whether the graphsurgeon path would find
# anything at all; only then is the model imported.

def _proto_graph_clean(graph: onnx.GraphProto) -> bool:
    """No Identity, dead node, unused initializer or out-of-order node here or in a body."""
    reads = scan.body_reads(graph)
    produced = {o for n in graph.node for o in n.output if o}
    seen: set[str] = set()
    for n, body in zip(graph.node, reads):
        if n.op_type == "Identity" and n.domain in ("", "ai.onnx") and len(n.input) == 1 and len(n.output) == 1:
            return False
        needs = {x for x in n.input if x} | body
        if any(name in produced and name not in seen for name in needs):
            return False  # not in topological order
        seen.update(o for o in n.output if o)
    if scan.unused_initializers(graph, reads) or not scan.all_live(graph, reads):
        return False
    return all(_proto_graph_clean(sub) for n in graph.node for sub in scan.subgraphs(n))


def _already_clean(model: onnx.ModelProto) -> bool:
    names = [n.name for n in G.iter_proto_nodes(model)]
    if not all(names) or len(set(names)) != len(names):
        return False
    return _proto_graph_clean(model.graph)


def _note_unused_proto_inputs(model: onnx.ModelProto, log: PassLog) -> None:
    """:func:`_note_unused_inputs` read from the protobuf."""
    used = {x for n in G.iter_proto_nodes(model) for x in n.input} | {vi.name for vi in model.graph.output}
    inits = {t.name for t in model.graph.initializer}
    for vi in model.graph.input:
        if vi.name not in inits and vi.name not in used:
            log.note(f"graph input '{vi.name}' is unused (kept: the inputs are the model's interface)")


@register
class Cleanup(Pass):
    name = "cleanup"
    summary = "Remove dead nodes, unused initializers and Identity nodes; sort topologically; name nodes uniquely."
    default_order = 10

    def run(self, model: onnx.ModelProto, ctx: PassContext, log: PassLog) -> onnx.ModelProto | None:
        if _already_clean(model):
            _note_unused_proto_inputs(model, log)
            return None
        graph = G.import_graph(model)
        changed = False
        kept: dict[str, dict[str, None]] = {}  # why an Identity stayed -> node names
        for _ in range(MAX_SWEEPS):
            if not _sweep(graph, ctx, log, kept):
                break
            changed = True
        live = {n.name for n in G._walk_gs_nodes(graph)}
        for reason, names in kept.items():
            names = [n for n in names if n in live or n.startswith("<unnamed")]
            if names:
                log.note(f"{len(names)} Identity node(s) kept because {reason} (first: '{names[0]}')")
        for g in list(G.iter_graphs(graph)):
            changed |= _toposort(g, ctx, log)
        changed |= _name_nodes(graph, ctx, log)
        _note_unused_inputs(graph, log)
        out = G.export_model(graph, like=model)
        changed |= _account_initializers(model, out, ctx, log)
        return out if changed else None
