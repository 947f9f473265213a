"""fuse-matmul-add: 2-D MatMul + constant bias -> Gemm, and the cases that must stay."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import helpers
import surgeon
from helpers import CORPUS, FIXTURES, assert_equivalent, model_from_text, op_types, requires_corpus
from passes.fuse_matmul_add import FuseMatmulAdd
from surgeon.graph import PROVENANCE_FROM, PROVENANCE_PASS, count_nodes

TOL = dict(atol=1e-5, rtol=1e-5)
SHAPES = [{"x": (1, 3)}, {"x": (5, 3)}]


def run_pass(model, limit=None):
    out, log = helpers.run_pass(FuseMatmulAdd, model, limit=limit)
    if out is not None:
        onnx.checker.check_model(out, full_check=True)
    return out, log


def _randomize(model: onnx.ModelProto, seed: int = 0) -> onnx.ModelProto:
    """Replace float initializers by seeded random values (text models carry placeholders)."""
    rng = np.random.default_rng(seed)
    for i, t in enumerate(model.graph.initializer):
        a = numpy_helper.to_array(t)
        if a.dtype == np.float32:
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(rng.normal(size=a.shape).astype(np.float32), t.name))
    return model


def _dense(add: str, bias: str = "float[2] b = {0.0, 0.0}", x: str = "float[N,3] x", out: str = "float[N,2] y"):
    return _randomize(model_from_text(f"""
    <ir_version: 8, opset_import: ["" : 17]>
    g ({x}) => ({out}) <float[3,2] w = {{0.0, 0.0, 0.0, 0.0, 0.0, 0.0}}, {bias}> {{
      [fc] t = MatMul(x, w)
      [add] y = {add}
    }}"""))


@pytest.mark.parametrize("add,bias", [
    ("Add(t, b)", "float[2] b = {0.0, 0.0}"),
    ("Add(b, t)", "float[1,2] b = {0.0, 0.0}"),
    ("Add(t, b)", "float b = {0.0}"),
])
def test_dense_layer_becomes_gemm(add, bias):
    m = _dense(add, bias)
    out, log = run_pass(m)
    assert op_types(out) == ["Gemm"]
    gemm = out.graph.node[0]
    assert list(gemm.input) == ["x", "w", "b"] and list(gemm.output) == ["y"]
    props = {p.key: p.value for p in gemm.metadata_props}
    assert props[PROVENANCE_PASS] == "fuse-matmul-add" and props[PROVENANCE_FROM] == "fc,add"
    assert log.counts["matmul-add-to-gemm"] == 1
    assert_equivalent(m, out, SHAPES, **TOL)


def test_static_full_bias_fuses_dynamic_full_bias_is_noted():
    static = _dense("Add(t, b)", "float[4,2] b = {0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0}", x="float[4,3] x", out="float[4,2] y")
    out, _ = run_pass(static)
    assert op_types(out) == ["Gemm"]
    assert_equivalent(static, out, [{"x": (4, 3)}], **TOL)
    dynamic = _dense("Add(t, b)", "float[4,2] b = {0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0}", out="float[4,2] y")
    out, log = run_pass(dynamic)
    assert out is None and any("does not broadcast one way" in n for n in log.notes)


def test_batched_shared_or_nonconstant_kept():
    batched = _randomize(model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[B,N,3] x) => (float[B,N,2] y) <float[3,2] w = {0.0,0.0,0.0,0.0,0.0,0.0}, float[2] b = {0.0, 0.0}> {
      t = MatMul(x, w)
      y = Add(t, b)
    }"""))
    assert run_pass(batched)[0] is None
    shared = _randomize(model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N,3] x) => (float[N,2] y, float[N,2] z) <float[3,2] w = {0.0,0.0,0.0,0.0,0.0,0.0}, float[2] b = {0.0, 0.0}> {
      t = MatMul(x, w)
      y = Add(t, b)
      z = Relu(t)
    }"""))
    assert run_pass(shared)[0] is None
    var_bias = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N,3] x, float[2] b) => (float[N,2] y) <float[3,2] w = {0.0,0.0,0.0,0.0,0.0,0.0}> {
      t = MatMul(x, w)
      y = Add(t, b)
    }""")
    out, log = run_pass(var_bias)
    assert out is None and any("not a constant" in n for n in log.notes)
    ints = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (int32[N,3] x) => (int32[N,2] y) <int32[3,2] w = {1,2,3,4,5,6}, int32[2] b = {1, 2}> {
      t = MatMul(x, w)
      y = Add(t, b)
    }""")
    assert run_pass(ints)[0] is None


def test_bisect_limit_and_intermediate_graph_output():
    m = _dense("Add(t, b)")
    assert run_pass(m, limit=0)[0] is None
    both = _randomize(model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N,3] x) => (float[N,2] t, float[N,2] y) <float[3,2] w = {0.0,0.0,0.0,0.0,0.0,0.0}, float[2] b = {0.0, 0.0}> {
      t = MatMul(x, w)
      y = Add(t, b)
    }"""))
    assert run_pass(both)[0] is None  # t is a graph output: the MatMul must stay


def test_loop_body_dense_layer():
    m = _randomize(model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N,3] x, int64 n) => (float[N,3] y) <float[3,3] w = {0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0}, float[3] b = {0.0,0.0,0.0}, bool c = {1}> {
      y = Loop(n, c, x) <body = body (int64 i, bool cin, float[N,3] s) => (bool cout, float[N,3] s2) {
          cout = Identity(cin)
          t = MatMul(s, w)
          u = Add(t, b)
          s2 = Tanh(u)
      }>
    }"""))
    out, log = run_pass(m)
    body = out.graph.node[0].attribute[0].g
    assert [n.op_type for n in body.node] == ["Identity", "Gemm", "Tanh"]
    assert_equivalent(m, out, [{"x": (1, 3), "n": ()}, {"x": (4, 3), "n": ()}], **TOL)


@requires_corpus("rapidocr_ppocr_mobile_v2_cls.onnx")
def test_ppocr_classifier_head_fused_in_pipeline():
    model = surgeon.model.load(CORPUS / "rapidocr_ppocr_mobile_v2_cls.onnx")
    out, report = surgeon.fix(model, passes=["fold-constants", "fold-shape-chains", "fuse-matmul-add"], verify=True)
    entry = next(p for p in report.passes if p.name == "fuse-matmul-add")
    assert entry.status != "rolled-back" and entry.counts.get("matmul-add-to-gemm") == 1
    assert "MatMul" not in surgeon.graph.op_histogram(out)


@pytest.mark.parametrize("name", sorted(p.name for p in (FIXTURES / "exports").glob("*.onnx")))
def test_never_adds_nodes(name):
    """Two nodes become one or nothing changes: on every exported kind (the NHWC classifier included)."""
    model = onnx.load(FIXTURES / "exports" / name)
    out, log = helpers.run_pass("fuse-matmul-add", model)
    after = count_nodes(out) if out is not None else count_nodes(model)
    assert after == count_nodes(model) - log.counts.get("matmul-add-to-gemm", 0)
