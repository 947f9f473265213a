"""eliminate-neutral-ops: x+0, x*1, Dropout, Cast, Transpose, Reshape ... bypassed only when provable."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import helpers
import surgeon
from helpers import CORPUS, assert_equivalent, model_from_text, op_types, random_feeds, requires_corpus, run_ort
from passes.eliminate_neutral_ops import EliminateNeutralOps

TOL = dict(atol=1e-6, rtol=1e-6)
BATCHES = [{"x": (1, 4)}, {"x": (3, 4)}]


def run_pass(model, limit=None):
    out, log = helpers.run_pass(EliminateNeutralOps, model, limit=limit)
    if out is not None:
        onnx.checker.check_model(out, full_check=True)
    return out, log


@pytest.mark.parametrize("expr,rule", [
    ("Add(r, zeros)", "add-neutral"), ("Add(zeros, r)", "add-neutral"), ("Sub(r, zeros)", "sub-neutral"),
    ("Mul(r, ones)", "mul-neutral"), ("Mul(ones, r)", "mul-neutral"), ("Div(r, ones)", "div-neutral"),
    ("Pow(r, one)", "pow-neutral"),
])
def test_neutral_binary_removed(expr, rule):
    m = model_from_text(f"""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N,4] x) => (float[N,4] y)
      <float[4] zeros = {{0.0, 0.0, 0.0, 0.0}}, float[1,4] ones = {{1.0, 1.0, 1.0, 1.0}}, float one = {{1.0}}> {{
      r = Relu(x)
      t = {expr}
      y = Neg(t)
    }}""")
    out, log = run_pass(m)
    assert op_types(out) == ["Relu", "Neg"]
    assert list(out.graph.node[1].input) == ["r"]
    assert log.counts[rule] == 1
    assert_equivalent(m, out, BATCHES, **TOL)


@pytest.mark.parametrize("expr", ["Sub(zeros, r)", "Div(ones, r)", "Add(r, half)", "Mul(r, zeros)", "Pow(one, r)"])
def test_not_neutral_kept(expr):
    m = model_from_text(f"""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N,4] x) => (float[N,4] y) <float[4] zeros = {{0.0, 0.0, 0.0, 0.0}},
      float[4] ones = {{1.0, 1.0, 1.0, 1.0}}, float[4] half = {{0.0, 0.5, 0.0, 0.0}}, float one = {{1.0}}> {{
      r = Relu(x)
      t = {expr}
      y = Neg(t)
    }}""")
    out, log = run_pass(m)
    assert out is None and not log.counts


def test_broadcast_that_may_grow_the_shape_is_kept_with_a_note():
    # x is [N, 4]: zeros [3, 4] broadcasts it to [3, 4] when N == 1, so Add is no identity.
    m = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N,4] x) => (float[M,4] y) <float[3,4] z = {0.0,0.0,0.0,0.0, 0.0,0.0,0.0,0.0, 0.0,0.0,0.0,0.0}> {
      r = Relu(x)
      y = Add(r, z)
    }""")
    out, log = run_pass(m)
    assert out is None
    assert any("may change the shape" in n for n in log.notes)


def test_chain_and_graph_output_keep_names():
    m = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N,4] x) => (float[N,4] y, float[N,4] s) <float zero = {0.0}, float one = {1.0}> {
      r = Relu(x)
      a = Add(r, zero)
      y = Mul(a, one)
      s = Sigmoid(a)
    }""")
    out, log = run_pass(m)
    assert op_types(out) == ["Relu", "Sigmoid"]
    assert list(out.graph.node[0].output) == ["y"] and list(out.graph.node[1].input) == ["y"]
    assert [o.name for o in out.graph.output] == ["y", "s"]
    assert log.counts["add-neutral"] == 1 and log.counts["mul-neutral"] == 1
    assert_equivalent(m, out, BATCHES, **TOL)


def test_output_copying_a_graph_input_is_kept():
    m = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N,4] x) => (float[N,4] y) <float zero = {0.0}> { y = Add(x, zero) }""")
    out, log = run_pass(m)
    assert out is None
    assert any("graph input" in n for n in log.notes)


def test_overridable_initializer_is_not_a_constant():
    m = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N,4] x, float zero) => (float[N,4] y) <float zero = {0.0}> { r = Relu(x)  y = Add(r, zero) }""")
    out, _ = run_pass(m)
    assert out is None


def test_dropout_cast_transpose_and_shape_ops():
    m = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N,4] x) => (float[N,4] y) <int64[2] same = {0, -1}, int64[2] ones = {1, 1}, int64[4] nopad = {0,0,0,0},
        int64[1] s0 = {0}, int64[1] big = {9223372036854775807}, int64[1] ax = {1}, bool f = {0}> {
      a = Relu(x)
      b = Dropout(a)
      c, unused_mask = Dropout(b, , f)
      d = Cast<to = 1>(c)
      e = Transpose<perm = [0, 1]>(d)
      h = Reshape(e, same)
      i = Expand(h, ones)
      j = Tile(i, ones)
      k = Pad(j, nopad)
      l = Slice(k, s0, big, ax)
      m = Concat<axis = 0>(l)
      y = Sigmoid(m)
    }""")
    out, log = run_pass(m)
    assert op_types(out) == ["Relu", "Sigmoid"]
    for rule in ("dropout-inference", "cast-same-type", "transpose-identity", "reshape-same-shape",
                 "expand-same-shape", "tile-ones", "pad-zero", "slice-whole", "concat-single-input"):
        assert log.counts[rule] >= 1, rule
    assert log.counts["dropout-inference"] == 2
    assert_equivalent(m, out, BATCHES, **TOL)


def test_changing_shape_ops_and_training_dropout_kept():
    m = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N,4] x) => (float[N,4] y, bool[N,4] mask, float[4,N] z, int32[N,4] w)
      <int64[2] tgt = {-1, 2}, int64[1] s1 = {1}, int64[1] big = {100}, int64[1] ax = {1}, bool t = {1}, float r = {0.5}> {
      a = Relu(x)
      b = Dropout(a, r, t)
      y, mask = Dropout(b)
      z = Transpose<perm = [1, 0]>(a)
      w = Cast<to = 6>(a)
      v = Reshape(a, tgt)
      u = Slice(a, s1, big, ax)
    }""")
    out, log = run_pass(m)
    assert out is None
    assert any("training_mode" in n for n in log.notes)
    assert any("mask" in n for n in log.notes)


def test_if_branch_body_and_outer_scope():
    m = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N,4] x, bool b) => (float[N,4] y) <float one = {1.0}, float zero = {0.0}> {
      r = Relu(x)
      y = If(b) <then_branch = t () => (float[N,4] o1) { p = Mul(r, one)  o1 = Exp(p) },
                 else_branch = e () => (float[N,4] o2) { o2 = Add(r, zero) }>
    }""")
    out, log = run_pass(m)
    then_b, else_b = (a.g for a in out.graph.node[1].attribute)
    assert [n.op_type for n in then_b.node] == ["Exp"] and list(then_b.node[0].input) == ["r"]
    assert [n.op_type for n in else_b.node] == ["Add"]  # a branch output copying an outer value: kept
    assert log.counts["mul-neutral"] == 1
    for flag in (True, False):
        feeds = {"x": random_feeds(m, {"x": (2, 4), "b": ()})["x"], "b": np.array(flag)}
        np.testing.assert_allclose(run_ort(out, feeds)["y"], run_ort(m, feeds)["y"], **TOL)


def test_bisect_limit_skips_rewrites():
    m = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N,4] x) => (float[N,4] y) <float zero = {0.0}, float one = {1.0}> {
      r = Relu(x)
      a = Add(r, zero)
      b = Mul(a, one)
      y = Neg(b)
    }""")
    none, _ = run_pass(m, limit=0)
    assert none is None
    one, log = run_pass(m, limit=1)
    assert op_types(one) == ["Relu", "Mul", "Neg"] and sum(log.counts.values()) == 1
    assert_equivalent(m, one, BATCHES, **TOL)


@requires_corpus("vit_tiny_legacy_op17.onnx")
def test_vit_zero_biases_removed_in_the_pipeline():
    model = surgeon.model.load(CORPUS / "vit_tiny_legacy_op17.onnx")
    out, report = surgeon.fix(model, passes=["fold-constants", "eliminate-neutral-ops"], verify=True)
    entry = next(p for p in report.passes if p.name == "eliminate-neutral-ops")
    assert entry.status != "rolled-back"
    assert entry.counts.get("add-neutral", 0) >= 60  # the zero (deduplicated) q/k/v/o/fc biases
    assert surgeon.graph.op_histogram(out)["Add"] < surgeon.graph.op_histogram(model)["Add"] - 60


@pytest.mark.parametrize("expr,rule", [
    ("And(m, yes)", "and-neutral"), ("And(yes_scalar, m)", "and-neutral"), ("Or(m, no)", "or-neutral"),
    ("Xor(no, m)", "xor-neutral"),
])
def test_neutral_boolean_removed(expr, rule):
    """The attention-mask code of transformers exports: ``mask & ones`` is the mask."""
    m = model_from_text(f"""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N,4] x) => (bool[N,4] y)
      <bool[4] yes = {{1, 1, 1, 1}}, bool yes_scalar = {{1}}, bool[1,4] no = {{0, 0, 0, 0}}> {{
      zero = Constant<value = float {{0.0}}>()
      m = Greater(x, zero)
      t = {expr}
      y = Not(t)
    }}""")
    out, log = run_pass(m)
    assert op_types(out) == ["Constant", "Greater", "Not"]
    assert log.counts[rule] == 1
    assert_equivalent(m, out, BATCHES, atol=0, rtol=0)


@pytest.mark.parametrize("expr", ["And(m, no)", "Or(m, yes)", "And(m, mixed)", "And(m, wide)"])
def test_boolean_not_neutral_kept(expr):
    """``x & false``, ``x | true`` and a mixed constant are no identities; a wider constant broadcasts."""
    m = model_from_text(f"""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N,4] x) => (bool[?,?,?] y) <bool[4] yes = {{1, 1, 1, 1}}, bool[4] no = {{0, 0, 0, 0}},
      bool[4] mixed = {{1, 0, 1, 1}}, bool[2,1,4] wide = {{1, 1, 1, 1, 1, 1, 1, 1}}> {{
      zero = Constant<value = float {{0.0}}>()
      m = Greater(x, zero)
      t = {expr}
      y = Not(t)
    }}""")
    out, log = run_pass(m)
    assert out is None and not log.counts


@pytest.mark.parametrize("expr,kept", [("Where(all_true, a, fill)", "a"), ("Where(all_false, fill, a)", "a"),
                                        ("Where(all_true, a, fill_row)", "a")])
def test_where_on_a_constant_condition_picks_a_branch(expr, kept):
    """Mask code: ``where(cond, x, -inf)`` whose condition folded to all true (or all false)."""
    m = model_from_text(f"""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N,4] x) => (float[N,4] y) <bool[4] all_true = {{1, 1, 1, 1}}, bool[1,4] all_false = {{0, 0, 0, 0}},
      float fill = {{-3.0}}, float[1,4] fill_row = {{-1.0, -2.0, -3.0, -4.0}}, float[4] bias = {{1.0, 2.0, 3.0, 4.0}}> {{
      a = Relu(x)
      w = {expr}
      y = Add(w, bias)
    }}""")
    out, log = run_pass(m)
    assert log.counts["where-constant-condition"] == 1
    add = [n for n in out.graph.node if n.op_type == "Add"][0]
    assert add.input[0] == kept and "Where" not in op_types(out)
    assert_equivalent(m, out, BATCHES, **TOL)


def test_where_kept_when_a_mixed_condition_or_a_broadcast_could_change_the_result():
    m = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N,4] x, float[2,N,4] big) => (float[N,4] y, float[2,N,4] z) <bool[4] mixed = {1, 0, 1, 1},
      bool[4] all_true = {1, 1, 1, 1}, bool[3,1,1] wide_true = {1, 1, 1}> {
      a = Relu(x)
      b = Sigmoid(x)
      y = Where(mixed, a, b)
      z = Where(all_true, a, big)
      w = Where(wide_true, a, b)
      s = ReduceSum<keepdims = 0>(w)
      v = Where(all_true, a, b)
      u = ReduceSum<keepdims = 0>(v)
    }""")
    out, log = run_pass(m)
    assert out is None and not log.counts
    # the big branch, the wide condition, and a branch whose shape is not static (not provably N x 4)
    assert sum("Where" in n and "kept" in n for n in log.notes) == 3


@pytest.mark.parametrize("t0,t1,t1_name", [("int32", "INT64", "int64"), ("bool", "FLOAT", "float"),
                                           ("float16", "FLOAT", "float"), ("uint8", "FLOAT16", "float16"),
                                           ("int16", "FLOAT", "float")])
def test_lossless_cast_round_trip_removed(t0, t1, t1_name):
    """y's round trip goes whole; z's first Cast stays because v reads it too."""
    to0, to1 = getattr(onnx.TensorProto, t0.upper()), getattr(onnx.TensorProto, t1)
    m = model_from_text(f"""
    <ir_version: 8, opset_import: ["" : 17]>
    g ({t0}[N,4] x) => ({t0}[N,4] y, {t0}[N,4] z, {t1_name}[N,4] v) {{
      a = Cast<to = {to1}>(x)
      b = Cast<to = {to0}>(a)
      y = Identity(b)
      c = Cast<to = {to1}>(x)
      d = Cast<to = {to0}>(c)
      z = Identity(d)
      v = Identity(c)
    }}""")
    out, log = run_pass(m)
    assert log.counts["cast-round-trip"] == 2
    assert op_types(out) == ["Identity", "Cast", "Identity", "Identity"]
    assert [o.name for o in out.graph.output] == ["y", "z", "v"]
    rng = np.random.default_rng(0)
    dtype = np.dtype(t0)
    for n in (1, 3):
        if dtype == np.bool_:
            x = rng.integers(0, 2, size=(n, 4)).astype(bool)
        elif dtype.kind in "iu":
            info = np.iinfo(dtype)
            x = np.array([[info.min, info.max, 0, 1]] * n, dtype=dtype)
        else:
            x = rng.standard_normal((n, 4)).astype(dtype)
        ref, got = run_ort(m, {"x": x}), run_ort(out, {"x": x})
        for name in ("y", "z", "v"):
            np.testing.assert_array_equal(got[name], ref[name])


@pytest.mark.parametrize("t0,t1", [("int64", "INT32"), ("float", "FLOAT16"), ("int32", "FLOAT"), ("float", "INT64")])
def test_lossy_cast_round_trip_kept_with_a_note(t0, t1):
    """int64 -> int32, float32 -> float16, int32 -> float32 (24-bit significand), float -> int lose values."""
    m = model_from_text(f"""
    <ir_version: 8, opset_import: ["" : 17]>
    g ({t0}[N,4] x) => ({t0}[N,4] y) {{
      a = Cast<to = {getattr(onnx.TensorProto, t1)}>(x)
      y = Cast<to = {getattr(onnx.TensorProto, t0.upper())}>(a)
    }}""")
    out, log = run_pass(m)
    assert out is None and not log.counts
    assert any("can change values" in n for n in log.notes)
