"""Delta debugging (Zeller's ddmin) over a set of choices, as a pure strategy plus a driver.

The *choices* are things that can be applied or enabled one by one: rewrite applications
of our own pipeline, ONNX Runtime graph optimizers, TensorRT tactic assignments. An
*oracle* says whether a configuration with exactly a given subset applied fails (diverges)
or passes. The result is a 1-minimal failing subset: removing any single member of it
makes the failure go away.

Two layers, testable apart:

- :func:`ddmin` is the strategy: a generator that yields the next subset to ask about and
  receives the verdict through ``send``. It holds no oracle, no cache, no I/O.
- :func:`isolate` is the driver: it checks the preconditions (everything applied fails,
  nothing applied passes), caches verdicts per subset, repeats the search on what is left
  when removing the first culprit set does not make the failure go away (independent
  culprits), and re-runs the final confirmations *without* the cache, so an oracle that
  answers the same question two ways is reported as flaky instead of blamed on a choice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Generator, Mapping, Sequence

from surgeon.debug.verdict import SearchStatus, Verdict  # noqa: F401  (Verdict re-exported)

log = logging.getLogger(__name__)


Subset = tuple[int, ...]  # indices into the choice list, ascending


def _split(items: Sequence[int], n: int) -> list[list[int]]:
    """``items`` into ``n`` contiguous chunks of near-equal size (first chunks larger)."""
    size, extra = divmod(len(items), n)
    chunks, start = [], 0
    for i in range(n):
        end = start + size + (1 if i < extra else 0)
        chunks.append(list(items[start:end]))
        start = end
    return [c for c in chunks if c]


def ddmin(pool: Sequence[int]) -> Generator[Subset, Verdict, Subset]:
    """Search a 1-minimal failing subset of ``pool`` (which must itself fail).

    Yields subsets (sorted index tuples) and expects the verdict for each via ``send``;
    returns the minimal subset. Chunks are tried first ("is the culprit in here?"), then
    complements ("is it enough to remove this?"), then the granularity doubles.
    """
    current = sorted(pool)
    n = 2
    while len(current) >= 2:
        chunks = _split(current, n)
        reduced = False
        for chunk in chunks:
            if (yield tuple(chunk)) == Verdict.FAIL:
                current, n, reduced = chunk, 2, True
                break
        if not reduced and len(chunks) > 2:  # with two chunks, complements are the chunks
            for i in range(len(chunks)):
                complement = sorted(x for j, c in enumerate(chunks) if j != i for x in c)
                if (yield tuple(complement)) == Verdict.FAIL:
                    current, n, reduced = complement, max(len(chunks) - 1, 2), True
                    break
        if not reduced:
            if len(chunks) >= len(current):
                break
            n = min(2 * len(chunks), len(current))
    return tuple(current)


# Outcomes of a whole isolation run.
CULPRITS = SearchStatus.CULPRITS
NO_DIVERGENCE = SearchStatus.NO_DIVERGENCE
BASELINE_FAILS = SearchStatus.BASELINE_FAILS
FLAKY = SearchStatus.FLAKY
INCOMPLETE = SearchStatus.INCOMPLETE


@dataclass
class Confirmation:
    """One uncached re-run at the end: what was run, what it must say, what it said."""

    what: str  # "with culprits", "without culprits", ...
    subset: Subset
    expected: Verdict
    verdicts: list[Verdict]

    @property
    def ok(self) -> bool:
        return all(v == self.expected for v in self.verdicts)


@dataclass
class Call:
    number: int
    subset: Subset
    verdict: Verdict
    phase: str


@dataclass
class IsolateResult:
    status: SearchStatus
    size: int  # number of choices
    culprit_sets: list[Subset] = field(default_factory=list)
    confirmations: list[Confirmation] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    cache_hits: int = 0
    flaky_subsets: list[Subset] = field(default_factory=list)
    message: str = ""

    @property
    def culprits(self) -> Subset:
        return tuple(sorted({i for s in self.culprit_sets for i in s}))

    @property
    def oracle_calls(self) -> int:
        return len(self.calls)


Oracle = Callable[[Subset], Verdict]
Progress = Callable[[str], None]


class _Asker:
    """Oracle calls with a verdict cache and a call log (the driver's only state)."""

    def __init__(self, oracle: Oracle, size: int, cache: Mapping[Subset, Verdict] | None, progress: Progress | None,
                 on_call: Callable[[Call], None] | None):
        self.oracle, self.size, self.progress, self.on_call = oracle, size, progress, on_call
        self.cache: dict[Subset, Verdict] = dict(cache or {})
        self.calls: list[Call] = []
        self.hits = 0
        self.seen: dict[Subset, set[Verdict]] = {}

    def raw(self, subset: Subset, phase: str) -> Verdict:
        verdict = self.oracle(subset)
        if not isinstance(verdict, Verdict):
            verdict = Verdict(verdict)
        call = Call(len(self.calls) + 1, subset, verdict, phase)
        self.calls.append(call)
        self.seen.setdefault(subset, set()).add(verdict)
        if self.progress:
            self.progress(f"oracle call {call.number} ({phase}): {len(subset)} of {self.size} applied -> {verdict.value}")
        if self.on_call:
            self.on_call(call)
        return verdict

    def ask(self, subset: Subset, phase: str) -> Verdict:
        if subset in self.cache:
            self.hits += 1
            return self.cache[subset]
        verdict = self.raw(subset, phase)
        self.cache[subset] = verdict
        return verdict

    def flaky(self) -> list[Subset]:
        return [s for s, vs in self.seen.items() if len(vs) > 1]


def _run_ddmin(asker: _Asker, pool: Sequence[int], phase: str) -> Subset:
    search = ddmin(pool)
    query = next(search)
    while True:
        verdict = asker.ask(query, phase)
        try:
            query = search.send(verdict)
        except StopIteration as stop:
            return stop.value


def isolate(
    size: int,
    oracle: Oracle,
    *,
    max_sets: int = 4,
    confirm_repeats: int = 1,
    cache: Mapping[Subset, Verdict] | None = None,
    progress: Progress | None = None,
    on_call: Callable[[Call], None] | None = None,
) -> IsolateResult:
    """Find minimal failing subsets of choices ``0..size-1`` with ``oracle``.

    ``cache`` pre-seeds verdicts (a resumed run); ``on_call`` sees every real oracle call
    (the artifacts directory records them). Confirmation runs bypass the cache and are
    repeated ``confirm_repeats`` times.
    """
    everything: Subset = tuple(range(size))
    asker = _Asker(oracle, size, cache, progress, on_call)
    result = IsolateResult(status=CULPRITS, size=size)

    def finish(status: SearchStatus, message: str) -> IsolateResult:
        result.status, result.message = status, message
        result.calls, result.cache_hits = asker.calls, asker.hits
        result.flaky_subsets = asker.flaky()
        if result.flaky_subsets and status != FLAKY:
            result.status = FLAKY
            result.message = (f"the oracle gave different verdicts for the same configuration "
                              f"({len(result.flaky_subsets)} subset(s)); results cannot be trusted ({message})")
        return result

    if asker.ask(everything, "precondition") != Verdict.FAIL:
        confirm = Confirmation("with every choice applied", everything, Verdict.PASS,
                               [asker.raw(everything, "confirm") for _ in range(confirm_repeats)])
        result.confirmations.append(confirm)
        return finish(NO_DIVERGENCE, "nothing diverges with every choice applied")
    if asker.ask((), "precondition") == Verdict.FAIL:
        return finish(BASELINE_FAILS, "the problem is there even with no choice applied; it is not caused by these choices")

    remaining = list(everything)
    while True:
        found = _run_ddmin(asker, remaining, f"search {len(result.culprit_sets) + 1}")
        result.culprit_sets.append(found)
        remaining = [i for i in remaining if i not in set(found)]
        if asker.ask(tuple(remaining), "check rest") != Verdict.FAIL:
            break
        if len(result.culprit_sets) >= max_sets:
            for s in result.culprit_sets:
                _confirm(asker, result, s, remaining, confirm_repeats)
            return finish(INCOMPLETE, f"{max_sets} culprit sets found and the rest still fails; raise --max-sets")

    for s in result.culprit_sets:
        _confirm(asker, result, s, remaining, confirm_repeats)
    bad = [c for c in result.confirmations if not c.ok]
    if bad:
        return finish(FLAKY, f"confirmation '{bad[0].what}' expected {bad[0].expected.value} but got "
                             f"{', '.join(v.value for v in bad[0].verdicts)}")
    n = len(result.culprit_sets)
    return finish(CULPRITS, f"{n} minimal culprit set{'s' if n > 1 else ''} found and confirmed")


def _confirm(asker: _Asker, result: IsolateResult, culprits: Subset, remaining: list[int], repeats: int) -> None:
    """Uncached re-runs: with the culprits alone it fails, with everything else it passes."""
    number = result.culprit_sets.index(culprits) + 1
    with_c = Confirmation(f"only culprit set {number} applied", culprits, Verdict.FAIL,
                          [asker.raw(culprits, "confirm") for _ in range(repeats)])
    result.confirmations.append(with_c)
    rest = tuple(remaining)
    if not any(c.subset == rest and c.expected == Verdict.PASS for c in result.confirmations):
        without = Confirmation("everything but the culprits applied", rest, Verdict.PASS,
                               [asker.raw(rest, "confirm") for _ in range(repeats)])
        result.confirmations.append(without)


def one_at_a_time(size: int, oracle: Oracle) -> tuple[list[int], int]:
    """The naive baseline for the benchmark: apply each choice alone; returns (failing, calls)."""
    failing = [i for i in range(size) if oracle((i,)) == Verdict.FAIL]
    return failing, size


def leave_one_out(size: int, oracle: Oracle) -> tuple[list[int], int]:
    """Baseline: remove each choice from the full set; returns (needed-for-failure, calls)."""
    everything = set(range(size))
    needed = [i for i in range(size) if oracle(tuple(sorted(everything - {i}))) != Verdict.FAIL]
    return needed, size


def prefix_bisect(size: int, oracle: Oracle) -> tuple[int | None, int]:
    """LLVM opt-bisect: the smallest N such that applying choices 0..N-1 fails.

    Returns (index of the last choice needed, calls). Finds one culprit only (the last one
    an interacting set needs in numbering order).
    """
    calls = 0
    lo, hi = 0, size  # prefix of length hi fails (precondition), lo passes
    while hi - lo > 1:
        mid = (lo + hi) // 2
        calls += 1
        if oracle(tuple(range(mid))) == Verdict.FAIL:
            hi = mid
        else:
            lo = mid
    return (hi - 1 if size else None), calls
