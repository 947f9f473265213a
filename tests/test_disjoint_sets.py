"""surgeon.disjoint_sets against a plain breadth-first search of the same undirected graph."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from surgeon.disjoint_sets import DisjointSets


def _components_by_search(n: int, edges: list[tuple[int, int]]) -> set[frozenset[int]]:
    adjacent: dict[int, set[int]] = {i: set() for i in range(n)}
    for a, b in edges:
        adjacent[a].add(b)
        adjacent[b].add(a)
    seen: set[int] = set()
    out = set()
    for start in range(n):
        if start in seen:
            continue
        todo, comp = [start], set()
        while todo:
            x = todo.pop()
            if x not in comp:
                comp.add(x)
                todo.extend(adjacent[x] - comp)
        seen |= comp
        out.add(frozenset(comp))
    return out


@given(st.integers(1, 30).flatmap(lambda n: st.tuples(
    st.just(n), st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=40))))
def test_union_find_gives_the_connected_components(case):
    n, edges = case
    sets = DisjointSets(range(n))
    for a, b in edges:
        sets.union(a, b)
    groups: dict[int, set[int]] = {}
    for x in range(n):
        groups.setdefault(sets.find(x), set()).add(x)
    assert {frozenset(g) for g in groups.values()} == _components_by_search(n, edges)
    assert all(x in sets for x in range(n)) and n not in sets
