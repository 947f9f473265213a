"""The mixed-precision converter: types, Casts only at island borders (merged, uniquely named),
weights, the interface, control flow, shape and quantization paths, and agreement with the
emulation the search measured."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
from onnx import TensorProto

from helpers import FIXTURES, model_from_text, run_ort
from surgeon.backends import fp16 as fp16_mod
from surgeon.precision.api import name_nodes
from surgeon.precision.convert import convert, feeds_for

F16, F32, BF16 = TensorProto.FLOAT16, TensorProto.FLOAT, TensorProto.BFLOAT16


def conv(model, keep=(), **kw):
    named, _, _ = name_nodes(model)
    precision = kw.pop("precision", "fp16")
    cls = fp16_mod.classify(named, precision)
    return named, cls, convert(named, cls, set(keep), **kw)


def types_of(model):
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    g = inferred.graph
    out = {vi.name: vi.type.tensor_type.elem_type for vi in (*g.input, *g.value_info, *g.output)}
    out.update({t.name: t.data_type for t in g.initializer})
    return out


def check_valid(model):
    onnx.checker.check_model(model, full_check=True)
    names = [n.name for n in model.graph.node]
    assert len(names) == len(set(names)) and all(names), "node names must be unique and set"
    outs = [o for n in model.graph.node for o in n.output]
    assert len(outs) == len(set(outs)), "every tensor is produced once"


def casts(model):
    return [n for n in model.graph.node if n.op_type == "Cast"]


def test_branch_fixture_island_gets_exactly_two_border_casts_and_matches_the_emulation():
    model = onnx.load(FIXTURES / "fp16" / "branches_overflow.onnx")
    named, cls, c = conv(model, {"b5_scale2", "b5_down"})
    out = c.model
    check_valid(out)
    t = types_of(out)
    # the island computes in float32, its neighbours in float16
    assert t["b5_big"] == F32 and t["b5_small"] == F32 and t["b5_a"] == F16 and t["b0_out"] == F16
    border = casts(out)
    assert len(border) == c.casts == 2
    assert sorted((n.input[0], n.attribute[0].i) for n in border) == [("b5_a", F32), ("b5_small", F16)]
    # k300 is read by b5_scale1 (FP16) and b5_scale2 (FP32): one float16 copy, the original kept
    assert c.weights_duplicated == ["k300"]
    assert t["w0"] == F16 and t["k1000"] == F32
    assert t["x"] == F16 and t["y"] == F16  # interface follows its readers / producer without --keep-io-types
    x = np.random.default_rng(0).uniform(-1, 1, (2, 16)).astype(np.float32)
    got = run_ort(out, feeds_for(out, {"x": x}))["y"].astype(np.float32)
    emulated, _ = fp16_mod.emulate(named, keep_nodes={"b5_scale2", "b5_down"})
    want = run_ort(emulated, {"x": x})["y"]
    ref = run_ort(model, {"x": x})["y"]
    np.testing.assert_allclose(got, ref, atol=2e-2, rtol=1e-2)  # FP16 everywhere else: float16 tolerances
    np.testing.assert_allclose(want, ref, atol=2e-2, rtol=1e-2)
    assert np.isfinite(got).all()


def test_keep_io_types_keeps_float32_interface_with_casts_at_it():
    model = onnx.load(FIXTURES / "fp16" / "branches_overflow.onnx")
    _, _, c = conv(model, set(), keep_io_types=True)
    check_valid(c.model)
    assert c.io_types == {"x": "FLOAT", "y": "FLOAT"}
    ops = Counter(n.op_type for n in c.model.graph.node)
    assert ops["Cast"] == 2  # x -> float16 once (shared by its readers), y back to float32


def test_shape_computations_stay_float32_and_untouched():
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N, 6] x) => (float[N, 3, 2] y) {
      w = Constant <value = float[6] {1, 2, 3, 4, 5, 6}> ()
      m = Mul (x, w)
      s = Shape (m)
      i = Constant <value = int64[1] {1}> ()
      d = Gather <axis = 0> (s, i)
      df = Cast <to = 1> (d)
      c3 = Constant <value = float {3.0}> ()
      half = Div (df, c3)
      hi = Cast <to = 7> (half)
      neg = Constant <value = int64[1] {-1}> ()
      three = Constant <value = int64[1] {3}> ()
      shp = Concat <axis = 0> (neg, three, hi)
      y = Reshape (m, shp)
    }"""
    model = model_from_text(text)
    _, cls, c = conv(model)
    check_valid(c.model)
    t = types_of(c.model)
    assert t["df"] == F32 and t["half"] == F32 and t["c3"] == F32  # shape math: float32, not converted
    assert t["m"] == F16 and t["w"] == F16
    assert not casts(c.model)[2:]  # the model's own two Casts only: nothing crosses a border
    x = np.arange(12, dtype=np.float32).reshape(2, 6)
    got = run_ort(c.model, feeds_for(c.model, {"x": x}))["y"]
    assert got.shape == (2, 3, 2)


def test_a_kept_cast_reading_float16_is_merged_and_an_identity_cast_removed():
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[4] x) => (int64[4] k, float[4] z) {
      a = Relu (x)
      k = Cast <to = 7> (a)
      b = Cast <to = 1> (a)
      z = Sigmoid (b)
    }"""
    model = model_from_text(text)
    named, cls, c = conv(model, {"Cast_1"})  # keep the Cast to int64 in float32
    check_valid(c.model)
    kcast = next(n for n in c.model.graph.node if n.output[0] == "k")
    assert kcast.input[0] == "a"  # reads the float16 tensor directly: Cast(fp16 -> fp32) merged into it
    assert not any(n.output[0] == "b" for n in c.model.graph.node)  # Cast(fp16 -> fp16) removed
    assert c.merged_casts == 2 and c.casts == 0
    x = np.array([-1.5, 0.25, 2.75, 300.0], np.float32)
    got = run_ort(c.model, feeds_for(c.model, {"x": x}))
    np.testing.assert_array_equal(got["k"], np.array([0, 0, 2, 300]))


def test_control_flow_bodies_read_a_float32_cast_of_outer_float16_tensors():
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[4] x, bool c) => (float[4] y) {
      k = Constant <value = float {3.0}> ()
      a = Mul (x, k)
      r = If (c) <
        then_branch = t () => (float[4] o) { o = Mul (a, k) },
        else_branch = e () => (float[4] o) { o = Add (a, k) }
      >
      y = Relu (r)
    }"""
    model = model_from_text(text)
    named, cls, c = conv(model)
    check_valid(c.model)
    t = types_of(c.model)
    assert t["a"] == F16 and t["r"] == F32 and t["k"] == F32  # k is read in the bodies: float32 kept
    body = next(a.g for n in c.model.graph.node if n.op_type == "If" for a in n.attribute if a.name == "then_branch")
    assert body.node[0].input[0] == "a__to_fp32"
    assert any("If/Loop/Scan" in note for note in c.notes)
    x = np.array([1, 2, -1, 0.5], np.float32)
    for cond in (True, False):
        got = run_ort(c.model, feeds_for(c.model, {"x": x, "c": np.array(cond)}))["y"].astype(np.float32)
        want = np.maximum((x * 3) * 3 if cond else x * 3 + 3, 0)
        np.testing.assert_allclose(got, want, rtol=2e-3, atol=0)


def test_generated_names_never_collide_with_existing_ones():
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[4] x) => (float[4] y) {
      a = Relu (x)
      a__to_fp32 = Neg (a)
      y = Add (a, a__to_fp32)
    }"""
    model = model_from_text(text)
    named, cls, c = conv(model, {"Add_2"})
    check_valid(c.model)
    names = [o for n in c.model.graph.node for o in n.output]
    assert "a__to_fp32_1" in names


def test_quantization_island_and_integer_paths_stay_in_their_types():
    model = onnx.load(FIXTURES / "fp16" / "dynamic_quant.onnx")
    named, cls, c = conv(model)
    check_valid(c.model)
    t = types_of(c.model)
    assert t["h0_int"] == TensorProto.INT32 and t["h0_cast"] == F32 and t["h0_pre"] == F32 and t["x_W0_scale"] == F32
    assert t["h0"] == F16  # the Relu after dequantization computes in FP16
    x = np.random.default_rng(1).uniform(-1, 1, (4, 512)).astype(np.float32)
    got = run_ort(c.model, feeds_for(c.model, {"x": x}))["y"].astype(np.float32)
    np.testing.assert_allclose(got, run_ort(model, {"x": x})["y"], atol=1e-2, rtol=1e-2)


def test_weights_beyond_float16_are_clamped_not_infinite():
    model = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[3] x) => (float[3] y) {
      w = Constant <value = float[3] {100000.0, 1.0, -70000.0}> ()
      y = Mul (x, w)
    }""")
    _, _, c = conv(model)
    check_valid(c.model)
    got = run_ort(c.model, feeds_for(c.model, {"x": np.ones(3, np.float32)}))["y"]
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got.astype(np.float32), [65504.0, 1.0, -65504.0])
    assert c.clamped


def test_bf16_conversion_is_valid_and_layernorm_statistics_follow_the_schema():
    model = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[2, 8] x) => (float[2, 8] y, float[2, 1] mean) {
      s = Constant <value = float[8] {1, 1, 1, 1, 1, 1, 1, 1}> ()
      b = Constant <value = float[8] {0, 0, 0, 0, 0, 0, 0, 0}> ()
      y, mean = LayerNormalization <axis = -1> (x, s, b)
    }""")
    _, _, c16 = conv(model)
    check_valid(c16.model)
    assert types_of(c16.model)["mean"] == F32  # LayerNormalization's Mean follows stash_type (float32)
    _, _, cb = conv(model, precision="bf16")
    check_valid(cb.model)
    t = types_of(cb.model)
    assert t["y"] == BF16 and t["mean"] == F32 and t["s"] == BF16
