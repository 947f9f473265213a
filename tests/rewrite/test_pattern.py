"""DAG patterns with bindings, commutative matching, typed check results, and what rewrite receives."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import model_from_text, random_feeds, run_ort
from surgeon import graph_ops as K
from surgeon.graph import Model
from surgeon.pipeline.base import PassContext, PassLog
from surgeon.rewrite import Node, Opt, Rule, apply_rules, fail, ok
from surgeon.rewrite.pattern import match
from surgeon.rewrite.result import Bound, Refused, as_result


def _graph(text: str) -> Model:
    return Model.from_proto(model_from_text(text))


def _at(model: Model, name: str):
    node = next(n for n in model.graph.nodes if n.name == name)
    return node, K.Scope(model.graph)


SQUARE_PLUS = """<ir_version: 8, opset_import: ["" : 17]>
g (float[N,4] x, float[N,4] z) => (float[N,4] y) {
  [m] s = Mul(x, x)
  [a] y = Add(z, s)
}"""


def test_names_bind_values_and_nodes_and_add_commutes():
    model = _graph(SQUARE_PLUS)
    node, scope = _at(model, "a")
    found = match(Node("Add", Node("Mul", "x", "x", bind="mul"), "bias", bind="add"), node, scope)
    assert found is not None
    assert found.bindings["x"].name == "x" and found.bindings["bias"].name == "z"  # Add matched in the other order
    assert found.bindings["mul"].name == "m" and {n.name for n in found.nodes} == {"a", "m"}


def test_one_name_twice_must_be_one_tensor():
    model = _graph("""<ir_version: 8, opset_import: ["" : 17]>
    g (float[N,4] x, float[N,4] w) => (float[N,4] y) { [m] s = Mul(x, w)
      [a] y = Add(s, x) }""")
    node, scope = _at(model, "a")
    assert match(Node("Add", Node("Mul", "x", "x"), "b"), node, scope) is None
    found = match(Node("Add", Node("Mul", "x", "w"), "x"), node, scope)
    assert found is not None and found.bindings["w"].name == "w"


def test_shared_subpattern_is_one_node():
    """LayerNorm-style sharing: the same Node object reached twice must be the same graph node."""
    model = _graph("""<ir_version: 8, opset_import: ["" : 17]>
    g (float[N,4] x) => (float[N,4] y, float[N,4] y2) {
      [r1] a = Relu(x)
      [r2] b = Relu(x)
      [ad] y = Add(a, b)
      [ad2] y2 = Add(a, a)
    }""")
    relu = Node("Relu", "x", bind="r")
    shared = Node("Add", relu, relu)
    node, scope = _at(model, "ad")
    assert match(shared, node, scope) is None  # two different Relus
    node2, scope = _at(model, "ad2")
    found = match(shared, node2, scope)
    assert found is not None and found.bindings["r"].name == "r1"


def test_optional_inputs_and_keep():
    model = _graph("""<ir_version: 8, opset_import: ["" : 17]>
    g (float[N,4] x) => (float[?] y, float[?,?] z) <int64[1] flat = {-1}, int64[2] two = {-1, 2}> {
      [u] f = Reshape(x, flat)
      [r] y = Relu(f)
      [s] z = Reshape(f, two)
    }""")
    node, scope = _at(model, "s")
    found = match(Node("Reshape", Node("Reshape", "x", "t1", Opt("extra"), bind="inner", keep=True), "t2"), node, scope)
    assert found.bindings["extra"] is None
    assert [n.name for n in found.nodes] == ["s"] and [n.name for n in found.kept] == ["u"]


def test_required_ops_come_from_the_pattern():
    p = Node("Add", Node(("Mul", "Div"), "x", "y"), "z", domain="")
    assert set(p.required_ops()) == {frozenset({("", "Add")}), frozenset({("", "Mul"), ("", "Div")})}


def test_check_results_are_typed():
    assert isinstance(as_result(None), Bound) and as_result(None)
    assert isinstance(as_result("no"), Refused) and as_result("no").reason == "no" and not as_result("no")
    assert as_result(ok(a=1)).values["a"] == 1
    with pytest.raises(TypeError):
        as_result(42)


class _FoldSquare(Rule):
    """``Add(Mul(x, x), z)`` → ``Add(Pow(x, 2), z)``; check computes the exponent, rewrite only reads it."""

    name = "square-to-pow"
    pattern = Node("Add", Node("Mul", "x", "x", bind="mul"), "z", bind="add")

    def check(self, m, ctx):
        if ctx.opset < 12:
            return fail("needs opset 12")
        return ok(exponent=np.array(2.0, np.float32))

    def rewrite(self, m, b):
        return [b.op("Add", [b.op("Pow", [m["x"], b.const(m["exponent"])]), m["z"]])]


def test_rewrite_receives_what_check_bound_and_the_function_is_kept():
    proto = model_from_text(SQUARE_PLUS)
    model = Model.from_proto(proto)
    log = PassLog()
    assert apply_rules(model, [_FoldSquare()], PassContext(pass_name="t"), log, untouched=False)
    out = model.to_proto()
    assert [n.op_type for n in out.graph.node] == ["Pow", "Add"] and log.counts == {"square-to-pow": 1}
    feeds = random_feeds(proto, {"x": (3, 4), "z": (3, 4)})
    np.testing.assert_allclose(run_ort(out, feeds)["y"], run_ort(proto, feeds)["y"], rtol=1e-6, atol=1e-6)


def test_refusal_becomes_the_rules_note():
    proto = model_from_text(SQUARE_PLUS.replace('"" : 17', '"" : 11'))
    model = Model.from_proto(proto)
    log = PassLog()
    assert not apply_rules(model, [_FoldSquare()], PassContext(pass_name="t"), log, untouched=False)
    assert log.notes == ["a: rule square-to-pow refused: needs opset 12"]


def test_rule_domains_default_is_immutable():
    with pytest.raises(TypeError):
        Rule.domains["x"] = 1  # a class-level dict shared by every rule is never written
