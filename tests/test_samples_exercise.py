"""Samples that exercise the model: masks, tested values, dims the weights fix, image-like inputs (issue 18)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import FIXTURES, model_from_text
from surgeon import backends, input_data, input_ranges


def _constraints(model: onnx.ModelProto, shapes: dict) -> dict:
    return input_ranges.infer_constraints(model, shapes)


MASKS = {
    "1 - x then * -big": """
      m = Cast <to = 1> (mask)
      inv = Sub (one, m)
      bias = Mul (inv, big)
      y = Add (x, bias)""",
    "x * -1e9 through Unsqueeze": """
      ax = Constant <value = int64[1] {1}> ()
      u = Unsqueeze (mask, ax)
      m = Cast <to = 1> (u)
      b = Mul (m, big)
      y = Add (x, b)""",
    "Where condition": """
      c = Cast <to = 9> (mask)
      y = Where (c, x, big)""",
    "compared with 0": """
      z = Constant <value = int64 {0}> ()
      c = Equal (mask, z)
      y = Where (c, big, x)""",
    "added to attention scores": """
      m = Cast <to = 1> (mask)
      s = Add (x, m)
      y = Softmax <axis = -1> (s)""",
}


@pytest.mark.parametrize("use", sorted(MASKS))
def test_mask_uses_give_zero_one_masks_with_both_values(use):
    model = model_from_text(f"""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[batch, seq] x, int64[batch, seq] mask) => (float[batch, seq] y) {{
      one = Constant <value = float {{1.0}}> ()
      big = Constant <value = float {{-3.4e38}}> ()
      {MASKS[use]}
    }}""")
    c = _constraints(model, {"x": (3, 8), "mask": (3, 8)})["mask"]
    assert c.mask and not c.problem, c.describe()
    for feeds in input_data.make_samples(model, iterations=3):
        mask = feeds["mask"]
        assert set(np.unique(mask)) == {0, 1}
        assert (mask[:, 0] == 1).all()  # every row keeps its first position: no row is all padding


def test_a_float_input_multiplying_activations_is_data_not_a_mask():
    model = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[4] x) => (float[4] y) { y = Mul (x, x) }""")
    assert "x" not in _constraints(model, {"x": (4,)})


def test_an_int_input_used_only_as_data_is_no_mask():
    model = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (int64[4] n) => (float[4] y) {
      f = Cast <to = 1> (n)
      two = Constant <value = float {2.0}> ()
      y = Mul (f, two)
    }""")
    assert "n" not in _constraints(model, {"n": (4,)})


@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(1, 7), min_size=1, max_size=3), st.integers(0, 2**31), st.sampled_from([np.int64, np.float32, np.bool_]))
def test_mask_array_rows_start_on_and_hold_both_values(shape, seed, dtype):
    mask = input_data.mask_array(np.dtype(dtype), tuple(shape), np.random.default_rng(seed))
    assert mask.shape == tuple(shape) and mask.dtype == np.dtype(dtype)
    flat = mask.reshape(-1, shape[-1]).astype(np.int64)
    assert (flat[:, 0] == 1).all()
    assert (np.diff(flat, axis=1) <= 0).all()  # ones, then zeros
    if shape[-1] >= 2:
        assert set(np.unique(flat)) == {0, 1}


def test_an_input_tested_by_equal_takes_the_tested_value():
    model = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[2] x, int64 sr) => (float[2] y) {
      k = Constant <value = int64 {16000}> ()
      c = Equal (sr, k)
      y = Where (c, x, x)
    }""")
    c = _constraints(model, {"x": (2,), "sr": ()})["sr"]
    assert c.choices == (16000,)
    assert int(input_data.make_samples(model)[0]["sr"]) == 16000


FIXED = {
    "LSTM W": ("fixtures", "evidence_lstm_feature_dim.onnx", {"feat": 26}),
    "Conv in-channels": ("fixtures", "evidence_conv_channels.onnx", {"chans": 5}),
}


@pytest.mark.parametrize("case", sorted(FIXED))
def test_dims_fixed_by_weights_are_read_from_the_graph(case):
    _, name, want = FIXED[case]
    model = onnx.load(str(FIXTURES / name))
    found = input_data.graph_sizes(model)
    assert {k: v[0] for k, v in found.items()} == want
    assert all(v[1] for v in found.values())  # each says why


@pytest.mark.parametrize("body,want", [
    ("y = MatMul (x, w)", {"k": 6}),  # MatMul against a weight
    ("y = Gemm <transB = 1> (x, wt)", {"k": 6}),
    ("r = Reshape (x, shape)\n      y = Identity (r)", {"k": 6}),  # an exporter's baked size: 4*6 = 24 elements
    ("y = Add (x, bias)", {"k": 6}),  # broadcast against a constant of that size
])
def test_more_weight_fixed_dims(body, want):
    ones = lambda n: ", ".join(["1.0"] * n)  # noqa: E731
    model = model_from_text(f"""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[4, k] x) => (float[4, ?] y) <float[6, 3] w = {{{ones(18)}}}, float[3, 6] wt = {{{ones(18)}}},
                                           int64[2] shape = {{2, 12}}, float[6] bias = {{{ones(6)}}}> {{
      {body}
    }}""")
    assert {k: v[0] for k, v in input_data.graph_sizes(model).items()} == want


def test_dims_no_weight_fixes_stay_free():
    model = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[n, k] x) => (float[n, k] y) { y = Relu (x) }""")
    assert input_data.graph_sizes(model) == {}


def test_weight_fixed_dims_reach_the_verifier_and_trt_check_profiles():
    from surgeon.debug.trt_check import profiles

    model = onnx.load(str(FIXTURES / "evidence_lstm_feature_dim.onnx"))
    session = backends.create("onnxrt").session(model)
    samples, note = input_data.verification_samples(model, None, 0, input_data.runs_on(session))
    assert note is None and [s["x"].shape[1] for s in samples] == [26, 26]
    assert len({s["x"].shape[0] for s in samples}) == 2  # the free dim still takes two sizes
    prof = profiles.build_profile(model, runs=input_data.runs_on(session))
    assert {shape[1] for shape in prof.inputs["x"]} == {26}
    guessed = profiles.build_profile(model)  # no ONNX Runtime: the guessed sizes use the weight's dim too
    assert {shape[1] for shape in guessed.inputs["x"]} == {26}


IMAGE = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[n, 3, h, w] x) => (float[n, 4] y) <float[4, 3, 3, 3] k = {%s}> {
  c = Conv <strides = [2, 2]> (x, k)
  y = ReduceMean <axes = [2, 3], keepdims = 0> (c)
}""" % ", ".join(f"{v:.3f}" for v in np.random.default_rng(0).normal(size=108))


def test_image_like_inputs_get_one_realistic_sample():
    model = model_from_text(IMAGE)
    session = backends.create("onnxrt").session(model)
    samples, _ = input_data.verification_samples(model, None, 0, input_data.runs_on(session))
    shapes = [s["x"].shape for s in samples]
    assert shapes[-1] == (1, 3, 224, 224) and all(s[2] < 224 for s in shapes[:-1])
    realistic = samples[-1]["x"]
    assert -1.0 <= realistic.min() and realistic.max() <= 1.0
    assert np.abs(np.diff(realistic, axis=3)).mean() < 0.2  # an image: mostly flat, with edges; noise is ~0.67


def test_static_image_inputs_get_no_extra_sample():
    model = model_from_text(IMAGE.replace("float[n, 3, h, w] x", "float[n, 3, 32, 32] x"))
    session = backends.create("onnxrt").session(model)
    samples, _ = input_data.verification_samples(model, None, 0, input_data.runs_on(session))
    assert [s["x"].shape for s in samples] == [(2, 3, 32, 32), (3, 3, 32, 32)]


@pytest.mark.parametrize("layout,shape", [("nchw", ("n", 3, "h", "w")), ("nhwc", ("n", "h", "w", 1)),
                                          (None, ("n", 16, "t", "f")), (None, ("n", 3, 8))])
def test_image_layout(layout, shape):
    assert input_data.image_layout(input_data.InputSpec("x", np.dtype(np.float32), shape)) == layout


def test_variants_leave_inputs_the_user_ranged_alone():
    model = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[2] a, float[2] b, int64[2] i) => (float[2] y) { y = Add (a, b) }""")
    labels = {v.label: v.ranges for v in input_data.variants(model, {"a": (5.0, 6.0)})}
    assert set(labels["float inputs in [0, 1]"]) == {"b"}
    assert set(labels["integer inputs in [0, 1]"]) == {"i"}
