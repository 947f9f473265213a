"""The ddmin engine alone, with fake oracles (no models): single culprit, interacting pair,
independent culprits, no culprit, baseline failure, flaky oracle, resume cache."""

import itertools

import pytest

from surgeon.debug.isolate import ddmin as dd
from surgeon.debug.isolate.ddmin import Verdict, isolate


def needs(*culprits):
    """Fails when every one of ``culprits`` is applied (an interacting set when > 1)."""
    return lambda subset: Verdict.FAIL if set(culprits) <= set(subset) else Verdict.PASS


@pytest.mark.parametrize("culprit", [0, 17, 37, 63])
def test_single_culprit_among_64(culprit):
    r = isolate(64, needs(culprit))
    assert r.status == dd.CULPRITS
    assert r.culprit_sets == [(culprit,)]
    assert r.oracle_calls < 30  # one-at-a-time would need 64
    assert all(c.ok for c in r.confirmations)


@pytest.mark.parametrize("pair", [(3, 60), (31, 32), (0, 1)])
def test_interacting_pair_is_found_together(pair):
    r = isolate(64, needs(*pair))
    assert r.status == dd.CULPRITS
    assert r.culprit_sets == [pair]
    # 1-minimal: each member alone passes
    oracle = needs(*pair)
    assert all(oracle((i,)) == Verdict.PASS for i in pair)


def test_independent_culprits_are_reported_as_separate_sets():
    r = isolate(50, lambda s: Verdict.FAIL if (5 in s or 40 in s) else Verdict.PASS)
    assert r.status == dd.CULPRITS
    assert sorted(r.culprit_sets) == [(5,), (40,)]
    without = [c for c in r.confirmations if c.expected == Verdict.PASS]
    assert without and 5 not in without[0].subset and 40 not in without[0].subset


def test_no_culprit_means_no_divergence():
    r = isolate(20, lambda s: Verdict.PASS)
    assert r.status == dd.NO_DIVERGENCE and r.culprit_sets == []


def test_failure_without_any_choice_is_not_blamed_on_a_choice():
    r = isolate(20, lambda s: Verdict.FAIL)
    assert r.status == dd.BASELINE_FAILS and r.culprit_sets == []


def test_flaky_oracle_is_reported_as_such():
    counter = itertools.count()

    def flaky(subset):  # the culprit only shows every other time it is asked
        if 7 in subset:
            return Verdict.FAIL if next(counter) % 2 == 0 else Verdict.PASS
        return Verdict.PASS

    r = isolate(16, flaky, confirm_repeats=2)
    assert r.status == dd.FLAKY
    assert r.flaky_subsets
    assert "different verdicts" in r.message or "expected" in r.message


def test_unresolved_counts_as_not_failing():
    def oracle(subset):
        if set(subset) == {9, 10}:
            return Verdict.UNRESOLVED  # e.g. this candidate could not be built
        return Verdict.FAIL if 9 in subset else Verdict.PASS

    r = isolate(12, oracle)
    assert r.culprit_sets == [(9,)]
    assert any(c.verdict == Verdict.UNRESOLVED for c in r.calls)


def test_cache_answers_repeated_questions_and_resume_skips_calls():
    first = isolate(32, needs(11))
    seeded = {c.subset: c.verdict for c in first.calls if c.phase != "confirm"}
    second = isolate(32, needs(11), cache=seeded)
    assert second.culprit_sets == first.culprit_sets
    assert all(c.phase == "confirm" for c in second.calls)  # only the uncached confirmations ran


def test_ddmin_generator_is_a_pure_state_machine():
    search = dd.ddmin(range(8))
    first = next(search)
    assert first == (0, 1, 2, 3)
    assert search.send(Verdict.PASS) == (4, 5, 6, 7)
    assert search.send(Verdict.FAIL) == (4, 5)


def test_baselines_for_the_benchmark():
    assert dd.one_at_a_time(10, needs(4)) == ([4], 10)
    assert dd.one_at_a_time(10, needs(2, 6)) == ([], 10)  # blind to interactions
    assert dd.leave_one_out(10, needs(2, 6)) == ([2, 6], 10)
    last, calls = dd.prefix_bisect(64, needs(37))
    assert last == 37 and calls <= 7
