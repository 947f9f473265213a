"""The bisect search as a pure state machine: no model, no backend, no files.

Why a state machine: the search is the part that decides how many (expensive) oracle
calls a user pays for, and the part most likely to be wrong on awkward graphs
(independent branches, several culprits, faults that need their neighbours). Keeping it
free of ONNX lets the tests drive it with a fake oracle over thousands of made-up DAGs.

The graph is a :class:`Dag` over node indices ``0..n-1`` in topological order.
The machine proposes a :class:`Candidate`; the driver judges it and calls
:meth:`Search.record`:

- ``kind="mark"``: the outputs of ``nodes`` are marked as outputs of the *whole* model
  and compared with the reference; the verdict is the set of those nodes whose outputs
  diverge (empty: none diverge).
- ``kind="subgraph"``: only ``nodes`` run (with the reference values as their inputs
  when the oracle has them); the verdict is ``True`` when it fails.

Phases:
1. *confirm*: mark the nodes that produce the graph outputs; nothing diverges → the
   model does not fail, stop.
2. *localize*: find the first node whose outputs diverge while everything before it in
   topological order does not ("cut" bisection, ⌈log₂N⌉ calls); exclude it and its
   descendants and look again for culprits in independent branches. A backend that
   does not fuse instead gets one "mark everything" call and the introduction points
   are read off directly. Without marking (a shell ``--check`` oracle), prefixes of the
   model are bisected instead.
3. *isolate*: run each suspect alone on reference inputs: failing alone means the node
   introduces the error; otherwise grow it through its ancestors (bisection over its
   upstream cone, never over unrelated branches) until the subgraph fails.
4. *verify*: the union of the culprits' subgraphs is the reduced model; judged once
   more when it is not one of the subgraphs already judged.

Accumulated error: with ``max_context`` set (numeric oracles), a suspect that does not
fail alone and fails only with more than ``max_context`` upstream nodes is marked
``accumulates``: no small set of nodes introduces the error (a long chain of FP16
roundings, each within tolerance), so it is a place where the error first exceeds the
tolerance, not a culprit. The search itself is unchanged (same questions, same calls);
the driver reports such suspects differently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Sequence


@dataclass(frozen=True)
class Dag:
    """Node ``i``'s predecessors ``preds[i]`` (all ``< i``); ``sinks``: nodes producing graph outputs."""

    preds: tuple[frozenset[int], ...]
    sinks: frozenset[int]

    @classmethod
    def build(cls, preds: Sequence[Sequence[int]], sinks: Sequence[int]) -> "Dag":
        ps = tuple(frozenset(p) for p in preds)
        for i, p in enumerate(ps):
            if any(j >= i or j < 0 for j in p):
                raise ValueError(f"node {i} has a predecessor that is not before it in topological order")
        return cls(ps, frozenset(sinks))

    @property
    def n(self) -> int:
        return len(self.preds)

    def succs(self) -> list[set[int]]:
        out: list[set[int]] = [set() for _ in range(self.n)]
        for i, p in enumerate(self.preds):
            for j in p:
                out[j].add(i)
        return out

    def ancestors(self, i: int) -> set[int]:
        seen: set[int] = set()
        stack = list(self.preds[i])
        while stack:
            j = stack.pop()
            if j not in seen:
                seen.add(j)
                stack.extend(self.preds[j])
        return seen

    def chain_to(self, i: int) -> list[int]:
        """A longest path from a source to ``i`` (following the deepest predecessor): the
        chain along which error can accumulate the most before reaching ``i``."""
        depth: list[int] = []
        for p in self.preds:
            depth.append(1 + max((depth[j] for j in p), default=0))
        path = [i]
        while self.preds[path[-1]]:
            path.append(max(self.preds[path[-1]], key=lambda j: (depth[j], j)))
        return path[::-1]

    def path_between(self, i: int, targets: set[int] | frozenset[int]) -> list[int]:
        """A shortest path from ``i`` to any of ``targets`` (``[i]`` if none is reachable)."""
        succs = self.succs()
        prev: dict[int, int] = {i: -1}
        queue = [i]
        for j in queue:
            if j in targets:
                path = [j]
                while prev[path[-1]] != -1:
                    path.append(prev[path[-1]])
                return path[::-1]
            for k in sorted(succs[j]):
                if k not in prev:
                    prev[k] = j
                    queue.append(k)
        return [i]

    def descendants(self, roots: Sequence[int] | set[int]) -> set[int]:
        """``roots`` and everything downstream of them."""
        succs = self.succs()
        seen = set(roots)
        stack = list(roots)
        while stack:
            j = stack.pop()
            for k in succs[j]:
                if k not in seen:
                    seen.add(k)
                    stack.append(k)
        return seen


@dataclass(frozen=True)
class Candidate:
    kind: str  # "mark" or "subgraph"
    nodes: frozenset[int]
    purpose: str  # a few words for progress output and the step log


@dataclass
class CulpritResult:
    node: int
    introduced: bool  # fails alone on reference inputs
    subgraph: frozenset[int]  # the smallest failing subgraph found around it
    reduced: bool = True  # False when no failing subgraph smaller than the model was found
    upstream: int = 0  # upstream nodes it needs to fail (all its ancestors when not reduced)
    accumulates: bool = False  # needs more than ``max_context`` of them: not a culprit
    found_by: str = "search"  # or "growth": a jump on an error-growth path that fails alone


@dataclass
class Search:
    """The whole bisect as a generator-driven state machine.

    ``can_mark``: the oracle can compare intermediate tensors (numeric oracles);
    ``mark_all``: the backend does not fuse, so marking every tensor at once is safe;
    ``max_context``: the most upstream nodes a culprit may need (None: any number);
    a suspect that needs more is marked ``accumulates``.
    """

    dag: Dag
    can_mark: bool = True
    mark_all: bool = False
    max_context: int | None = None
    failed: bool | None = None  # None until confirmed
    culprits: list[CulpritResult] = field(default_factory=list)
    reduced: frozenset[int] = frozenset()
    reduced_verified: bool = False
    judged: dict[tuple[str, frozenset[int]], object] = field(default_factory=dict)
    _succs: list[set[int]] = field(default_factory=list, repr=False)  # derived from dag in __post_init__
    _gen: Iterator[Candidate] | None = field(default=None, repr=False)
    _pending: Candidate | None = field(default=None, repr=False)
    _last: object = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._succs = self.dag.succs()

    # -- driver interface ---------------------------------------------------------------

    def next_candidate(self) -> Candidate | None:
        """The next thing to judge, or None when the search is over."""
        if self._pending is not None:
            return self._pending
        if self._gen is None:
            self._gen = self._run()
        try:
            self._pending = next(self._gen)
        except StopIteration:
            self._pending = None
        return self._pending

    def record(self, verdict: object) -> None:
        """The verdict for the candidate last returned by :meth:`next_candidate`."""
        cand = self._pending
        if cand is None:
            raise RuntimeError("record() called without a pending candidate")
        if cand.kind == "mark":
            verdict = frozenset(verdict or ()) & cand.nodes
        else:
            verdict = bool(verdict)
        self.judged[(cand.kind, cand.nodes)] = verdict
        self._last = verdict
        self._pending = None

    # -- the search, written as straight-line code ---------------------------------------

    def _ask(self, kind: str, nodes: set[int] | frozenset[int], purpose: str):
        """Yield a candidate unless its verdict is already known; returns the verdict."""
        key = (kind, frozenset(nodes))
        if key in self.judged:
            return self.judged[key]
        yield Candidate(kind, key[1], purpose)
        return self._last

    def _run(self) -> Iterator[Candidate]:
        dag = self.dag
        everything = frozenset(range(dag.n))
        if dag.n == 0:
            self.failed = False
            return
        if self.can_mark:
            bad = yield from self._ask("mark", dag.sinks, "confirm: the model's outputs")
            self.failed = bool(bad)
        else:
            self.failed = yield from self._ask("subgraph", everything, "confirm: the whole model")
        if not self.failed:
            return
        if self.can_mark and self.mark_all:
            suspects = yield from self._localize_all()
        elif self.can_mark:
            suspects = yield from self._localize_marking()
        else:
            suspects = yield from self._localize_prefixes()
        for s in suspects:
            result = yield from self._isolate(s)
            if not result.introduced:
                result.upstream = len(result.subgraph) - 1 if result.reduced else len(dag.ancestors(s))
                result.accumulates = self.max_context is not None and result.upstream > self.max_context
            self.culprits.append(result)
        if not self.culprits:
            # divergence could not be pinned to a node (e.g. nondeterminism): keep the model whole
            self.reduced = everything
            self.reduced_verified = True
            return
        self.reduced = frozenset().union(*(c.subgraph for c in self.culprits))
        verdict = yield from self._ask("subgraph", self.reduced, "verify the reduced model")
        self.reduced_verified = bool(verdict)
        if not verdict:
            self.reduced = everything
            self.reduced_verified = True
            for c in self.culprits:
                c.reduced = False

    def _frontier(self, m: int, excluded: set[int]) -> frozenset[int]:
        """Nodes ≤ m (not excluded) whose outputs are read after m, by an excluded node, or by the user."""
        out = set()
        for u in range(m + 1):
            if u in excluded:
                continue
            if u in self.dag.sinks or any((v > m or v in excluded) for v in self._succs[u]):
                out.add(u)
        return frozenset(out)

    def _find_suspects(self, still_fails, fails_up_to) -> Iterator[Candidate]:
        """The loop both search modes share: while something outside the known culprits
        still fails, binary-search the first position after the last suspect whose cut
        fails, take it as a suspect and set its descendants aside.

        ``still_fails(positions, excluded, suspects)`` and ``fails_up_to(positions, p,
        excluded)`` are generators that ask the oracle and return a truth value.
        """
        suspects: list[int] = []
        excluded: set[int] = set()
        while True:
            positions = [p for p in range(self.dag.n) if p not in excluded]
            if not positions or not (yield from still_fails(positions, excluded, suspects)):
                break
            later = [i for i, p in enumerate(positions) if not suspects or p > suspects[-1]]
            if not later:
                break
            lo, hi = later[0], len(positions) - 1  # the first index whose cut fails is in [lo, hi]
            while lo < hi:
                mid = (lo + hi) // 2
                if (yield from fails_up_to(positions, positions[mid], excluded)):
                    hi = mid
                else:
                    lo = mid + 1
            s = positions[lo]
            suspects.append(s)
            excluded |= self.dag.descendants([s])
        return suspects

    def _localize_marking(self) -> Iterator[Candidate]:
        """Cut bisection on the whole model with small blocks of marked outputs."""

        def still_fails(positions, excluded, suspects):
            last = self._frontier(self.dag.n - 1, excluded)
            if not last:
                return False
            return (yield from self._ask("mark", last, "look for divergence outside known culprits"))

        def fails_up_to(positions, p, excluded):
            front = self._frontier(p, excluded)
            return (yield from self._ask("mark", front, f"cut after node {p}")) if front else frozenset()

        return (yield from self._find_suspects(still_fails, fails_up_to))

    def _localize_all(self) -> Iterator[Candidate]:
        """One run with every tensor marked: introduction points are read off directly."""
        bad = yield from self._ask("mark", frozenset(range(self.dag.n)), "mark every tensor (backend does not fuse)")
        return [i for i in sorted(bad) if not (self.dag.preds[i] & bad)]

    def _localize_prefixes(self) -> Iterator[Candidate]:
        """No marking possible (shell oracle): bisect the shortest failing prefix."""

        def still_fails(positions, excluded, suspects):
            if not suspects:
                return True  # the full model was confirmed to fail before the search
            return (yield from self._ask("subgraph", frozenset(positions), "look for failures outside known culprits"))

        def fails_up_to(positions, p, excluded):
            prefix = frozenset(q for q in positions if q <= p)
            return (yield from self._ask("subgraph", prefix, f"prefix up to node {p}"))

        return (yield from self._find_suspects(still_fails, fails_up_to))

    def _isolate(self, s: int) -> Iterator[Candidate]:
        """Does ``s`` fail alone? If not, the fewest nearest ancestors that make it fail."""
        alone = yield from self._ask("subgraph", {s}, f"node {s} alone on reference inputs")
        if alone:
            return CulpritResult(s, True, frozenset({s}))
        cone = sorted(self.dag.ancestors(s))
        if not cone:
            return CulpritResult(s, False, frozenset(range(self.dag.n)), reduced=False)
        # with[j] = {s} ∪ cone[j:]; with[len] = alone (passes). Find the largest failing j.
        # Gallop first (1, 3, 7, ... nearest ancestors): the context a fault needs is
        # usually a few neighbours (a fused Conv+BN+Relu), so this beats plain bisection
        # over a long upstream cone; then bisect inside the last doubling.
        lo, hi = 0, len(cone) - 1  # the answer, if any, is in [lo, hi]
        size = 1
        while size < len(cone):
            j = len(cone) - size
            failing = yield from self._ask("subgraph", {s, *cone[j:]}, f"node {s} with {size} ancestors")
            if failing:
                lo = j
                break
            hi = j - 1
            size = 2 * size + 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            failing = yield from self._ask("subgraph", {s, *cone[mid:]}, f"node {s} with {len(cone) - mid} ancestors")
            if failing:
                lo = mid
            else:
                hi = mid - 1
        sub = frozenset({s, *cone[lo:]})
        failing = yield from self._ask("subgraph", sub, f"node {s} with {len(cone) - lo} ancestors")
        if failing:
            return CulpritResult(s, False, sub)
        return CulpritResult(s, False, frozenset(range(self.dag.n)), reduced=False)
