"""Oracle calls: ddmin (surgeon isolate) against one-at-a-time search and opt-bisect.

    python bench/isolate_calls.py [--choices 64]

Cases: one culprit among N choices (every position), and an interacting pair (both must
be applied to fail; 200 seeded random pairs). ddmin's count includes its precondition
checks and its confirmation re-runs (1 repeat). Fake oracles: the counts are exact,
no model is run.
"""

from __future__ import annotations

import argparse
import random
import statistics

from surgeon.debug.isolate.ddmin import Verdict, isolate, leave_one_out, one_at_a_time, prefix_bisect


def needs(*culprits):
    return lambda s: Verdict.FAIL if set(culprits) <= set(s) else Verdict.PASS


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--choices", type=int, default=64)
    n = ap.parse_args().choices
    rng = random.Random(0)
    rows = []
    single = [isolate(n, needs(c)) for c in range(n)]
    assert all(r.culprit_sets == [(c,)] for c, r in enumerate(single))
    calls = [r.oracle_calls for r in single]
    rows.append(("one culprit", "ddmin (surgeon isolate)", statistics.mean(calls), max(calls), "always"))
    rows.append(("one culprit", "one at a time", n, n, "always"))
    rows.append(("one culprit", "opt-bisect (prefix)", statistics.mean(prefix_bisect(n, needs(c))[1] for c in range(n)),
                 max(prefix_bisect(n, needs(c))[1] for c in range(n)), "always"))
    pairs = [tuple(sorted(rng.sample(range(n), 2))) for _ in range(200)]
    res = [isolate(n, needs(*p)) for p in pairs]
    ok = sum(r.culprit_sets == [p] for r, p in zip(res, pairs))
    calls = [r.oracle_calls for r in res]
    rows.append(("interacting pair", "ddmin (surgeon isolate)", statistics.mean(calls), max(calls), f"{ok}/200"))
    found = sum(one_at_a_time(n, needs(*p))[0] == list(p) for p in pairs)
    rows.append(("interacting pair", "one at a time", n, n, f"{found}/200"))
    found = sum(leave_one_out(n, needs(*p))[0] == list(p) for p in pairs)
    rows.append(("interacting pair", "leave one out", n, n, f"{found}/200"))
    found = sum(prefix_bisect(n, needs(*p))[0] == p[1] for p in pairs)
    rows.append(("interacting pair", "opt-bisect (prefix)", statistics.mean(prefix_bisect(n, needs(*p))[1] for p in pairs),
                 max(prefix_bisect(n, needs(*p))[1] for p in pairs), f"{found}/200 (last member only)"))
    print(f"| case ({n} choices) | strategy | mean calls | max calls | finds the culprit set |")
    print("|---|---|---|---|---|")
    for case, strat, mean, mx, found in rows:
        print(f"| {case} | {strat} | {mean:.1f} | {mx} | {found} |")


if __name__ == "__main__":
    main()
