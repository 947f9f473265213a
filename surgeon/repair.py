"""The in-memory repairs every command applies when it opens a model.

Why on open, and for every command: exporters and hand edits leave models the onnx
checker (or ONNX Runtime) rejects for reasons that do not touch the computation: nodes
out of topological order, two nodes with one name or nodes without one, an opset import
listed twice, a custom domain used without an import. ``fix`` used to repair them only
when its ``cleanup`` pass ran, so ``fix --passes fold-constants``, ``bisect``, ``scan`` and
the other debug commands refused a model ``fix`` could open. Here the repair is one
function on the ModelProto (the skeleton for ``fix``, the whole model for the debug
commands), applied by :mod:`surgeon.model` before the checker is asked; the input file is
never touched. The actions are counted under the names ``cleanup`` reports them by.

What is not guessed: a missing import of an ONNX domain (which version?) — the checker's
sentence stays for that. A graph that cannot be sorted (a cycle) is refused here, naming
nodes on the cycle: nothing downstream (the checker, the equivalence digests) can make
sense of it.
"""

from __future__ import annotations

import heapq
from collections import Counter
import onnx

from surgeon.errors import ModelLoadError
from surgeon.graph_ops import proto_outer_reads, proto_subgraphs, walk_graph_protos, walk_proto_nodes

SORTED = "graph sorted topologically"
DUPLICATE_NAME = "duplicate node name made unique"
UNNAMED = "unnamed node named"
DUPLICATE_IMPORT = "duplicate opset import removed"
MISSING_IMPORT = "missing opset import added"

# What the checker or ONNX Runtime refuses (an unnamed node is valid; it is named so that
# reports and bisect can point at it).
REFUSED = frozenset({SORTED, DUPLICATE_NAME, DUPLICATE_IMPORT, MISSING_IMPORT})

_ONNX_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "ai.onnx.training", "ai.onnx.preview.training"})


def _needs(node: onnx.NodeProto) -> set[str]:
    names = {i for i in node.input if i}
    for body in proto_subgraphs(node):
        names |= proto_outer_reads(body)
    return names


def _sort(graph: onnx.GraphProto) -> bool:
    """Put ``graph``'s nodes in topological order, keeping the given order where it is free.

    Kahn's algorithm with the original index as priority: a sorted graph comes out
    unchanged, and an unsorted one moves as few nodes as it must. A cycle is refused.
    """
    nodes = list(graph.node)
    producer = {o: i for i, n in enumerate(nodes) for o in n.output if o}
    needs = [_needs(n) for n in nodes]
    if all(producer.get(name, -1) < i for i, names in enumerate(needs) for name in names):
        return False
    preds = [{producer[name] for name in names if name in producer and producer[name] != i} for i, names in enumerate(needs)]
    succs: list[list[int]] = [[] for _ in nodes]
    for i, ps in enumerate(preds):
        for p in ps:
            succs[p].append(i)
    waiting = [len(ps) for ps in preds]
    ready = [i for i, w in enumerate(waiting) if w == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for j in succs[i]:
            waiting[j] -= 1
            if waiting[j] == 0:
                heapq.heappush(ready, j)
    if len(order) != len(nodes):
        stuck = [nodes[i].name or f"{nodes[i].op_type}#{i}" for i in range(len(nodes)) if waiting[i]]
        more = f" and {len(stuck) - 3} more" if len(stuck) > 3 else ""
        raise ModelLoadError(f"the nodes of graph '{graph.name}' form a cycle (through {', '.join(stuck[:3])}{more}); "
                             "no order computes them")
    copies = [onnx.NodeProto() for _ in nodes]
    for copy, i in zip(copies, order):
        copy.CopyFrom(nodes[i])
    del graph.node[:]
    graph.node.extend(copies)
    return True


def _name_nodes(graph: onnx.GraphProto, counts: Counter) -> None:
    """A non-empty name, unique in the whole model, for every node (bodies included)."""
    nodes = list(walk_proto_nodes(graph))
    taken = {n.name for n in nodes if n.name}
    seen: set[str] = set()
    for node in nodes:
        if node.name and node.name not in seen:
            seen.add(node.name)
            continue
        base = node.name or node.op_type
        k = 0
        while f"{base}_{k}" in taken:
            k += 1
        counts[DUPLICATE_NAME if node.name else UNNAMED] += 1
        node.name = f"{base}_{k}"
        taken.add(node.name)
        seen.add(node.name)


def _repair_imports(model: onnx.ModelProto, counts: Counter) -> None:
    """Duplicated imports keep the last version listed (what protobuf readers see); a custom
    domain used without an import gets version 1 (custom domains start there)."""
    versions: dict[str, int] = {}
    for o in model.opset_import:
        versions["" if o.domain == "ai.onnx" else o.domain] = o.version
    duplicates = len(model.opset_import) - len(versions)
    if duplicates > 0:
        del model.opset_import[:]
        model.opset_import.extend(onnx.helper.make_opsetid(d, v) for d, v in versions.items())
        counts[DUPLICATE_IMPORT] += duplicates
    used = {n.domain or "" for n in walk_proto_nodes(model.graph)}
    for domain in sorted(used - set(versions) - _ONNX_DOMAINS):
        model.opset_import.append(onnx.helper.make_opsetid(domain, 1))
        counts[MISSING_IMPORT] += 1


def repair(model: onnx.ModelProto) -> dict[str, int]:
    """Repair ``model`` in place; returns what was done, counted per action (empty: nothing).

    Works on a whole model or a skeleton alike: initializers and weights are not read.
    """
    counts: Counter = Counter()
    _repair_imports(model, counts)
    for graph in list(walk_graph_protos(model.graph)):
        if _sort(graph):
            counts[SORTED] += 1
    _name_nodes(model.graph, counts)
    return dict(counts)


def describe(counts: dict[str, int]) -> str:
    """``graph sorted topologically, 2 duplicate node names made unique``-style summary."""
    parts = []
    for action, n in counts.items():
        parts.append(action if n == 1 else f"{action} x{n}")
    return ", ".join(parts)
