"""drop-default-inputs: zero initial states of RNN/GRU/LSTM are left out, their chains removed."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import helpers
import surgeon
from helpers import CORPUS, assert_equivalent, op_types, requires_corpus
from passes.drop_default_inputs import DropDefaultInputs
from surgeon.pipeline.base import PassContext, PassLog, RewriteBudget

TOL = dict(atol=1e-5, rtol=1e-5)
HIDDEN, FEATURES = 3, 4
SHAPES = [{"x": (5, 1, FEATURES)}, {"x": (2, 3, FEATURES)}]


def run_pass(model, limit=None):
    out, log = helpers.run_pass(DropDefaultInputs, model, limit=limit)
    if out is not None:
        onnx.checker.check_model(out, full_check=True)
    return out, log


def _zero_state_chain(prefix: str, fill: float | None) -> tuple[list, list]:
    """Shape(x)[1] -> Concat([1], batch, [HIDDEN]) -> ConstantOfShape(fill): what PyTorch exports."""
    inits = [numpy_helper.from_array(np.array([1], np.int64), f"{prefix}_one"),
             numpy_helper.from_array(np.array([HIDDEN], np.int64), f"{prefix}_hidden"),
             numpy_helper.from_array(np.array([1], np.int64), f"{prefix}_idx")]
    attrs = {} if fill is None else {"value": numpy_helper.from_array(np.array([fill], np.float32))}
    nodes = [helper.make_node("Shape", ["x"], [f"{prefix}_shape"]),
             helper.make_node("Gather", [f"{prefix}_shape", f"{prefix}_idx"], [f"{prefix}_batch"], axis=0),
             helper.make_node("Concat", [f"{prefix}_one", f"{prefix}_batch", f"{prefix}_hidden"], [f"{prefix}_dims"], axis=0),
             helper.make_node("ConstantOfShape", [f"{prefix}_dims"], [prefix], **attrs)]
    return nodes, inits


def _weights(op: str, gates: int, rng) -> list:
    return [numpy_helper.from_array(rng.normal(0, 0.5, (1, gates * HIDDEN, FEATURES)).astype(np.float32), "W"),
            numpy_helper.from_array(rng.normal(0, 0.5, (1, gates * HIDDEN, HIDDEN)).astype(np.float32), "R"),
            numpy_helper.from_array(rng.normal(0, 0.5, (1, 2 * gates * HIDDEN)).astype(np.float32), "B")]


def _model(op: str, states: dict[int, str], nodes: list, inits: list, extra_inputs=()) -> onnx.ModelProto:
    gates = {"RNN": 1, "GRU": 3, "LSTM": 4}[op]
    rng = np.random.default_rng(0)
    inputs = ["x", "W", "R", "B", ""] + [""] * (max(states, default=4) - 4)
    for index, name in states.items():
        inputs[index] = name
    rnn = helper.make_node(op, inputs, ["y", "y_h"], hidden_size=HIDDEN)
    graph = helper.make_graph(
        nodes + [rnn], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["S", "N", FEATURES]), *extra_inputs],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["S", 1, "N", HIDDEN]),
         helper.make_tensor_value_info("y_h", TensorProto.FLOAT, [1, "N", HIDDEN])],
        _weights(op, gates, rng) + inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


@pytest.mark.parametrize("op", ["GRU", "RNN"])
@pytest.mark.parametrize("fill", [0.0, None])
def test_zero_state_chain_removed(op, fill):
    nodes, inits = _zero_state_chain("h0", fill)
    m = _model(op, {5: "h0"}, nodes, inits)
    out, log = run_pass(m)
    assert op_types(out) == [op]
    assert list(out.graph.node[0].input) == ["x", "W", "R", "B"]
    assert log.counts["zero-initial-state"] == 1
    assert_equivalent(m, out, SHAPES, **TOL)


def test_lstm_zero_h_and_nonzero_c():
    nodes_h, inits_h = _zero_state_chain("h0", 0.0)
    nodes_c, inits_c = _zero_state_chain("c0", 0.25)
    m = _model("LSTM", {5: "h0", 6: "c0"}, nodes_h + nodes_c, inits_h + inits_c)
    out, log = run_pass(m)
    lstm = out.graph.node[-1]
    assert list(lstm.input) == ["x", "W", "R", "B", "", "", "c0"]
    assert op_types(out).count("ConstantOfShape") == 1  # c0's chain stays
    assert log.counts["zero-initial-state"] == 1
    assert_equivalent(m, out, SHAPES, **TOL)


def test_zero_initializer_state_and_shared_chain():
    """A zero initializer is dropped; a chain also read elsewhere stays."""
    nodes, inits = _zero_state_chain("h0", 0.0)
    m = _model("GRU", {5: "h0"}, nodes + [helper.make_node("Identity", ["h0_dims"], ["dims_copy"])], inits)
    m.graph.output.append(helper.make_tensor_value_info("dims_copy", TensorProto.INT64, [3]))
    out, log = run_pass(m)
    assert "ConstantOfShape" not in op_types(out) and "Concat" in op_types(out)
    shapes = [{"x": (5, 1, FEATURES)}]
    assert_equivalent(m, out, shapes, **TOL)

    zero = numpy_helper.from_array(np.zeros((1, 1, HIDDEN), np.float32), "h0")
    m2 = _model("GRU", {5: "h0"}, [], [zero])
    out2, log2 = run_pass(m2)
    assert op_types(out2) == ["GRU"] and len(out2.graph.node[0].input) == 4
    assert "h0" not in {t.name for t in out2.graph.initializer}
    assert_equivalent(m2, out2, shapes, **TOL)


def test_state_from_graph_input_or_nonzero_kept():
    h0 = helper.make_tensor_value_info("h0", TensorProto.FLOAT, [1, "N", HIDDEN])
    out, _ = run_pass(_model("GRU", {5: "h0"}, [], [], extra_inputs=[h0]))
    assert out is None
    nodes, inits = _zero_state_chain("h0", 1.0)
    out, _ = run_pass(_model("GRU", {5: "h0"}, nodes, inits))
    assert out is None
    nodes, inits = _zero_state_chain("h0", 0.0)
    out, log = run_pass(_model("GRU", {5: "h0"}, nodes, inits), limit=0)
    assert out is None and not log.counts


@requires_corpus("rnn_bilstm_gru_legacy_op13.onnx")
def test_rnn_corpus_gru_state_dropped():
    model = surgeon.model.load(CORPUS / "rnn_bilstm_gru_legacy_op13.onnx")
    out, report = surgeon.fix(model, passes=["fold-constants", "drop-default-inputs", "cleanup"], verify=True)
    entry = next(p for p in report.passes if p.name == "drop-default-inputs")
    assert entry.status != "rolled-back" and entry.counts.get("zero-initial-state") == 1
    assert "ConstantOfShape" not in surgeon.graph.op_histogram(out)
