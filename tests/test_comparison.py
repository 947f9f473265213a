"""The comparison rule on the types beyond numpy's own: float8/bfloat16 by value, int4 exactly,
sequences element by element, optionals by presence."""

from __future__ import annotations

import numpy as np
import pytest

from surgeon.comparison import DEFAULT_TOLERANCES, Tolerance, diff_outputs, diff_values, tolerance_for

ml_dtypes = pytest.importorskip("ml_dtypes", reason="ml_dtypes (an onnx dependency) carries bfloat16/float8/int4")


@pytest.mark.parametrize("name", ["bfloat16", "float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz"])
def test_low_precision_floats_compare_by_value(name):
    dt = np.dtype(getattr(ml_dtypes, name))
    ref = np.array([0.5, -1.0, 2.0, 0.0], dtype=dt)
    assert diff_values("y", ref, ref.copy(), tolerance_for(dt)).passed
    far = np.array([0.5, -1.0, 4.0, 0.0], dtype=dt)  # 2 -> 4: far beyond one step of any of these types
    d = diff_values("y", ref, far, tolerance_for(dt))
    assert not d.passed and d.mismatches == 1 and d.max_abs == pytest.approx(2.0)
    assert d.worst_index == [2]


def test_float8_default_tolerance_is_one_step():
    dt = np.dtype(ml_dtypes.float8_e4m3fn)
    atol, rtol = DEFAULT_TOLERANCES["float8_e4m3fn"]
    assert (atol, rtol) == (2.0 ** -9, 2.0 ** -3)
    ref = np.array([1.0], dtype=dt)
    one_up = np.array([1.125], dtype=dt)  # the next e4m3 value above 1.0
    two_up = np.array([1.25], dtype=dt)
    assert diff_values("y", ref, one_up, tolerance_for(dt)).passed
    assert not diff_values("y", ref, two_up, tolerance_for(dt)).passed


def test_int4_must_be_equal():
    dt = np.dtype(ml_dtypes.int4)
    ref = np.array([1, -2, 7], dtype=dt)
    assert tolerance_for(dt) == Tolerance(0.0, 0.0)
    assert diff_values("q", ref, ref.copy(), tolerance_for(dt)).passed
    assert not diff_values("q", ref, np.array([1, -2, 6], dtype=dt), tolerance_for(dt)).passed


def test_bfloat16_against_float32_is_a_dtype_difference_not_a_value_one():
    ref = np.array([1.0, 2.0], dtype=ml_dtypes.bfloat16)
    d = diff_values("y", ref, np.array([1.0, 2.0], dtype=np.float32), tolerance_for(ref.dtype))
    assert d.passed  # values agree; compare's judge reports the dtype change separately


def test_sequences_use_each_elements_own_tolerance():
    ref = {"s": [np.array([1.0], np.float16), np.array([3], np.int64)]}
    close = {"s": [np.array([1.004], np.float16), np.array([3], np.int64)]}  # within float16's 1e-2, not float32's
    off_int = {"s": [np.array([1.0], np.float16), np.array([4], np.int64)]}
    assert diff_outputs(ref, close)[0].passed
    d = diff_outputs(ref, off_int)[0]
    assert not d.passed and "s[1]" in d.reason
    short = {"s": [np.array([1.0], np.float16)]}
    assert "sequence length 1 differs from the reference 2" in diff_outputs(ref, short)[0].reason


def test_absent_optionals_match_only_absent_ones():
    assert diff_outputs({"o": None}, {"o": None})[0].passed
    d = diff_outputs({"o": None}, {"o": np.zeros(2, np.float32)})[0]
    assert not d.passed and "absent in the reference" in d.reason
    d = diff_outputs({"o": np.zeros(2, np.float32)}, {"o": None})[0]
    assert not d.passed and "absent in the test run" in d.reason


def test_global_tolerance_reaches_sequence_elements():
    ref = {"s": [np.array([1.0], np.float32)]}
    test = {"s": [np.array([1.05], np.float32)]}
    assert not diff_outputs(ref, test)[0].passed
    assert diff_outputs(ref, test, atol=0.1, rtol=0.0)[0].passed


def test_empty_outputs_match_whatever_their_shapes_but_not_a_non_empty_one():
    """A zero-trip Loop's scan output is [0] before a fold and [0, 2, 4] after it in ONNX Runtime."""
    empty = diff_outputs({"y": np.zeros((0,), np.float32)}, {"y": np.zeros((0, 2, 4), np.float32)})[0]
    assert empty.passed and "both empty" in empty.reason
    grown = diff_outputs({"y": np.zeros((0,), np.float32)}, {"y": np.zeros((1, 2), np.float32)})[0]
    assert not grown.passed and "differs from the reference" in grown.reason
