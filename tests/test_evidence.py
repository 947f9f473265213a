"""surgeon.evidence: which reference runs can show a difference, and the sentence that says why not."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import model_from_text
from surgeon import evidence


def _runs(*values, name="y"):
    return [{name: np.asarray(v, dtype=np.float32)} for v in values]


def test_nan_everywhere_is_not_evidence_and_says_so():
    refs = _runs(np.full((2, 4), np.nan), np.full((3, 4), np.nan))
    ev = evidence.assess(refs)
    assert not ev.conclusive
    assert ev.weak[0].kind == evidence.NONFINITE
    assert ev.summary() == "the reference is NaN on every sample"


def test_inf_and_nan_mixed_is_named_both():
    ev = evidence.assess(_runs([np.inf, np.nan], [-np.inf, np.nan]))
    assert ev.summary() == "the reference is NaN or Inf on every sample"


def test_partly_nan_output_is_evidence():
    ev = evidence.assess(_runs([np.nan, 1.0, 2.0], [0.5, np.nan, 3.0]))
    assert ev.conclusive and not ev.weak


def test_constant_within_tolerance_is_weak():
    # a saturated sigmoid: spread 2e-8, far below float32's atol 1e-4
    ev = evidence.assess(_runs(np.full((2, 3), 1e-8), np.full((2, 3), 3e-8)))
    assert not ev.conclusive
    assert ev.weak[0].kind == evidence.CONSTANT
    assert "constant" in ev.summary()
    # the same spread counts under a tolerance tighter than it
    assert evidence.assess(_runs(np.full((2, 3), 1e-8), np.full((2, 3), 3e-8)), atol=1e-9, rtol=0.0).conclusive


def test_blind_to_inputs_needs_samples_whose_inputs_differ():
    refs = _runs([1.0, 2.0], [1.0, 2.0])
    differ = [{"x": np.zeros(2, np.float32)}, {"x": np.ones(2, np.float32)}]
    same = [{"x": np.zeros(2, np.float32)}, {"x": np.zeros(2, np.float32)}]
    assert evidence.assess(refs, differ).weak[0].kind == evidence.BLIND
    assert evidence.assess(refs, same).conclusive  # identical inputs: identical outputs prove nothing either way
    assert evidence.assess(refs).conclusive  # without samples, blindness is not judged


def test_one_nan_output_blocks_although_another_is_informative():
    refs = [{"a": np.array([1.0, 2.0], np.float32), "b": np.full(2, np.nan, np.float32)},
            {"a": np.array([3.0, 4.0], np.float32), "b": np.full(2, np.nan, np.float32)}]
    ev = evidence.assess(refs)
    assert not ev.conclusive
    assert ev.summary() == "the reference's output 'b' is NaN on every sample"


def test_a_constant_label_next_to_informative_scores_is_a_note_not_a_failure():
    refs = [{"label": np.array([3, 3]), "scores": np.array([0.1, 0.7], np.float32)},
            {"label": np.array([3, 3, 3]), "scores": np.array([0.2, 0.5, 0.9], np.float32)}]
    ev = evidence.assess(refs)
    assert ev.conclusive
    assert [w.output for w in ev.weak] == ["label"]
    assert "label" in ev.notes()[0]


def test_non_tensor_outputs_are_not_assessed():
    refs = [{"seq": [np.zeros(2)], "y": np.array([1.0, 2.0])}, {"seq": [np.zeros(2)], "y": np.array([5.0, 2.0])}]
    assert evidence.assess(refs).assessed == ("y",)


def test_outputs_no_input_reaches_are_exempt():
    model = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[2] x) => (float[2] y, float[2] k) {
      c = Constant <value = float[2] {1.0, 2.0}> ()
      k = Identity (c)
      y = Add (x, c)
    }""")
    assert evidence.input_dependent_outputs(model) == {"y"}
    refs = _runs([1.0, 1.0], [1.0, 1.0], name="k")
    for r, v in zip(refs, ([0.0, 1.0], [2.0, 3.0])):
        r["y"] = np.array(v, np.float32)
    ev = evidence.assess(refs, dependent=evidence.input_dependent_outputs(model))
    assert ev.assessed == ("y",) and ev.conclusive


def test_outputs_reached_through_a_branch_body_depend_on_the_input():
    then = onnx.helper.make_graph([onnx.helper.make_node("Neg", ["x"], ["t"])], "then", [],
                                  [onnx.helper.make_tensor_value_info("t", onnx.TensorProto.FLOAT, [2])])
    other = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["c"], ["e"])], "else", [],
                                   [onnx.helper.make_tensor_value_info("e", onnx.TensorProto.FLOAT, [2])])
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("If", ["flag"], ["y"], then_branch=then, else_branch=other)], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2])],
        [onnx.numpy_helper.from_array(np.array(True), "flag"), onnx.numpy_helper.from_array(np.ones(2, np.float32), "c")])
    assert evidence.input_dependent_outputs(onnx.helper.make_model(graph)) == {"y"}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-1e3, 1e3, allow_nan=False, width=32), min_size=2, max_size=12),
       st.floats(1.0, 100.0))
def test_finite_outputs_that_spread_beyond_the_tolerance_are_never_weak(values, shift):
    a = np.asarray(values, np.float32)
    b = a + np.float32(shift)  # the second sample differs from the first everywhere, by more than atol + rtol|x|
    if np.ptp(np.concatenate([a, b])) <= 1e-4 + 1e-3 * np.abs(np.concatenate([a, b])).max():
        return
    ev = evidence.assess([{"y": a}, {"y": b}], [{"x": np.zeros(1)}, {"x": np.ones(1)}])
    assert ev.conclusive and not ev.weak


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.integers(1, 6), st.sampled_from([np.nan, np.inf, -np.inf]))
def test_all_nonfinite_outputs_are_never_evidence(rows, cols, bad):
    refs = _runs(np.full((rows, cols), bad), np.full((cols, rows), bad))
    ev = evidence.assess(refs)
    assert not ev.conclusive and ev.weak[0].kind == evidence.NONFINITE


@pytest.mark.parametrize("value", [np.array(["a", "a"], dtype=object), np.array(["a", "b"], dtype=object)])
def test_string_outputs(value):
    ev = evidence.assess([{"s": value}, {"s": value}])
    assert (not ev.conclusive) == bool(np.all(value == value[0]))
