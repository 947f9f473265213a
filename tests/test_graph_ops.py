"""surgeon.graph_ops, the graph kernel, tested directly: each case of bypass, the one constant
reader's rule for overridable inputs, names, uses through bodies, dead producers, walkers.

Structural assertions on the edited graph, then (where values could change) the exported
model run in ONNX Runtime against the original, bit for bit (a bypass moves no arithmetic).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
import itertools

from helpers import model_from_text, random_feeds, run_ort
from surgeon import graph_ops as K
from surgeon.graph import Model

EXACT = dict(atol=0, rtol=0)


def _model(text: str) -> Model:
    return Model.from_proto(model_from_text(text))


def _node(graph: gs.Graph, name: str) -> gs.Node:
    return next(n for n in K.walk_nodes(graph) if n.name == name)


def _same_function(before: onnx.ModelProto, after: Model, shapes: dict) -> None:
    out = after.to_proto()
    onnx.checker.check_model(out, full_check=True)
    feeds = random_feeds(before, shapes)
    a, b = run_ort(before, feeds), run_ort(out, feeds)
    assert list(a) == list(b)
    for name in a:
        np.testing.assert_allclose(b[name], a[name], **EXACT)


# --- bypass: the cases of the module docstring, one by one --------------------------------------

CHAIN = """<ir_version: 8, opset_import: ["" : 17]>
g (float[N,4] x) => (float[N,4] y) {
  [a] t = Relu(x)
  [i] u = Identity(t)
  [n] y = Neg(u)
}"""


def test_case_2_readers_read_the_input():
    text = CHAIN
    m = _model(text)
    scope = K.Scope(m.graph)
    node = _node(m.graph, "i")
    x, y = node.inputs[0], node.outputs[0]
    assert scope.bypass_refusal(x, y) is None
    K.bypass(scope, node, x, y)
    scope.finish()
    assert [n.name for n in m.graph.nodes] == ["a", "n"] and _node(m.graph, "n").inputs[0] is x
    _same_function(model_from_text(text), m, {"x": (3, 4)})


def test_case_3_graph_output_keeps_its_name():
    text = """<ir_version: 8, opset_import: ["" : 17]>
    g (float[N,4] x) => (float[N,4] y, float[N,4] z) {
      [a] t = Relu(x)
      [i] y = Identity(t)
      [n] z = Neg(t)
    }"""
    m = _model(text)
    scope = K.Scope(m.graph)
    node = _node(m.graph, "i")
    K.bypass(scope, node, node.inputs[0], node.outputs[0])
    scope.finish()
    relu = _node(m.graph, "a")
    assert relu.outputs[0].name == "y" and _node(m.graph, "n").inputs[0] is relu.outputs[0]
    assert [t.name for t in m.graph.outputs] == ["y", "z"]
    _same_function(model_from_text(text), m, {"x": (2, 4)})


@pytest.mark.parametrize("text,fragment", [
    ("""<ir_version: 8, opset_import: ["" : 17]>
     g (float[N,4] x) => (float[N,4] y) { [i] y = Identity(x) }""", "copies a graph input"),
    ("""<ir_version: 8, opset_import: ["" : 17]>
     g (float[N,4] x) => (float[N,4] t, float[N,4] y) { [a] t = Relu(x)
       [i] y = Identity(t) }""", "both graph outputs"),
])
def test_case_4_kept(text, fragment):
    m = _model(text)
    node = _node(m.graph, "i")
    assert fragment in K.Scope(m.graph).bypass_refusal(node.inputs[0], node.outputs[0])


def test_case_1_a_body_output_is_kept():
    m = _model("""<ir_version: 8, opset_import: ["" : 17]>
    g (float[N,4] x, bool c) => (float[N,4] y) {
      [a] t = Relu(x)
      [if] y = If(c) <then_branch = th () => (float[N,4] u) { [i] u = Identity(t) },
                      else_branch = el () => (float[N,4] v) { [n] v = Neg(t) }>
    }""")
    body = K.subgraphs(_node(m.graph, "if"))[0]
    node = _node(m.graph, "i")
    assert "copies" in K.Scope(body).bypass_refusal(node.inputs[0], node.outputs[0])  # y of the body copies outer t
    outer = K.Scope(m.graph)
    assert outer.body_reads == {"t"}
    assert "read by a subgraph" not in (outer.bypass_refusal(node.inputs[0], node.outputs[0]) or "")


def test_bypass_refused_when_the_input_is_read_by_a_body_and_the_output_is_a_graph_output():
    m = _model("""<ir_version: 8, opset_import: ["" : 17]>
    g (float[N,4] x, bool c) => (float[N,4] y, float[N,4] z) {
      [a] t = Relu(x)
      [i] y = Identity(t)
      [if] z = If(c) <then_branch = th () => (float[N,4] u) { [n] u = Neg(t) },
                      else_branch = el () => (float[N,4] v) { [s] v = Sigmoid(t) }>
    }""")
    node = _node(m.graph, "i")
    assert "read by a subgraph" in K.Scope(m.graph).bypass_refusal(node.inputs[0], node.outputs[0])


# --- the one constant reader ------------------------------------------------------------------

def test_constant_reads_initializers_and_constant_nodes_but_never_an_overridable_input():
    text = """<ir_version: 8, opset_import: ["" : 17]>
    g (float[2] x, float[2] d) => (float[2] y) <float[2] w = {1, 2}, float[2] d = {3, 4}> {
      [c] k = Constant<value_ints = [5, 6]>()
      [f] s = Constant<value_float = 1.5>()
      a = Add(x, w)
      b = Add(a, d)
      kf = Cast<to = 1>(k)
      e = Mul(b, kf)
      y = Mul(e, s)
    }"""
    m = _model(text)
    tensors = m.graph.tensors()
    assert K.constant(tensors["w"]).tolist() == [1, 2]
    assert K.constant(tensors["k"]).tolist() == [5, 6] and K.constant(tensors["k"]).dtype == np.int64
    assert float(K.constant(tensors["s"])) == 1.5
    assert K.is_overridable(tensors["d"]) and K.constant(tensors["d"]) is None
    assert "may override" in K.not_constant_reason(tensors["d"])
    assert K.constant(tensors["x"]) is None and K.not_constant_reason(tensors["x"]) == "is a graph input"
    assert K.constant(tensors["w"], max_elements=1) is None


def test_at_ir_3_every_initializer_is_listed_and_none_is_overridable():
    m = Model.from_proto(model_from_text("""<ir_version: 3, opset_import: ["" : 8]>
    g (float[2] x, float[2] w) => (float[2] y) <float[2] w = {1, 2}> { y = Add(x, w) }"""))
    assert K.constant(m.graph.tensors()["w"]).tolist() == [1, 2]


# --- names, uses, dead producers, walkers ----------------------------------------------------

def test_unique_name_is_fresh_and_reserved():
    """Every subset of a small name pool, every base: two calls give two new names, both reserved."""
    pool = ["a", "a_1", "a_2", "b", "b_1", "a_1_1"]
    for size in range(len(pool) + 1):
        for taken in itertools.combinations(pool, size):
            for base in ("a", "b", "c"):
                names = set(taken)
                first, second = K.unique_name(base, names), K.unique_name(base, names)
                assert first not in taken and second not in taken and first != second
                assert {first, second} <= names
                assert first == base or first.startswith(f"{base}_")
    assert K.unique_name("a", {"a", "a_1"}) == "a_2"


def test_replace_all_uses_reaches_body_readers():
    m = _model("""<ir_version: 8, opset_import: ["" : 17]>
    g (float[N,4] x, bool c) => (float[N,4] y) {
      [a] t = Relu(x)
      [b] s = Sigmoid(x)
      [if] y = If(c) <then_branch = th () => (float[N,4] u) { [n] u = Neg(t) },
                      else_branch = el () => (float[N,4] v) { [m] v = Abs(t) }>
    }""")
    t, s = m.graph.tensors()["t"], m.graph.tensors()["s"]
    K.replace_all_uses(t, s)
    assert not t.outputs and {n.name for n in s.outputs} == {"n", "m"}


def test_drop_if_dead_removes_the_chain_nothing_else_reads():
    m = _model("""<ir_version: 8, opset_import: ["" : 17]>
    g (float[N,4] x) => (float[N,4] y, float[N,4] z) {
      [a] t = Relu(x)
      [b] u = Neg(t)
      [c] v = Abs(u)
      [k] z = Sigmoid(t)
      [d] y = Identity(x)
    }""")
    scope = K.Scope(m.graph)
    v = m.graph.tensors()["v"]
    assert K.drop_if_dead(scope, v) == 2  # Abs and Neg go; Relu is still read by Sigmoid
    scope.finish()
    assert [n.name for n in m.graph.nodes] == ["a", "k", "d"]


def test_walkers_visit_every_scope_outer_first():
    m = _model("""<ir_version: 8, opset_import: ["" : 17]>
    g (float[N,4] x, bool c) => (float[N,4] y) {
      [a] t = Relu(x)
      [if] y = If(c) <then_branch = th () => (float[N,4] u) { [n] u = Neg(t) },
                      else_branch = el () => (float[N,4] v) { [m] v = Abs(t) }>
    }""")
    assert [n.name for n in K.walk_nodes(m.graph)] == ["a", "if", "n", "m"]
    assert [g.name for g in K.iter_graphs(m.graph)] == [m.graph.name, "th", "el"]
    assert [g.name for g in K.nested_graphs(m.graph)] == ["th", "el"]
    assert {"t", "a", "if", "n", "m", "u", "v", "x", "c", "y"} <= K.all_names(m.graph)


def test_proto_walkers_and_what_a_body_reads_from_outside():
    """Protobuf counterparts of the walkers: a body reads the outer names its nodes (and the bodies
    nested in them) read and it does not define itself (inputs, initializers, node outputs)."""
    m = model_from_text("""<ir_version: 8, opset_import: ["" : 17]>
    g (float[N,4] x, bool c) => (float[N,4] y) {
      [a] t = Relu(x)
      [k] w = Neg(x)
      [if] y = If(c) <then_branch = th () => (float[N,4] u) <float[1] b = {1.0}> {
                        [n] v = Add(t, b)
                        [in] u = If(c) <then_branch = th2 () => (float[N,4] p) { [q] p = Mul(v, w) },
                                        else_branch = el2 () => (float[N,4] r) { [s] r = Abs(v) }>
                      },
                      else_branch = el () => (float[N,4] z) { [m] z = Abs(t) }>
    }""")
    assert [n.name for n in K.walk_proto_nodes(m.graph)] == ["a", "k", "if", "n", "in", "q", "s", "m"]
    assert [g.name for g in K.walk_graph_protos(m.graph)] == [m.graph.name, "th", "th2", "el2", "el"]
    then, other = K.proto_subgraphs(m.graph.node[2])
    assert K.proto_outer_reads(then) == {"t", "c", "w"}  # not b (its initializer) nor v (its node's output)
    assert K.proto_outer_reads(other) == {"t"}
    assert K.proto_outer_reads(m.graph) == set()


@pytest.mark.parametrize("domain,default", [(None, True), ("", True), ("ai.onnx", True), ("com.microsoft", False)])
def test_default_domain(domain, default):
    assert K.is_default_domain(gs.Node("Relu", domain=domain)) is default
    assert K.is_default_domain(onnx.helper.make_node("Relu", [], [], domain=domain or "")) is default


def test_infer_shapes_follows_shape_computations():
    m = model_from_text("""<ir_version: 8, opset_import: ["" : 17]>
    g (float[N,4,6] x) => (float[?,?] y) {
      s = Shape(x)
      i = Constant<value = int64[1] {-1}>()
      a = Constant<value = int64[1] {0}>()
      n = Gather(s, a)
      t = Concat<axis = 0>(n, i)
      y = Reshape(x, t)
    }""")
    dims = lambda model: [d.dim_param or d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim]
    assert dims(K.infer_shapes(m))[0] == "N"  # data propagation follows Shape -> Gather -> Concat
    assert dims(onnx.shape_inference.infer_shapes(m, strict_mode=False))[0] != "N"  # without it, the dim is lost


def test_the_pipeline_keeps_an_overridable_input_out_of_a_reshape_target():
    """Issue 19's report: an IR-8 model whose Reshape target concatenates an initializer listed as an
    input. Folded before (and the input vanished from the interface); one reader, one rule: it stays."""
    import surgeon
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Slice", ["s", "st", "en"], ["b"]),
             helper.make_node("Concat", ["b", "k"], ["t"], axis=0), helper.make_node("Reshape", ["x", "t"], ["y"])]
    inits = [numpy_helper.from_array(np.array([v], np.int64), n) for n, v in (("st", 0), ("en", 1), ("k", -1))]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 6]),
                                       helper.make_tensor_value_info("k", TensorProto.INT64, [1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "M"])], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    out, report = surgeon.fix(model)
    assert [i.name for i in out.graph.input] == ["x", "k"] and report.verification == "numeric"
    x = np.random.default_rng(0).normal(size=(3, 4, 6)).astype(np.float32)
    for k in (-1, 24):  # the default, and the user's own value
        feeds = {"x": x, "k": np.array([k], np.int64)}
        np.testing.assert_array_equal(run_ort(out, feeds)["y"], run_ort(model, feeds)["y"])
