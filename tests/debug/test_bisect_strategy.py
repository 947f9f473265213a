"""The bisect search alone, driven by a fake oracle (no model, no backend).

The fake oracle knows the culprits: a node's outputs diverge when it is a culprit or
downstream of one; a subgraph fails when it contains a culprit together with the
context that culprit needs (``needs``: ancestors that must be present, as for a fault
that only appears when neighbouring layers are fused).
"""

from __future__ import annotations

import math
import random

import pytest

from surgeon.debug.bisect.strategy import Dag, Search


def chain(n: int) -> Dag:
    return Dag.build([[i - 1] if i else [] for i in range(n)], [n - 1])


def two_branches(n: int) -> Dag:
    """0 = stem; 1..n = branch a; n+1..2n = branch b; 2n+1 = join (the only sink)."""
    preds = [[]]
    preds += [[0] if i == 1 else [i - 1] for i in range(1, n + 1)]
    preds += [[0] if i == n + 1 else [i - 1] for i in range(n + 1, 2 * n + 1)]
    preds.append([n, 2 * n])
    return Dag.build(preds, [2 * n + 1])


def drive(dag: Dag, culprits, needs=None, **kw):
    needs = needs or {}
    bad = dag.descendants(list(culprits))
    search = Search(dag, **kw)
    calls, asked = 0, set()
    while (cand := search.next_candidate()) is not None:
        key = (cand.kind, cand.nodes)
        assert key not in asked, f"asked twice: {cand.purpose}"
        asked.add(key)
        calls += 1
        if cand.kind == "mark":
            search.record(cand.nodes & bad)
        else:
            search.record(any(c in cand.nodes and set(needs.get(c, ())) <= cand.nodes for c in culprits))
    return search, calls


def polygraphy_bisect_calls(n: int, upstream: int) -> int:
    return math.ceil(math.log2(n)) + math.ceil(math.log2(max(upstream, 1)))


@pytest.mark.parametrize("n", [200, 1000])
@pytest.mark.parametrize("where", [0, 1, 0.37, -1])
@pytest.mark.parametrize("mode", ["mark", "prefix"])
def test_chain_finds_the_single_culprit_within_polygraphys_budget(n, where, mode):
    k = int(where * n) if isinstance(where, float) else where % n
    search, calls = drive(chain(n), [k], can_mark=(mode == "mark"))
    assert search.failed is True
    assert [(c.node, c.introduced) for c in search.culprits] == [(k, True)]
    assert search.reduced == frozenset({k}) and search.reduced_verified
    # confirm + ⌈log2 N⌉ + "alone": never more than Polygraphy's bisect on the same chain
    assert calls <= math.ceil(math.log2(n)) + 2
    assert calls <= polygraphy_bisect_calls(n, k + 1) or k < 4


def test_clean_model_stops_after_one_check():
    search, calls = drive(chain(50), [])
    assert search.failed is False and calls == 1 and not search.culprits


@pytest.mark.parametrize("mode", [dict(can_mark=True), dict(can_mark=True, mark_all=True), dict(can_mark=False)])
@pytest.mark.parametrize("culprits", [[7], [15], [7, 15]])
def test_independent_branches(mode, culprits):
    dag = two_branches(10)  # branch a: 1..10, branch b: 11..20
    search, calls = drive(dag, culprits, **mode)
    assert sorted(c.node for c in search.culprits) == culprits
    assert search.reduced == frozenset(culprits)  # nothing from the other branch, no stem, no join
    assert all(c.introduced for c in search.culprits)


def test_mark_all_needs_one_marking_run():
    search, calls = drive(chain(300), [123], can_mark=True, mark_all=True)
    assert [c.node for c in search.culprits] == [123]
    assert calls == 3  # confirm, mark everything, alone


@pytest.mark.parametrize("can_mark", [True, False])
def test_contextual_fault_grows_through_ancestors_only(can_mark):
    # node 60 of branch b fails only together with its two nearest ancestors
    dag = two_branches(40)  # branch b: 41..80
    search, calls = drive(dag, [60], needs={60: {58, 59}}, can_mark=can_mark)
    (c,) = search.culprits
    assert c.node == 60 and not c.introduced
    assert c.subgraph == frozenset({58, 59, 60})
    assert search.reduced == frozenset({58, 59, 60}) and search.reduced_verified


def test_culprit_downstream_of_another_is_not_blamed():
    search, _ = drive(chain(40), [10, 30])
    assert [c.node for c in search.culprits] == [10]


def test_record_without_candidate_is_an_error():
    with pytest.raises(RuntimeError):
        Search(chain(3)).record(True)


def test_dag_rejects_non_topological_order():
    with pytest.raises(ValueError):
        Dag.build([[1], []], [0])


def _random_dag(rng: random.Random, n: int) -> Dag:
    preds = [sorted(rng.sample(range(i), k=min(i, rng.choice([1, 1, 2, 3])))) if i else [] for i in range(n)]
    has_succ = {p for ps in preds for p in ps}
    return Dag.build(preds, [i for i in range(n) if i not in has_succ])


@pytest.mark.parametrize("seed", range(40))
def test_random_dags_find_every_independent_culprit(seed):
    rng = random.Random(seed)
    dag = _random_dag(rng, rng.randint(5, 120))
    culprits: list[int] = []
    for c in rng.sample(range(dag.n), k=min(dag.n, 4)):
        related = any(c in dag.descendants([o]) or o in dag.descendants([c]) for o in culprits)
        if not related:
            culprits.append(c)
    for mode in (dict(can_mark=True), dict(can_mark=True, mark_all=True), dict(can_mark=False)):
        search, calls = drive(dag, culprits, **mode)
        assert sorted(c.node for c in search.culprits) == sorted(culprits), mode
        assert search.reduced == frozenset(culprits)
        # roughly a bisection per culprit, never a linear scan
        assert calls <= 3 + len(culprits) * (math.ceil(math.log2(dag.n)) + 3)


# --- marking noise: suffix cuts -------------------------------------------------------------

def drive_noisy(dag: Dag, culprits, needs=None, *, noisy=True, marks_see=True, **kw):
    """The fake oracle of a backend whose marked tensors cannot be trusted: ``noisy`` is its
    answer to the noise question; with ``marks_see=False`` no marked tensor ever diverges
    (the imgly case: marking changes what is computed, and the marked run matches)."""
    needs = needs or {}
    bad = dag.descendants(list(culprits))
    search = Search(dag, measure_noise=True, **kw)
    calls, asked = 0, []
    while (cand := search.next_candidate()) is not None:
        key = (cand.kind, cand.nodes)
        assert key not in asked, f"asked twice: {cand.purpose}"
        asked.append(key)
        calls += 1
        if cand.kind == "noise":
            search.record(noisy)
        elif cand.kind == "mark":
            sinks_only = cand.nodes == dag.sinks
            search.record(cand.nodes & bad if (marks_see or sinks_only) else frozenset())
        else:
            search.record(any(c in cand.nodes and set(needs.get(c, ())) <= cand.nodes for c in culprits))
    return search, calls, asked


@pytest.mark.parametrize("n, k", [(200, 0), (200, 77), (1000, 999), (64, 31)])
def test_noisy_marking_bisects_suffixes_in_logarithmic_calls(n, k):
    search, calls, asked = drive_noisy(chain(n), [k])
    assert search.noisy is True and search.localized_by == "suffix" and search.fallback == "marking tensors moves the outputs"
    assert [(c.node, c.introduced, c.found_by) for c in search.culprits] == [(k, True, "suffix")]
    assert search.reduced == frozenset({k}) and search.reduced_verified
    assert not any(kind == "mark" for kind, nodes in asked[1:])  # nothing marked after the confirmation
    # confirm, noise, ⌈log2 N⌉ suffixes, "alone", "is anything else failing"
    assert calls <= 2 + math.ceil(math.log2(n)) + 2


def test_quiet_marking_keeps_the_marked_search():
    search, calls, asked = drive_noisy(chain(100), [40], noisy=False)
    assert search.noisy is False and search.localized_by == "mark" and not search.fallback
    assert [c.node for c in search.culprits] == [40]


@pytest.mark.parametrize("mark_all", [False, True])
def test_marks_that_all_match_fall_back_to_suffixes(mark_all):
    """Quiet by the measurement, yet no marked tensor diverges: never 'unlocalized'."""
    search, _, _ = drive_noisy(chain(50), [20], noisy=False, marks_see=False, mark_all=mark_all)
    assert search.localized_by == "suffix" and "no marked tensor diverges" in search.fallback
    assert [(c.node, c.introduced) for c in search.culprits] == [(20, True)]


def test_a_node_that_fails_only_with_what_follows_it_grows_downstream():
    # node 30 diverges only when its two consumers run too (a backend choosing its precision by them)
    search, _, _ = drive_noisy(chain(60), [30], needs={30: {31, 32}})
    (c,) = search.culprits
    assert (c.node, c.introduced, c.downstream) == (30, False, 2)
    assert c.subgraph == frozenset({30, 31, 32}) and search.reduced == c.subgraph and search.reduced_verified


def test_suffix_cuts_find_a_culprit_behind_another():
    # a downstream culprit introduces its own error: with the first one fed, it is still found
    search, _, _ = drive_noisy(chain(40), [10, 30])
    assert sorted(c.node for c in search.culprits) == [10, 30]


def test_suffix_cuts_stop_after_a_bounded_number_of_culprits():
    from surgeon.debug.bisect.strategy import MAX_SUFFIX_SUSPECTS

    culprits = list(range(0, 60, 5))  # twelve culprits
    search, calls, _ = drive_noisy(chain(60), culprits)
    assert len(search.culprits) == MAX_SUFFIX_SUSPECTS and "stopped after" in search.fallback
    assert calls < 2 + MAX_SUFFIX_SUSPECTS * (math.ceil(math.log2(60)) + 3)


@pytest.mark.parametrize("seed", range(25))
def test_random_dags_in_suffix_mode_find_every_independent_culprit(seed):
    rng = random.Random(1000 + seed)
    dag = _random_dag(rng, rng.randint(5, 120))
    culprits: list[int] = []
    for c in rng.sample(range(dag.n), k=min(dag.n, 3)):
        if not any(c in dag.descendants([o]) or o in dag.descendants([c]) for o in culprits):
            culprits.append(c)
    search, calls, _ = drive_noisy(dag, culprits)
    assert sorted(c.node for c in search.culprits) == sorted(culprits)
    assert search.reduced == frozenset(culprits)
    assert calls <= 3 + len(culprits) * (math.ceil(math.log2(dag.n)) + 3)
