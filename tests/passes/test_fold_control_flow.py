"""fold-control-flow: settled If nodes inlined, zero-trip Loops removed, names and scopes kept.

Inlining moves nodes without changing any arithmetic, so outputs must match the input
model exactly; the float32 tolerance is atol 1e-6, rtol 1e-6.
"""

from __future__ import annotations

import numpy as np
import onnx

import surgeon
from helpers import CORPUS, model_from_text, op_types, requires_corpus, run_ort, run_pass
from surgeon import graph as G

TOL = dict(atol=1e-6, rtol=1e-6)
HEAD = '<ir_version: 8, opset_import: ["" : 17]>'
X = np.array([1, -2, 3, -4], np.float32)


def folded(model, **kw):
    out, log = run_pass("fold-control-flow", model, **kw)
    if out is not None:
        onnx.checker.check_model(out, full_check=True)
    return out, log


def same_outputs(a, b, feed_sets):
    for feeds in feed_sets:
        ra, rb = run_ort(a, feeds), run_ort(b, feeds)
        assert list(ra) == list(rb)
        for k in ra:
            np.testing.assert_allclose(rb[k], ra[k], **TOL, err_msg=k)


def test_constant_true_condition_inlines_the_then_branch():
    m = model_from_text(HEAD + """
    g (float[4] x) => (float[4] y) <bool c = {1}> {
      a = Abs(x)
      r = If(c) <then_branch = t () => (float[4] o) { n = Neg(a)
                                                      o = Exp(n) },
                 else_branch = e () => (float[4] p) { p = Sigmoid(a) }>
      y = Add(r, x)
    }""")
    out, log = folded(m)
    assert op_types(out) == ["Abs", "Neg", "Exp", "Add"]
    assert log.counts["constant-condition"] == 1
    assert list(out.graph.node[2].output) == ["r"]  # the branch output takes the If output's name
    assert not out.graph.initializer  # the condition is gone
    same_outputs(m, out, [{"x": X}])


def test_constant_false_condition_from_a_constant_node_inlines_else():
    m = model_from_text(HEAD + """
    g (float[4] x) => (float[4] y) {
      c = Constant <value = bool {0}> ()
      y = If(c) <then_branch = t () => (float[4] o) { o = Neg(x) },
                 else_branch = e () => (float[4] p) { p = Sigmoid(x) }>
    }""")
    out, log = folded(m)
    assert op_types(out) == ["Sigmoid"]  # the dead Constant went with the If
    assert [o.name for o in out.graph.output] == ["y"] and list(out.graph.node[0].output) == ["y"]
    assert log.counts["dead-node"] == 1
    same_outputs(m, out, [{"x": X}])


def test_condition_from_an_input_is_kept_with_a_note():
    m = model_from_text(HEAD + """
    g (float[4] x, int64 sr) => (float[4] y) <int64 k = {16000}> {
      c = Equal(sr, k)
      y = If(c) <then_branch = t () => (float[4] o) { o = Neg(x) },
                 else_branch = e () => (float[4] p) { p = Sigmoid(x) }>
    }""")
    out, log = folded(m)
    assert out is None
    assert any("depends on input sr" in n for n in log.notes)


def test_overridable_condition_is_kept():
    m = model_from_text(HEAD + """
    g (float[4] x, bool c) => (float[4] y) <bool c = {1}> {
      y = If(c) <then_branch = t () => (float[4] o) { o = Neg(x) },
                 else_branch = e () => (float[4] p) { p = Sigmoid(x) }>
    }""")
    out, log = folded(m)
    assert out is None
    assert any("may override" in n for n in log.notes)


def test_equal_branches_inline_and_drop_the_condition():
    m = model_from_text(HEAD + """
    g (float[4] x, int64 sr) => (float[4] y) <int64 k = {16000}, int64[1] ax = {0}> {
      c = Equal(sr, k)
      r = If(c) <then_branch = t () => (float[1, 4] o) { o = Unsqueeze(x, ax) },
                 else_branch = e () => (float[1, 4] p) { p = Unsqueeze(x, ax) }>
      y = Squeeze(r, ax)
    }""")
    out, log = folded(m)
    assert op_types(out) == ["Unsqueeze", "Squeeze"]
    assert log.counts["same-branches"] == 1 and log.counts["dead-node"] == 1
    same_outputs(m, out, [{"x": X, "sr": np.array(s, np.int64)} for s in (16000, 8000)])


def test_different_branches_are_not_equal():
    m = model_from_text(HEAD + """
    g (float[4] x, bool c) => (float[1, 4] y) <int64[1] a0 = {0}, int64[1] a1 = {1}> {
      y = If(c) <then_branch = t () => (float[1, 4] o) { o = Unsqueeze(x, a0) },
                 else_branch = e () => (float[4, 1] p) { p = Unsqueeze(x, a1) }>
    }""")
    out, _ = folded(m)
    assert out is None


def test_branch_returning_a_constant_into_a_graph_output_gets_a_stamped_identity():
    # A branch output is always computed or held by the branch (the checker rejects a body
    # output naming an outer value); a constant cannot take the graph output's name.
    m = model_from_text(HEAD + """
    g (float[4] x) => (float[4] y, float[4] z) <bool c = {1}> {
      y, z = If(c) <then_branch = t () => (float[4] k, float[4] q) <float[4] k = {1.0, 2.0, 3.0, 4.0}> {
                        q = Neg(x) },
                    else_branch = e () => (float[4] p, float[4] s) { p = Neg(x)
                                                                   s = Neg(x) }>
    }""")
    out, log = folded(m)
    assert [o.name for o in out.graph.output] == ["y", "z"]
    assert op_types(out) == ["Neg", "Identity"]
    identity = out.graph.node[-1]
    assert list(identity.input) == ["k"] and list(identity.output) == ["y"]
    meta = {p.key: p.value for p in identity.metadata_props}
    assert meta[G.PROVENANCE_PASS] == "fold-control-flow" and meta[G.PROVENANCE_RULE] == "constant-condition"
    same_outputs(m, out, [{"x": X}])


def test_branch_returning_a_constant():
    m = model_from_text(HEAD + """
    g (float[4] x) => (float[4] y) <bool c = {0}> {
      r = If(c) <then_branch = t () => (float[4] o) { o = Neg(x) },
                 else_branch = e () => (float[4] p) <float[4] p = {1.0, 2.0, 3.0, 4.0}> { }>
      y = Add(r, x)
    }""")
    out, log = folded(m)
    assert op_types(out) == ["Add"]
    same_outputs(m, out, [{"x": X}])


def test_names_taken_elsewhere_are_renamed():
    # Both Ifs' then-branches define "n"; inlining one into the main graph must not let it
    # shadow the other branch's "n" (the checker rejects that).
    m = model_from_text(HEAD + """
    g (float[4] x, bool d) => (float[4] y) <bool c = {1}> {
      r = If(c) <then_branch = t () => (float[4] o) { n = Neg(x)
                                                      o = Exp(n) },
                 else_branch = e () => (float[4] p) { p = Sigmoid(x) }>
      y = If(d) <then_branch = t2 () => (float[4] o2) { n = Abs(r)
                                                        o2 = Exp(n) },
                 else_branch = e2 () => (float[4] p2) { p2 = Neg(r) }>
    }""")
    out, log = folded(m)
    assert op_types(out) == ["Neg", "Exp", "If"]
    assert out.graph.node[0].output[0] != "n"
    same_outputs(m, out, [{"x": X, "d": np.array(v)} for v in (True, False)])


def test_if_inside_a_loop_body_reading_outer_values():
    m = model_from_text(HEAD + """
    g (float[4] x, int64 n) => (float[4] y) <float[4] w = {0.5, 0.5, 2.0, 2.0}> {
      t = Constant <value = bool {1}> ()
      y = Loop(n, t, x) <body = b (int64 i, bool cin, float[4] acc) => (bool cout, float[4] acc2) {
          cout = Identity(cin)
          k = Constant <value = bool {1}> ()
          acc2 = If(k) <then_branch = t1 () => (float[4] o1) { o1 = Mul(acc, w) },
                        else_branch = e1 () => (float[4] p1) { p1 = Add(acc, w) }>
      }>
    }""")
    out, log = folded(m)
    body = next(a.g for a in out.graph.node[-1].attribute if a.name == "body")
    assert [n.op_type for n in body.node] == ["Identity", "Mul"]
    assert list(body.output)[1].name == "acc2"
    same_outputs(m, out, [{"x": X, "n": np.array(k, np.int64)} for k in (0, 1, 3)])


def test_nested_settled_ifs_fold_in_one_run():
    m = model_from_text(HEAD + """
    g (float[4] x) => (float[4] y) <bool c = {1}> {
      y = If(c) <then_branch = t () => (float[4] o) {
                    k = Constant <value = bool {0}> ()
                    o = If(k) <then_branch = t1 () => (float[4] o1) { o1 = Neg(x) },
                               else_branch = e1 () => (float[4] p1) { p1 = Abs(x) }>
                 },
                 else_branch = e () => (float[4] p) { p = Sigmoid(x) }>
    }""")
    out, log = folded(m)
    assert op_types(out) == ["Abs"]
    assert log.counts["constant-condition"] == 2
    same_outputs(m, out, [{"x": X}])


def test_ifs_on_the_same_condition_share_one_if():
    # Both then-branches define "n": after the merge they share a scope, so one is renamed.
    m = model_from_text(HEAD + """
    g (float[4] x, bool c) => (float[4] y, float[4] z) {
      b = Sigmoid(x)
      a = If(c) <then_branch = t1 () => (float[4] o1) { n = Neg(x)
                                                        o1 = Exp(n) },
                 else_branch = e1 () => (float[4] p1) { p1 = Abs(x) }>
      z = If(c) <then_branch = t2 () => (float[4] o2) { n = Abs(b)
                                                        o2 = Exp(n) },
                 else_branch = e2 () => (float[4] p2) { p2 = Neg(b) }>
      y = Add(a, b)
    }""")
    out, log = folded(m)
    assert op_types(out) == ["Sigmoid", "If", "Add"]
    assert log.counts["same-condition"] == 1
    merged = out.graph.node[1]
    assert list(merged.output) == ["a", "z"]
    then_b = next(a.g for a in merged.attribute if a.name == "then_branch")
    assert len({o for n in then_b.node for o in n.output}) == 4
    same_outputs(m, out, [{"x": X, "c": np.array(v)} for v in (True, False)])


def test_if_reading_an_earlier_ifs_result_is_not_merged_into_it():
    m = model_from_text(HEAD + """
    g (float[4] x, bool c) => (float[4] y) {
      a = If(c) <then_branch = t1 () => (float[4] o1) { o1 = Neg(x) },
                 else_branch = e1 () => (float[4] p1) { p1 = Abs(x) }>
      y = If(c) <then_branch = t2 () => (float[4] o2) { o2 = Exp(a) },
                 else_branch = e2 () => (float[4] p2) { p2 = Neg(a) }>
    }""")
    out, log = folded(m)
    assert out is None
    assert any("not merged into If" in n and "computed after that If" in n for n in log.notes)


def test_zero_trip_loop_returns_its_initial_values():
    m = model_from_text(HEAD + """
    g (float[4] x) => (float[4] y) <int64 zero = {0}> {
      t = Constant <value = bool {1}> ()
      a = Abs(x)
      l = Loop(zero, t, a) <body = b (int64 i, bool cin, float[4] acc) => (bool cout, float[4] acc2) {
          cout = Identity(cin)
          acc2 = Neg(acc)
      }>
      y = Add(l, x)
    }""")
    out, log = folded(m)
    assert op_types(out) == ["Abs", "Add"]
    assert log.counts["zero-trip-loop"] == 1
    same_outputs(m, out, [{"x": X}])


def test_loop_with_a_read_scan_output_is_kept():
    m = model_from_text(HEAD + """
    g (float[4] x) => (float[4] y, float[N, 4] s) <int64 zero = {0}> {
      t = Constant <value = bool {1}> ()
      y, s = Loop(zero, t, x) <body = b (int64 i, bool cin, float[4] acc) => (bool cout, float[4] acc2, float[4] sc) {
          cout = Identity(cin)
          acc2 = Neg(acc)
          sc = Abs(acc)
      }>
    }""")
    out, log = folded(m)
    assert out is None
    assert any("scan output" in n for n in log.notes)


def test_loop_with_a_dynamic_trip_count_is_kept():
    m = model_from_text(HEAD + """
    g (float[4] x, int64 n) => (float[4] y) {
      t = Constant <value = bool {1}> ()
      y = Loop(n, t, x) <body = b (int64 i, bool cin, float[4] acc) => (bool cout, float[4] acc2) {
          cout = Identity(cin)
          acc2 = Neg(acc)
      }>
    }""")
    out, _ = folded(m)
    assert out is None


def test_every_rewrite_asks_permission():
    m = model_from_text(HEAD + """
    g (float[4] x) => (float[4] y) <bool c = {1}> {
      y = If(c) <then_branch = t () => (float[4] o) { o = Neg(x) },
                 else_branch = e () => (float[4] p) { p = Sigmoid(x) }>
    }""")
    out, log = folded(m, limit=0)
    assert out is None and not log.counts


def test_verified_through_the_pipeline():
    m = model_from_text(HEAD + """
    g (float[4] x) => (float[4] y) <bool c = {0}> {
      a = Abs(x)
      y = If(c) <then_branch = t () => (float[4] o) { o = Neg(a) },
                 else_branch = e () => (float[4] p) { p = Sigmoid(a) }>
    }""")
    samples = [{"x": X}]
    out, report = surgeon.fix(m, passes=["fold-control-flow"], samples=samples, atol=0.0, rtol=0.0)
    assert report.verification == "numeric"
    assert [p.status for p in report.passes] == ["applied"]
    assert op_types(out) == ["Abs", "Sigmoid"]


@requires_corpus("silero_vad_v6.onnx")
def test_silero_with_folded_conditions_beats_onnxslim():
    """After folding, these passes leave fewer nodes than onnxslim 0.1.98 does (152, bodies included).

    The pipeline's own verification is off to keep this short (tests/test_corpus.py runs the
    verified default pipeline on silero); both sample rates are compared here instead.
    """
    m = surgeon.load(CORPUS / "silero_vad_v6.onnx")
    out, report = surgeon.fix(m, passes=["cleanup", "fold-constants", "fold-control-flow", "fold-shape-chains",
                                         "merge-duplicates"], verify=False, rounds=1)
    assert next(p for p in report.passes if p.name == "fold-control-flow").counts["constant-condition"] >= 2
    assert G.count_nodes(out) < 152
    rng = np.random.default_rng(0)
    same_outputs(m, out, [{"input": rng.standard_normal((b, n)).astype(np.float32),
                           "state": rng.standard_normal((2, b, 128)).astype(np.float32),
                           "sr": np.array(sr, np.int64)} for sr, n, b in ((16000, 512, 1), (8000, 256, 3))])
