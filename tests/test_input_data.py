"""Input samples of every ONNX type, fed to ONNX Runtime; integer ranges inferred from uses; fit checks.

Each element type gets a tiny model (Cast to float, plus Identity where ORT has one for
that type), so feeding and reading back through ONNX Runtime is checked for real.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto as TP
from onnx import helper, numpy_helper

from helpers import model_from_text
from surgeon import backends, input_data, input_ranges
from surgeon.errors import BackendError, InputDataError

ml_dtypes = pytest.importorskip("ml_dtypes", reason="ml_dtypes (an onnx dependency) carries bfloat16/float8/int4")


def _model(nodes, inputs, outputs, inits=(), opset=21, ir=10):
    m = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, list(inits)),
                          opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = ir
    onnx.checker.check_model(m, full_check=True)
    return m


def _run(model, feeds):
    return backends.create("onnxrt").session(model).run(feeds)


# --- every element type reaches ORT with the right type ------------------------------------------------------------

EXOTIC = [("BFLOAT16", "bfloat16"), ("FLOAT8E4M3FN", "float8_e4m3fn"), ("FLOAT8E4M3FNUZ", "float8_e4m3fnuz"),
          ("FLOAT8E5M2", "float8_e5m2"), ("FLOAT8E5M2FNUZ", "float8_e5m2fnuz")]


@pytest.mark.parametrize("elem,np_name", EXOTIC)
def test_float8_and_bfloat16_reach_ort_and_come_back_by_value(elem, np_name):
    t = getattr(TP, elem)
    m = _model([helper.make_node("Cast", ["x"], ["f"], to=TP.FLOAT), helper.make_node("Identity", ["x"], ["y"])],
               [helper.make_tensor_value_info("x", t, [3, 5])],
               [helper.make_tensor_value_info("f", TP.FLOAT, [3, 5]), helper.make_tensor_value_info("y", t, [3, 5])])
    feeds = input_data.make_samples(m, seed=1)[0]
    x = feeds["x"]
    assert x.dtype.name == np_name and x.shape == (3, 5)
    assert len(np.unique(x.astype(np.float32))) > 3  # really random, not zeros
    out = _run(m, feeds)
    # ORT cast the values it was given: equal to ml_dtypes' own widening, exactly.
    np.testing.assert_array_equal(out["f"], x.astype(np.float32))
    assert out["y"].dtype.name == np_name  # outputs of the type come back typed, not as raw uint8
    np.testing.assert_array_equal(out["y"].astype(np.float32), x.astype(np.float32))


@pytest.mark.parametrize("elem,np_name", [("INT4", "int4"), ("UINT4", "uint4"), ("INT2", "int2"), ("UINT2", "uint2")])
@pytest.mark.parametrize("shape", [[2, 3], [5]])  # an odd count: the last byte is partly used
def test_int4_and_int2_are_packed_for_ort_and_unpacked_back(elem, np_name, shape):
    t = getattr(TP, elem, None)
    if t is None:
        pytest.skip(f"this onnx has no TensorProto.{elem}")
    m = _model([helper.make_node("Cast", ["x"], ["f"], to=TP.FLOAT), helper.make_node("Cast", ["f"], ["y"], to=t)],
               [helper.make_tensor_value_info("x", t, shape)],
               [helper.make_tensor_value_info("f", TP.FLOAT, shape), helper.make_tensor_value_info("y", t, shape)],
               opset=25, ir=11)
    x = input_data.make_samples(m, seed=0)[0]["x"]
    assert x.dtype.name == np_name and x.shape == tuple(shape)
    info = ml_dtypes.iinfo(x.dtype)
    assert len(set(x.astype(np.int32).ravel().tolist())) > 1 and info.min <= x.astype(np.int32).min()
    out = _run(m, {"x": x})
    np.testing.assert_array_equal(out["f"], x.astype(np.float32))
    assert out["y"].dtype.name == np_name and out["y"].shape == tuple(shape)
    np.testing.assert_array_equal(out["y"].astype(np.int32), x.astype(np.int32))


def test_float8_e8m0_scales_reach_ort():
    t = getattr(TP, "FLOAT8E8M0", None)
    if t is None:
        pytest.skip("this onnx has no TensorProto.FLOAT8E8M0")
    m = _model([helper.make_node("Cast", ["x"], ["f"], to=TP.FLOAT)], [helper.make_tensor_value_info("x", t, [6])],
               [helper.make_tensor_value_info("f", TP.FLOAT, [6])], opset=25, ir=11)
    x = input_data.make_samples(m, seed=0)[0]["x"]
    assert x.dtype.name == "float8_e8m0fnu" and (x.astype(np.float32) > 0).all()  # powers of two: no zeros, no NaN
    np.testing.assert_array_equal(_run(m, {"x": x})["f"], x.astype(np.float32))


@pytest.mark.parametrize("elem", ["FLOAT", "DOUBLE", "FLOAT16", "INT8", "UINT8", "INT16", "UINT16", "INT32", "INT64",
                                  "UINT32", "UINT64", "BOOL", "STRING"])
def test_numpy_types_and_strings_round_trip_through_ort(elem):
    t = getattr(TP, elem)
    m = _model([helper.make_node("Identity", ["x"], ["y"])], [helper.make_tensor_value_info("x", t, [2, 4])],
               [helper.make_tensor_value_info("y", t, [2, 4])])
    x = input_data.make_samples(m, seed=3)[0]["x"]
    assert x.shape == (2, 4)
    y = _run(m, {"x": x})["y"]
    assert list(y.ravel()) == list(x.ravel()) and (y.dtype == x.dtype or elem == "STRING")


# --- sequences, optionals, maps ---------------------------------------------------------------------------------

def _seq_model():
    seq = helper.make_sequence_type_proto(helper.make_tensor_type_proto(TP.FLOAT, ["N", 3]))
    return _model([helper.make_node("ConcatFromSequence", ["s"], ["y"], axis=0), helper.make_node("SequenceAt", ["s", "pos"], ["at"])],
                  [helper.make_value_info("s", seq), helper.make_tensor_value_info("pos", TP.INT64, [])],
                  [helper.make_tensor_value_info("y", TP.FLOAT, ["M", 3]), helper.make_tensor_value_info("at", TP.FLOAT, ["N", 3])],
                  opset=17, ir=8)


def test_sequence_input_gets_a_list_of_tensors_and_a_valid_position():
    m = _seq_model()
    samples, note = input_data.verification_samples(m, None, 0, lambda f: _runs(m, f))
    assert note is None and len(samples) == 2  # two sizes of N
    for s in samples:
        assert isinstance(s["s"], list) and len(s["s"]) == input_data.SEQUENCE_LENGTH
        n = s["s"][0].shape[0]
        assert all(e.shape == (n, 3) and e.dtype == np.float32 for e in s["s"])
        assert -input_data.SEQUENCE_LENGTH <= int(s["pos"]) < input_data.SEQUENCE_LENGTH
        out = _run(m, s)
        np.testing.assert_array_equal(out["y"], np.concatenate(s["s"]))
        np.testing.assert_array_equal(out["at"], s["s"][int(s["pos"])])
    assert samples[0]["s"][0].shape[0] != samples[1]["s"][0].shape[0]


def _runs(model, feeds):
    try:
        _run(model, feeds)
        return True
    except BackendError:
        return False


@pytest.mark.parametrize("inner", ["tensor", "sequence"])
def test_optional_inputs_are_sampled_present_and_absent(inner):
    elem = helper.make_tensor_type_proto(TP.FLOAT, [4])
    if inner == "sequence":
        elem = helper.make_sequence_type_proto(elem)
    typ = helper.make_optional_type_proto(elem)
    m = _model([helper.make_node("OptionalHasElement", ["x"], ["has"]), helper.make_node("Identity", ["x"], ["y"])],
               [helper.make_value_info("x", typ)],
               [helper.make_tensor_value_info("has", TP.BOOL, []), helper.make_value_info("y", typ)], opset=18, ir=8)
    samples, note = input_data.verification_samples(m, None, 0, lambda f: _runs(m, f))
    assert note is None and len(samples) == 2
    present, absent = samples
    assert present["x"] is not None and absent["x"] is None
    assert bool(_run(m, present)["has"]) is True
    out = _run(m, absent)
    assert bool(out["has"]) is False and out["y"] is None


def test_absent_optional_sample_is_dropped_when_the_model_cannot_run_without_it():
    typ = helper.make_optional_type_proto(helper.make_tensor_type_proto(TP.FLOAT, [4]))
    m = _model([helper.make_node("OptionalGetElement", ["x"], ["y"])], [helper.make_value_info("x", typ)],
               [helper.make_tensor_value_info("y", TP.FLOAT, [4])], opset=18, ir=8)
    samples, note = input_data.verification_samples(m, None, 0, lambda f: _runs(m, f))
    assert len(samples) == 1 and samples[0]["x"] is not None


def test_make_samples_string_and_map_values():
    spec = input_data.spec_from_type("m", helper.make_map_type_proto(TP.STRING, helper.make_tensor_type_proto(TP.FLOAT, [])))
    value = input_data.random_value(spec, {}, {}, np.random.default_rng(0))
    assert isinstance(value, dict) and len(value) == 3 and all(isinstance(v, float) for v in value.values())


def test_same_seed_same_data_for_exotic_types():
    m = _model([helper.make_node("Cast", ["x"], ["f"], to=TP.FLOAT)], [helper.make_tensor_value_info("x", TP.BFLOAT16, [8])],
               [helper.make_tensor_value_info("f", TP.FLOAT, [8])])
    a, b = input_data.make_samples(m, seed=5)[0]["x"], input_data.make_samples(m, seed=5)[0]["x"]
    c = input_data.make_samples(m, seed=6)[0]["x"]
    assert np.array_equal(a.view(np.uint16), b.view(np.uint16)) and not np.array_equal(a.view(np.uint16), c.view(np.uint16))


# --- integer ranges inferred from uses ----------------------------------------------------------------------------

EMBED = """
<ir_version: 8, opset_import: ["" : 17]>
g (int64[B, T] ids, int64[2] shape, int64[1] axes, int64[K] pos) => (float[B, T, 8] e, float[?, ?, ?] u, float[B, K, 8] p)
  <float[1, 8] table = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0}> {
  e = Gather (table, ids)
  r = Reshape (e, shape)
  u = Unsqueeze (r, axes)
  one = Constant <value = int64 {1}> ()
  p1 = Add (pos, one)
  p = Gather <axis = 1> (e, p1)
}
"""


def _embed_model():
    """EMBED with a 1000-row embedding table."""
    m = model_from_text(EMBED)
    table = np.random.default_rng(0).uniform(-1, 1, (1000, 8)).astype(np.float32)
    m.graph.initializer[0].CopyFrom(numpy_helper.from_array(table, "table"))
    return m


def test_embedding_ids_stay_inside_the_table_and_other_roles_get_valid_values():
    m = _embed_model()
    samples, note = input_data.verification_samples(m, None, 0, lambda f: _runs(m, f))
    assert note is None and len(samples) == 2
    for s in samples:
        t = s["ids"].shape[1]
        assert 0 <= s["ids"].min() and s["ids"].max() < 1000
        assert s["ids"].max() > 4  # drawn over the table, not the old 1..4 default
        assert s["shape"].tolist() == [1, -1]  # valid for any element count
        assert -3 <= int(s["axes"][0]) <= 2  # Unsqueeze of a rank-2 tensor: output rank 3
        assert (s["pos"] + 1).min() >= 0 and (s["pos"] + 1).max() < t  # through Add(+1): still inside axis 1
        _run(m, s)


def test_constraint_details_for_a_gather_and_a_negative_allowing_range():
    m = _embed_model()
    c = input_ranges.infer_constraints(m, {"ids": (2, 5), "shape": (2,), "axes": (1,), "pos": (3,)})
    assert (c["ids"].valid_lo, c["ids"].valid_hi) == (-1000, 999)  # Gather accepts negative indices
    assert "Gather" in c["ids"].why[0] and "1000" in c["ids"].why[0]
    assert (c["pos"].valid_lo, c["pos"].valid_hi) == (-6, 3)  # -5..4 on axis 1 (T=5), shifted by the +1
    assert c["shape"].exact == (1, -1)


def test_labels_of_a_loss_never_negative():
    m = model_from_text("""
    <ir_version: 8, opset_import: ["" : 13]>
    g (float[N, 7] x, int64[N] t) => (float[N] loss) {
      loss = NegativeLogLikelihoodLoss <reduction = "none"> (x, t)
    }""")
    c = input_ranges.infer_constraints(m, {"x": (4, 7), "t": (4,)})
    assert (c["t"].lo, c["t"].hi, c["t"].valid_lo) == (0, 6, 0)


def test_axes_are_distinct_and_within_the_rank():
    m = model_from_text("""
    <ir_version: 8, opset_import: ["" : 13]>
    g (float[2, 3, 4, 5] x, int64[3] axes) => (float[?, ?, ?, ?] y) {
      y = ReduceSum <keepdims = 1> (x, axes)
    }""")
    for seed in range(5):
        s = input_data.make_samples(m, seed=seed)[0]
        axes = s["axes"].tolist()
        assert len(set(axes)) == 3 and all(0 <= a < 4 for a in axes)
        _run(m, s)


def test_squeeze_axes_pick_dims_of_size_one_or_say_why_not():
    ok = model_from_text("""
    <ir_version: 8, opset_import: ["" : 13]>
    g (float[3, 1, 4, 1] x, int64[2] axes) => (float[3, 4] y) {
      y = Squeeze (x, axes)
    }""")
    assert input_data.make_samples(ok)[0]["axes"].tolist() == [1, 3]
    bad = model_from_text("""
    <ir_version: 8, opset_import: ["" : 13]>
    g (float[3, 2, 4] x, int64[1] axes) => (float[?, ?] y) {
      y = Squeeze (x, axes)
    }""")
    c = input_ranges.infer_constraints(bad, {"x": (3, 2, 4), "axes": (1,)})["axes"]
    assert c.problem and "0 dims of size 1" in c.problem


def test_shape_reached_through_concat_is_reported_not_guessed():
    m = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[6, 4] x, int64[1] d) => (float[?, ?] y) {
      c = Constant <value = int64[1] {-1}> ()
      shape = Concat <axis = 0> (d, c)
      y = Reshape (x, shape)
    }""")
    samples, note = input_data.verification_samples(m, None, 0, lambda f: _runs(m, f))
    assert samples == [] or all(_runs(m, s) for s in samples)
    problems = input_data.input_problems(m)
    assert len(problems) == 1 and "input 'd'" in problems[0] and "Concat" in problems[0] and "exact value" in problems[0]


def test_a_model_that_cannot_get_valid_integers_says_which_input_and_why():
    m = model_from_text("""
    <ir_version: 8, opset_import: ["" : 13]>
    g (float[3, 2, 4] x, int64[1] axes) => (float[?, ?] y) {
      y = Squeeze (x, axes)
    }""")
    samples, note = input_data.verification_samples(m, None, 0, lambda f: _runs(m, f))
    assert samples == []
    assert "no valid sample could be made" in note and "input 'axes'" in note and "Squeeze" in note
    assert "has 0 dims of size 1 and 1 are needed" in note


@pytest.mark.parametrize("shape,attrs", [
    ([1, 5, 5], ""), ([1, 4, 5], "<dilations = [1, 5]>"), ([1, 5, 15], "<pads = [0, 1, 0, 1]>"),
    ([1, 9, 4], "<strides = [2, 2]>"), ([2, 12, 6], ""),
])
def test_col2im_gets_an_image_and_block_shape_that_fit_its_input(shape, attrs):
    m = model_from_text(f"""
    <ir_version: 8, opset_import: ["" : 18]>
    g (float[{shape[0]}, {shape[1]}, {shape[2]}] x, int64[2] image_shape, int64[2] block_shape) => (float[?, ?, ?, ?] y) {{
      y = Col2Im {attrs} (x, image_shape, block_shape)
    }}""")
    s = input_data.make_samples(m)[0]
    y = _run(m, s)["y"]
    block = int(np.prod(s["block_shape"]))
    assert y.shape == (shape[0], shape[1] // block, *s["image_shape"].tolist())


def test_user_value_range_wins_over_the_inferred_one():
    m = _embed_model()
    s = input_data.make_samples(m, input_shapes={"ids": (2, 6), "pos": (2,)}, value_ranges={"ids": (3, 3)})[0]
    assert set(s["ids"].ravel().tolist()) == {3}


def test_float_roles_get_valid_values_too():
    m = model_from_text("""
    <ir_version: 8, opset_import: ["" : 11]>
    g (int64[4] idx, float[1] depth, float[2] values) => (float[4, ?] y) {
      y = OneHot (idx, depth, values)
    }""")
    s = input_data.make_samples(m)[0]
    assert 2 <= float(s["depth"][0]) <= 8
    _run(m, s)


# --- loaded samples that do not fit the model ---------------------------------------------------------------------

FIT = """
<ir_version: 8, opset_import: ["" : 17]>
g (int64[B, 4] ids, float[B, 3] x) => (float[B, 4, 2] e, float[B, 3] y)
  <float[10, 2] table = {0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0, 16.0, 17.0, 18.0, 19.0}> {
  e = Gather (table, ids)
  y = Identity (x)
}
"""


def _good():
    return {"ids": np.array([[0, 1, 2, 9]], dtype=np.int64), "x": np.zeros((1, 3), np.float32)}


@pytest.mark.parametrize("change,needle", [
    (lambda s: s.pop("x"), "no data for input 'x'"),
    (lambda s: s.update(X=s.pop("x")), "names 'X', which is not an input"),
    (lambda s: s.update(x=s["x"].astype(np.float64)), "input 'x' is float64, but 'm.onnx' expects float32"),
    (lambda s: s.update(x=s["x"][0]), "input 'x' has rank 1"),
    (lambda s: s.update(x=np.zeros((1, 5), np.float32)), "size 5 on axis 1"),
    (lambda s: s.update(ids=np.array([[0, 1, 2, 10]])), "input 'ids' holds values in [0, 10]"),
    (lambda s: s.update(x=[s["x"]]), "is a sequence, but 'm.onnx' expects a tensor"),
])
def test_samples_that_do_not_fit_are_one_line_errors(change, needle):
    m = model_from_text(FIT)
    sample = _good()
    input_data.check_feeds(m, [sample], "'m.onnx'", run=True)  # the good sample fits and runs
    change(sample)
    with pytest.raises(InputDataError) as err:
        input_data.check_feeds(m, [sample], "'m.onnx'", run=True)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_out_of_range_message_names_expected_and_given():
    m = model_from_text(FIT)
    bad = {"ids": np.array([[0, 1, 2, 12]], dtype=np.int64), "x": np.zeros((1, 3), np.float32)}
    with pytest.raises(InputDataError, match=r"holds values in \[0, 12\], but 'm.onnx' needs values in \[-10, 9\]"):
        input_data.check_feeds(m, [bad], "'m.onnx'")


def test_a_sample_the_model_cannot_run_on_is_an_input_error():
    m = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N, 4] x, int64[2] shape) => (float[?, ?] y) {
      y = Reshape (x, shape)
    }""")
    bad = {"x": np.zeros((2, 4), np.float32), "shape": np.array([3, 3], np.int64)}
    with pytest.raises(InputDataError, match="cannot run on the input data") as err:
        input_data.check_feeds(m, [bad], "'r.onnx'", run=True)
    assert "\n" not in str(err.value)
    input_data.check_feeds(m, [bad], "'r.onnx'")  # without the run only the structure is checked


def test_raw_bytes_from_np_save_are_read_as_the_model_type():
    m = _model([helper.make_node("Cast", ["x"], ["f"], to=TP.FLOAT)], [helper.make_tensor_value_info("x", TP.BFLOAT16, [3])],
               [helper.make_tensor_value_info("f", TP.FLOAT, [3])])
    x = np.array([1.5, -2.0, 0.25], dtype=ml_dtypes.bfloat16)
    raw = x.view(np.dtype("V2"))  # what np.load gives back for an np.save'd bfloat16 array
    with pytest.raises(InputDataError, match=r"is float32, but the model expects bfloat16 \(numpy has no bfloat16: "
                                             r"write it with ml_dtypes"):
        input_data.check_feeds(m, [{"x": x.astype(np.float32)}])
    fitted = input_data.check_feeds(m, [{"x": raw}], run=True)[0]["x"]
    assert fitted.dtype.name == "bfloat16"
    np.testing.assert_array_equal(_run(m, {"x": fitted})["f"], [1.5, -2.0, 0.25])


def test_sequences_are_checked_elementwise():
    m = _seq_model()
    good = {"s": [np.zeros((2, 3), np.float32)] * 2, "pos": np.array(1, np.int64)}
    input_data.check_feeds(m, [good], run=True)
    with pytest.raises(InputDataError, match=r"input 's'\[1\] is float64, but the model expects float32"):
        input_data.check_feeds(m, [{"s": [np.zeros((2, 3), np.float32), np.zeros((2, 3))], "pos": good["pos"]}])
    with pytest.raises(InputDataError, match="input 's' is a tensor .*expects a sequence"):
        input_data.check_feeds(m, [{"s": np.zeros((2, 3), np.float32), "pos": good["pos"]}])
    with pytest.raises(InputDataError, match=r"input 'pos' holds values in \[5, 5\].*\[-2, 1\]"):
        input_data.check_feeds(m, [{"s": good["s"], "pos": np.array(5, np.int64)}])


def test_loop_carried_index_is_bounded_by_a_gather_in_the_body():
    body = helper.make_graph(
        [helper.make_node("Gather", ["table", "idx_in"], ["g"]), helper.make_node("Identity", ["idx_in"], ["idx_out"]),
         helper.make_node("Identity", ["cond_in"], ["cond_out"])], "body",
        [helper.make_tensor_value_info("i", TP.INT64, []), helper.make_tensor_value_info("cond_in", TP.BOOL, []),
         helper.make_tensor_value_info("idx_in", TP.INT64, [3])],
        [helper.make_tensor_value_info("cond_out", TP.BOOL, []), helper.make_tensor_value_info("idx_out", TP.INT64, [3]),
         helper.make_tensor_value_info("g", TP.FLOAT, [3, 4])])
    m = _model([helper.make_node("Loop", ["M", "", "idx"], ["idx_final", "gs"], body=body)],
               [helper.make_tensor_value_info("M", TP.INT64, []), helper.make_tensor_value_info("idx", TP.INT64, [3])],
               [helper.make_tensor_value_info("idx_final", TP.INT64, [3]), helper.make_tensor_value_info("gs", TP.FLOAT, [None, 3, 4])],
               [numpy_helper.from_array(np.zeros((7, 4), np.float32), "table")], opset=17, ir=8)
    c = input_ranges.infer_constraints(m, {"M": (), "idx": (3,)})
    assert (c["idx"].valid_lo, c["idx"].valid_hi) == (-7, 6) and (c["M"].lo, c["M"].hi) == (1, 3)
    for seed in range(3):
        s = input_data.make_samples(m, seed=seed)[0]
        assert 0 <= s["idx"].min() and s["idx"].max() <= 6
        assert _run(m, s)["gs"].shape == (int(s["M"]), 3, 4)


@pytest.mark.parametrize("text", [
    # cubic Resize only resizes the last two dims: sizes must keep N and C
    """<ir_version: 8, opset_import: ["" : 13]>
    g (float[1, 2, 4, 4] x, int64[4] sizes) => (float[?, ?, ?, ?] y) {
      roi = Constant <value = float[0] {}> ()
      sc = Constant <value = float[0] {}> ()
      y = Resize <mode = "cubic"> (x, roi, sc, sizes)
    }""",
    # Upsample's scales must be >= 1
    """<ir_version: 8, opset_import: ["" : 9]>
    g (float[1, 2, 4, 4] x, float[4] scales) => (float[?, ?, ?, ?] y) {
      y = Upsample <mode = "nearest"> (x, scales)
    }""",
])
def test_resize_like_inputs_get_values_the_kernel_accepts(text):
    m = model_from_text(text)
    s = input_data.make_samples(m)[0]
    y = _run(m, s)["y"]
    assert y.shape == (1, 2, 8, 8)


def test_bounds_through_a_partial_path_guide_generation_but_do_not_reject_data():
    # Only ids[:, :-1] reaches the Gather: the last column may hold anything (a pad id, say).
    m = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (int64[1, 4] ids) => (float[1, ?, 2] e)
      <float[10, 2] table = {0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0, 16.0, 17.0, 18.0, 19.0},
       int64[1] st = {0}, int64[1] en = {-1}, int64[1] ax = {1}> {
      head = Slice (ids, st, en, ax)
      e = Gather (table, head)
    }""")
    s = input_data.make_samples(m, seed=2)[0]
    assert 0 <= s["ids"].min() and s["ids"].max() <= 9  # generation still stays inside the table
    data = {"ids": np.array([[1, 2, 3, 999]], np.int64)}
    input_data.check_feeds(m, [data], run=True)  # not rejected: the model runs on it
    with pytest.raises(InputDataError, match="cannot run on the input data"):
        input_data.check_feeds(m, [{"ids": np.array([[1, 999, 3, 4]], np.int64)}], run=True)
