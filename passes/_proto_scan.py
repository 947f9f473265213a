"""Read-only questions about a model asked of the protobuf, without importing it.

Importing a model into onnx-graphsurgeon and exporting it again is the largest fixed
cost of a pass on big models (and on huge attribute lists, such as a tree ensemble's).
Passes use these scans to tell, before importing, that they would find nothing to do.
Every function here is conservative: when unsure it says "there may be work".
"""

from __future__ import annotations

from typing import Iterator

import onnx


def subgraphs(node: onnx.NodeProto) -> Iterator[onnx.GraphProto]:
    """The bodies held in a node's attributes (If branches, Loop/Scan bodies)."""
    for attr in node.attribute:
        if attr.HasField("g"):
            yield attr.g
        yield from attr.graphs


def free_names(graph: onnx.GraphProto) -> set[str]:
    """Names ``graph`` (with its bodies) reads from enclosing scopes."""
    local = {vi.name for vi in graph.input} | {t.name for t in graph.initializer}
    local |= {t.values.name for t in graph.sparse_initializer}
    local |= {o for n in graph.node for o in n.output}
    reads: set[str] = set()
    for n in graph.node:
        reads.update(i for i in n.input if i)
        for sub in subgraphs(n):
            reads |= free_names(sub)
    return reads - local


def body_reads(graph: onnx.GraphProto) -> list[set[str]]:
    """Per node of ``graph``: the names its bodies read from ``graph``'s scope or further out."""
    return [set().union(*(free_names(sub) for sub in subgraphs(n))) for n in graph.node]


def all_live(graph: onnx.GraphProto, reads: list[set[str]] | None = None) -> bool:
    """Whether every node of ``graph`` (not its bodies) feeds one of its outputs."""
    reads = body_reads(graph) if reads is None else reads
    producer = {o: i for i, n in enumerate(graph.node) for o in n.output if o}
    live: set[int] = set()
    work = [producer[o.name] for o in graph.output if o.name in producer]
    while work:
        i = work.pop()
        if i in live:
            continue
        live.add(i)
        names = {x for x in graph.node[i].input if x} | reads[i]
        work.extend(producer[x] for x in names if x in producer)
    return len(live) == len(graph.node)


def unused_initializers(graph: onnx.GraphProto, reads: list[set[str]] | None = None) -> list[str]:
    """Initializers of ``graph`` that no node here or in a body reads and no output names."""
    reads = body_reads(graph) if reads is None else reads
    used = {vi.name for vi in graph.output}
    for n, body in zip(graph.node, reads):
        used.update(x for x in n.input if x)
        used |= body
    return [t.name for t in graph.initializer if t.name not in used]
