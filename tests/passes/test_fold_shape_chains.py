"""fold-shape-chains: exporter shape chains fold to constants that mean the same for every size.

Each positive case checks the structure (which nodes are gone, which constant was
written) and numeric equivalence at several sizes of every dynamic dim; negative cases
check the model comes back untouched (None) with a note saying why.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import helpers
import surgeon
from helpers import CORPUS, FIXTURES, assert_equivalent, model_from_text, op_types, requires_corpus
from passes.fold_shape_chains import FoldShapeChains
from surgeon.graph import count_nodes, op_histogram

TOL = dict(atol=1e-6, rtol=1e-6)
INT64_MAX = 2**63 - 1


def run_pass(model, limit=None):
    before = model.SerializeToString()
    out, log = helpers.run_pass(FoldShapeChains, model, limit=limit)
    assert model.SerializeToString() == before, "the pass modified its input"
    if out is not None:
        onnx.checker.check_model(out, full_check=True)
    return out, log


def init_value(model, name):
    for t in model.graph.initializer:
        if t.name == name:
            return numpy_helper.to_array(t).tolist()
    raise KeyError(name)


def node_of(model, op):
    found = [n for n in model.graph.node if n.op_type == op]
    assert len(found) == 1, f"expected one {op}, found {len(found)}"
    return found[0]


def unsqueeze(opset, src, dst, axes_name="ax0"):
    return f"{dst} = Unsqueeze<axes = [0]>({src})" if opset < 13 else f"{dst} = Unsqueeze({src}, {axes_name})"


# ------------------------------------------------------------------ flatten / view


@pytest.mark.parametrize("opset", [11, 12, 13, 17])
@pytest.mark.parametrize("batch", ["N", "2"])
def test_flatten_2_3_keeps_dynamic_batch(opset, batch):
    """torch.flatten(x, 2, 3) at opset 12: Shape→Slice→Concat(-1)→Reshape becomes [0, 0, -1]."""
    m = model_from_text(f"""
    <ir_version: 8, opset_import: ["" : {opset}]>
    g (float[{batch},3,4,5] x) => (float[{batch},3,20] y) {{
      r = Relu(x)
      s = Shape(r)
      z = Constant<value = int64[1] {{0}}>()
      two = Constant<value = int64[1] {{2}}>()
      h = Slice(s, z, two, z)
      m1 = Constant<value = int64[1] {{-1}}>()
      t = Concat<axis = 0>(h, m1)
      y = Reshape(r, t)
    }}""")
    out, log = run_pass(m)
    assert op_types(out) == ["Relu", "Reshape"]
    target = init_value(out, node_of(out, "Reshape").input[1])
    assert target == ([0, 3, -1] if batch == "N" else [2, 3, -1])  # static dims stay literal
    assert log.counts["reshape-target"] == 1
    sizes = [{"x": (1, 3, 4, 5)}, {"x": (4, 3, 4, 5)}] if batch == "N" else [{"x": (2, 3, 4, 5)}]
    assert_equivalent(m, out, sizes, **TOL)


@pytest.mark.parametrize("opset", [11, 13])
def test_view_n_minus_one_from_gather_unsqueeze(opset):
    """x.view(x.size(0), -1): Shape→Gather→Unsqueeze→Concat→Reshape becomes [0, -1]."""
    m = model_from_text(f"""
    <ir_version: 8, opset_import: ["" : {opset}]>
    g (float[N,3,4] x) => (float[N,12] y) {{
      s = Shape(x)
      i0 = Constant<value = int64 {{0}}>()
      {"" if opset < 13 else "ax0 = Constant<value = int64[1] {0}>()"}
      b = Gather<axis = 0>(s, i0)
      {unsqueeze(opset, "b", "bu")}
      m1 = Constant<value = int64[1] {{-1}}>()
      t = Concat<axis = 0>(bu, m1)
      y = Reshape(x, t)
    }}""")
    out, log = run_pass(m)
    assert op_types(out) == ["Reshape"]
    assert init_value(out, out.graph.node[0].input[1]) == [0, -1]
    assert_equivalent(m, out, [{"x": (1, 3, 4)}, {"x": (5, 3, 4)}], **TOL)


def test_batch_from_another_tensor_uses_symbol_equality_and_minus_one():
    """ViT attention: q.view(h.size(0), h.size(1), heads, -1); batch and seq match q by symbol."""
    m = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N,S,8] h) => (float[N,S,2,4] y) <float[8,8] w = {1.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0, 0.0,1.0,0.0,0.0,0.0,0.0,0.0,0.0, 0.0,0.0,1.0,0.0,0.0,0.0,0.0,0.0, 0.0,0.0,0.0,1.0,0.0,0.0,0.0,0.0, 0.0,0.0,0.0,0.0,1.0,0.0,0.0,0.0, 0.0,0.0,0.0,0.0,0.0,1.0,0.0,0.0, 0.0,0.0,0.0,0.0,0.0,0.0,1.0,0.0, 0.0,0.0,0.0,0.0,0.0,0.0,0.0,2.0}> {
      q = MatMul(h, w)
      s = Shape(h)
      i0 = Constant<value = int64 {0}>()
      i1 = Constant<value = int64 {1}>()
      ax = Constant<value = int64[1] {0}>()
      b = Gather<axis = 0>(s, i0)
      n = Gather<axis = 0>(s, i1)
      bu = Unsqueeze(b, ax)
      nu = Unsqueeze(n, ax)
      heads = Constant<value = int64[1] {2}>()
      m1 = Constant<value = int64[1] {-1}>()
      t = Concat<axis = 0>(bu, nu, heads, m1)
      y = Reshape(q, t)
    }""")
    out, _ = run_pass(m)
    assert op_types(out) == ["MatMul", "Reshape"]
    assert init_value(out, node_of(out, "Reshape").input[1]) == [0, 0, 2, -1]
    assert_equivalent(m, out, [{"h": (1, 3, 8)}, {"h": (2, 5, 8)}], **TOL)


def test_two_unknown_entries_stay_with_a_note():
    """Target [N*S, C] cannot be written with one -1 (two entries are not dims of x at their position)."""
    m = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N,S] x, float[A,B] other) => (float[?,?] y) {
      s = Shape(other)
      y = Reshape(x, s)
    }""")
    out, log = run_pass(m)
    assert out is None
    assert any("Reshape" in n and "keeps its shape chain" in n for n in log.notes)


def test_allowzero_with_a_constant_zero_blocks_copy_semantics():
    """With allowzero=1 and a constant 0 entry, a 0 means zero: dim-equal entries cannot become 0."""
    m = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N,S,0] x) => (float[N,S,0] y) {
      s = Shape(x)
      st = Constant<value = int64[1] {0}>()
      en = Constant<value = int64[1] {2}>()
      h = Slice(s, st, en)
      zero = Constant<value = int64[1] {0}>()
      t = Concat<axis = 0>(h, zero)
      y = Reshape<allowzero = 1>(x, t)
    }""")
    out, _ = run_pass(m)
    assert out is None


def test_allowzero_without_zero_entries_is_read_as_copy():
    """The dynamo exporter writes allowzero=1; with no constant 0 in the target, dim-equal
    entries become copies (0) and the node gets allowzero=0, which means the same."""
    m = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N,S,4] x) => (float[N,S,2,2] y) {
      s = Shape(x)
      st = Constant<value = int64[1] {0}>()
      en = Constant<value = int64[1] {2}>()
      h = Slice(s, st, en)
      two = Constant<value = int64[2] {2, 2}>()
      t = Concat<axis = 0>(h, two)
      y = Reshape<allowzero = 1>(x, t)
    }""")
    out, log = run_pass(m)
    assert out is not None and log.counts["reshape-target"] == 1
    (reshape,) = [n for n in out.graph.node if n.op_type == "Reshape"]
    assert init_value(out, reshape.input[1]) == [0, 0, 2, 2]
    assert [a.i for a in reshape.attribute if a.name == "allowzero"] == [0]
    assert "Shape" not in op_types(out)
    assert_equivalent(m, out, [{"x": (1, 3, 4)}, {"x": (5, 2, 4)}, {"x": (0, 2, 4)}], **TOL)


def test_noop_reshape_is_removed_and_graph_output_kept():
    m = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N,3] x) => (float[N,3] y, float[N,3] z) {
      r = Relu(x)
      s = Shape(r)
      q = Reshape(r, s)
      y = Sigmoid(q)
      z = Reshape(y, s)
    }""")
    out, log = run_pass(m)
    # q is an intermediate (removed); z is a graph output, so its no-op Reshape stays (constant target)
    assert [o.name for o in out.graph.output] == ["y", "z"]
    assert op_histogram(out)["Reshape"] == 1 and op_histogram(out).get("Shape", 0) == 0
    assert log.counts["reshape-noop"] == 1
    assert any("graph output" in n for n in log.notes)
    assert_equivalent(m, out, [{"x": (1, 3)}, {"x": (6, 3)}], **TOL)


# ------------------------------------------------------------------ expand / tile / constant-of-shape


def test_expand_of_learned_token_to_the_batch_stays():
    """cls_token.expand(B, -1, -1): the batch value is genuinely size-dependent."""
    m = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N,3,4] x) => (float[N,4,4] y) <float[1,1,4] cls = {1.0, 2.0, 3.0, 4.0}> {
      s = Shape(x)
      i0 = Constant<value = int64 {0}>()
      ax = Constant<value = int64[1] {0}>()
      b = Gather<axis = 0>(s, i0)
      bu = Unsqueeze(b, ax)
      ones = Constant<value = int64[2] {1, 1}>()
      t = Concat<axis = 0>(bu, ones)
      e = Expand(cls, t)
      y = Concat<axis = 1>(e, x)
    }""")
    out, log = run_pass(m)
    assert any("Expand" in n and "depends on an input size" in n for n in log.notes)
    # the Expand keeps a run-time shape; its chain is only rebuilt shorter: Shape(x)[0:1] ++ [1, 1]
    expand = node_of(out, "Expand")
    assert expand.input[1] not in {t.name for t in out.graph.initializer}
    assert sorted(op_types(out)) == ["Concat", "Concat", "Expand", "Shape"]
    assert node_of(out, "Shape").attribute[0].name in ("start", "end")
    assert log.counts["materialize-shape"] == 1
    assert_equivalent(m, out, [{"x": (1, 3, 4)}, {"x": (5, 3, 4)}], **TOL)


def test_expand_to_batch_with_nothing_shorter_stays_bit_for_bit():
    m = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N,3,4] x) => (float[N,1,4] y) <float[1,1,4] cls = {1.0, 2.0, 3.0, 4.0}, int64[2] ones = {1, 4}> {
      s = Shape<start = 0, end = 1>(x)
      t = Concat<axis = 0>(s, ones)
      y = Expand(cls, t)
    }""")
    out, log = run_pass(m)
    assert out is None, "a size-dependent Expand with a minimal chain must stay bit-for-bit"
    assert any("Expand" in n and "depends on an input size" in n for n in log.notes)


def test_expand_to_own_shape_is_removed():
    m = model_from_text("""
    <ir_version: 8, opset_import: ["" : 15]>
    g (float[N,3] x, float[N,3] w) => (float[N,3] y) {
      s = Shape(w)
      e = Expand(x, s)
      y = Add(e, w)
    }""")
    out, log = run_pass(m)
    assert op_types(out) == ["Add"]
    assert log.counts["expand-noop"] == 1
    assert_equivalent(m, out, [{"x": (1, 3), "w": (1, 3)}, {"x": (4, 3), "w": (4, 3)}], **TOL)


def test_expand_entry_equal_to_input_dim_becomes_one():
    """Expand(x[N,1], [N, 5]) → Expand(x, [1, 5]): constant shape, batch stays dynamic."""
    m = model_from_text("""
    <ir_version: 8, opset_import: ["" : 15]>
    g (float[N,1] x) => (float[N,5] y) {
      s = Shape(x)
      st = Constant<value = int64[1] {0}>()
      en = Constant<value = int64[1] {1}>()
      b = Slice(s, st, en)
      five = Constant<value = int64[1] {5}>()
      t = Concat<axis = 0>(b, five)
      y = Expand(x, t)
    }""")
    out, _ = run_pass(m)
    assert op_types(out) == ["Expand"]
    assert init_value(out, out.graph.node[0].input[1]) == [1, 5]
    assert_equivalent(m, out, [{"x": (1, 1)}, {"x": (7, 1)}], **TOL)


def test_static_chain_folds_constant_of_shape_and_tile():
    m = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[2,3] x) => (float[2,3] y, float[4,3] z) {
      s = Shape(x)
      c = ConstantOfShape<value = float[1] {0.5}>(s)
      y = Add(x, c)
      st = Constant<value = int64[1] {0}>()
      en = Constant<value = int64[1] {1}>()
      r = Slice(s, st, en)
      one = Constant<value = int64[1] {1}>()
      reps = Concat<axis = 0>(r, one)
      z = Tile(x, reps)
    }""")
    out, log = run_pass(m)
    assert op_types(out) == ["Add", "Tile"]
    assert log.counts["constant-of-shape"] == 1 and log.counts["tile-repeats"] == 1
    assert init_value(out, node_of(out, "Tile").input[1]) == [2, 1]
    assert_equivalent(m, out, [{"x": (2, 3)}], **TOL)


# ------------------------------------------------------------------ resize


@pytest.mark.parametrize("opset", [11, 13, 18])
def test_resize_sizes_from_shape_times_two_become_scales(opset):
    """F.interpolate(x, scale_factor=2) legacy export: sizes = Shape(x)[2:] * 2 → scales [1,1,2,2]."""
    roi = 'roi = Constant<value = float[0] {}>()' if opset < 13 else ""
    roi_in = "roi" if opset < 13 else '""'
    empty = 'sc = Constant<value = float[0] {}>()'
    m = model_from_text(f"""
    <ir_version: 8, opset_import: ["" : {opset}]>
    g (float[N,2,H,W] x) => (float[N,2,?,?] y) {{
      s = Shape(x)
      a = Constant<value = int64[1] {{0}}>()
      b = Constant<value = int64[1] {{2}}>()
      c = Constant<value = int64[1] {{4}}>()
      nc = Slice(s, a, b)
      hw = Slice(s, b, c)
      hwf = Cast<to = 1>(hw)
      k = Constant<value = float[2] {{2.0, 2.0}}>()
      m = Mul(hwf, k)
      fl = Floor(m)
      hwi = Cast<to = 7>(fl)
      sizes = Concat<axis = 0>(nc, hwi)
      {roi}
      {empty}
      y = Resize<mode = "nearest">(x, {roi_in}, sc, sizes)
    }}""")
    out, log = run_pass(m)
    resize = node_of(out, "Resize")
    assert len(resize.input) == 3
    assert init_value(out, resize.input[2]) == [1.0, 1.0, 2.0, 2.0]
    assert "Shape" not in op_types(out)
    assert {p.key: p.value for p in resize.metadata_props}["surgeon.rule"] == "resize-scales"
    assert_equivalent(m, out, [{"x": (1, 2, 3, 5)}, {"x": (2, 2, 4, 6)}], **TOL)


def test_resize_non_integer_factor_stays():
    m = model_from_text("""
    <ir_version: 8, opset_import: ["" : 13]>
    g (float[N,2,H,W] x) => (float[N,2,?,?] y) {
      s = Shape(x)
      a = Constant<value = int64[1] {0}>()
      b = Constant<value = int64[1] {2}>()
      c = Constant<value = int64[1] {4}>()
      nc = Slice(s, a, b)
      hw = Slice(s, b, c)
      hwf = Cast<to = 1>(hw)
      k = Constant<value = float[2] {1.5, 1.5}>()
      m = Mul(hwf, k)
      hwi = Cast<to = 7>(m)
      sizes = Concat<axis = 0>(nc, hwi)
      y = Resize<mode = "nearest">(x, "", "", sizes)
    }""")
    out, log = run_pass(m)
    assert out is None
    assert any("Resize" in n and "integer multiple" in n for n in log.notes)


# ------------------------------------------------------------------ casts, slices, clamping


def test_noop_cast_and_full_slice_removed_and_int64_bounds_clamped():
    m = model_from_text(f"""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N,6] x) => (float[N,6] y, float[N,6] z) {{
      c = Cast<to = 1>(x)
      st = Constant<value = int64[1] {{0}}>()
      big = Constant<value = int64[1] {{{INT64_MAX}}}>()
      ax = Constant<value = int64[1] {{1}}>()
      full = Slice(c, st, big, ax)
      y = Relu(full)
      m1 = Constant<value = int64[1] {{-1}}>()
      low = Constant<value = int64[1] {{-{INT64_MAX}}}>()
      rev = Slice(x, m1, low, ax, m1)
      z = Neg(rev)
    }}""")
    out, log = run_pass(m)
    assert [t for t in op_types(out) if t != "Constant"] == ["Relu", "Slice", "Neg"]
    assert log.counts["cast-noop"] == 1 and log.counts["slice-noop"] == 1 and log.counts["clamp-int64"] == 1
    rev = node_of(out, "Slice")
    assert init_value(out, rev.input[2]) == [-(2**31)]
    assert_equivalent(m, out, [{"x": (1, 6)}, {"x": (3, 6)}], **TOL)


# ------------------------------------------------------------------ subgraphs, Q/DQ, contract


def test_chain_inside_if_branch_reading_outer_tensor():
    m = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N,3,4] x, bool c) => (float[N,12] y) {
      r = Relu(x)
      y = If(c) <
        then_branch = t () => (float[N,12] yt) {
          s = Shape(r)
          i0 = Constant<value = int64 {0}>()
          ax = Constant<value = int64[1] {0}>()
          b = Gather<axis = 0>(s, i0)
          bu = Unsqueeze(b, ax)
          m1 = Constant<value = int64[1] {-1}>()
          tt = Concat<axis = 0>(bu, m1)
          yt = Reshape(r, tt)
        },
        else_branch = e () => (float[N,12] ye) {
          k = Constant<value = int64[2] {-1, 12}>()
          ye = Reshape(r, k)
        }
      >
    }""")
    out, log = run_pass(m)
    then = out.graph.node[1].attribute[0].g if out.graph.node[1].attribute[0].name == "then_branch" else out.graph.node[1].attribute[1].g
    assert [n.op_type for n in then.node] == ["Reshape"]
    assert list(then.node[0].input)[0] == "r"  # outer-scope reference intact
    assert log.counts["reshape-target"] == 1
    for flag in (True, False):
        from helpers import run_ort
        for n in (1, 3):
            feeds = {"x": np.random.default_rng(n).uniform(-1, 1, (n, 3, 4)).astype(np.float32), "c": np.array(flag)}
            np.testing.assert_allclose(run_ort(out, feeds)["y"], run_ort(m, feeds)["y"], **TOL)


def test_noop_reshape_between_qdq_is_kept():
    m = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N,4] x) => (float[N,4] y) <float sc = {0.1}, uint8 zp = {128}> {
      q = QuantizeLinear(x, sc, zp)
      d = DequantizeLinear(q, sc, zp)
      s = Shape(x)
      r = Reshape(d, s)
      y = Relu(r)
    }""")
    out, log = run_pass(m)
    assert out is None or [n.op_type for n in out.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear", "Reshape")] \
        == ["QuantizeLinear", "DequantizeLinear", "Reshape"]
    assert any("Q/DQ" in n for n in log.notes)


def test_nothing_to_do_returns_none_and_bisect_limit_zero_applies_nothing():
    plain = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N,4] x) => (float[N,4] y) { y = Relu(x) }""")
    assert run_pass(plain)[0] is None
    chain = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N,3,4] x) => (float[N,12] y) {
      s = Shape(x)
      st = Constant<value = int64[1] {0}>()
      en = Constant<value = int64[1] {1}>()
      b = Slice(s, st, en)
      m1 = Constant<value = int64[1] {-1}>()
      t = Concat<axis = 0>(b, m1)
      y = Reshape(x, t)
    }""")
    out, log = run_pass(chain, limit=0)
    assert out is None and not log.counts


def test_shape_output_that_is_a_graph_output_survives():
    m = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N,3,4] x) => (float[N,12] y, int64[2] t) {
      s = Shape(x)
      st = Constant<value = int64[1] {0}>()
      en = Constant<value = int64[1] {1}>()
      b = Slice(s, st, en)
      m1 = Constant<value = int64[1] {-1}>()
      t = Concat<axis = 0>(b, m1)
      y = Reshape(x, t)
    }""")
    out, _ = run_pass(m)
    assert [o.name for o in out.graph.output] == ["y", "t"]
    assert "Concat" in op_types(out)
    assert_equivalent(m, out, [{"x": (1, 3, 4)}, {"x": (2, 3, 4)}], **TOL)


def test_verified_pipeline_accepts_the_rewrite_with_provenance():
    m = model_from_text("""
    <ir_version: 8, opset_import: ["" : 12]>
    g (float[N,3,4,5] x) => (float[N,3,20] y) {
      s = Shape(x)
      z = Constant<value = int64[1] {0}>()
      two = Constant<value = int64[1] {2}>()
      h = Slice(s, z, two, z)
      m1 = Constant<value = int64[1] {-1}>()
      t = Concat<axis = 0>(h, m1)
      y = Reshape(x, t)
    }""")
    out, report = surgeon.fix(m, ["fold-shape-chains"])
    assert report.verification == "numeric" and not report.rolled_back
    assert report.passes[0].counts["reshape-target"] == 1
    meta = {p.key: p.value for p in out.graph.node[0].metadata_props}
    assert meta == {"surgeon.pass": "fold-shape-chains", "surgeon.rule": "reshape-target", "surgeon.from": out.graph.node[0].name}


# ------------------------------------------------------------------ real models


@requires_corpus("tutorial_cnn_op12_dynbatch.onnx")
@pytest.mark.parametrize("name", ["tutorial_cnn_op12_dynbatch.onnx", "tutorial_cnn_op12_static.onnx"])
def test_corpus_tutorial_flatten_chain_folds(name):
    m = surgeon.load(CORPUS / name)
    out, report = surgeon.fix(m, ["fold-shape-chains"])
    assert report.verification == "numeric" and not report.rolled_back
    hist = op_histogram(out)
    assert not {"Shape", "Slice", "Concat"} & set(hist)
    assert count_nodes(out) == count_nodes(m) - 7


@requires_corpus("magika_standard_v3_3.onnx")
def test_corpus_magika_beats_onnxslim_node_count():
    m = surgeon.load(CORPUS / "magika_standard_v3_3.onnx")
    out, report = surgeon.fix(m, ["fold-shape-chains"])
    assert report.verification == "numeric" and not report.rolled_back
    import onnxslim

    assert count_nodes(out) < count_nodes(onnxslim.slim(m))  # measured live, not remembered
    assert op_histogram(out)["Expand"] <= 1


@requires_corpus("vit_tiny_legacy_op17.onnx")
def test_corpus_vit_keeps_cls_expand_and_folds_attention_views():
    m = surgeon.load(CORPUS / "vit_tiny_legacy_op17.onnx")
    out, log = run_pass(m)
    hist = op_histogram(out)
    assert hist["Expand"] == 1 and hist["Shape"] == 1  # only the CLS-token batch expand needs the shape
    assert log.counts["reshape-target"] >= 48
    assert_equivalent(m, out, [{"pixel_values": (1, 3, 224, 224)}, {"pixel_values": (2, 3, 224, 224)}], atol=1e-4, rtol=1e-4)


DENSE = """
<ir_version: 8, opset_import: ["" : 18]>
g (float[B,S,{k_dims}] x) => (float[B,S,3] y) <float[{k},3] w = {w}, float[{c_shape}] bias = {bias},
  int64[2] flat = {{-1, {k}}}, int64[1] n = {{3}}> {{
  s = Shape(x)
  st = Constant<value = int64[1] {{0}}>()
  en = Constant<value = int64[1] {{2}}>()
  lead = Slice(s, st, en)
  target = Concat<axis = 0>(lead, n)
  v = Reshape(x, flat)
  a = Gemm<{gemm_attrs}>(v, w, bias)
  y = Reshape<allowzero = 1>(a, target)
}}"""


def dense_model(k_dims="4", k=4, c_shape="3", bias="{0.5, -1.0, 2.0}", gemm_attrs="alpha = 1.0"):
    w = "{" + ", ".join(str((i % 7) / 7.0 - 0.4) for i in range(k * 3)) + "}"
    return model_from_text(DENSE.format(k_dims=k_dims, k=k, w=w, c_shape=c_shape, bias=bias, gemm_attrs=gemm_attrs))


@pytest.mark.parametrize("k_dims,k,expected", [("4", 4, ["MatMul", "Add"]), ("2,2", 4, ["Reshape", "MatMul", "Add"])])
def test_dynamo_linear_on_3d_becomes_matmul(k_dims, k, expected):
    """view(-1, K) -> addmm -> view(B, S, N): MatMul broadcasts over B and S itself."""
    m = dense_model(k_dims=k_dims, k=k)
    out, log = run_pass(m)
    assert log.counts["unflatten-dense"] == 1
    assert [t for t in op_types(out) if t != "Constant"] == expected
    assert [o.name for o in out.graph.output] == ["y"] and out.graph.node[-1].output[0] == "y"
    meta = {p.key: p.value for p in out.graph.node[-1].metadata_props}
    assert meta["surgeon.rule"] == "unflatten-dense" and "surgeon.from" in meta
    sizes = [{"x": (1, 5, *map(int, k_dims.split(",")))}, {"x": (3, 2, *map(int, k_dims.split(",")))}]
    assert_equivalent(m, out, sizes, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("gemm_attrs,c_shape,bias,why", [
    ("alpha = 2.0", "3", "{0.5, -1.0, 2.0}", "alpha or beta"),
    ("transB = 1", "3", "{0.5, -1.0, 2.0}", "transposed"),
])
def test_dense_sandwich_refused_with_a_note(gemm_attrs, c_shape, bias, why):
    m = dense_model(gemm_attrs=gemm_attrs, c_shape=c_shape, bias=bias)
    if "transB" in gemm_attrs:  # W must then be [N, K]
        w = onnx.helper.make_tensor("w", onnx.TensorProto.FLOAT, [3, 4], [0.1 * i for i in range(12)])
        m.graph.initializer.remove([t for t in m.graph.initializer if t.name == "w"][0])
        m.graph.initializer.append(w)
    out, log = run_pass(m)
    assert not log.counts.get("unflatten-dense")
    assert any(why in n for n in log.notes), log.notes


def test_dense_sandwich_kept_when_the_final_shape_is_not_the_leading_dims():
    """view(-1, K) -> addmm -> view(S, B, N) mixes rows: not a MatMul over the leading dims."""
    m = dense_model()
    swapped = onnx.helper.make_node("Concat", ["lead_r", "n"], ["target"], axis=0)
    nodes = list(m.graph.node)
    i = [j for j, n in enumerate(nodes) if n.output[0] == "target"][0]
    rev = [onnx.helper.make_node("Constant", [], ["idx"], value=onnx.helper.make_tensor("idx", onnx.TensorProto.INT64, [2], [1, 0])),
           onnx.helper.make_node("Gather", ["lead", "idx"], ["lead_r"], axis=0)]
    nodes[i:i + 1] = rev + [swapped]
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    m.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "S"
    m.graph.output[0].type.tensor_type.shape.dim[1].dim_param = "B"
    onnx.checker.check_model(m)
    out, log = run_pass(m)
    assert not log.counts.get("unflatten-dense")
    assert any("leading dims" in n for n in log.notes)


def test_dims_lost_by_inference_are_derived_from_the_producers():
    """BERT (legacy exporter): word + position embeddings meet an unknown-size position slice,
    and shape inference gives every later tensor unknown dims. The attention Reshapes read
    dims of the LayerNorm output while their input is ``MatMul(that, W)``: MatMul keeps the
    leading dims, so each ``Concat(Shape(h)[0], Shape(h)[1], [-1, 16])`` folds to ``[0, 0, -1, 16]``
    (two layers: q, k, v and the context Reshape each)."""
    model = onnx.load(str(FIXTURES / "exports" / "bert_sentence_legacy_op14.onnx"))
    out, report = surgeon.fix(model, passes="cleanup,fold-constants,fold-shape-chains", verify=False, rounds=1)
    counts = [p.counts for p in report.passes if p.name == "fold-shape-chains"][0]
    assert counts["reshape-target"] >= 8
    targets = {tuple(init_value(out, n.input[1])) for n in out.graph.node
               if n.op_type == "Reshape" and n.input[1] in {t.name for t in out.graph.initializer}}
    assert (0, 0, -1, 16) in targets and (0, 0, -1) in targets
    shapes = [{k: (1, 5) for k in ("input_ids", "attention_mask", "token_type_ids")},
              {k: (3, 9) for k in ("input_ids", "attention_mask", "token_type_ids")}]
    assert_equivalent(model, out, shapes, atol=1e-5, rtol=1e-4)


def test_unknown_batch_after_a_loop_does_not_crash_and_folds_the_target():
    """Found by bench/fuzz_fix.py: a Loop output of unknown rank, a Conv whose batch only value_info
    names, a broadcast Mul: the derived dims held a None entry and the pass crashed with
    AttributeError ('NoneType' object has no attribute 'is_const'). Now that entry is "dim 0 of
    this tensor", and Gather(Shape(a), 0) is exactly that: the target becomes [0, 2, 16]."""
    w = ", ".join(["0.1"] * 72)
    m = model_from_text(f"""
    <ir_version: 8, opset_import: ["" : 15]>
    g (float[N,4,4,4] x) => (float[N,2,16] y)
      <int64 one = {{1}}, bool yes = {{1}}, float[2,4,3,3] w = {{{w}}}, float[M,2,4,4] r> {{
      v = Loop (one, yes, x) <body = b (int64 i, bool c, float[] v_in) => (bool c_out, float[] v_out) {{
          c_out = Identity (c)
          v_out = Relu (v_in)
      }}>
      r = Conv <kernel_shape: ints = [3, 3], pads: ints = [1, 1, 1, 1]> (v, w)
      k = Constant <value = float[2,1,1] {{2.0, 3.0}}> ()
      a = Mul (r, k)
      s = Shape (a)
      i = Constant <value = int64[1] {{0}}> ()
      n = Gather <axis: int = 0> (s, i)
      rest = Constant <value = int64[2] {{2, 16}}> ()
      t = Concat <axis: int = 0> (n, rest)
      y = Reshape (a, t)
    }}""")
    out, log = helpers.run_pass(FoldShapeChains, m)
    assert log.counts.get("reshape-target") == 1
    reshape = next(n for n in out.graph.node if n.op_type == "Reshape")
    target = next(i for i in out.graph.initializer if i.name == reshape.input[1])
    assert numpy_helper.to_array(target).tolist() == [0, 2, 16]
    assert "Shape" not in op_types(out)
    assert_equivalent(m, out, [{"x": (1, 4, 4, 4)}, {"x": (3, 4, 4, 4)}], atol=1e-6, rtol=1e-6)
