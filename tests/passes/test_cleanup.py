"""cleanup: dead nodes, unused initializers, Identity, order, names - structure and numbers."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.parser
import pytest

import helpers
import surgeon
from helpers import CORPUS, assert_equivalent, model_from_text, op_types, requires_corpus, run_ort, random_feeds
from passes.cleanup import Cleanup
from surgeon.graph import iter_proto_nodes

TOL = dict(atol=1e-6, rtol=1e-6)
BATCHES = [{"x": (1, 4)}, {"x": (3, 4)}]


def run_cleanup(model, limit=None):
    out, log = helpers.run_pass(Cleanup, model, limit=limit)
    if out is not None:
        onnx.checker.check_model(out, full_check=True)
    return out, log


def test_dead_branch_and_unused_initializer_removed():
    m = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N,4] x) => (float[N,4] y) <float[4] w = {1.0, 2.0, 3.0, 4.0}, float[4] u = {5.0, 6.0, 7.0, 8.0}>
    {
      y = Relu(x)
      s = Sigmoid(x)
      d = Mul(s, w)
      e = Neg(d)
    }""")
    out, log = run_cleanup(m)
    assert op_types(out) == ["Relu"]
    assert [t.name for t in out.graph.initializer] == []
    assert log.counts["dead node removed"] == 3
    assert log.counts["unused initializer removed"] == 2
    assert_equivalent(m, out, BATCHES, **TOL)


def test_identity_to_graph_output_keeps_the_output_name():
    m = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N,4] x) => (float[N,4] y) {
      t = Relu(x)
      y = Identity(t)
    }""")
    out, log = run_cleanup(m)
    assert op_types(out) == ["Relu"]
    assert list(out.graph.node[0].output) == ["y"] and [o.name for o in out.graph.output] == ["y"]
    assert log.counts["identity removed"] == 1
    assert_equivalent(m, out, BATCHES, **TOL)


def test_identity_chain_collapses():
    m = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N,4] x) => (float[N,4] y) {
      a = Identity(x)
      b = Identity(a)
      c = Relu(b)
      y = Identity(c)
    }""")
    out, log = run_cleanup(m)
    assert op_types(out) == ["Relu"]
    assert list(out.graph.node[0].input) == ["x"] and list(out.graph.node[0].output) == ["y"]
    assert log.counts["identity removed"] == 3
    assert_equivalent(m, out, BATCHES, **TOL)


def test_tensor_that_is_graph_output_and_intermediate():
    m = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N,4] x) => (float[N,4] t, float[N,4] y, float[N,4] z) {
      t = Relu(x)
      y = Identity(t)
      z = Neg(t)
    }""")
    out, log = run_cleanup(m)
    # y copies another graph output: the Identity is the only way to have both names.
    assert out is None or "Identity" in op_types(out)
    m2 = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N,4] x) => (float[N,4] y, float[N,4] z) {
      t = Relu(x)
      y = Identity(t)
      z = Neg(t)
    }""")
    out2, log2 = run_cleanup(m2)
    assert op_types(out2) == ["Relu", "Neg"]
    assert list(out2.graph.node[1].input) == ["y"]  # y is now both output and intermediate
    assert_equivalent(m2, out2, BATCHES, **TOL)


def test_identity_from_graph_input_to_output_is_kept():
    m = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N,4] x) => (float[N,4] y) { [i] y = Identity(x) }""")
    out, log = run_cleanup(m)
    assert out is None
    assert any("Identity" in n for n in log.notes)


def test_duplicate_and_empty_names_become_unique():
    m = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N,4] x) => (float[N,4] y) {
      [n] a = Relu(x)
      [n] b = Neg(a)
      c = Abs(b)
      [Abs_0] y = Sigmoid(c)
    }""")
    out, log = run_cleanup(m)
    names = [n.name for n in out.graph.node]
    assert all(names) and len(set(names)) == len(names)
    assert names[0] == "n" and names[3] == "Abs_0"
    assert log.counts["duplicate node name made unique"] == 1 and log.counts["unnamed node named"] == 1
    # ONNX Runtime refuses the input (two nodes named 'n'); the output runs and is right.
    x = random_feeds(m, {"x": (3, 4)})["x"]
    expected = 1.0 / (1.0 + np.exp(-np.abs(-np.maximum(x, 0))))
    np.testing.assert_allclose(run_ort(out, {"x": x})["y"], expected, atol=1e-6, rtol=1e-6)


def test_ir3_initializer_inputs_unused_removed_used_kept():
    m = model_from_text("""
    <ir_version: 3, opset_import: ["" : 9]>
    g (float[2] x, float[2] w, float[2] u) => (float[2] y) <float[2] w = {1.0, 2.0}, float[2] u = {3.0, 4.0}> {
      t = Add(x, w)
      y = Identity(t)
    }""")
    out, log = run_cleanup(m)
    assert out.ir_version == 3
    assert [vi.name for vi in out.graph.input] == ["x", "w"]  # no stale required input 'u'
    assert [t.name for t in out.graph.initializer] == ["w"]
    assert log.counts["unused initializer removed"] == 1
    feeds = random_feeds(m, {"x": (2,)})  # only x: w keeps its default
    assert run_ort(out, feeds)["y"].tolist() == pytest.approx(run_ort(m, feeds)["y"].tolist(), abs=1e-6)


def test_loop_body_outer_initializer_and_identity():
    m = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N,4] x, int64 n) => (float[N,4] y) <float[4] w = {1.0, 2.0, 3.0, 4.0}, bool c = {1}> {
      wi = Identity(w)
      y = Loop(n, c, x) <body = body (int64 i, bool cin, float[N,4] s) => (bool cout, float[N,4] s2) {
          cout = Identity(cin)
          v = Identity(wi)
          d = Sigmoid(s)
          s2 = Add(s, v)
      }>
    }""")
    out, log = run_cleanup(m)
    body = out.graph.node[0].attribute[0].g
    assert {t.name for t in out.graph.initializer} == {"c", "w"} and not body.initializer  # w: read in the body
    assert [n.op_type for n in body.node] == ["Identity", "Add"]  # cout copies a body input: kept
    assert list(body.node[1].input) == ["s", "w"]
    assert log.counts["identity removed"] == 2 and log.counts["dead node removed"] == 1
    shapes = [{"x": (1, 4), "n": ()}, {"x": (3, 4), "n": ()}]
    assert_equivalent(m, out, shapes, **TOL)


def test_if_branches_and_outer_scope():
    m = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N,4] x, bool b) => (float[N,4] y) {
      r = Relu(x)
      dead = Neg(x)
      y = If(b) <then_branch = t () => (float[N,4] o1) { o1 = Identity(r) },
                 else_branch = e () => (float[N,4] o2) { q = Identity(r)  z = Exp(q)  o2 = Identity(z) }>
    }""")
    out, log = run_cleanup(m)
    assert op_types(out) == ["Relu", "If"]
    then_b, else_b = (a.g for a in out.graph.node[1].attribute)
    assert [n.op_type for n in then_b.node] == ["Identity"]  # a branch output copying an outer value
    assert [n.op_type for n in else_b.node] == ["Exp"] and list(else_b.node[0].input) == ["r"]
    assert list(else_b.output)[0].name == "o2"
    for b in (True, False):
        feeds = {"x": random_feeds(m, {"x": (2, 4), "b": ()})["x"], "b": np.array(b)}
        assert run_ort(out, feeds)["y"].tolist() == run_ort(m, feeds)["y"].tolist()


def test_custom_op_kept_dead_code_around_it_removed():
    m = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17, "my.domain" : 1]>
    g (float[N,4] x) => (float[N,4] y) {
      a = Relu(x)
      y = my.domain.Plugin<alpha = 2.0>(a)
      unused = my.domain.Plugin(x)
    }""")
    out, log = run_cleanup(m)
    assert [(n.domain, n.op_type) for n in out.graph.node] == [("", "Relu"), ("my.domain", "Plugin")]
    assert out.graph.node[1].attribute[0].f == 2.0
    assert {o.domain for o in out.opset_import} == {"", "my.domain"}


def test_unsorted_graph_is_sorted():
    g = onnx.parser.parse_graph("g (float[N,4] x) => (float[N,4] y) { a = Relu(x)  y = Neg(a) }")
    g.node.reverse()
    m = onnx.helper.make_model(g, opset_imports=[onnx.helper.make_opsetid("", 17)], ir_version=8)
    out, log = run_cleanup(m)
    assert op_types(out) == ["Relu", "Neg"]
    assert log.counts["graph sorted topologically"] == 1


def test_clean_model_untouched_and_bisect_limit_respected():
    clean = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N,4] x) => (float[N,4] y) { [a] t = Relu(x)  [b] y = Neg(t) }""")
    assert run_cleanup(clean)[0] is None
    dirty = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N,4] x) => (float[N,4] y) { [a] t = Relu(x)  [i] y = Identity(t)  [d] z = Neg(x) }""")
    out, log = run_cleanup(dirty, limit=0)
    assert out is None and not log.counts


def test_unused_graph_input_kept_and_noted():
    m = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N,4] x, float[N,4] spare) => (float[N,4] y) { [a] y = Relu(x) }""")
    out, log = run_cleanup(m)
    assert out is None
    assert any("'spare' is unused" in n for n in log.notes)


@requires_corpus("vit_tiny_legacy_op17.onnx")
def test_vit_identities_removed_verified():
    m = surgeon.load(CORPUS / "vit_tiny_legacy_op17.onnx")
    out, report = surgeon.fix(m, ["cleanup"], rounds=1)
    (rep,) = report.passes
    assert rep.status == "applied", rep.reason
    assert rep.counts["identity removed"] == 120
    assert sum(1 for n in iter_proto_nodes(out) if n.op_type == "Identity") == 0
    assert report.verification == "numeric" and len(report.samples) >= 2


# --- repairs: a model the checker rejects but that can be repaired ---------------------------

def _out_of_order_model(ir_version=3, opsets=(13, 13)):
    """Nodes out of topological order, two nodes named 'n', a duplicated opset import."""
    from onnx import helper

    nodes = [helper.make_node("Relu", ["a"], ["y"], name="n"), helper.make_node("Sigmoid", ["x"], ["a"], name="n")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", 1, ["N", 4])],
                          [helper.make_tensor_value_info("y", 1, ["N", 4])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", v) for v in opsets])
    m.ir_version = ir_version
    return m


def test_repairs_order_names_and_opset_imports():
    m = _out_of_order_model()
    with pytest.raises(onnx.checker.ValidationError):
        onnx.checker.check_model(m)
    out, log = run_cleanup(m)  # run_cleanup runs the full checker on the output
    assert log.counts["graph sorted topologically"] == 1
    assert log.counts["duplicate node name made unique"] == 1
    assert log.counts["duplicate opset import removed"] == 1
    assert out.ir_version == 3
    assert [(o.domain, o.version) for o in out.opset_import] == [("", 13)]
    x = np.linspace(-2, 2, 8, dtype=np.float32).reshape(2, 4)
    np.testing.assert_allclose(run_ort(out, {"x": x})["y"], np.maximum(1 / (1 + np.exp(-x)), 0), atol=1e-6, rtol=1e-6)


def test_custom_domain_without_import_gets_one_and_onnx_domains_are_not_guessed():
    from onnx import helper

    nodes = [helper.make_node("Foo", ["x"], ["y"], domain="my.ops", name="foo")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", 1, [2])], [helper.make_tensor_value_info("y", 1, [2])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    out, log = helpers.run_pass(Cleanup, m)
    assert log.counts["missing opset import added"] == 1
    assert {(o.domain, o.version) for o in out.opset_import} == {("", 17), ("my.ops", 1)}
    ml = helper.make_model(helper.make_graph([helper.make_node("Normalizer", ["x"], ["y"], domain="ai.onnx.ml", name="nz")],
                                             "g", [helper.make_tensor_value_info("x", 1, [1, 2])],
                                             [helper.make_tensor_value_info("y", 1, [1, 2])]),
                           opset_imports=[helper.make_opsetid("", 17)])
    out, log = helpers.run_pass(Cleanup, ml)
    assert out is None and any("ai.onnx.ml" in n and "not guessed" in n for n in log.notes)


def test_fix_cli_repairs_a_model_the_checker_rejects(tmp_path):
    from helpers import run_cli

    src, out = tmp_path / "m.onnx", tmp_path / "o.onnx"
    src.write_bytes(_out_of_order_model().SerializeToString())
    before = src.read_bytes()
    proc = run_cli("fix", str(src), "-o", str(out), "--strict")
    assert proc.returncode == 0, proc.stderr
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)
    assert src.read_bytes() == before
    # repaired on open (surgeon.repair), so ONNX Runtime runs the input and the output is compared with it
    assert "verification: numeric" in proc.stdout
    assert "repaired when the model was opened" in proc.stdout and "graph sorted topologically" in proc.stdout


def test_fix_cli_without_cleanup_still_opens_it_and_refuses_what_stays_invalid(tmp_path):
    from helpers import run_cli

    src, out = tmp_path / "m.onnx", tmp_path / "o.onnx"
    src.write_bytes(_out_of_order_model().SerializeToString())
    proc = run_cli("fix", str(src), "-o", str(out), "--passes", "fold-conv-bn", "--strict")  # no pass that repairs
    assert proc.returncode == 0, proc.stderr
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)
    # a cycle cannot be sorted: one sentence naming it, exit 2, nothing written
    from onnx import helper

    nodes = [helper.make_node("Relu", ["b"], ["a"], name="r"), helper.make_node("Neg", ["a"], ["b"], name="n")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", 1, [2])], [helper.make_tensor_value_info("a", 1, [2])])
    src.write_bytes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    out.unlink()
    proc = run_cli("fix", str(src), "-o", str(out), "--passes", "fold-conv-bn")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "form a cycle (through r, n)" in proc.stderr
    assert not out.exists()
