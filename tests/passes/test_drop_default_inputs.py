"""drop-default-inputs: zero initial states of RNN/GRU/LSTM are left out, their chains removed."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import helpers
import surgeon
from helpers import CORPUS, FIXTURES, assert_equivalent, op_types, requires_corpus
from passes.drop_default_inputs import DropDefaultInputs

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


# --- zero states that reach the RNN through Slice/Expand/Unsqueeze/Concat (PyTorch's multi-layer export) ---

def _sliced_state_model(op: str, fill: float | None, direction: str = "forward", layers: int = 2):
    """One ConstantOfShape([layers*dirs, N, H]) sliced per layer, as torch's legacy exporter writes it."""
    dirs = 2 if direction == "bidirectional" else 1
    gates = {"RNN": 1, "GRU": 3, "LSTM": 4}[op]
    rng = np.random.default_rng(1)
    attrs = {} if fill is None else {"value": numpy_helper.from_array(np.array([fill], np.float32))}
    inits = [numpy_helper.from_array(np.array([1], np.int64), "idx1"),
             numpy_helper.from_array(np.array([layers * dirs], np.int64), "lead"),
             numpy_helper.from_array(np.array([HIDDEN], np.int64), "hid"),
             numpy_helper.from_array(np.array([0], np.int64), "axis0")]
    nodes = [helper.make_node("Shape", ["x"], ["shp"]),
             helper.make_node("Gather", ["shp", "idx1"], ["batch"], axis=0),
             helper.make_node("Concat", ["lead", "batch", "hid"], ["dims"], axis=0),
             helper.make_node("ConstantOfShape", ["dims"], ["zeros"], **attrs)]
    x = "x"
    for layer in range(layers):
        feat = FEATURES if layer == 0 else HIDDEN * dirs
        inits += [numpy_helper.from_array(np.array([layer * dirs], np.int64), f"s{layer}"),
                  numpy_helper.from_array(np.array([(layer + 1) * dirs], np.int64), f"e{layer}"),
                  numpy_helper.from_array(rng.normal(0, 0.5, (dirs, gates * HIDDEN, feat)).astype(np.float32), f"W{layer}"),
                  numpy_helper.from_array(rng.normal(0, 0.5, (dirs, gates * HIDDEN, HIDDEN)).astype(np.float32), f"R{layer}")]
        nodes.append(helper.make_node("Slice", ["zeros", f"s{layer}", f"e{layer}", "axis0"], [f"h{layer}"]))
        state = [f"h{layer}"] + ([f"h{layer}"] if op == "LSTM" else [])  # LSTM: initial_c from the same zeros
        nodes.append(helper.make_node(op, [x, f"W{layer}", f"R{layer}", "", ""] + state,
                                      [f"y{layer}", f"yh{layer}"], hidden_size=HIDDEN, direction=direction,
                                      name=f"{op.lower()}{layer}"))
        # [S, dirs, N, H] -> [S, N, dirs*H] for the next layer
        inits.append(numpy_helper.from_array(np.array([0, 0, -1], np.int64), f"flat{layer}"))
        nodes += [helper.make_node("Transpose", [f"y{layer}"], [f"t{layer}"], perm=[0, 2, 1, 3]),
                  helper.make_node("Reshape", [f"t{layer}", f"flat{layer}"], [f"x{layer + 1}"])]
        x = f"x{layer + 1}"
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["S", "N", FEATURES])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["S", "N", HIDDEN * dirs])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
def test_sliced_zero_state_dropped(op, direction):
    m = _sliced_state_model(op, 0.0, direction)
    out, log = run_pass(m)
    assert log.counts["zero-initial-state"] == (4 if op == "LSTM" else 2)
    hist = op_types(out)
    assert not {"ConstantOfShape", "Slice", "Shape", "Gather", "Concat"} & set(hist)
    assert hist.count(op) == 2
    for node in out.graph.node:
        if node.op_type == op:
            assert list(node.input) == ["x" if node.name.endswith("0") else "x1", "W" + node.name[-1], "R" + node.name[-1]]
    assert [o.name for o in out.graph.output] == [o.name for o in m.graph.output]
    assert_equivalent(m, out, SHAPES, **TOL)


def test_sliced_nonzero_state_kept():
    m = _sliced_state_model("GRU", 0.5)
    out, log = run_pass(m)
    assert out is None and not log.counts


def test_zero_state_through_unsqueeze_expand_concat():
    """Zeros reshaped, broadcast and concatenated stay zeros: all three ways are recognised."""
    inits = [numpy_helper.from_array(np.zeros((HIDDEN,), np.float32), "z_vec"),
             numpy_helper.from_array(np.array([0, 1], np.int64), "ax01"),
             numpy_helper.from_array(np.array([1, 1, 1], np.int64), "ones3"),
             numpy_helper.from_array(np.zeros((1, 1, HIDDEN), np.float32), "z_fwd")]
    nodes = [helper.make_node("Unsqueeze", ["z_vec", "ax01"], ["z_u"]),        # [1, 1, H]
             helper.make_node("Expand", ["z_u", "ones3"], ["z_e"]),            # [1, 1, H]
             helper.make_node("Concat", ["z_fwd", "z_e"], ["h0"], axis=0)]     # [2, 1, H]
    m = _model("GRU", {5: "h0"}, nodes, inits)
    m.graph.node[-1].attribute.append(helper.make_attribute("direction", "bidirectional"))
    rng = np.random.default_rng(2)
    for t in m.graph.initializer:  # bidirectional weights
        if t.name in ("W", "R", "B"):
            t.CopyFrom(numpy_helper.from_array(
                rng.normal(0, 0.5, (2,) + tuple(t.dims[1:])).astype(np.float32), t.name))
    m.graph.output[0].CopyFrom(helper.make_tensor_value_info("y", TensorProto.FLOAT, ["S", 2, "N", HIDDEN]))
    m.graph.output[1].CopyFrom(helper.make_tensor_value_info("y_h", TensorProto.FLOAT, [2, "N", HIDDEN]))
    onnx.checker.check_model(m)
    out, log = run_pass(m)
    assert op_types(out) == ["GRU"] and log.counts["zero-initial-state"] == 1
    assert_equivalent(m, out, [{"x": (5, 1, FEATURES)}], **TOL)


def test_concat_of_zero_and_input_kept_with_note():
    """Zeros concatenated with a graph input are not known zeros: the state stays, a note says why."""
    h_half = helper.make_tensor_value_info("h_bwd", TensorProto.FLOAT, [1, "N", HIDDEN])
    nodes, inits = _zero_state_chain("h_fwd", 0.0)
    nodes.append(helper.make_node("Concat", ["h_fwd", "h_bwd"], ["h0"], axis=0))
    m = _model("GRU", {5: "h0"}, nodes, inits, extra_inputs=[h_half])
    out, log = run_pass(m)
    assert out is None and not log.counts
    assert any("initial_h is computed by Concat, not a known zero" in n for n in log.notes), log.notes


def test_zero_state_of_wrong_static_shape_refused():
    """Zeros of [1, 1, H+1] for a GRU of hidden size H: the model cannot run; the state is kept, with a note."""
    inits = [numpy_helper.from_array(np.array([1, 1, HIDDEN + 1], np.int64), "dims")]
    nodes = [helper.make_node("ConstantOfShape", ["dims"], ["h0"])]
    m = _model("GRU", {5: "h0"}, nodes, inits)
    out, log = run_pass(m)
    assert out is None and not log.counts
    assert any(f"[1, 1, {HIDDEN + 1}]" in n and "needs [1, ?, 3]" in n for n in log.notes), log.notes


GRU_FIXTURE = FIXTURES / "gru_zero_state_legacy_op14.onnx"


def test_gru_fixture_fewer_nodes_than_onnxsim():
    """Issue 10's GRU encoder (torch legacy export, no h0): the default pipeline ends below onnxsim."""
    onnxsim = pytest.importorskip("onnxsim", reason="onnxsim is needed to measure the peer's node count")
    model = surgeon.load(GRU_FIXTURE)
    out, report = surgeon.fix(model, atol=1e-5, rtol=1e-5)
    entry = next(p for p in report.passes if p.name == "drop-default-inputs" and p.status == "applied")
    assert entry.counts["zero-initial-state"] == 4
    assert report.verification == "numeric" and not report.rolled_back
    peer, ok = onnxsim.simplify(model)
    assert ok
    ours, theirs = surgeon.graph.count_nodes(out), surgeon.graph.count_nodes(peer)
    assert ours <= theirs, (ours, theirs)
    assert "ConstantOfShape" not in surgeon.graph.op_histogram(out)
    assert_equivalent(model, out, [{"tokens": (2, 7)}, {"tokens": (3, 4)}], atol=1e-5, rtol=1e-5)
