"""merge-duplicates: identical constants and nodes merged, bodies and outer scopes included.

Each case states the model, what must be merged (or not), and checks the result
numerically against the input. Merging never changes arithmetic, so the float32
tolerance is tight: atol 1e-6, rtol 1e-6.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

import surgeon
from helpers import CORPUS, assert_equivalent, model_from_text, op_types, requires_corpus, run_ort, run_pass
from passes import _same_value as V
from surgeon.graph import count_nodes

TOL = dict(atol=1e-6, rtol=1e-6)
HEAD = '<ir_version: 8, opset_import: ["" : 17]>'


def merged(model):
    out, log = run_pass("merge-duplicates", model)
    if out is not None:
        onnx.checker.check_model(out, full_check=True)
    return out, log


# --- nodes -----------------------------------------------------------------------------

def test_chain_of_duplicates_collapses_in_one_run():
    m = model_from_text(HEAD + """
    g (float[N, 4] x) => (float[N, 4] y) {
      a1 = Relu(x)
      a2 = Relu(x)
      b1 = Exp(a1)
      b2 = Exp(a2)
      c1 = Mul(b1, x)
      c2 = Mul(b2, x)
      y = Add(c1, c2)
    }""")
    out, log = merged(m)
    assert op_types(out) == ["Relu", "Exp", "Mul", "Add"]
    assert log.counts["same-node"] == 3
    assert list(out.graph.node[-1].input) == ["c1", "c1"]
    assert_equivalent(m, out, [{"x": (2, 4)}, {"x": (5, 4)}], **TOL)


def test_different_attributes_or_input_order_not_merged():
    m = model_from_text(HEAD + """
    g (float[N, 4] x, float[N, 4] z) => (float[N, 4] y, float[N] r) <int64[1] ax = {1}> {
      s1 = Sub(x, z)
      s2 = Sub(z, x)
      y = Add(s1, s2)
      r1 = ReduceSum <keepdims = 0> (x, ax)
      r2 = ReduceSum <keepdims = 1> (x, ax)
      r3 = Squeeze(r2, ax)
      r = Add(r1, r3)
    }""")
    out, log = merged(m)
    assert out is None
    assert not log.counts


def test_duplicate_writing_a_graph_output_keeps_the_output_name():
    m = model_from_text(HEAD + """
    g (float[N, 4] x) => (float[N, 4] y, float[N, 4] z) {
      a = Sigmoid(x)
      y = Neg(a)
      z = Sigmoid(x)
    }""")
    out, log = merged(m)
    assert [o.name for o in out.graph.output] == ["y", "z"]
    assert op_types(out) == ["Sigmoid", "Neg"]
    assert list(out.graph.node[0].output) == ["z"] and list(out.graph.node[1].input) == ["z"]
    assert_equivalent(m, out, [{"x": (3, 4)}], **TOL)


def test_two_graph_outputs_with_the_same_value_are_kept():
    m = model_from_text(HEAD + """
    g (float[N, 4] x) => (float[N, 4] y, float[N, 4] z) {
      y = Sigmoid(x)
      z = Sigmoid(x)
    }""")
    out, log = merged(m)
    assert out is None
    assert any("both write graph outputs" in n for n in log.notes)


def test_random_ops_are_never_merged():
    m = model_from_text(HEAD + """
    g (float[N, 4] x) => (float[N, 4] y) {
      r1 = RandomUniformLike <seed = 1.0> (x)
      r2 = RandomUniformLike <seed = 1.0> (x)
      y = Sub(r1, r2)
    }""")
    out, log = merged(m)
    assert out is None
    assert any("RandomUniformLike" in n and "random op" in n for n in log.notes)


def test_body_with_a_random_op_makes_the_if_unmergeable():
    m = model_from_text(HEAD + """
    g (float[4] x, bool c) => (float[4] y) {
      a = If(c) <then_branch = t1 () => (float[4] o1) { o1 = RandomNormalLike(x) },
                 else_branch = e1 () => (float[4] p1) { p1 = Neg(x) }>
      b = If(c) <then_branch = t2 () => (float[4] o2) { o2 = RandomNormalLike(x) },
                 else_branch = e2 () => (float[4] p2) { p2 = Neg(x) }>
      y = Sub(a, b)
    }""")
    out, log = merged(m)
    assert out is None


def test_custom_domain_nodes_are_not_merged():
    m = model_from_text('<ir_version: 8, opset_import: ["" : 17, "com.example" : 1]>' + """
    g (float[4] x) => (float[4] y) {
      a = com.example.Noise(x)
      b = com.example.Noise(x)
      y = Add(a, b)
    }""")
    out, log = merged(m)
    assert out is None
    assert any("com.example" in n for n in log.notes)


def test_identical_ifs_on_the_same_condition_are_merged():
    m = model_from_text(HEAD + """
    g (float[4] x, bool c) => (float[4] y) {
      a = If(c) <then_branch = t1 () => (float[4] o1) { o1 = Neg(x) },
                 else_branch = e1 () => (float[4] p1) { p1 = Abs(x) }>
      b = If(c) <then_branch = t2 () => (float[4] o2) { o2 = Neg(x) },
                 else_branch = e2 () => (float[4] p2) { p2 = Abs(x) }>
      y = Sub(a, b)
    }""")
    out, log = merged(m)
    assert op_types(out) == ["If", "Sub"]
    x = np.array([1, -2, 3, -4], np.float32)
    for c in (True, False):
        feeds = {"x": x, "c": np.array(c)}
        np.testing.assert_allclose(run_ort(out, feeds)["y"], run_ort(m, feeds)["y"], **TOL)


def test_ifs_whose_bodies_differ_are_not_merged():
    m = model_from_text(HEAD + """
    g (float[4] x, bool c) => (float[4] y) {
      a = If(c) <then_branch = t1 () => (float[4] o1) { o1 = Neg(x) },
                 else_branch = e1 () => (float[4] p1) { p1 = Abs(x) }>
      b = If(c) <then_branch = t2 () => (float[4] o2) { o2 = Neg(x) },
                 else_branch = e2 () => (float[4] p2) { p2 = Relu(x) }>
      y = Sub(a, b)
    }""")
    out, _ = merged(m)
    assert out is None


# --- bodies and the outer scope ----------------------------------------------------------

LOOP = HEAD + """
g (float[4] x, int64 n) => (float[4] y, float[4] o) {
  s = Sigmoid(x)
  o = Neg(s)
  t = Constant <value = bool {1}> ()
  y = Loop(n, t, x) <body = b (int64 i, bool cin, float[4] acc) => (bool cout, float[4] acc2) {
      cout = Identity(cin)
      s_in = Sigmoid(x)
      u1 = Abs(acc)
      u2 = Abs(acc)
      w = Mul(u1, u2)
      acc2 = Add(w, s_in)
  }>
}"""


def test_body_nodes_merge_inside_and_with_the_outer_scope():
    m = model_from_text(LOOP)
    out, log = merged(m)
    assert log.counts["same-node"] == 1  # Abs(acc) twice
    assert log.counts["same-node-in-outer-scope"] == 1  # Sigmoid(x) in the body reads the outer s
    body = next(a.g for a in out.graph.node[-1].attribute if a.name == "body")
    assert [n.op_type for n in body.node] == ["Identity", "Abs", "Mul", "Add"]
    assert "s" in list(body.node[-1].input)
    for n in (0, 1, 3):
        feeds = {"x": np.array([1, -2, 3, -4], np.float32), "n": np.array(n, np.int64)}
        ra, rb = run_ort(m, feeds), run_ort(out, feeds)
        for k in ra:
            np.testing.assert_allclose(rb[k], ra[k], **TOL)


def test_a_body_keeps_its_constant_nodes_and_the_checker_accepts_the_result():
    """Found by bench/fuzz_fix.py: a body's Slice axes Constant merged into the outer graph's equal
    one; onnx's shape inference then misread the Slice and the checker rejected the Resize after it
    (the pass was rolled back). The body's other duplicate, Shape(x), still reads the outer one."""
    m = model_from_text(f"""{HEAD}
    g (float[N,2,5,8] x, bool c) => (float[a,b,d,e] y, int64[4] s) {{
      s = Shape (x)
      ax = Constant <value = int64[1] {{0}}> ()
      n = Slice (s, ax, ax, ax)
      y = If (c) <then_branch = t () => (float[a,b,d,e] r) {{
          s2 = Shape (x)
          st = Constant <value = int64[1] {{0}}> ()
          en = Constant <value = int64[1] {{2}}> ()
          ax2 = Constant <value = int64[1] {{0}}> ()
          sl = Slice (s2, st, en, ax2)
          hw = Constant <value = int64[2] {{5, 7}}> ()
          sz = Concat <axis: int = 0> (sl, hw)
          r = Resize <mode: string = "nearest"> (x, , , sz)
      }}, else_branch = e () => (float[a,b,d,e] q) {{ q = Identity (x) }}>
    }}""")
    out, log = merged(m)  # full_check passes
    assert log.counts["same-node-in-outer-scope"] == 1  # Shape(x)
    assert log.counts["same-node"] == 1  # st and ax2 inside the body
    body = next(a.g for a in out.graph.node[-1].attribute if a.name == "then_branch")
    assert [n.op_type for n in body.node] == ["Constant", "Constant", "Slice", "Constant", "Concat", "Resize"]
    for c in (True, False):
        feeds = {"x": np.ones((3, 2, 5, 8), np.float32), "c": np.array(c)}
        ra, rb = run_ort(m, feeds), run_ort(out, feeds)
        for k in ra:
            np.testing.assert_array_equal(rb[k], ra[k])


def test_body_node_after_the_loop_in_the_outer_graph_is_not_reused():
    # The outer Sigmoid comes after the Loop (it reads the Loop's result): a body may
    # only read what is computed before its node.
    m = model_from_text(HEAD + """
    g (float[4] x, int64 n) => (float[4] y) {
      t = Constant <value = bool {1}> ()
      l = Loop(n, t, x) <body = b (int64 i, bool cin, float[4] acc) => (bool cout, float[4] acc2) {
          cout = Identity(cin)
          acc2 = Sigmoid(acc)
      }>
      y = Sigmoid(l)
    }""")
    out, log = merged(m)
    assert out is None


def test_body_output_computed_outside_is_refused_with_a_note():
    m = model_from_text(HEAD + """
    g (float[4] x, bool c) => (float[4] y) {
      s = Sigmoid(x)
      a = If(c) <then_branch = t1 () => (float[4] o1) { o1 = Sigmoid(x) },
                 else_branch = e1 () => (float[4] p1) { p1 = Abs(x) }>
      y = Add(a, s)
    }""")
    out, log = merged(m)
    assert out is None
    assert any("is a graph output" in n for n in log.notes)


# --- constants -----------------------------------------------------------------------------

def test_identical_initializers_and_constant_nodes_merge():
    m = model_from_text(HEAD + """
    g (float[N, 2] x) => (float[N, 2] y, float[1, N, 2] z) {
      a = Add(x, w1)
      b = Mul(a, w2)
      y = Sub(b, w3)
      k1 = Constant <value = int64[1] {0}> ()
      k2 = Constant <value = int64[1] {0}> ()
      u1 = Unsqueeze(y, k1)
      u2 = Unsqueeze(y, k2)
      u3 = Unsqueeze(y, ax)
      v = Add(u1, u2)
      z = Add(v, u3)
    }""".replace("{\n      a = Add",
                 "<float[2] w1 = {0.5, -1.0}, float[2] w2 = {0.5, -1.0}, float[2] w3 = {0.5, 1.0}, "
                 "int64[1] ax = {0}> {\n      a = Add"))
    out, log = merged(m)
    assert log.counts["same-initializer"] == 1  # w2 -> w1 (w3 differs)
    # k2 merges with k1; then u2 with u1, and u3 (ax, an initializer of the same content) too,
    # which leaves ax unread
    assert sorted(t.name for t in out.graph.initializer) == ["w1", "w3"]
    assert op_types(out).count("Unsqueeze") == 1 and op_types(out).count("Constant") == 1
    assert_equivalent(m, out, [{"x": (3, 2)}], **TOL)


def test_constant_value_ints_matches_an_int64_initializer():
    m = model_from_text(HEAD + """
    g (float[N, 4] x) => (float[1, N, 4] y) <int64[1] ax = {0}> {
      k = Constant <value_ints = [0]> ()
      u1 = Unsqueeze(x, k)
      u2 = Unsqueeze(x, ax)
      y = Add(u1, u2)
    }""")
    out, log = merged(m)
    assert op_types(out) == ["Constant", "Unsqueeze", "Add"]
    assert_equivalent(m, out, [{"x": (2, 4)}], **TOL)


def test_negative_zero_and_other_dtypes_are_different_constants():
    m = model_from_text(HEAD + """
    g (float[2] x) => (float[2] y, int32[2] z) <float[2] p = {0.0, 1.0}, float[2] q = {-0.0, 1.0},
                                                 int32[2] i = {0, 1}, int64[2] j = {0, 1}> {
      a = Div(p, x)
      b = Div(q, x)
      y = Add(a, b)
      c = Cast <to = 6> (j)
      z = Add(i, c)
    }""")
    out, _ = merged(m)
    assert out is None


def test_overridable_initializer_is_never_merged():
    # w is listed as a graph input (IR >= 4): a user may feed another value.
    m = model_from_text(HEAD + """
    g (float[2] x, float[2] w) => (float[2] y) <float[2] w = {1.0, 2.0}, float[2] v = {1.0, 2.0}> {
      a = Mul(x, w)
      b = Mul(x, v)
      y = Sub(a, b)
    }""")
    out, _ = merged(m)
    assert out is None
    feeds = {"x": np.ones(2, np.float32), "w": np.array([5, 5], np.float32)}
    assert np.allclose(run_ort(m, feeds)["y"], [4, 3])


def test_every_rewrite_asks_permission():
    m = model_from_text(HEAD + """
    g (float[4] x) => (float[4] y) {
      a = Relu(x)
      b = Relu(x)
      y = Add(a, b)
    }""")
    out, log = run_pass("merge-duplicates", m, limit=0)
    assert out is None and not log.counts


def test_verified_through_the_pipeline():
    m = model_from_text(LOOP)
    samples = [{"x": np.array([1, -2, 3, -4], np.float32), "n": np.array(k, np.int64)} for k in (0, 2)]
    out, report = surgeon.fix(m, passes=["merge-duplicates"], samples=samples, atol=0.0, rtol=0.0)
    assert report.verification == "numeric"
    assert [p.status for p in report.passes] == ["applied"]
    assert count_nodes(out) == count_nodes(m) - 2


# --- the cost of comparing weights ----------------------------------------------------------

def test_large_weights_held_in_the_protobuf_are_not_read():
    # onnx-graphsurgeon's lazy values: reading one element copies the whole tensor out of
    # the protobuf, so tensors over the limit are never read, even with same-shaped peers.
    import onnx_graphsurgeon as gs
    from onnx_graphsurgeon.ir.tensor import LazyValues

    rng = np.random.default_rng(0)
    big = [gs.Constant(f"w{i}", LazyValues(numpy_helper.from_array(rng.standard_normal((512, 1024)).astype(np.float32),
                                                                   f"w{i}"))) for i in range(4)]
    small = [gs.Constant(f"b{i}", LazyValues(numpy_helper.from_array(np.ones(8, np.float32), f"b{i}"))) for i in range(2)]
    index = V.ContentIndex()
    assert len({index.class_of(c) for c in big}) == 4
    assert index.lazy_bytes_read == 0 and len(index.unread) == 3
    assert index.class_of(small[0]) == index.class_of(small[1]) and index.lazy_bytes_read == 64


def test_in_memory_weights_are_compared_by_samples_first():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((256, 256)).astype(np.float32)
    b = a.copy()
    b[-1, -1] += 1  # differs only where no sample looks: the full comparison must tell
    c = a.copy()
    index = V.ContentIndex()
    ca, cb, cc = index.class_of(a), index.class_of(b), index.class_of(c)
    assert ca == cc and ca != cb


@requires_corpus("silero_vad_v6.onnx")
def test_silero_branches_keep_their_values():
    m = surgeon.load(CORPUS / "silero_vad_v6.onnx")
    out, log = merged(m)
    assert out is not None
    rng = np.random.default_rng(0)
    for sr, n in ((16000, 512), (8000, 256)):
        feeds = {"input": rng.standard_normal((2, n)).astype(np.float32),
                 "state": np.zeros((2, 2, 128), np.float32), "sr": np.array(sr, np.int64)}
        ra, rb = run_ort(m, feeds), run_ort(out, feeds)
        for k in ra:
            np.testing.assert_allclose(rb[k], ra[k], atol=1e-6, rtol=1e-6)
