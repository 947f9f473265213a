"""Choose the FP32 islands by proof: the smallest set of nodes whose FP32 keeps the tolerance.

The property searched is monotone in practice (more FP32 nodes, less error) but not
assumed to be: every claim in the result is a verdict the oracle gave.

1. Preconditions: with no candidate in FP32 the tolerance is missed (else there is nothing
   to keep, and the search ends after this one call); with every candidate in FP32 it is met
   (else the tolerance cannot be met at all: a usage error).
2. The prior (``scan``'s overflows) alone; when it meets the tolerance it is the pool.
3. Otherwise prefix bisection (the isolate engine's ``prefix_bisect``, as LLVM's
   opt-bisect) over the ranking after the prior: the shortest prefix that meets the
   tolerance, in log2(n) calls.
4. ddmin (the isolate engine's strategy) over the pool: a 1-minimal set, from which
   removing any single node misses the tolerance.
5. Islands (connected components of the set): each one removed must miss the tolerance;
   one that does not is dropped and ddmin runs again on what is left. A final uncached run
   of the chosen set must meet the tolerance (a flaky oracle is reported, not trusted).

A budget of oracle calls bounds it all; when it runs out the best set that met the
tolerance so far is returned and the result says it is not proven minimal, and why.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Sequence

import onnx

from surgeon.debug.isolate.ddmin import ddmin, prefix_bisect
from surgeon.debug.verdict import SearchStatus, Verdict
from surgeon.disjoint_sets import DisjointSets
from surgeon.precision.oracle import BudgetExhausted, CachedOracle, Judgement

log = logging.getLogger(__name__)

NO_ISLANDS = SearchStatus.NO_ISLANDS
MINIMAL = SearchStatus.MINIMAL
BUDGET = SearchStatus.BUDGET
FLAKY = SearchStatus.FLAKY


@dataclass
class Island:
    nodes: list[str]
    op_types: list[str]
    why: list[str] = field(default_factory=list)
    without: Judgement | None = None  # the verdict with this island back in reduced precision

    def to_dict(self) -> dict:
        return {"nodes": self.nodes, "op_types": self.op_types, "why": self.why,
                "without_it": self.without.to_dict() if self.without else None}


@dataclass
class SearchResult:
    status: SearchStatus
    kept: list[str]
    message: str
    baseline: Judgement | None  # every candidate in FP32 (not run when full reduced precision meets)
    full: Judgement
    final: Judgement
    islands: list[Island] = field(default_factory=list)
    phases: list[dict] = field(default_factory=list)
    inferred: int = 0  # ddmin questions answered by monotonicity (never a claim of the result)

    @property
    def minimal(self) -> bool:
        return self.status in (MINIMAL, NO_ISLANDS)


def islands_of(model: onnx.ModelProto, labels: Sequence[str], kept: Sequence[str]) -> list[list[str]]:
    """Connected components of ``kept`` in the dataflow graph (in graph order)."""
    order = {label: i for i, label in enumerate(labels)}
    kept_set = set(kept)
    sets = DisjointSets(kept)
    producer = {}
    for label, n in zip(labels, model.graph.node):
        for o in n.output:
            if o:
                producer[o] = label
    for label, n in zip(labels, model.graph.node):
        if label not in kept_set:
            continue
        for i in n.input:
            p = producer.get(i)
            if p in kept_set:
                sets.union(p, label)
    groups: dict[str, list[str]] = {}
    for k in sorted(kept, key=lambda x: order[x]):
        groups.setdefault(sets.find(k), []).append(k)
    return sorted(groups.values(), key=lambda g: order[g[0]])


class _Asker:
    """The search's view of the oracle: remembers the smallest set that met the tolerance (what
    a budget stop returns) and, inside ddmin, answers by monotonicity where it can.

    Monotonicity (more nodes in FP32, no more error) holds in practice, not by law. So it is
    used only to skip questions *during* the search, and every claim of the result is
    re-asked for real afterwards: each single removal and each island removal."""

    def __init__(self, oracle: CachedOracle, everything: frozenset[str]):
        self.oracle = oracle
        self.best = everything
        self.met: list[frozenset[str]] = []
        self.missed: list[frozenset[str]] = []
        self.inferred = 0
        self.monotone = True  # switched off once a real answer contradicts an inferred one

    def __call__(self, kept: Sequence[str] | frozenset[str], phase: str, *, infer: bool = False) -> bool:
        key = frozenset(kept)
        if infer and self.monotone and key not in self.oracle.cache:
            if any(key <= m for m in self.missed):
                self.inferred += 1
                return False
            if any(m <= key for m in self.met):
                self.inferred += 1
                return True
        j = self.oracle(key, phase)
        (self.met if j.passed else self.missed).append(key)
        if j.passed and len(key) < len(self.best):
            self.best = key
        return j.passed


def _ddmin(ask: _Asker, pool: list[str], phase: str) -> list[str]:
    """ddmin over ``pool`` (which meets the tolerance): "fails" in ddmin's terms means "meets"."""
    search = ddmin(range(len(pool)))
    try:
        query = next(search)
    except StopIteration as stop:  # a pool of one: nothing to ask
        return [pool[i] for i in stop.value]
    while True:
        verdict = Verdict.FAIL if ask([pool[i] for i in query], phase, infer=True) else Verdict.PASS
        try:
            query = search.send(verdict)
        except StopIteration as stop:
            return [pool[i] for i in stop.value]


def search_islands(model: onnx.ModelProto, labels: Sequence[str], candidates: Sequence[str], oracle: CachedOracle, *,
                   prior: Sequence[str] = (), ranking: Sequence[str] | None = None,
                   plan: Callable[[], tuple[Sequence[str], Sequence[str]]] | None = None,
                   progress: Callable[[str], None] | None = None) -> SearchResult:
    """See the module docstring. ``labels``: every main-graph node's label, in order.

    ``plan()`` returns (prior, ranking) and is called only when the preconditions leave
    something to search (the range analysis costs model runs of its own)."""
    say = progress or (lambda _m: None)
    everything = frozenset(candidates)
    ask = _Asker(oracle, everything)
    phases: list[dict] = []

    def phase(name: str, before: int, **extra) -> None:
        phases.append({"phase": name, "oracle_calls": len(oracle.calls) - before, **extra})

    say("running the model with every node in reduced precision")
    full = oracle(frozenset(), "precondition")
    if full.passed:  # nothing to search, and nothing to prove about the FP32 end
        phase("preconditions", 0)
        return SearchResult(NO_ISLANDS, [], "the model meets the tolerance with every node in reduced precision",
                            None, full, full, phases=phases)
    say("checking that the model with every node in FP32 meets the tolerance")
    baseline = oracle(everything, "precondition")
    phase("preconditions", 0)
    if not baseline.passed:
        return SearchResult("unmeetable", sorted(everything), "the model with every node in FP32 misses the tolerance",
                            baseline, full, baseline, phases=phases)

    status, message = MINIMAL, ""
    kept: list[str] = sorted(everything)
    if plan is not None:
        prior, ranking = plan()
    ranking = list(ranking) if ranking is not None else list(candidates)
    try:
        # 2-3: the pool.
        p = [c for c in ranking if c in set(prior)]
        start = len(oracle.calls)
        pool: list[str] | None = None
        if p and len(p) < len(everything):
            say(f"testing the prior: {len(p)} node(s) from the range analysis")
            if ask(p, "prior"):
                pool = p
            phase("prior", start, nodes=len(p), met=pool is not None)
        if pool is None:
            rest = [c for c in ranking if c not in set(p)]
            start = len(oracle.calls)
            say(f"prefix bisection over {len(rest)} ranked node(s)")

            def prefix_oracle(subset: tuple[int, ...]) -> Verdict:
                return Verdict.FAIL if ask(p + rest[:len(subset)], "prefix bisect") else Verdict.PASS

            last, _calls = prefix_bisect(len(rest), prefix_oracle)
            pool = p + rest[:(last or 0) + 1]
            phase("prefix bisect", start, nodes=len(pool))
        # ddmin's chunks are contiguous runs of the pool: in graph order they follow the
        # islands, which are connected, so an island is seldom split.
        order = {label: i for i, label in enumerate(labels)}
        kept = sorted(pool, key=lambda x: order[x])
        # 4-5: minimize, then prove every claim with real calls.
        while True:
            start, inferred = len(oracle.calls), ask.inferred
            say(f"ddmin over {len(kept)} node(s)")
            kept = _ddmin(ask, kept, "ddmin")
            phase("ddmin", start, nodes=len(kept), answered_by_monotonicity=ask.inferred - inferred)
            start = len(oracle.calls)
            if not ask(kept, "1-minimality"):  # ddmin's last reduction was inferred, and wrongly
                ask.monotone = False
                kept = sorted(ask.best, key=lambda x: order[x])
                phase("1-minimality", start, note="the model is not monotone here: ddmin again without inference")
                continue
            smaller = next((k for k in kept if ask([x for x in kept if x != k], "1-minimality")), None)
            if smaller is not None:
                kept = [x for x in kept if x != smaller]
                phase("1-minimality", start, dropped=smaller)
                continue
            phase("1-minimality", start, checked=len(kept))
            start = len(oracle.calls)
            groups = islands_of(model, labels, kept)
            dropped = None
            for group in groups:
                rest_k = [k for k in kept if k not in set(group)]
                if ask(rest_k, "island check"):
                    kept, dropped = rest_k, group
                    say(f"island {group[0]} ({len(group)} node(s)) is not needed: dropped")
                    break
            phase("island checks", start, islands=len(groups), dropped=dropped[0] if dropped else None)
            if dropped is None:
                break
    except BudgetExhausted as exc:
        phases.append({"phase": "budget exhausted (the phase under way)",
                       "oracle_calls": len(oracle.calls) - sum(x["oracle_calls"] for x in phases),
                       "smallest_set_that_met": len(ask.best)})
        kept = sorted(ask.best)
        status = BUDGET
        message = (f"stopped after {exc} (--max-oracle-calls): the set meets the tolerance "
                   f"but is not proven 1-minimal")
    # Final confirmation, uncached.
    final = oracle(frozenset(kept), "confirm", fresh=True)
    cached = oracle.cache.get(frozenset(kept))
    if not final.passed or (cached is not None and cached.passed != final.passed):
        return SearchResult(FLAKY, kept, "the chosen set met the tolerance once and missed it on a re-run: "
                            "the model or the emulation is nondeterministic", baseline, full, final, phases=phases)
    if status == MINIMAL:
        message = (f"{len(kept)} node(s) in FP32: removing any one of them, or any island, misses the tolerance "
                   f"(1-minimal, proven by {len(oracle.calls)} oracle calls)")
    result = SearchResult(status, kept, message, baseline, full, final, phases=phases, inferred=ask.inferred)
    for group in islands_of(model, labels, kept):
        rest_k = frozenset(k for k in kept if k not in set(group))
        without = oracle.cache.get(rest_k)
        ops = {label: n.op_type for label, n in zip(labels, model.graph.node)}
        result.islands.append(Island(group, [ops[g] for g in group], without=without))
    return result
