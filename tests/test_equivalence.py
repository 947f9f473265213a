"""surgeon/equivalence.py: the proof that lets a change skip ONNX Runtime, tested directly.

Each case is a pair of models in ONNX text: ``same`` pairs must get equal digests (the
proof holds), ``different`` pairs must not (a proof there would pass a wrong rewrite),
and every ``different`` pair is also shown to compute different outputs in ONNX Runtime,
so the expectation is about semantics, not about the digest's implementation.
"""

from __future__ import annotations

import random

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import helper

import graphgen
from helpers import model_from_text, run_ort
from surgeon import weights as W
from surgeon.equivalence import output_digests

HEAD = '<ir_version: 8, opset_import: ["" : 17]>'


def _digests(text: str) -> tuple:
    return output_digests(model_from_text(f"{HEAD}\n{text}"), {})


def _outputs_differ(a: str, b: str, feeds: dict) -> bool:
    ra = run_ort(model_from_text(f"{HEAD}\n{a}"), feeds)
    rb = run_ort(model_from_text(f"{HEAD}\n{b}"), feeds)
    return any(ra[k].shape != rb[k].shape or not np.array_equal(ra[k], rb[k]) for k in ra)


X = np.arange(-6, 6, dtype=np.float32).reshape(2, 6) / 4
FEEDS = {"x": X, "c": np.array(True)}

SAME = {
    "attribute order": (
        "g (float[2,6] x) => (float[2,6] y) { y = LeakyRelu <alpha: float = 0.2> (x) }",
        "g (float[2,6] x) => (float[2,6] y) { y = LeakyRelu <alpha: float = 0.2> (x) }"),
    "names, Identity, dead node and order": (
        "g (float[2,6] x) => (float[2,6] y) { a = Relu (x)\n b = Neg (a)\n y = Abs (b) }",
        "g (float[2,6] x) => (float[2,6] y) { p = Relu (x)\n dead = Sigmoid (p)\n q = Identity (p)\n"
        " r = Neg (q)\n y = Abs (r) }"),
    "Constant node and initializer of one value": (
        "g (float[2,6] x) => (float[2,6] y) { k = Constant <value = float[1] {2.0}> ()\n y = Mul (x, k) }",
        "g (float[2,6] x) => (float[2,6] y) <float[1] w = {2.0}> { y = Mul (x, w) }"),
    "body values renamed, Identity in a body": (
        "g (float[2,6] x, bool c) => (float[2,6] y) { y = If (c) <then_branch = t () => (float[2,6] o) "
        "{ o = Relu (x) }, else_branch = e () => (float[2,6] p) { p = Neg (x) }> }",
        "g (float[2,6] x, bool c) => (float[2,6] y) { y = If (c) <then_branch = t () => (float[2,6] q) "
        "{ m = Relu (x)\n q = Identity (m) }, else_branch = e () => (float[2,6] z) { z = Neg (x) }> }"),
}

DIFFERENT = {
    "attribute value": (
        "g (float[2,6] x) => (float[2,6] y) { y = LeakyRelu <alpha: float = 0.2> (x) }",
        "g (float[2,6] x) => (float[2,6] y) { y = LeakyRelu <alpha: float = 0.3> (x) }"),
    "attribute present or default": (
        "g (float[2,6] x) => (float[2,6] y) { y = Softmax <axis: int = 0> (x) }",
        "g (float[2,6] x) => (float[2,6] y) { y = Softmax (x) }"),
    "constant in a body": (
        "g (float[2,6] x, bool c) => (float[2,6] y) { y = If (c) <then_branch = t () => (float[2,6] o) "
        "{ k = Constant <value = float {2.0}> ()\n o = Mul (x, k) }, else_branch = e () => (float[2,6] p) { p = Neg (x) }> }",
        "g (float[2,6] x, bool c) => (float[2,6] y) { y = If (c) <then_branch = t () => (float[2,6] o) "
        "{ k = Constant <value = float {3.0}> ()\n o = Mul (x, k) }, else_branch = e () => (float[2,6] p) { p = Neg (x) }> }"),
    "outer-scope value read by a body": (
        "g (float[2,6] x, bool c) => (float[2,6] y) { a = Relu (x)\n b = Neg (x)\n y = If (c) "
        "<then_branch = t () => (float[2,6] o) { o = Abs (a) }, else_branch = e () => (float[2,6] p) { p = Abs (b) }> }",
        "g (float[2,6] x, bool c) => (float[2,6] y) { a = Relu (x)\n b = Neg (x)\n y = If (c) "
        "<then_branch = t () => (float[2,6] o) { o = Abs (b) }, else_branch = e () => (float[2,6] p) { p = Abs (b) }> }"),
    "branches swapped": (
        "g (float[2,6] x, bool c) => (float[2,6] y) { y = If (c) <then_branch = t () => (float[2,6] o) "
        "{ o = Relu (x) }, else_branch = e () => (float[2,6] p) { p = Neg (x) }> }",
        "g (float[2,6] x, bool c) => (float[2,6] y) { y = If (c) <then_branch = t () => (float[2,6] o) "
        "{ o = Neg (x) }, else_branch = e () => (float[2,6] p) { p = Relu (x) }> }"),
    "which output of a multi-output node": (
        "g (float[2,6] x) => (float[2,3] y) { a, b = Split <axis: int = 1> (x)\n y = Relu (a) }",
        "g (float[2,6] x) => (float[2,3] y) { a, b = Split <axis: int = 1> (x)\n y = Relu (b) }"),
    "how many outputs a Split has (it cuts into as many pieces)": (
        "g (float[2,6] x) => (float[2,?] y) { a, b = Split <axis: int = 1> (x)\n y = Relu (a) }",
        "g (float[2,6] x) => (float[2,?] y) { a, b, c = Split <axis: int = 1> (x)\n y = Relu (a) }"),
    "values of TopK or its indices": (
        "g (float[2,6] x) => (float[2,3] y) { k = Constant <value = int64[1] {3}> ()\n v, i = TopK (x, k)\n"
        " y = Cast <to: int = 1> (i) }",
        "g (float[2,6] x) => (float[2,3] y) { k = Constant <value = int64[1] {3}> ()\n v, i = TopK (x, k)\n"
        " y = Identity (v) }"),
}


@pytest.mark.parametrize("case", sorted(SAME))
def test_same_computation_gets_equal_digests(case):
    a, b = SAME[case]
    assert _digests(a) == _digests(b)
    assert not _outputs_differ(a, b, FEEDS if "bool c" in a else {"x": X})


@pytest.mark.parametrize("case", sorted(DIFFERENT))
def test_different_computation_gets_different_digests(case):
    a, b = DIFFERENT[case]
    assert _outputs_differ(a, b, FEEDS if "bool c" in a else {"x": X})
    assert _digests(a) != _digests(b)


def test_overridable_default_is_its_name_and_its_value():
    base = "g (float[2,6] x, float[6] b) => (float[2,6] y) <float[6] b = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0}> { y = Add (x, b) }"
    plain = "g (float[2,6] x) => (float[2,6] y) <float[6] b = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0}> { y = Add (x, b) }"
    other = base.replace("{0.0, 0.0, 0.0, 0.0, 0.0, 0.0}", "{1.0, 0.0, 0.0, 0.0, 0.0, 0.0}")
    assert _digests(base) != _digests(plain)  # a default a user may feed is not a constant
    assert _digests(base) != _digests(other)


def test_weights_are_compared_by_identity_not_content():
    """A weight is its shared array (comparing contents would read every byte); by value only where asked."""
    key = f"{W.STUB_PREFIX}0"
    stub = W.make_stub("w", onnx.TensorProto.FLOAT, [6], key)
    graph = helper.make_graph([helper.make_node("Mul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 6])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 6])], initializer=[stub])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    one, same_bytes = np.arange(1, 7, dtype=np.float32), np.arange(1, 7, dtype=np.float32)
    assert output_digests(model, {key: one}) == output_digests(model, {key: one})
    assert output_digests(model, {key: one}) != output_digests(model, {key: same_bytes})
    assert output_digests(model, {key: one}, frozenset({key})) == output_digests(model, {key: same_bytes}, frozenset({key}))


def test_absent_trailing_outputs_are_no_outputs():
    def dropout(outputs):
        graph = helper.make_graph([helper.make_node("Dropout", ["x"], outputs)], "g",
                                  [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 6])],
                                  [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 6])])
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])

    assert output_digests(dropout(["y"]), {}) == output_digests(dropout(["y", ""]), {})


def _renamed(model: onnx.ModelProto) -> onnx.ModelProto:
    """Every value that is not a graph input or output renamed, in every graph (same computation)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    keep = {vi.name for vi in out.graph.input} | {vi.name for vi in out.graph.output}
    mapping: dict[str, str] = {}

    def new(name: str) -> str:
        if not name or name in keep:
            return name
        return mapping.setdefault(name, f"v{len(mapping)}")

    def walk(g: onnx.GraphProto) -> None:
        for vi in list(g.input) + list(g.output) + list(g.value_info):
            vi.name = new(vi.name)
        for t in g.initializer:
            t.name = new(t.name)
        for n in g.node:
            n.input[:] = [new(x) for x in n.input]
            n.output[:] = [new(x) for x in n.output]
            n.name = ""
            for a in n.attribute:
                for sub in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)):
                    walk(sub)

    walk(out.graph)
    return out


@settings(max_examples=25, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.randoms(use_true_random=False))
def test_renaming_every_intermediate_value_keeps_the_digests(rnd):
    model = graphgen.build(graphgen.random_plan(random.Random(rnd.getrandbits(32)))).model
    assert output_digests(_renamed(model), {}) == output_digests(model, {})
