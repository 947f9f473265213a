"""fold-constants: folds what is constant, never a dynamic dim, never fuses; falls back and says why."""

from __future__ import annotations

import numpy as np
import onnx

import helpers
import surgeon
from helpers import CORPUS, assert_equivalent, model_from_text, op_types, random_feeds, requires_corpus, run_ort
from passes.fold_constants import FoldConstants
from surgeon.graph import iter_proto_nodes

TOL = dict(atol=1e-6, rtol=1e-6)


def run_fold(model, **options):
    out, log = helpers.run_pass(FoldConstants, model, options=options)
    if out is not None:
        onnx.checker.check_model(out)
    return out, log


def dims(vi):
    return [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]


def test_constant_chain_folds():
    m = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N,4] x) => (float[N,4] y) <float[4] w = {1.0, 2.0, 3.0, 4.0}> {
      c = Constant<value = float[4] {1.0, 1.0, 1.0, 1.0}>()
      s = Add(w, c)
      e = Exp(s)
      y = Mul(x, e)
    }""")
    out, log = run_fold(m)
    assert op_types(out) == ["Mul"]
    assert log.counts["constant folded"] == 2
    assert_equivalent(m, out, [{"x": (1, 4)}, {"x": (5, 4)}], **TOL)


def test_shape_of_static_input_folds():
    m = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[2,3,4] x) => (float[2,12] y) {
      z = Constant<value = int64[1] {0}>()
      o = Constant<value = int64[1] {1}>()
      k = Constant<value = int64[1] {-1}>()
      s = Shape(x)
      h = Slice(s, z, o)
      t = Concat<axis = 0>(h, k)
      y = Reshape(x, t)
    }""")
    out, log = run_fold(m)
    assert op_types(out) == ["Reshape"]
    assert log.counts["constant folded"] == 3
    assert_equivalent(m, out, [{"x": (2, 3, 4)}], **TOL)


def test_shape_of_dynamic_batch_is_not_baked():
    m = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N,3] x) => (float[2] y, float[N,3] z) {
      s = Shape(x)
      y = Cast<to = 1>(s)
      z = Relu(x)
    }""")
    out, log = run_fold(m)
    final = out or m
    assert "Shape" in op_types(final)
    assert dims(final.graph.input[0]) == ["N", 3] and dims(final.graph.output[1])[0] == "N"
    for n in (1, 4):
        got = run_ort(final, {"x": np.zeros((n, 3), np.float32)})["y"]
        assert got.tolist() == [n, 3]


def test_no_fusion_conv_bn_left_alone():
    m = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N,2,4,4] x) => (float[N,2,4,4] y)
      <float[2,2,1,1] w = {1.0, 0.5, -0.5, 2.0}, float[2] sc = {1.5, 0.5}, float[2] b = {0.1, -0.1},
       float[2] mu = {0.2, 0.3}, float[2] var = {1.0, 2.0}> {
      c = Conv(x, w)
      y = BatchNormalization(c, sc, b, mu, var)
    }""")
    out, log = run_fold(m)
    assert op_types(out or m) == ["Conv", "BatchNormalization"]


def test_already_folded_model_untouched():
    m = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N,4] x) => (float[N,4] y) { [r] y = Relu(x) }""")
    out, log = run_fold(m)
    assert out is None and not log.counts


def test_custom_op_kept_and_constant_input_of_it_folded():
    m = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17, "my.domain" : 1]>
    g (float[N,4] x) => (float[N,4] y) <float[4] w = {1.0, 2.0, 3.0, 4.0}> {
      w2 = Add(w, w)
      a = Mul(x, w2)
      p = my.domain.Plugin(w2)
      y = my.domain.Plugin2(a, p)
    }""")
    out, log = run_fold(m)
    assert [(n.domain, n.op_type) for n in out.graph.node] == [
        ("", "Mul"), ("my.domain", "Plugin"), ("my.domain", "Plugin2")]
    assert log.counts["constant folded"] == 1


def test_onnxsim_backend_failure_is_noted_and_our_folder_still_runs():
    m = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17, "my.domain" : 1]>
    g (float[N,4] x) => (float[N,4] y) <float[4] w = {1.0, 2.0, 3.0, 4.0}> {
      w2 = Add(w, w)
      p = my.domain.Plugin(w2)
      y = Mul(x, p)
    }""")
    out, log = run_fold(m, fold_backend="onnxsim")
    assert any(n.startswith("onnxsim") for n in log.notes), log.notes
    assert op_types(out) == ["Plugin", "Mul"]
    assert log.counts["constant folded"] == 1


def test_ir3_model_stays_valid_and_input_defaults_not_folded():
    m = model_from_text("""
    <ir_version: 3, opset_import: ["" : 9]>
    g (float[2] x, float[2] w) => (float[2] y) <float[2] w = {1.0, 2.0}> {
      c = Constant<value = float[2] {0.5, 1.5}>()
      e = Exp(c)
      a = Add(x, e)
      y = Mul(a, w)
    }""")
    out, log = run_fold(m)
    assert out.ir_version == 3 and "Exp" not in op_types(out) and op_types(out)[-2:] == ["Add", "Mul"]
    inits = {t.name for t in out.graph.initializer}
    assert inits <= {vi.name for vi in out.graph.input}  # IR 3: every initializer is an input
    assert [vi.name for vi in out.graph.input][:2] == ["x", "w"]
    feeds = random_feeds(m, {"x": (2,)})
    np.testing.assert_allclose(run_ort(out, feeds)["y"], run_ort(m, feeds)["y"], **TOL)
    assert [t.name for t in out.graph.initializer if t.name == "w"] == ["w"]  # the default w is not folded


def test_if_branch_folds_with_outer_scope():
    m = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N,4] x, bool b) => (float[N,4] y) <float[4] w = {1.0, 2.0, 3.0, 4.0}> {
      y = If(b) <then_branch = t () => (float[N,4] o1) { e = Exp(w)  o1 = Mul(x, e) },
                 else_branch = f () => (float[N,4] o2) { o2 = Sub(x, w) }>
    }""")
    out, log = run_fold(m)
    then_b = out.graph.node[0].attribute[0].g
    assert [n.op_type for n in then_b.node] == ["Mul"]
    for b in (True, False):
        feeds = {"x": np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4), "b": np.array(b)}
        np.testing.assert_allclose(run_ort(out, feeds)["y"], run_ort(m, feeds)["y"], **TOL)


@requires_corpus("tutorial_cnn_op12_dynbatch.onnx")
def test_corpus_dynamic_batch_stays_dynamic_in_pipeline():
    m = surgeon.load(CORPUS / "tutorial_cnn_op12_dynbatch.onnx")
    out, report = surgeon.fix(m, ["cleanup", "fold-constants"])
    assert not report.rolled_back, [p.reason for p in report.rolled_back]
    assert report.verification == "numeric" and len(report.samples) >= 2
    assert dims(out.graph.input[0])[0] == "batch" and dims(out.graph.output[0])[0] == "batch"
    assert "Shape" in {n.op_type for n in iter_proto_nodes(out)}  # the batch dim is read at run time
    assert report.nodes_after < report.nodes_before


def test_constant_node_returned_by_a_body_becomes_an_initializer_of_the_body():
    m = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (int64 n, float[2] x) => (float[2] y) {
      y = Loop(n, , x) <body = b (int64 i, bool c, float[2] v) => (bool t, float[2] w) {
          t = Constant<value = bool {1}>()
          w = Relu(v)
      }>
    }""")
    out, log = run_fold(m)
    body = out.graph.node[0].attribute[0].g
    assert [n.op_type for n in body.node] == ["Relu"]
    assert [t.name for t in body.initializer] == ["t"] and body.output[0].name == "t"
    assert log.counts["Constant node made initializer"] == 1
    feeds = {"n": np.array(3, np.int64), "x": np.array([-1.0, 2.0], np.float32)}
    np.testing.assert_allclose(run_ort(out, feeds)["y"], run_ort(m, feeds)["y"], **TOL)


# --- results over weights become recipes (surgeon.weights.Derived), never run -----------------

def _weight_model(op: str, attrs: dict, weight: np.ndarray, out_dtype=onnx.TensorProto.FLOAT) -> onnx.ModelProto:
    """y = MatMul(x, op(w)) with w an initializer."""
    from onnx import helper, numpy_helper

    probe = np.transpose(weight) if op == "Transpose" else weight
    g = helper.make_graph(
        [helper.make_node(op, ["w"], ["t"], **attrs), helper.make_node("MatMul", ["x", "t"], ["y"])], "g",
        [helper.make_tensor_value_info("x", out_dtype, ["N", probe.shape[0]])],
        [helper.make_tensor_value_info("y", out_dtype, ["N", probe.shape[1]])],
        [numpy_helper.from_array(weight, "w")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _folded_recipe(m):
    from surgeon import weights as W
    from surgeon.graph import Model

    work = Model.from_proto(m)
    from surgeon.pipeline.base import PassContext, PassLog

    log = PassLog()
    FoldConstants().run(work, PassContext(pass_name="fold-constants"), log)
    held = [t._values for t in work.graph.tensors().values() if hasattr(t, "_values")]
    recipes = [v.array if isinstance(v, W.WeightValues) else v for v in held]
    return work, [r for r in recipes if isinstance(r, W.Derived)], log


def test_transpose_of_a_weight_folds_to_a_recipe_not_a_copy():
    w = np.random.default_rng(0).standard_normal((512, 1024)).astype(np.float32)  # 2 MB
    m = _weight_model("Transpose", {"perm": [1, 0]}, w)
    work, recipes, log = _folded_recipe(m)
    assert len(recipes) == 1 and recipes[0].shape == (1024, 512) and log.counts["constant folded"] == 1
    assert np.array_equal(recipes[0].materialize(), w.T)
    out = work.to_proto()
    assert op_types(out) == ["MatMul"]
    x = np.random.default_rng(1).standard_normal((3, 1024)).astype(np.float32)
    np.testing.assert_allclose(run_ort(out, {"x": x})["y"], x @ w.T, atol=1e-3, rtol=1e-4)


def test_cast_of_fp16_weights_folds_to_a_recipe_with_ort_rounding():
    w = (np.random.default_rng(2).standard_normal((1024, 512)) * 3).astype(np.float16)  # 1 MB of fp16 storage
    m = _weight_model("Cast", {"to": onnx.TensorProto.FLOAT}, w)
    work, recipes, _ = _folded_recipe(m)
    assert len(recipes) == 1 and recipes[0].dtype == np.float32
    ort_cast = run_ort(model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float16[1024,512] w) => (float[1024,512] t) { t = Cast<to = 1>(w) }"""), {"w": w})["t"]
    assert np.array_equal(recipes[0].materialize(), ort_cast)


def test_small_results_over_weights_still_run_in_onnx_runtime():
    w = np.ones((8, 16), np.float32)  # 512 bytes: not a weight-sized result
    m = _weight_model("Transpose", {"perm": [1, 0]}, w)
    _, recipes, log = _folded_recipe(m)
    assert recipes == [] and log.counts["constant folded"] == 1
