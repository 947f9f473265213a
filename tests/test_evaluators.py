"""surgeon/evaluators.py: the registry of per-op evaluators, and each evaluator against ONNX Runtime.

Registry cases check lookup by domain, op and opset range. Symbolic cases check what
the shape-chain folder relies on (a dynamic batch stays one symbol through Gather,
Concat and the ``Where(Equal(s, -1), ones, s)`` that torch's ``expand`` exports). A
property test draws small integer vectors and one op, and compares the evaluator's
value with ONNX Runtime's (optimizations off) on the same node: exact equality.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import helper, numpy_helper

from helpers import model_from_text, run_ort
from surgeon import evaluators as E
from surgeon.symbolic import Expr


def _reader(t: gs.Tensor):
    if isinstance(t, gs.Constant):
        return np.asarray(t.values)
    node = t.inputs[0] if len(t.inputs) == 1 else None
    if node is not None and node.op == "Constant":
        return np.asarray(node.attrs["value"].values)
    return None


def _dims(t: gs.Tensor):
    if t.shape is None:
        return None
    return [Expr.const(d) if isinstance(d, int) else Expr.atom(("sym", d)) for d in t.shape]


def _evaluate(text: str, name: str, opset: int):
    graph = gs.import_onnx(onnx.shape_inference.infer_shapes(model_from_text(text)))  # dims of Shape's inputs
    ev = E.Evaluator(opset=opset, dims=_dims, constant=_reader)
    return ev.value(graph.tensors()[name])


def _node(op: str, domain: str = "") -> gs.Node:
    return gs.Node(op, domain=domain)


@pytest.mark.parametrize("op,opset,expected", [
    ("Unsqueeze", 12, E._unsqueeze_attr), ("Unsqueeze", 13, E._unsqueeze_input),
    ("ReduceProd", 17, E._reduce_prod_attr), ("ReduceProd", 18, E._reduce_prod_input),
    ("Slice", 9, E._slice_attrs), ("Slice", 10, E._slice_inputs), ("Shape", 21, E._shape),
])
def test_lookup_by_opset_range(op, opset, expected):
    assert E.lookup(_node(op), opset) is expected
    assert E.lookup(_node(op, "ai.onnx"), opset) is expected


def test_lookup_refuses_other_domains_and_unknown_ops():
    assert E.lookup(_node("Gather", "com.microsoft"), 17) is None
    assert E.lookup(_node("MatMul"), 17) is None
    assert "Constant" in E.EVALUATED_OPS and "MatMul" not in E.EVALUATED_OPS


def test_overlapping_registration_is_refused():
    with pytest.raises(ValueError, match="overlap at opset 12"):
        E.evaluates("Unsqueeze", since=12, until=14)(lambda node, vals, env: None)
    assert E.lookup(_node("Unsqueeze"), 13) is E._unsqueeze_input  # the table is unchanged


EXPAND = """
<ir_version: 8, opset_import: ["" : {opset}]>
g (float[N,3] x) => (float[N,3] y) {{
  s = Shape (x)
  i = Constant <value = int64 {{-2}}> ()
  b = Gather <axis: int = 0> (s, i)
  one = Constant <value = int64[1] {{0}}> ()
  bu = Unsqueeze (b, one)
  m1 = Constant <value = int64[1] {{-1}}> ()
  t = Concat <axis: int = 0> (bu, m1)
  st = Shape (t)
  ones = ConstantOfShape <value = int64[1] {{1}}> (st)
  neg = Mul (ones, m1)
  eq = Equal (t, neg)
  w = Where (eq, ones, t)
  y = Expand (x, w)
}}"""


def test_torch_expand_chain_keeps_the_batch_symbol():
    value = _evaluate(EXPAND.format(opset=13), "w", 13)
    assert value.entries == (Expr.atom(("sym", "N")), Expr.const(1))  # a dim is never -1: Equal is false there
    assert _evaluate(EXPAND.format(opset=13), "t", 13).entries == (Expr.atom(("sym", "N")), Expr.const(-1))


def test_unsqueeze_reads_its_axes_where_its_opset_puts_them():
    text = EXPAND.format(opset=12).replace("bu = Unsqueeze (b, one)", "bu = Unsqueeze <axes: ints = [0]> (b)")
    assert _evaluate(text, "bu", 12).entries == (Expr.atom(("sym", "N")),)
    assert _evaluate(text, "bu", 13) is None  # at 13 the axes are an input, which this node lacks


def test_overridable_constant_is_whatever_the_reader_says():
    text = """<ir_version: 8, opset_import: ["" : 17]>
    g (float[N,3] x, int64[1] k) => (int64[2] y) <int64[1] k = {3}> { s = Shape <start: int = 0, end: int = 1> (x)
      y = Concat <axis: int = 0> (s, k) }"""
    graph = gs.import_onnx(model_from_text(text))
    refusing = E.Evaluator(opset=17, dims=_dims, constant=lambda t: None)
    assert refusing.value(graph.outputs[0]) is None
    reading = E.Evaluator(opset=17, dims=_dims, constant=_reader)
    assert reading.value(graph.outputs[0]).entries == (Expr.atom(("sym", "N")), Expr.const(3))


def test_size_and_integer_division_of_dims():
    text = """<ir_version: 8, opset_import: ["" : 17]>
    g (float[N,6] x) => (int64 y) { n = Size (x)
      two = Constant <value = int64 {4}> ()
      y = Div (n, two) }"""
    assert _evaluate(text, "n", 17).entries == (Expr(Expr.const(6).coef, (( ("sym", "N"), 1),)),)
    value = _evaluate(text, "y", 17)  # 6N/4 truncated: not 1.5 N, an opaque floor of it
    assert value is not None and not value.is_const and value.entries[0] != Expr(Expr.const(6).coef / 4, ((("sym", "N"), 1),))


# --- every evaluator against ONNX Runtime, on constant inputs ----------------------------

small = st.lists(st.integers(-6, 6), min_size=1, max_size=4)


def _case(draw):
    op = draw(st.sampled_from(["Add", "Sub", "Mul", "Div", "Max", "Min", "Equal", "Gather", "Slice", "Concat",
                               "Where", "Cast", "Not", "ConstantOfShape", "ReduceProd", "Reshape", "Squeeze",
                               "Unsqueeze", "Identity", "Floor", "Ceil"]))
    a = np.array(draw(small), np.int64)
    inputs, attrs = [a], {}
    if op in ("Add", "Sub", "Mul", "Div", "Max", "Min", "Equal"):
        b = np.array(draw(st.lists(st.integers(-6, 6).filter(lambda v: v or op != "Div"), min_size=1, max_size=1)
                          if draw(st.booleans()) else st.lists(st.integers(-6, 6).filter(lambda v: v or op != "Div"),
                                                               min_size=len(a), max_size=len(a))), np.int64)
        inputs.append(b)
    elif op == "Gather":
        idx = draw(st.lists(st.integers(-len(a), len(a) - 1), min_size=1, max_size=3))
        inputs.append(np.array(idx if draw(st.booleans()) else idx[0], np.int64))
    elif op == "Slice":
        start, end = draw(st.integers(-8, 8)), draw(st.integers(-8, 8))
        step = draw(st.sampled_from([1, 2, -1, -2]))
        inputs += [np.array([start], np.int64), np.array([end], np.int64), np.array([0], np.int64),
                   np.array([step], np.int64)]
    elif op == "Concat":
        inputs.append(np.array(draw(small), np.int64))
        attrs["axis"] = 0
    elif op == "Where":
        cond = np.array(draw(st.lists(st.booleans(), min_size=len(a), max_size=len(a))))
        inputs = [cond, a, np.array(draw(st.lists(st.integers(-6, 6), min_size=len(a), max_size=len(a))), np.int64)]
    elif op == "Cast":
        attrs["to"] = draw(st.sampled_from([onnx.TensorProto.FLOAT, onnx.TensorProto.INT32, onnx.TensorProto.BOOL]))
    elif op == "Not":
        inputs = [a > 0]
    elif op == "ConstantOfShape":
        inputs = [np.array([draw(st.integers(0, 5))], np.int64)]
        attrs["value"] = numpy_helper.from_array(np.array([draw(st.integers(-3, 3))], np.int64))
    elif op == "ReduceProd":
        attrs["keepdims"] = draw(st.sampled_from([0, 1]))
    elif op == "Reshape":
        inputs.append(np.array(draw(st.sampled_from([[-1], [len(a)], []])) if len(a) == 1 else [-1], np.int64))
    elif op == "Squeeze":
        inputs = [a[:1]]
    elif op == "Unsqueeze":
        inputs = [a[0]]
        inputs.append(np.array([draw(st.sampled_from([0, -1]))], np.int64))
    elif op in ("Floor", "Ceil"):
        inputs = [a.astype(np.float32) / 4]
    return op, inputs, attrs


@settings(max_examples=200, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_evaluators_agree_with_onnx_runtime(data):
    op, inputs, attrs = _case(data.draw)
    names = [f"i{k}" for k in range(len(inputs))]
    inits = [numpy_helper.from_array(np.asarray(v), n) for v, n in zip(inputs, names)]
    node = helper.make_node(op, names, ["y"], **attrs)
    graph = helper.make_graph([node], "g", [], [helper.make_empty_tensor_value_info("y")], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)
    inferred = onnx.shape_inference.infer_shapes(model)
    model.graph.output[0].CopyFrom(inferred.graph.output[0])
    expected = run_ort(model, {})["y"]
    ev = E.Evaluator(opset=18, dims=_dims, constant=_reader)
    value = ev.value(gs.import_onnx(model).outputs[0])
    if value is None:
        return  # not proven is allowed (the evaluator may decline); a wrong value is not
    got = np.array([float(e.coef) for e in value.entries])
    assert value.is_const and value.scalar == (expected.ndim == 0), (op, inputs, attrs, value)
    np.testing.assert_array_equal(got, expected.astype(np.float64).ravel(), err_msg=f"{op} {inputs} {attrs}")
