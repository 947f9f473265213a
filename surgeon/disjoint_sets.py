"""Disjoint sets (union-find with path halving): which items a set of edges joins.

Why here: the FP16 scan groups beyond-range nodes into chains, and the FP16 island search
groups the nodes it keeps in FP32 into islands; both are connected components of a few
hundred nodes of one dataflow graph, and both were a hand-written union-find.
"""

from __future__ import annotations

from typing import Generic, Hashable, Iterable, TypeVar

T = TypeVar("T", bound=Hashable)


class DisjointSets(Generic[T]):
    def __init__(self, items: Iterable[T]):
        self.parent: dict[T, T] = {x: x for x in items}

    def __contains__(self, item: T) -> bool:
        return item in self.parent

    def find(self, x: T) -> T:
        """The representative of ``x``'s set."""
        parent = self.parent
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(self, a: T, b: T) -> None:
        """Join the sets of ``a`` and ``b``."""
        self.parent[self.find(a)] = self.find(b)
