"""The island search alone, with fake oracles (a predicate over node sets, no model runs):
a needed pair among many, the prior, islands, the call budget, a flaky oracle; then the
real emulation oracle on the branch fixture, where exactly the overflowing branch's nodes
may stay in FP32."""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from helpers import FIXTURES
from surgeon.precision import search as S
from surgeon.precision.oracle import CachedOracle, Judgement, OutputError


def chain(n: int) -> onnx.ModelProto:
    """x -> n0 -> n1 -> ... (Relu nodes named n0..n{n-1}): islands are runs of consecutive nodes."""
    nodes = [helper.make_node("Relu", ["x" if i == 0 else f"t{i - 1}"], [f"t{i}"], name=f"n{i}") for i in range(n)]
    g = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                          [helper.make_tensor_value_info(f"t{n - 1}", TensorProto.FLOAT, [2])])
    return helper.make_model(g)


class Fake(CachedOracle):
    """Meets the tolerance exactly when ``needed(kept)`` is true."""

    def __init__(self, needed, **kw):
        super().__init__(**kw)
        self.needed = needed

    def evaluate(self, kept):
        ok = bool(self.needed(kept))
        return Judgement(ok, [OutputError("y", ok, usage=0.5 if ok else 3.0)])


def run(n, needed, *, prior=(), ranking=None, max_calls=None):
    model = chain(n)
    labels = [f"n{i}" for i in range(n)]
    oracle = Fake(needed, max_calls=max_calls)
    result = S.search_islands(model, labels, labels, oracle, prior=list(prior), ranking=ranking or labels)
    return result, oracle


def test_a_needed_pair_among_64_is_found_and_is_1_minimal():
    needed = {"n7", "n50"}
    result, oracle = run(64, lambda k: needed <= k)
    assert result.status == S.MINIMAL and set(result.kept) == needed
    assert [i.nodes for i in result.islands] == [["n7"], ["n50"]]
    for node in needed:  # 1-minimal: each one removed misses
        assert not oracle.needed(set(result.kept) - {node})
    assert len(oracle.calls) < 64  # fewer than one call per node


def test_a_right_prior_is_confirmed_in_a_few_calls():
    needed = {"n10", "n11"}
    result, oracle = run(200, lambda k: needed <= k, prior=["n10", "n11"], ranking=["n10", "n11"] + [f"n{i}" for i in range(200) if i not in (10, 11)])
    assert set(result.kept) == needed and result.status == S.MINIMAL
    assert result.phases[1]["phase"] == "prior" and result.phases[1]["met"] is True
    assert len(oracle.calls) <= 6  # 2 preconditions, the prior, 2 ddmin halves, the confirmation


def test_a_wrong_prior_falls_back_to_prefix_bisection_over_the_ranking():
    needed = {"n3", "n90"}
    ranking = ["n3", "n90"] + [f"n{i}" for i in range(100) if i not in (3, 90)]
    result, oracle = run(100, lambda k: needed <= k, prior=["n40"], ranking=["n40"] + [r for r in ranking if r != "n40"])
    assert set(result.kept) == needed
    assert [p["phase"] for p in result.phases][:3] == ["preconditions", "prior", "prefix bisect"]


def test_an_island_of_consecutive_nodes_is_reported_as_one():
    needed = {"n4", "n5", "n6"}
    result, _ = run(12, lambda k: needed <= k)
    assert [i.nodes for i in result.islands] == [["n4", "n5", "n6"]]
    assert result.islands[0].without is not None and not result.islands[0].without.passed


def test_nothing_to_keep_when_full_reduced_precision_meets():
    result, oracle = run(10, lambda k: True)
    assert result.status == S.NO_ISLANDS and result.kept == [] and len(oracle.calls) == 1


def test_unmeetable_tolerance_is_reported_not_searched():
    result, oracle = run(10, lambda k: False)
    assert result.status == "unmeetable" and len(oracle.calls) == 2


def test_budget_stop_returns_a_set_that_meets_and_says_not_minimal():
    needed = {f"n{i}" for i in range(0, 40, 3)}
    result, oracle = run(40, lambda k: needed <= k, max_calls=8)
    assert result.status == S.BUDGET and not result.minimal
    assert needed <= set(result.kept)  # whatever it returns meets the tolerance
    assert "not proven 1-minimal" in result.message
    assert result.final.passed


def test_a_flaky_oracle_is_reported_not_trusted():
    answers = {"count": 0}

    def needed(k):
        if k == frozenset({"n2"}):
            answers["count"] += 1
            return answers["count"] == 1  # meets once, misses on the uncached re-run
        return "n2" in k

    result, _ = run(8, needed)
    assert result.status == S.FLAKY


def test_islands_of_follows_dataflow_not_names():
    model = chain(5)
    labels = [f"n{i}" for i in range(5)]
    assert S.islands_of(model, labels, ["n4", "n0", "n1"]) == [["n0", "n1"], ["n4"]]


def test_overflow_in_one_branch_of_eight_keeps_exactly_that_branchs_overflowing_nodes():
    from surgeon import input_data
    from surgeon.precision.api import Fp16Options, convert_mixed_precision

    model = onnx.load(FIXTURES / "fp16" / "branches_overflow.onnx")
    samples = input_data.make_samples(model, iterations=2, seed=0)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        report = convert_mixed_precision(model, f"{tmp}/out.onnx", samples=samples,
                                         options=Fp16Options(atol=1e-2, rtol=1e-2, trt_check=False))
    # b5_scale2 makes the 9e4 tensor, b5_down reads it: both must be FP32, nothing else may be.
    assert sorted(report.kept) == ["b5_down", "b5_scale2"]
    assert report.status == S.MINIMAL and len(report.islands) == 1
    assert any("overflow" in w for w in report.islands[0].why)
    assert report.mixed.passed and report.ort is not None and report.ort.passed
    assert report.full is not None and not report.full.passed
    assert report.oracle_calls <= 8


def test_a_non_monotone_oracle_never_yields_an_unproven_claim():
    """Meets with {n1, n3} and with {n1, n2, n3, n4, n5}, but not with {n1, n2, n3}: inference
    from monotonicity can mislead ddmin; every claim of the result must still be a real verdict."""
    def needed(k):
        return {"n1", "n3"} <= k and not ({"n2"} <= k and "n4" not in k)

    result, oracle = run(8, needed)
    assert result.final.passed and needed(frozenset(result.kept))
    for node in result.kept:
        assert not needed(frozenset(result.kept) - {node})
