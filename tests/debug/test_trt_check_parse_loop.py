"""trt-check's repeated-parse loop and node cutting, driven by a fake parser (runs everywhere).

The fake behaves like the ONNX-TensorRT parser measured on TensorRT-RTX 1.7.1: static
checker failures are all reported at once; otherwise the importer stops at the first
node it cannot convert; some errors name no node (node -1, empty name).
"""

from __future__ import annotations

import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper

from helpers import model_from_text
from surgeon.debug.trt_check import graph_edit, parse_loop
from surgeon.debug.trt_check.parse_loop import ParseOutcome


class FakeParser:
    def __init__(self, static=(), imports=(), anonymous=()):
        self.static, self.imports, self.anonymous = set(static), set(imports), set(anonymous)
        self.calls = 0

    def __call__(self, model: onnx.ModelProto) -> ParseOutcome:
        self.calls += 1
        nodes = [n for _p, _g, n in graph_edit.walk(model.graph)]
        static = [n for n in nodes if n.op_type in self.static]
        if static:
            return ParseOutcome(False, [self._err(n, "UNSUPPORTED_NODE_ATTR", f"check{n.op_type}") for n in static])
        for n in nodes:
            if n.op_type in self.anonymous and any(a.name == "reduction" for a in n.attribute):
                return ParseOutcome(False, [{"code": "UNSUPPORTED_NODE_ATTR", "node": -1, "node_name": "", "op": "",
                                             "desc": "Unsupported reduction type", "func": f"import{n.op_type}"}])
            if n.op_type in self.imports:
                return ParseOutcome(False, [self._err(n, "UNSUPPORTED_NODE", f"import{n.op_type}")])
        return ParseOutcome(True)

    @staticmethod
    def _err(node, code, func):
        return {"code": code, "node": 0, "node_name": node.name, "op": node.op_type, "desc": f"{node.op_type} fails",
                "func": func}


def _prepare(model):
    work = onnx.ModelProto()
    work.CopyFrom(model)
    index = graph_edit.NodeIndex(work, graph_edit.assign_unique_names(work))
    return work, index


CHAIN = """<ir_version: 8, opset_import: ["" : 17]>
g (float[4] x) => (float[4] y, int64[1,?] z, float[4] w) {
  a = Relu(x)
  b = NonZero(a)
  c = Sigmoid(a)
  named_tanh = Tanh(c)
  y = Abs(named_tanh)
  z = Identity(b)
  w = Erf(a)
}"""


def test_import_failures_are_found_one_parse_each_and_all_reported():
    work, index = _prepare(model_from_text(CHAIN))
    fake = FakeParser(imports={"NonZero", "Tanh", "Erf"})
    result = parse_loop.find_all(work, index, fake)
    assert [f.op for f in result.failures] == ["NonZero", "Tanh", "Erf"]
    assert [f.parse_round for f in result.failures] == [1, 2, 3]
    assert result.first_parse_failures == 1 and result.parses == 4 == fake.calls
    assert result.rest_parses and not result.clean
    assert all(f.phase == "parse" and f.code == "UNSUPPORTED_NODE" for f in result.failures)


def test_static_failures_come_in_one_parse():
    work, index = _prepare(model_from_text(CHAIN))
    result = parse_loop.find_all(work, index, FakeParser(static={"Sigmoid", "Erf"}))
    assert sorted(f.op for f in result.failures) == ["Erf", "Sigmoid"]
    assert result.first_parse_failures == 2 and result.parses == 2


def test_a_clean_model_takes_one_parse():
    work, index = _prepare(model_from_text(CHAIN))
    result = parse_loop.find_all(work, index, FakeParser())
    assert result.clean and result.failures == [] and result.parses == 1


def test_downstream_of_a_cut_is_flagged():
    # Tanh reads Sigmoid's output; once Sigmoid is cut, Tanh's failure may be an artefact of the cut
    work, index = _prepare(model_from_text(CHAIN))
    result = parse_loop.find_all(work, index, FakeParser(imports={"Sigmoid", "Tanh"}))
    flags = {f.op: f.downstream_of_cut for f in result.failures}
    assert flags == {"Sigmoid": False, "Tanh": True}


def test_unnamed_nodes_get_working_names_but_reports_keep_the_original():
    work, index = _prepare(model_from_text(CHAIN))
    result = parse_loop.find_all(work, index, FakeParser(imports={"Tanh", "NonZero"}))
    by_op = {f.op: f for f in result.failures}
    assert by_op["Tanh"].node == "" and by_op["Tanh"].working_name.startswith("Tanh__surgeon")
    names = [n.name for _p, _g, n in graph_edit.walk(work.graph)]
    assert len(set(names)) == len(names) and all(names)


def test_cut_turns_outputs_into_inputs_and_keeps_the_rest():
    work, index = _prepare(model_from_text(CHAIN))
    nz = index.by_op("NonZero")[0].name
    cut, guessed = graph_edit.cut(work, [nz], graph_edit.value_infos(work))
    assert nz not in [n.name for n in cut.graph.node]
    b = next(i for i in cut.graph.input if i.name == "b")
    assert b.type.tensor_type.elem_type == T.INT64 and guessed == []
    assert len(work.graph.node) == 7  # the working copy is untouched
    onnx.checker.check_model(cut)


def _if_model():
    then = helper.make_graph([helper.make_node("Neg", ["x"], ["t1"]), helper.make_node("Foo", ["t1"], ["t2"], domain="com.x")],
                             "then", [], [helper.make_tensor_value_info("t2", T.FLOAT, [4])])
    els = helper.make_graph([helper.make_node("Foo", ["x"], ["e1"], domain="com.x", name="else_foo")], "else", [],
                            [helper.make_tensor_value_info("e1", T.FLOAT, [4])])
    g = helper.make_graph([helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=els, name="branchy")], "g",
                          [helper.make_tensor_value_info("x", T.FLOAT, [4]), helper.make_tensor_value_info("c", T.BOOL, [])],
                          [helper.make_tensor_value_info("y", T.FLOAT, [4])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.x", 1)])


def test_nodes_in_bodies_are_found_with_their_path_and_guessed_types():
    work, index = _prepare(_if_model())
    result = parse_loop.find_all(work, index, FakeParser(imports={"Foo"}))
    paths = sorted((f.path, f.node) for f in result.failures)
    assert paths == [("branchy.else_branch", "else_foo"), ("branchy.then_branch", "")]
    assert result.rest_parses and result.guessed_types == []  # the body outputs declare their types


def test_an_unknown_custom_op_output_type_is_guessed_and_said_so():
    text = """<ir_version: 8, opset_import: ["" : 17, "com.x" : 1]>
    g (float[2,3] x) => (float[2,3] y) {
      t = com.x.Foo(x)
      y = Relu(t)
    }"""
    work, index = _prepare(model_from_text(text))
    result = parse_loop.find_all(work, index, FakeParser(imports={"Foo"}))
    assert result.guessed_types == ["t"] and any("guessed" in n for n in result.notes)
    cut, _ = graph_edit.cut(work, [index.by_op("Foo")[0].name], graph_edit.value_infos(work))
    t = next(i for i in cut.graph.input if i.name == "t")
    assert [d.dim_value for d in t.type.tensor_type.shape.dim] == [2, 3]  # shaped like Foo's input


def test_an_error_without_a_node_is_located_by_op_and_isolation():
    text = """<ir_version: 8, opset_import: ["" : 17]>
    g (float[4,2] d, int64[1,2] i, float[1,2] u) => (float[4,2] a, float[4,2] b, float[4,2] c) {
      a = ScatterElements(d, i, u)
      b = ScatterElements<reduction="max">(d, i, u)
      c = ScatterElements<reduction="add">(d, i, u)
    }"""
    work, index = _prepare(model_from_text(text))
    fake = FakeParser(anonymous={"ScatterElements"})
    result = parse_loop.find_all(work, index, fake)
    failing = sorted(f.working_name for f in result.failures)
    with_reduction = sorted(n.name for n in work.graph.node if n.attribute)
    assert failing == with_reduction and len(failing) == 2
    assert result.rest_parses


def test_an_error_that_names_nothing_locatable_is_a_model_level_failure():
    work, index = _prepare(model_from_text(CHAIN))

    def parse(_model):
        return ParseOutcome(False, [{"code": "INVALID_GRAPH", "node": -1, "node_name": "", "op": "", "desc": "bad", "func": "parseGraph"}])

    result = parse_loop.find_all(work, index, parse)
    assert len(result.failures) == 1 and result.failures[0].label == "(model)" and result.parses == 1


@pytest.mark.parametrize("func,op", [("importScatterElements", "ScatterElements"), ("checkResize", "Resize"),
                                     ("checkFallbackPluginImporter", None), ("parseGraph", None), ("", None)])
def test_op_from_func(func, op):
    assert parse_loop.op_from_func(func) == op
