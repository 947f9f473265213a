"""The rule engine: matching, rewiring, provenance, opset imports, permit, refusals, subgraphs."""

import numpy as np
import onnx
import pytest

from helpers import model_from_text, run_ort
from surgeon import graph as G
from surgeon.pipeline.base import PassContext, PassLog, RewriteBudget
from surgeon.graph import Model
from surgeon.rewrite import Op, apply_rules, find_matches, rule

ATOL, RTOL = 1e-6, 1e-6

CHAIN = '''<ir_version: 8, opset_import: ["" : 17]>
g (float[N,4] x) => (float[N,4] y) {
  a = Relu(x)
  b = Sigmoid(a)
  y = Neg(b)
}'''


def _plugin_rule(**kw):
    def rewrite(m, b):
        return [b.op("ReluSigmoid", [m.inputs[0]], {"mode": 1}, domain="my.trt")]
    return rule("relu-sigmoid-plugin", [Op("Relu"), Op("Sigmoid")], rewrite, domains={"my.trt": 3}, **kw)


def _std_rule():
    # Sigmoid(Relu(x)) written with Max and Sigmoid: a standard-op subgraph replacement
    def rewrite(m, b):
        x = m.inputs[0]
        return [b.op("Sigmoid", [b.op("Max", [x, b.const(np.float32(0))])])]
    return rule("relu-sigmoid-max", [Op("Relu"), Op("Sigmoid")], rewrite)


def _run(model, rules, **ctx_kw):
    """(rewritten ModelProto or None when nothing changed, log); the input stays untouched."""
    ctx, log = PassContext(pass_name="replace-custom-ops", **ctx_kw), PassLog()
    work = Model.from_proto(model)
    return (work.to_proto() if apply_rules(work, rules, ctx, log) else None), log


def test_plugin_node_keeps_names_adds_opset_and_value_info():
    m = model_from_text(CHAIN)
    out, log = _run(m, [_plugin_rule()])
    assert log.counts == {"relu-sigmoid-plugin": 1}
    assert [n.op_type for n in out.graph.node] == ["ReluSigmoid", "Neg"]
    plugin = out.graph.node[0]
    assert plugin.domain == "my.trt" and plugin.output[0] == "b" and plugin.input[0] == "x"
    assert {o.domain: o.version for o in out.opset_import} == {"": 17, "my.trt": 3}
    assert log.opaque == {"my.trt::ReluSigmoid"}
    meta = {p.key: p.value for p in plugin.metadata_props}
    assert meta["surgeon.pass"] == "replace-custom-ops" and meta["surgeon.rule"] == "relu-sigmoid-plugin"
    assert "surgeon.from" in meta
    # value_info for the plugin output lets shape inference continue to y
    vi = {v.name: v for v in out.graph.value_info}
    assert vi["b"].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    inferred = onnx.shape_inference.infer_shapes(out)
    assert [d.dim_param or d.dim_value for d in inferred.graph.output[0].type.tensor_type.shape.dim] == ["N", 4]
    onnx.checker.check_model(out, full_check=True)


def test_standard_replacement_is_numerically_equal_at_several_sizes():
    m = model_from_text(CHAIN)
    out, log = _run(m, [_std_rule()])
    assert [n.op_type for n in out.graph.node] == ["Max", "Sigmoid", "Neg"]
    assert out.graph.node[1].output[0] == "b"
    for n in (1, 3, 7):
        x = np.random.default_rng(n).uniform(-3, 3, (n, 4)).astype(np.float32)
        np.testing.assert_allclose(run_ort(out, {"x": x})["y"], run_ort(m, {"x": x})["y"], atol=ATOL, rtol=RTOL)


def test_intermediate_used_elsewhere_is_refused_with_reason():
    m = model_from_text('''<ir_version: 8, opset_import: ["" : 17]>
    g (float[N,4] x) => (float[N,4] y, float[N,4] a) {
      a = Relu(x)
      y = Sigmoid(a)
    }''')
    out, log = _run(m, [_plugin_rule()])
    assert out is None and not log.counts
    assert any("refused" in n and "'a' is also used outside" in n for n in log.notes)


def test_check_refusal_is_noted_and_model_untouched():
    m = model_from_text(CHAIN)
    out, log = _run(m, [_plugin_rule(check=lambda m, ctx: "the plugin needs opset 99")])
    assert out is None
    assert any("relu-sigmoid-plugin refused: the plugin needs opset 99" in n for n in log.notes)


def test_permit_denied_skips_application():
    m = model_from_text(CHAIN)
    budget = RewriteBudget(limit=0)
    out, log = _run(m, [_std_rule()], budget=budget)
    assert out is None and not log.counts
    assert len(budget.applications) == 1 and not budget.applications[0].applied


def test_rewrite_that_raises_leaves_graph_intact():
    def bad(m, b):
        b.op("Relu", [m.inputs[0]])
        raise RuntimeError("boom")
    m = model_from_text(CHAIN)
    out, log = _run(m, [rule("bad", [Op("Relu")], bad)])
    assert out is None
    assert any("rule bad failed" in n and "boom" in n for n in log.notes)


def test_wrong_number_of_outputs_is_a_failure_not_a_crash():
    m = model_from_text(CHAIN)
    out, log = _run(m, [rule("none", [Op("Relu")], lambda m, b: [])])
    assert out is None and any("returned 0 tensor(s) for 1 output(s)" in n for n in log.notes)


def test_rewrite_returning_an_existing_tensor_bypasses_the_match():
    m = model_from_text(CHAIN)
    out, log = _run(m, [rule("drop-relu", [Op("Relu")], lambda m, b: [m.inputs[0]])])
    assert [n.op_type for n in out.graph.node] == ["Sigmoid", "Neg"]
    assert out.graph.node[0].input[0] == "x" and log.counts == {"drop-relu": 1}


def test_bypass_that_would_rename_a_graph_input_gets_identity():
    """A graph output cannot become a copy of a graph input by renaming: an Identity keeps both names."""
    m = model_from_text('''<ir_version: 8, opset_import: ["" : 17]>
    g (float[N,4] x) => (float[N,4] a) { a = Relu(x) }''')
    out, _ = _run(m, [rule("drop-relu", [Op("Relu")], lambda m, b: [m.inputs[0]])])
    assert [n.op_type for n in out.graph.node] == ["Identity"]
    assert list(out.graph.node[0].input) == ["x"] and list(out.graph.node[0].output) == ["a"]


IF_MODEL = '''<ir_version: 8, opset_import: ["" : 17, "my.dom" : 1]>
g (float[N,4] x, bool c) => (float[N,4] y) {
  a = Relu(x)
  y = If(c) <
    then_branch = t () => (float[N,4] ty) { r = Relu(a)
        ty = Sigmoid(r) },
    else_branch = e () => (float[N,4] ey) { ey = Sigmoid(a) }
  >
  z = my.dom.Foo(x)
}'''


def test_recurses_into_if_bodies_and_keeps_outer_scope_reads():
    m = onnx.parser.parse_model(IF_MODEL)
    m.graph.output.append(onnx.helper.make_tensor_value_info("z", onnx.TensorProto.FLOAT, None))
    out, log = _run(m, [_std_rule()])
    assert log.counts == {"relu-sigmoid-max": 1}
    then = out.graph.node[1].attribute[0].g if out.graph.node[1].attribute[0].name == "then_branch" \
        else out.graph.node[1].attribute[1].g
    assert [n.op_type for n in then.node] == ["Max", "Sigmoid"]
    assert then.node[0].input[0] == "a"  # outer-scope tensor, untouched
    assert [n.op_type for n in out.graph.node] == ["Relu", "If", "Foo"]
    assert "untouched custom op: my.dom::Foo x1" in log.notes
    foo = [n for n in out.graph.node if n.op_type == "Foo"][0]
    assert foo.SerializeToString() == [n for n in m.graph.node if n.op_type == "Foo"][0].SerializeToString()
    assert {o.domain for o in out.opset_import} == {"", "my.dom"}


def test_outer_scope_use_blocks_chain_through_it():
    # a is read inside the If: Relu(x)->Sigmoid(a) chain in the main graph must not swallow a
    m = onnx.parser.parse_model('''<ir_version: 8, opset_import: ["" : 17]>
    g (float[N,4] x, bool c) => (float[N,4] y, float[N,4] s) {
      a = Relu(x)
      s = Sigmoid(a)
      y = If(c) < then_branch = t () => (float[N,4] ty) { ty = Neg(a) },
                  else_branch = e () => (float[N,4] ey) { ey = Abs(a) } >
    }''')
    out, log = _run(m, [_std_rule()])
    assert out is None
    assert any("'a' is also used outside" in n for n in log.notes)


def test_find_matches_lists_without_modifying():
    m = model_from_text(CHAIN)
    before = m.SerializeToString()
    report = find_matches(m, [_plugin_rule()])
    assert m.SerializeToString() == before
    assert [(f.node, f.rule, f.status, f.inputs, f.outputs) for f in report.findings] == \
        [(m.graph.node[0].name, "relu-sigmoid-plugin", "replace", ["x"], ["b"])]


def test_user_match_exception_is_reported_not_raised():
    class Boom(Op):
        def matches(self, node):
            raise ValueError("bad pattern")
    m = model_from_text(CHAIN)
    out, log = _run(m, [rule("boom", [Boom("Relu")], lambda m, b: [])])
    assert out is None and any("rule raised ValueError: bad pattern" in n for n in log.notes)


@pytest.mark.parametrize("attrs,applies", [({"alpha": 0.1}, True), ({"alpha": 0.2}, False),
                                           ({"alpha": lambda a: a < 0.15}, True)])
def test_attribute_patterns(attrs, applies):
    m = model_from_text('''<ir_version: 8, opset_import: ["" : 17]>
    g (float[N,4] x) => (float[N,4] y) { y = LeakyRelu<alpha=0.1>(x) }''')
    r = rule("lrelu", [Op("LeakyRelu", attrs={k: (v if callable(v) else pytest.approx(v)) for k, v in attrs.items()})],
             lambda m, b: [b.op("Relu", [m.inputs[0]])])
    out, log = _run(m, [r])
    assert (out is not None) == applies
    if applies:
        assert G.op_histogram(out) == {"Relu": 1}
