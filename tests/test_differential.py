"""Property-based differential test: random exporter-pattern graphs through the default pipeline.

The passes must be right on their own, so the pipeline runs with ``verify=False``
(``--no-verify``: numeric verification is the safety net, not the design) and the
judge in ``tests/differential.py`` compares the result with the original in ONNX
Runtime (optimizations off) on two samples, the second overriding every
initializer-backed input. Asserted: no wrong output, no interface change, no crash,
no refusal and no rollback. A bounded number of examples runs here; the long campaign
is ``bench/fuzz_fix.py`` (thousands of graphs, with shrinking and peers).
"""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import differential
import graphgen

EXAMPLES = 40  # about 10 s here; bench/fuzz_fix.py runs the long campaign


def _plans():
    """Plans drawn through hypothesis, so that a failure shrinks to fewer, simpler blocks."""
    block = st.tuples(st.sampled_from(sorted(graphgen.BLOCKS)), st.integers(0, 2**31 - 1))
    opset = st.integers(11, 21)
    dims = st.tuples(st.sampled_from(["N", 1, 2]), st.sampled_from([1, 2, 3, 4]), st.sampled_from(["H", 4, 5, 6]),
                     st.sampled_from(["W", 4, 6, 8]))
    return opset.flatmap(lambda o: st.tuples(
        st.just(o), st.integers(max(7, graphgen.MIN_IR[o]), 10),
        st.tuples(st.sampled_from([graphgen.F32, graphgen.F32, graphgen.F16]), dims),
        st.lists(block, min_size=1, max_size=6).map(tuple)))


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(_plans())
def test_default_pipeline_without_verification_keeps_the_function(plan):
    g = graphgen.build(plan)
    outcome = differential.judge(g.model, g.sizes, g.overrides, attribute=False)
    assert outcome.kind in ("ok", "rounding", "ort-noise"), f"{outcome.kind}: {outcome.detail} (plan {plan!r})"


def test_the_judge_sees_a_wrong_model():
    """The judge itself can fail: a model whose output is negated is a wrong output, a dropped default an interface change."""
    g = graphgen.build(graphgen.random_plan(random.Random(3)))
    feeds = differential.samples(g.model, g.sizes, g.overrides)
    ref = differential.run(g.model, feeds)
    negated = [{k: -v if v.dtype.kind == "f" else v + 1 for k, v in r.items()} for r in ref]
    assert differential.differs(ref, negated)
    assert differential.differs(ref, ref) is None
    plan = (17, 8, (graphgen.F32, ("N", 2, 4, 4)), (("initializer_input", 1),))
    g = graphgen.build(plan)
    assert g.overrides, "the plan has an initializer-backed input"
    dropped = type(g.model)()
    dropped.CopyFrom(g.model)
    del dropped.graph.input[1:]
    assert differential.interface(dropped) != differential.interface(g.model)
