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

- ``kind="noise"``: does marking tensors change the test side's (or the reference's)
  outputs beyond a small share of the tolerance? ``True``: marked tensors are not to be
  trusted (:mod:`surgeon.debug.bisect.noise`).

Phases:
1. *confirm*: mark the nodes that produce the graph outputs; nothing diverges → the
   model does not fail, stop. With ``measure_noise``, then ask whether marking is noisy.
2. *localize*: find the first node whose outputs diverge while everything before it in
   topological order does not ("cut" bisection, ⌈log₂N⌉ calls); exclude it and its
   descendants and look again for culprits in independent branches. A backend that
   does not fuse instead gets one "mark everything" call and the introduction points
   are read off directly. Without marking (a shell ``--check`` oracle), prefixes of the
   model are bisected instead. When marking is noisy, or when no marked tensor diverges
   although the outputs do, *suffixes* are bisected: the nodes from position p on, fed
   the reference values of everything before (a cut that marks nothing, so what is
   compared are outputs computed as the model computes them); the last p whose suffix
   still fails is the suspect.
3. *isolate*: run each suspect alone on reference inputs: failing alone means the node
   introduces the error; otherwise grow it through its ancestors (bisection over its
   upstream cone, never over unrelated branches) until the subgraph fails. A suspect a
   suffix found (its suffix fails, the next one passes) grows through its descendants
   inside that suffix instead: what makes it fail is what comes after it (a backend that
   computes a node differently depending on its consumers).
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


# Suffix cuts find every culprit one after the other; error spread over many nodes would
# make that a linear scan, so it stops here and says so.
MAX_SUFFIX_SUSPECTS = 8


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
    found_by: str = "search"  # or "growth": a jump on an error-growth path that fails alone; "suffix": a suffix cut
    downstream: int = 0  # downstream nodes it needs to fail (suffix cuts)


@dataclass
class Search:
    """The whole bisect as a generator-driven state machine.

    ``can_mark``: the oracle can compare intermediate tensors (numeric oracles);
    ``mark_all``: the backend does not fuse, so marking every tensor at once is safe;
    ``max_context``: the most upstream nodes a culprit may need (None: any number);
    a suspect that needs more is marked ``accumulates``. ``measure_noise``: after the
    confirmation, ask (``kind="noise"``) whether marked tensors can be trusted.
    ``localized_by`` says how suspects were found in the end (``mark``, ``mark-all``,
    ``prefix``, ``suffix``), ``fallback`` why suffixes were used when marking was possible.
    """

    dag: Dag
    can_mark: bool = True
    mark_all: bool = False
    max_context: int | None = None
    measure_noise: bool = False
    failed: bool | None = None  # None until confirmed
    noisy: bool | None = None  # None: not measured
    localized_by: str = ""
    fallback: str = ""
    suffix_of: dict[int, frozenset[int]] = field(default_factory=dict)  # suffix suspect -> the failing cut that named it
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
        mode = ("mark-all" if self.mark_all else "mark") if self.can_mark else "prefix"
        if self.can_mark and self.measure_noise:
            self.noisy = bool((yield from self._ask("noise", everything, "measure marking noise: the outputs with and "
                                                                        "without marked tensors")))
            if self.noisy:
                mode, self.fallback = "suffix", "marking tensors moves the outputs"
        suspects = yield from self._localize(mode)
        if mode in ("mark", "mark-all") and not self._marks_diverged():
            # Only the outputs themselves ever diverged: a search over marks that all match
            # ends on an output node by elimination, which proves nothing unless that node
            # fails on its own.
            alone = []
            for s in suspects:
                alone.append((yield from self._ask("subgraph", {s}, f"node {s} alone on reference inputs")))
            if not suspects or not all(alone):
                mode, self.fallback = "suffix", "no marked tensor diverges although the outputs do"
                suspects = yield from self._localize(mode)
        self.localized_by = mode
        for s in suspects:
            if mode == "suffix":
                result = yield from self._isolate_downstream(s, suspects)
                self.culprits.append(result)
                continue
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

    def _marks_diverged(self) -> bool:
        """Whether some marked run other than the confirmation saw a tensor diverge."""
        return any(v for (kind, nodes), v in self.judged.items() if kind == "mark" and nodes != self.dag.sinks)

    def _localize(self, mode: str) -> Iterator[Candidate]:
        if mode == "mark-all":
            return (yield from self._localize_all())
        if mode == "mark":
            return (yield from self._localize_marking())
        if mode == "suffix":
            return (yield from self._localize_suffixes())
        return (yield from self._localize_prefixes())

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

    def _localize_suffixes(self) -> Iterator[Candidate]:
        """Bisect suffixes (nodes from a position on, everything before fed reference values).

        ``fails(rest[i:])`` is True at i = 0 (the confirmed failure, or the check that
        something outside the known suspects still fails) and False for the empty
        suffix; the last i whose suffix fails names ``rest[i]``: fed reference values up
        to it the model fails, fed its reference outputs too it passes. Known suspects
        stay fed (left out of every later suffix), so the next round looks for a culprit
        the first one hid.
        """
        suspects: list[int] = []
        while True:
            rest = [p for p in range(self.dag.n) if p not in suspects]
            if not rest:
                break
            if suspects and not (yield from self._ask("subgraph", frozenset(rest),
                                                      "look for failures outside known culprits (they are fed)")):
                break
            if len(suspects) >= MAX_SUFFIX_SUSPECTS:
                self.fallback += f"; stopped after {MAX_SUFFIX_SUSPECTS} culprits although more of the model fails"
                break
            lo, hi = 0, len(rest)  # the suffix from rest[lo] fails; from rest[hi] (empty) it passes
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if (yield from self._ask("subgraph", frozenset(rest[mid:]), f"suffix from node {rest[mid]}")):
                    lo = mid
                else:
                    hi = mid
            suspects.append(rest[lo])
            self.suffix_of[rest[lo]] = frozenset(rest[lo:])
        return suspects

    def _isolate_downstream(self, s: int, suspects: Sequence[int]) -> Iterator[Candidate]:
        """A suffix suspect: alone, or with the fewest nearest descendants inside its suffix."""
        alone = yield from self._ask("subgraph", {s}, f"node {s} alone on reference inputs")
        if alone:
            return CulpritResult(s, True, frozenset({s}), found_by="suffix")
        suffix = sorted(p for p in range(s, self.dag.n) if p not in suspects or p == s)
        down = [d for d in sorted(self.dag.descendants([s])) if d != s and d in suffix]
        # with[k] = {s} ∪ down[:k]; the whole suffix failed. Gallop, then bisect, for the smallest failing k.
        lo, hi = len(down) + 1, len(down) + 1  # the smallest failing k is in [lo, hi]; len+1: "the whole suffix"
        size, prev = 1, 0
        while size <= len(down):
            if (yield from self._ask("subgraph", {s, *down[:size]}, f"node {s} with {size} descendants")):
                lo, hi = prev + 1, size
                break
            prev, size = size, 2 * size + 1
        else:
            if down and (yield from self._ask("subgraph", {s, *down}, f"node {s} with all {len(down)} descendants")):
                lo, hi = prev + 1, len(down)
        while lo < hi:
            mid = (lo + hi) // 2
            if (yield from self._ask("subgraph", {s, *down[:mid]}, f"node {s} with {mid} descendants")):
                hi = mid
            else:
                lo = mid + 1
        if lo <= len(down):
            return CulpritResult(s, False, frozenset({s, *down[:lo]}), found_by="suffix", downstream=lo)
        # only the whole suffix (with nodes that do not descend from s) fails
        whole = frozenset(suffix)
        return CulpritResult(s, False, whole, reduced=len(whole) < self.dag.n, found_by="suffix",
                             downstream=len(whole) - 1)

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
