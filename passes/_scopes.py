"""Facts about the nesting of graphs that a pass moving values between scopes needs.

Why: onnx-graphsurgeon shares one tensor object between a graph and the bodies that read
it, but keeps no link from a body to its enclosing graph. ``merge-duplicates`` (a body node
reading an outer value) and ``fold-control-flow`` (a branch's nodes moved into the
enclosing graph) need that link, the graph each constant belongs to, which tensors are
graph outputs somewhere, and which names are taken. Everything here is computed from the
graph in one linear walk and lives for one pass run.
"""

from __future__ import annotations

from typing import Iterator

import onnx_graphsurgeon as gs

from surgeon.graph_ops import subgraphs


class ScopeTree:
    """The graphs under ``root`` with their parents, outer first."""

    def __init__(self, root: gs.Graph):
        self.root = root
        self.graphs: list[gs.Graph] = []
        self.parent: dict[int, gs.Graph | None] = {}
        self.depth: dict[int, int] = {}
        self.holder: dict[int, gs.Node] = {}  # id(body) -> the node whose attribute it is
        self._visit(root, None, None)
        self.output_of: dict[int, list[gs.Graph]] = {}
        for g in self.graphs:
            for t in g.outputs:
                self.output_of.setdefault(id(t), []).append(g)
        self._const_home = self._constant_homes()

    def _visit(self, graph: gs.Graph, parent: gs.Graph | None, holder: gs.Node | None) -> None:
        self.graphs.append(graph)
        self.parent[id(graph)] = parent
        self.depth[id(graph)] = 0 if parent is None else self.depth[id(parent)] + 1
        if holder is not None:
            self.holder[id(graph)] = holder
        for node in graph.nodes:
            for sub in subgraphs(node):
                self._visit(sub, graph, node)

    def lca(self, a: gs.Graph, b: gs.Graph) -> gs.Graph:
        """The innermost graph enclosing both (a graph encloses itself)."""
        while self.depth[id(a)] > self.depth[id(b)]:
            a = self.parent[id(a)]
        while self.depth[id(b)] > self.depth[id(a)]:
            b = self.parent[id(b)]
        while a is not b:
            a, b = self.parent[id(a)], self.parent[id(b)]
        return a

    def _constant_homes(self) -> dict[int, gs.Graph]:
        """id(constant) -> the innermost graph enclosing every reader (where it belongs)."""
        home: dict[int, gs.Graph] = {}
        for g in self.graphs:
            for node in g.nodes:
                for t in node.inputs:
                    if isinstance(t, gs.Constant):
                        home[id(t)] = g if id(t) not in home else self.lca(home[id(t)], g)
            for t in g.outputs:
                if isinstance(t, gs.Constant):
                    home[id(t)] = g if id(t) not in home else self.lca(home[id(t)], g)
        return home

    def home(self, constant: gs.Constant) -> gs.Graph | None:
        return self._const_home.get(id(constant))

    def is_graph_output(self, t: gs.Tensor) -> bool:
        return id(t) in self.output_of


def names_in(graphs) -> tuple[set[str], set[str]]:
    """(tensor names, node names) used or defined in ``graphs``."""
    tensors: set[str] = set()
    nodes: set[str] = set()
    for g in graphs:
        tensors.update(t.name for t in g.inputs)
        tensors.update(t.name for t in g.outputs)
        for n in g.nodes:
            nodes.add(n.name)
            tensors.update(t.name for t in n.inputs if t.name)
            tensors.update(t.name for t in n.outputs if t.name)
    return tensors, nodes


def in_order(graph: gs.Graph) -> bool:
    """Whether every node of ``graph`` comes after the producers of what it (or its bodies) reads."""
    here = {id(t) for n in graph.nodes for t in n.outputs}
    seen: set[int] = set()
    for node in graph.nodes:
        reads = [t for t in node.inputs] + [t for sub in subgraphs(node) for t in free_reads(sub)]
        if any(id(t) in here and id(t) not in seen for t in reads):
            return False
        seen.update(id(t) for t in node.outputs)
    return True


def free_reads(graph: gs.Graph) -> Iterator[gs.Tensor]:
    """Tensors ``graph`` (with its bodies) reads without defining them (a superset is fine)."""
    local = {id(t) for t in graph.inputs} | {id(t) for n in graph.nodes for t in n.outputs}
    for node in graph.nodes:
        for t in node.inputs:
            if id(t) not in local and not isinstance(t, gs.Constant):
                yield t
        for sub in subgraphs(node):
            for t in free_reads(sub):
                if id(t) not in local:
                    yield t
    for t in graph.outputs:
        if id(t) not in local and not isinstance(t, gs.Constant):
            yield t
