"""collapse-shape-ops: Unsqueeze chains and Reshape-after-reshaping-op chains become one node."""

from __future__ import annotations

import onnx
import pytest
from onnx import numpy_helper

from helpers import assert_equivalent, model_from_text, op_types, run_pass
from passes.collapse_shape_ops import merged_unsqueeze_axes
from surgeon.graph import PROVENANCE_PASS, PROVENANCE_RULE

EXACT = dict(atol=0, rtol=0)  # only shapes change: values must be bit-identical


def axes_of(model, node):
    if node.input[1:]:
        for t in model.graph.initializer:
            if t.name == node.input[1]:
                return numpy_helper.to_array(t).tolist()
    return [list(a.ints) for a in node.attribute if a.name == "axes"][0]


def meta(node):
    return {p.key: p.value for p in node.metadata_props}


@pytest.mark.parametrize("a1,a2,rank,expected", [
    ([0], [2, 3], 1, [0, 2, 3]),     # x[None][:, :, None, None]
    ([1, 2], [3], 1, [1, 2, 3]),     # the dynamo exporter's position-id chain
    ([0], [0], 1, [0, 1]),           # new dim in front of a new dim
    ([-1], [0], 2, [0, 3]),          # negative axes need the rank
    ([0], [-1], None, None),         # ... and refuse without it
])
def test_merged_axes(a1, a2, rank, expected):
    assert merged_unsqueeze_axes(a1, a2, rank) == expected


def test_unsqueeze_chain_with_two_readers_becomes_two_unsqueezes():
    m = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (int64[N] x) => (int64[1,N,1,1] y, int64[1,1,N,1] z) {
      a1 = Constant<value = int64[1] {0}>()
      u = Unsqueeze(x, a1)
      a2 = Constant<value = int64[2] {2, 3}>()
      y = Unsqueeze(u, a2)
      a3 = Constant<value = int64[2] {1, -1}>()
      z = Unsqueeze(u, a3)
    }""")
    out, log = run_pass("collapse-shape-ops", m)
    onnx.checker.check_model(out, full_check=True)
    assert op_types(out) == ["Unsqueeze", "Unsqueeze"]  # the inner node and the old axes are gone
    y, z = out.graph.node
    assert list(y.input)[0] == "x" and axes_of(out, y) == [0, 2, 3]
    assert list(z.input)[0] == "x" and axes_of(out, z) == [0, 1, 3]
    assert [o.name for o in out.graph.output] == ["y", "z"]
    assert meta(y)[PROVENANCE_PASS] == "collapse-shape-ops" and meta(y)[PROVENANCE_RULE] == "unsqueeze-merge"
    assert log.counts["unsqueeze-merge"] == 2
    assert_equivalent(m, out, [{"x": (3,)}, {"x": (7,)}], **EXACT)


def test_unsqueeze_axes_as_attributes_before_opset_13():
    m = model_from_text("""
    <ir_version: 7, opset_import: ["" : 11]>
    g (float[N,4] x) => (float[?,?,?,?] y) {
      u = Unsqueeze<axes = [1]>(x)
      y = Unsqueeze<axes = [0]>(u)
    }""")
    out, log = run_pass("collapse-shape-ops", m)
    assert op_types(out) == ["Unsqueeze"] and axes_of(out, out.graph.node[0]) == [0, 2]
    assert_equivalent(m, out, [{"x": (2, 4)}, {"x": (5, 4)}], **EXACT)


@pytest.mark.parametrize("inner", [
    "Reshape(x, flat)", "Flatten<axis = 1>(x)", "Unsqueeze(x, zero)", "Reshape<allowzero = 1>(x, flat_literal)",
])
def test_reshape_after_a_reshaping_op_reads_the_input(inner):
    m = model_from_text(f"""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N,4,6] x) => (float[N,2,12] y) <int64[2] flat = {{0, -1}}, int64[2] flat_literal = {{-1, 24}}, int64[1] zero = {{0}},
      int64[3] target = {{-1, 2, 12}}> {{
      u = {inner}
      y = Reshape(u, target)
    }}""")
    out, log = run_pass("collapse-shape-ops", m)
    assert op_types(out) == ["Reshape"] and list(out.graph.node[0].input) == ["x", "target"]
    assert log.counts["reshape-merge"] == 1
    assert_equivalent(m, out, [{"x": (1, 4, 6)}, {"x": (3, 4, 6)}], **EXACT)


def test_copy_entries_need_the_same_copy_in_the_inner_reshape():
    """``0`` copies the intermediate's dim: fine where the inner Reshape copied x's dim there."""
    m = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N,4,6] x) => (float[N,2,12] y, float[?,?,?] z)
      <int64[2] flat = {0, -1}, int64[3] copy_first = {0, 2, 12}, int64[3] move = {2, -1, 3}, int64[3] copy_mid = {0, 0, -1}> {
      u = Reshape(x, flat)
      y = Reshape(u, copy_first)
      v = Reshape(x, move)
      z = Reshape(v, copy_mid)
    }""")
    out, log = run_pass("collapse-shape-ops", m)
    assert log.counts["reshape-merge"] == 1
    assert any("copies dim" in n for n in log.notes)  # copy_mid: dim 0 of v is 2, not N
    assert [list(n.input) for n in out.graph.node if n.output[0] == "y"] == [["x", "copy_first"]]
    assert_equivalent(m, out, [{"x": (1, 4, 6)}, {"x": (3, 4, 6)}], **EXACT)


def test_kept_when_the_inner_output_is_read_elsewhere_or_a_graph_output():
    m = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N,4] x) => (float[?,?,?] y, float[?,?,?,?] z, float[?,?,?] w) <int64[1] a = {0}, int64[3] t = {2, -1, 4}> {
      u = Unsqueeze(x, a)
      y = Relu(u)
      z = Unsqueeze(u, a)
      w = Unsqueeze(x, a)
      r = Reshape(w, t)
      s = Neg(r)
    }""")
    out, log = run_pass("collapse-shape-ops", m)
    assert out is None and not log.counts
    assert any("other readers" in n for n in log.notes)
    assert any("graph output" in n for n in log.notes)


def test_non_constant_axes_or_target_refused_with_a_note():
    m = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N,4] x, int64[1] ax, int64[3] t) => (float[?,?,?,?] y, float[?,?,?] z) <int64[1] zero = {0}> {
      u = Unsqueeze(x, zero)
      y = Unsqueeze(u, ax)
      v = Unsqueeze(x, zero)
      z = Reshape(v, t)
    }""")
    out, log = run_pass("collapse-shape-ops", m)
    assert out is None
    assert any("axes are not constants" in n for n in log.notes)
    assert any("target is not a constant" in n for n in log.notes)


def test_inside_an_if_branch_with_an_outer_scope_input():
    m = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N] x, bool c) => (float[?,?,?] y) <int64[1] zero = {0}, int64[1] one = {1}, int64[1] two = {2}> {
      y = If(c) <then_branch = t () => (float[?,?,?] ty) {
          u = Unsqueeze(x, zero)
          ty = Unsqueeze(u, two)
        }, else_branch = e () => (float[?,?,?] ey) {
          v = Unsqueeze(x, one)
          ey = Unsqueeze(v, zero)
        }>
    }""")
    out, log = run_pass("collapse-shape-ops", m)
    assert log.counts["unsqueeze-merge"] == 2
    branches = [a.g for a in out.graph.node[0].attribute]
    assert all(len(b.node) == 1 and b.node[0].input[0] == "x" for b in branches)
    import numpy as np
    for flag in (True, False):
        from helpers import run_ort
        feeds = {"x": np.arange(5, dtype=np.float32), "c": np.array(flag)}
        np.testing.assert_array_equal(run_ort(out, feeds)["y"], run_ort(m, feeds)["y"])


def test_bisect_limit_applies_each_merge_separately():
    m = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (int64[N] x) => (int64[?,?,?] y, int64[?,?,?] z) <int64[1] zero = {0}, int64[1] two = {2}> {
      u = Unsqueeze(x, zero)
      y = Unsqueeze(u, two)
      z = Unsqueeze(u, zero)
    }""")
    out, log = run_pass("collapse-shape-ops", m, limit=1)
    assert log.counts["unsqueeze-merge"] == 1
    assert op_types(out).count("Unsqueeze") == 3  # one reader still reads u, so u stays
    assert_equivalent(m, out, [{"x": (3,)}, {"x": (4,)}], **EXACT)


def test_space_to_depth_slices_merge_into_one_slice_per_phase():
    """YOLOv5's Focus: x[..., ::2, ::2] written as a Slice on H, then a Slice on W."""
    m = model_from_text("""
    <ir_version: 8, opset_import: ["" : 13]>
    g (float[N,3,H,W] x) => (float[N,12,?,?] y) <int64[1] s0 = {0}, int64[1] s1 = {1}, int64[1] big = {2147483647},
      int64[1] ax2 = {2}, int64[1] ax3 = {-1}, int64[1] two = {2}> {
      h0 = Slice(x, s0, big, ax2, two)
      a = Slice(h0, s0, big, ax3, two)
      b = Slice(h0, s1, big, ax3, two)
      h1 = Slice(x, s1, big, ax2, two)
      c = Slice(h1, s0, big, ax3, two)
      d = Slice(h1, s1, big, ax3, two)
      y = Concat<axis = 1>(a, c, b, d)
    }""")
    out, log = run_pass("collapse-shape-ops", m)
    onnx.checker.check_model(out, full_check=True)
    assert log.counts["slice-merge"] == 4
    assert op_types(out) == ["Slice"] * 4 + ["Concat"]
    assert all(n.input[0] == "x" for n in out.graph.node if n.op_type == "Slice")
    assert_equivalent(m, out, [{"x": (1, 3, 8, 6)}, {"x": (2, 3, 6, 10)}], **EXACT)


def test_slices_cutting_the_same_axis_or_with_computed_bounds_stay():
    m = model_from_text("""
    <ir_version: 8, opset_import: ["" : 13]>
    g (float[N,8] x, int64[1] e) => (float[?,?] y, float[?,?] z) <int64[1] s0 = {0}, int64[1] s1 = {1},
      int64[1] big = {100}, int64[1] ax1 = {1}> {
      u = Slice(x, s1, big, ax1)
      y = Slice(u, s1, big, ax1)
      v = Slice(x, s0, e, ax1)
      w = Slice(v, s0, big, s0)
      z = Neg(w)
    }""")
    out, log = run_pass("collapse-shape-ops", m)
    assert out is None and not log.counts
    assert any("both cut axis 1" in n for n in log.notes)
    assert any("bounds are not constants" in n for n in log.notes)


# --- Transposes that move only size-1 axes ----------------------------------------------------

LSTM_OUT = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[S,1,B,4] x) => (float[?,?,?] y) <int64[3] flat = {0, 0, -1}> {
      t = Transpose<perm = [0, 2, 1, 3]>(x)
      y = Reshape(t, flat)
    }"""


def test_lstm_output_transpose_merges_into_the_reshape():
    """[seq, 1, batch, hidden] -> perm [0,2,1,3] -> Reshape [0, 0, -1]: one Reshape of x, target [0, -1, 4]."""
    m = model_from_text(LSTM_OUT)
    out, log = run_pass("collapse-shape-ops", m)
    assert op_types(out) == ["Reshape"] and out.graph.node[0].input[0] == "x"
    target = next(numpy_helper.to_array(t) for t in out.graph.initializer if t.name == out.graph.node[0].input[1])
    assert target.tolist() == [0, -1, 4]
    assert log.counts == {"reshape-merge": 1}
    assert_equivalent(m, out, [{"x": (5, 1, 2, 4)}, {"x": (3, 1, 7, 4)}], **EXACT)


def test_lone_unit_axis_transpose_becomes_a_reshape():
    m = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[S,1,B,4] x) => (float[?,?,?,?] y) {
      t = Transpose<perm = [0, 2, 1, 3]>(x)
      y = Relu(t)
    }""")
    out, log = run_pass("collapse-shape-ops", m)
    assert op_types(out) == ["Reshape", "Relu"] and log.counts == {"transpose-to-reshape": 1}
    assert_equivalent(m, out, [{"x": (5, 1, 2, 4)}, {"x": (3, 1, 7, 4)}], **EXACT)


def test_transpose_moving_a_real_axis_stays():
    m = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[S,2,B,4] x) => (float[?,?,?] y) <int64[3] flat = {0, 0, -1}> {
      t = Transpose<perm = [0, 2, 1, 3]>(x)
      y = Reshape(t, flat)
    }""")
    out, log = run_pass("collapse-shape-ops", m)
    assert out is None and not log.counts


def test_two_dynamic_moved_dims_cannot_be_written_and_stay():
    m = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[1,S,B] x) => (float[?,?,?] y) {
      t = Transpose<perm = [1, 2, 0]>(x)
      y = Relu(t)
    }""")
    out, log = run_pass("collapse-shape-ops", m)
    assert out is None and any("two moved dims are dynamic" in n for n in log.notes)


@pytest.mark.parametrize("x,mid,target,expected", [
    ([("dim", 0), 1, ("dim", 2), 4], [("dim", 0), ("dim", 2), 1, 4], [0, 0, -1], [0, -1, 4]),
    ([("dim", 0), 1, ("dim", 2), 4], [("dim", 0), ("dim", 2), 1, 4], [-1, 4], [-1, 4]),
    ([2, 1, 3], [2, 3, 1], [0, 0], [2, 3]),
    ([("dim", 0), 1, ("dim", 2)], [("dim", 2), 1, ("dim", 0)], [0, 0, 0], None),  # two dynamic dims move
])
def test_translate_target(x, mid, target, expected):
    from passes.collapse_shape_ops import translate_target

    assert translate_target(x, mid, target, 0) == expected
