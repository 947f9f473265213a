"""fold-conv-bn: BN / per-channel Mul/Add folded into Conv, ConvTranspose, Gemm, MatMul.

Each positive case checks the structure (the BN/Mul/Add is gone, provenance is stamped,
the application is counted) and the numbers (ONNX Runtime, several input sizes, explicit
tolerances). Each negative case checks that the graph is unchanged and that the report
says why.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import helpers
import surgeon
from surgeon import graph as G
from surgeon.pipeline.base import RewriteBudget
from passes.fold_conv_bn import FoldConvBN, PASS_NAME
from helpers import CORPUS, assert_equivalent, requires_corpus, run_ort

F32 = dict(atol=1e-5, rtol=1e-4)
F16 = dict(atol=1e-2, rtol=5e-3)  # fp16: about one ulp at |y|~8 (the fold rounds the weights once more)


# --- building small models -----------------------------------------------------------------

def _init(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def _bn_params(rng, prefix, c, dtype=np.float32):
    return [
        _init(f"{prefix}.scale", rng.uniform(0.5, 1.5, c).astype(dtype)),
        _init(f"{prefix}.bias", rng.normal(0, 0.3, c).astype(dtype)),
        _init(f"{prefix}.mean", rng.normal(0, 0.3, c).astype(dtype)),
        _init(f"{prefix}.var", rng.uniform(0.2, 2.0, c).astype(dtype)),
    ]


def _bn(x, y, prefix, name="bn", **attrs):
    return helper.make_node("BatchNormalization", [x] + [f"{prefix}.{r}" for r in ("scale", "bias", "mean", "var")],
                            [y], name=name, **attrs)


def _model(nodes, inputs, outputs, inits, opset=13, elem=TensorProto.FLOAT):
    """inputs/outputs: [(name, shape)] with str dims for dynamic axes."""
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info(n, elem, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, elem, s) for n, s in outputs],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def _conv_bn(group=1, bias=True, epsilon=None, opset=13, dynamic=False, cin=4, cout=8, dtype=np.float32, pads=1):
    rng = np.random.default_rng(group * 10 + bias)
    inits = [_init("W", rng.normal(0, 0.5, (cout, cin // group, 3, 3)).astype(dtype))]
    if bias:
        inits.append(_init("B", rng.normal(0, 0.3, cout).astype(dtype)))
    inits += _bn_params(rng, "bn", cout, dtype)
    conv = helper.make_node("Conv", ["x", "W"] + (["B"] if bias else []), ["c"], name="conv", group=group,
                            pads=[pads] * 4, kernel_shape=[3, 3])
    bn_attrs = {} if epsilon is None else {"epsilon": epsilon}
    relu = helper.make_node("Relu", ["b"], ["y"], name="relu")
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    shape_in = ["N", cin, "H", "W"] if dynamic else [1, cin, 6, 6]
    shape_out = ["N", cout, "H2", "W2"] if dynamic else [1, cout, 6 - 2 + 2 * pads, 6 - 2 + 2 * pads]
    return _model([conv, _bn("c", "b", "bn", **bn_attrs), relu], [("x", shape_in)], [("y", shape_out)], inits,
                  opset=opset, elem=elem)


def _run_pass(model, limit=None):
    """Run the pass directly; returns (new model or None, log, budget)."""
    before = model.SerializeToString()
    budget = RewriteBudget(limit=limit)
    out, log = helpers.run_pass(FoldConvBN, onnx.ModelProto.FromString(before), budget=budget)
    if out is not None:
        onnx.checker.check_model(out, full_check=True)
    return out, log, budget


def _ops(model):
    return [n.op_type for n in G.iter_proto_nodes(model)]


def _node(model, op):
    return next(n for n in G.iter_proto_nodes(model) if n.op_type == op)


def _meta(node):
    return {p.key: p.value for p in node.metadata_props}


STATIC = [{"x": (1, 4, 6, 6)}]
DYNAMIC = [{"x": (1, 4, 6, 6)}, {"x": (3, 4, 9, 7)}]


# --- positive cases --------------------------------------------------------------------------

@pytest.mark.parametrize("group,cin,cout", [(1, 4, 8), (2, 4, 8), (4, 4, 4), (4, 4, 8)],
                         ids=["plain", "grouped", "depthwise", "depthwise-multiplier"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_conv_bn_groups_and_bias(group, cin, cout, bias):
    model = _conv_bn(group=group, bias=bias, cin=cin, cout=cout, dynamic=True)
    out, log, _ = _run_pass(model)
    assert out is not None
    assert "BatchNormalization" not in _ops(out) and _ops(out).count("Conv") == 1
    assert log.counts == {"conv-bn": 1}
    conv = _node(out, "Conv")
    assert len(conv.input) == 3 and conv.output[0] == "b"
    assert _meta(conv) == {"surgeon.pass": PASS_NAME, "surgeon.rule": "conv-bn", "surgeon.from": "conv,bn"}
    assert_equivalent(model, out, DYNAMIC, **F32)


@pytest.mark.parametrize("opset", [9, 13, 15])
@pytest.mark.parametrize("epsilon", [None, 1e-3, 0.5], ids=["default-eps", "eps1e-3", "eps0.5"])
def test_conv_bn_epsilon_and_opset(opset, epsilon):
    model = _conv_bn(epsilon=epsilon, opset=opset)
    out, log, _ = _run_pass(model)
    assert log.counts["conv-bn"] == 1 and "BatchNormalization" not in _ops(out)
    assert_equivalent(model, out, STATIC, **F32)


@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
def test_conv_bn_static_and_dynamic_shapes(dynamic):
    model = _conv_bn(dynamic=dynamic, pads=0)
    out, _, _ = _run_pass(model)
    assert out.graph.input[0].type == model.graph.input[0].type
    assert_equivalent(model, out, DYNAMIC if dynamic else STATIC, **F32)


@pytest.mark.parametrize("spatial", [1, 3], ids=["conv1d", "conv3d"])
def test_conv_bn_other_spatial_ranks(spatial):
    rng = np.random.default_rng(spatial)
    inits = [_init("W", rng.normal(0, 0.5, (6, 2) + (3,) * spatial).astype(np.float32))] + _bn_params(rng, "bn", 6)
    conv = helper.make_node("Conv", ["x", "W"], ["c"], name="conv", pads=[1] * (2 * spatial))
    dims = [f"S{i}" for i in range(spatial)]
    model = _model([conv, _bn("c", "y", "bn")], [("x", ["N", 2] + dims)], [("y", ["N", 6] + dims)], inits)
    out, log, _ = _run_pass(model)
    assert log.counts == {"conv-bn": 1} and _ops(out) == ["Conv"]
    assert_equivalent(model, out, [{"x": (1, 2) + (5,) * spatial}, {"x": (2, 2) + (4,) * spatial}], **F32)


def test_spatial_attribute_opset7():
    model = _conv_bn(opset=7)
    model.graph.node[1].attribute.append(helper.make_attribute("spatial", 1))
    out, log, _ = _run_pass(model)
    assert log.counts["conv-bn"] == 1
    assert_equivalent(model, out, STATIC, **F32)


def test_fp16_weights_compute_in_float64():
    model = _conv_bn(dtype=np.float16)
    out, log, _ = _run_pass(model)
    assert log.counts["conv-bn"] == 1
    w = next(t for t in out.graph.initializer if t.name.startswith("W"))
    assert w.data_type == TensorProto.FLOAT16
    assert_equivalent(model, out, STATIC, **F16)


@pytest.mark.parametrize("group", [1, 2, 4])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_convtranspose_bn_scales_axis1_per_group(group, bias):
    rng = np.random.default_rng(group)
    cin, cout = 4, 8
    inits = [_init("W", rng.normal(0, 0.5, (cin, cout // group, 3, 3)).astype(np.float32))]
    if bias:
        inits.append(_init("B", rng.normal(0, 0.3, cout).astype(np.float32)))
    inits += _bn_params(rng, "bn", cout)
    conv = helper.make_node("ConvTranspose", ["x", "W"] + (["B"] if bias else []), ["c"], name="deconv",
                            group=group, strides=[2, 2])
    model = _model([conv, _bn("c", "y", "bn")], [("x", ["N", cin, "H", "W"])], [("y", ["N", cout, "H2", "W2"])], inits)
    out, log, _ = _run_pass(model)
    assert log.counts == {"convtranspose-bn": 1} and _ops(out) == ["ConvTranspose"]
    assert_equivalent(model, out, DYNAMIC, **F32)


@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("c_shape", [None, (6,), (1, 6), (1,)], ids=["noC", "C[N]", "C[1,N]", "C[1]"])
def test_gemm_bn(trans_b, c_shape):
    rng = np.random.default_rng(trans_b)
    b = rng.normal(0, 0.5, (6, 5) if trans_b else (5, 6)).astype(np.float32)
    inits = [_init("Wg", b)] + _bn_params(rng, "bn", 6)
    ins = ["x", "Wg"]
    if c_shape is not None:
        inits.append(_init("C", rng.normal(0, 0.3, c_shape).astype(np.float32)))
        ins.append("C")
    gemm = helper.make_node("Gemm", ins, ["g"], name="gemm", transB=trans_b, alpha=0.7, beta=1.3)
    model = _model([gemm, _bn("g", "y", "bn")], [("x", ["N", 5])], [("y", ["N", 6])], inits)
    out, log, _ = _run_pass(model)
    assert log.counts == {"gemm-bn": 1} and _ops(out) == ["Gemm"]
    assert_equivalent(model, out, [{"x": (1, 5)}, {"x": (4, 5)}], **F32)


def test_matmul_bn_becomes_matmul_add():
    rng = np.random.default_rng(3)
    inits = [_init("Wm", rng.normal(0, 0.5, (5, 6)).astype(np.float32))] + _bn_params(rng, "bn", 6)
    mm = helper.make_node("MatMul", ["x", "Wm"], ["m"], name="mm")
    model = _model([mm, _bn("m", "y", "bn")], [("x", ["N", 5])], [("y", ["N", 6])], inits)
    out, log, _ = _run_pass(model)
    assert log.counts == {"matmul-bn": 1} and _ops(out) == ["MatMul", "Add"]
    assert _meta(_node(out, "Add"))["surgeon.rule"] == "matmul-bn"
    assert_equivalent(model, out, [{"x": (1, 5)}, {"x": (7, 5)}], **F32)


@pytest.mark.parametrize("op", ["Mul", "Add"])
@pytest.mark.parametrize("shape", [(8, 1, 1), (1, 8, 1, 1), (), (1,)], ids=["C11", "1C11", "scalar", "one"])
@pytest.mark.parametrize("const_first", [False, True], ids=["x-op-c", "c-op-x"])
def test_conv_pointwise(op, shape, const_first):
    rng = np.random.default_rng(5)
    inits = [_init("W", rng.normal(0, 0.5, (8, 4, 3, 3)).astype(np.float32)),
             _init("k", rng.uniform(0.5, 2, shape).astype(np.float32))]
    conv = helper.make_node("Conv", ["x", "W"], ["c"], name="conv", pads=[1, 1, 1, 1])
    point = helper.make_node(op, ["k", "c"] if const_first else ["c", "k"], ["y"], name="pw")
    model = _model([conv, point], [("x", ["N", 4, "H", "W"])], [("y", ["N", 8, "H", "W"])], inits)
    out, log, _ = _run_pass(model)
    assert log.counts == {f"conv-{op.lower()}": 1} and _ops(out) == ["Conv"]
    assert out.graph.node[0].output[0] == "y"
    assert_equivalent(model, out, DYNAMIC, **F32)


def test_chain_conv_bn_mul_add_and_provenance():
    rng = np.random.default_rng(6)
    inits = [_init("W", rng.normal(0, 0.5, (8, 4, 3, 3)).astype(np.float32)),
             _init("m", rng.uniform(0.5, 2, (8, 1, 1)).astype(np.float32)),
             _init("a", rng.normal(0, 1, (1, 8, 1, 1)).astype(np.float32))] + _bn_params(rng, "bn", 8)
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], name="conv", pads=[1, 1, 1, 1]), _bn("c", "b", "bn"),
             helper.make_node("Mul", ["b", "m"], ["p"], name="mul"), helper.make_node("Add", ["p", "a"], ["y"], name="add")]
    model = _model(nodes, [("x", ["N", 4, "H", "W"])], [("y", ["N", 8, "H", "W"])], inits)
    out, log, _ = _run_pass(model)
    assert dict(log.counts) == {"conv-bn": 1, "conv-mul": 1, "conv-add": 1} and _ops(out) == ["Conv"]
    assert _meta(out.graph.node[0])["surgeon.from"] == "conv,bn,mul,add"
    assert_equivalent(model, out, DYNAMIC, **F32)


def test_constant_nodes_instead_of_initializers():
    """paddle2onnx style: weight and BN parameters are outputs of Constant nodes."""
    model = _conv_bn(bias=False)
    nodes = [helper.make_node("Constant", [], [t.name], name=f"const_{t.name}", value=t) for t in model.graph.initializer]
    del model.graph.initializer[:]
    new_nodes = nodes + list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(new_nodes)
    onnx.checker.check_model(model)
    out, log, _ = _run_pass(model)
    assert log.counts["conv-bn"] == 1
    assert _ops(out) == ["Conv", "Relu"], "the Constant nodes left without readers are removed"
    assert_equivalent(model, out, STATIC, **F32)


def test_shared_weight_is_cloned():
    rng = np.random.default_rng(8)
    inits = [_init("W", rng.normal(0, 0.5, (8, 4, 1, 1)).astype(np.float32))]
    inits += _bn_params(rng, "bn1", 8) + _bn_params(rng, "bn2", 8)
    nodes = [helper.make_node("Conv", ["x", "W"], ["c1"], name="conv1"), _bn("c1", "y1", "bn1", name="bn1"),
             helper.make_node("Conv", ["x", "W"], ["c2"], name="conv2"), helper.make_node("Relu", ["c2"], ["y2"], name="r")]
    model = _model(nodes, [("x", ["N", 4, "H", "W"])], [("y1", ["N", 8, "H", "W"]), ("y2", ["N", 8, "H", "W"])], inits)
    out, log, _ = _run_pass(model)
    assert log.counts == {"conv-bn": 1}
    assert any("shared with 1 other node" in n for n in log.notes)
    weights = {n.name: n.input[1] for n in out.graph.node if n.op_type == "Conv"}
    assert weights["conv2"] == "W" and weights["conv1"] != "W"
    assert_equivalent(model, out, DYNAMIC, **F32)


def test_bn_output_is_graph_output_keeps_name_and_order():
    model = _conv_bn()
    model.graph.output.insert(0, helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 8, 6, 6]))
    out, _, _ = _run_pass(model)
    assert [o.name for o in out.graph.output] == ["b", "y"]
    assert "BatchNormalization" not in _ops(out)
    assert_equivalent(model, out, STATIC, **F32)


@pytest.mark.parametrize("group", [1, 2])
def test_bn_before_unpadded_conv_folds_forward(group):
    rng = np.random.default_rng(9)
    inits = _bn_params(rng, "bn", 4) + [_init("W", rng.normal(0, 0.5, (8, 4 // group, 3, 3)).astype(np.float32)),
                                        _init("B", rng.normal(0, 0.3, 8).astype(np.float32))]
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"), _bn("r", "n", "bn"),
             helper.make_node("Conv", ["n", "W", "B"], ["y"], name="conv", group=group, strides=[2, 2])]
    model = _model(nodes, [("x", ["N", 4, "H", "W"])], [("y", ["N", 8, "H2", "W2"])], inits)
    out, log, _ = _run_pass(model)
    assert log.counts == {"bn-conv": 1} and _ops(out) == ["Relu", "Conv"]
    assert_equivalent(model, out, [{"x": (1, 4, 7, 7)}, {"x": (2, 4, 10, 8)}], **F32)


def test_inside_if_branch_with_outer_scope_weight():
    """The Conv in a branch reads its weight from the main graph; the fold happens in the branch."""
    rng = np.random.default_rng(10)
    inits = [_init("W", rng.normal(0, 0.5, (8, 4, 3, 3)).astype(np.float32))] + _bn_params(rng, "bn", 8)
    shape = ["N", 8, "H", "W"]
    out_vi = helper.make_tensor_value_info("yt", TensorProto.FLOAT, shape)
    then = helper.make_graph([helper.make_node("Conv", ["x", "W"], ["c"], name="conv", pads=[1, 1, 1, 1]),
                              _bn("c", "yt", "bn")], "then", [], [out_vi])
    other = helper.make_graph([helper.make_node("Conv", ["x", "W"], ["ye"], name="conv_else", pads=[1, 1, 1, 1])],
                              "else", [], [helper.make_tensor_value_info("ye", TensorProto.FLOAT, shape)])
    iff = helper.make_node("If", ["cond"], ["y"], name="if", then_branch=then, else_branch=other)
    graph = helper.make_graph([iff], "g", [helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
                                           helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, "H", "W"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    out, log, _ = _run_pass(model)
    assert log.counts == {"conv-bn": 1} and "BatchNormalization" not in _ops(out)
    for cond in (True, False):
        feeds = {"cond": np.array(cond), "x": np.random.default_rng(1).uniform(-1, 1, (2, 4, 5, 5)).astype(np.float32)}
        np.testing.assert_allclose(run_ort(out, feeds)["y"], run_ort(model, feeds)["y"], **F32)


def test_bisect_limit_applies_only_the_first():
    rng = np.random.default_rng(11)
    inits = [_init("W1", rng.normal(0, 0.5, (8, 4, 1, 1)).astype(np.float32)),
             _init("W2", rng.normal(0, 0.5, (8, 8, 1, 1)).astype(np.float32))]
    inits += _bn_params(rng, "bn1", 8) + _bn_params(rng, "bn2", 8)
    nodes = [helper.make_node("Conv", ["x", "W1"], ["c1"], name="conv1"), _bn("c1", "b1", "bn1", name="bn1"),
             helper.make_node("Conv", ["b1", "W2"], ["c2"], name="conv2"), _bn("c2", "y", "bn2", name="bn2")]
    model = _model(nodes, [("x", ["N", 4, "H", "W"])], [("y", ["N", 8, "H", "W"])], inits)
    out, log, budget = _run_pass(model, limit=1)
    assert log.counts == {"conv-bn": 1}
    assert [(a.node, a.applied) for a in budget.applications] == [("bn1", True), ("bn2", False)]
    assert _ops(out) == ["Conv", "Conv", "BatchNormalization"]
    assert_equivalent(model, out, DYNAMIC, **F32)


# --- refusals: graph unchanged, reason in the report -----------------------------------------

def _refused(model, fragment):
    out, log, _ = _run_pass(model)
    assert out is None, "the graph must stay unchanged"
    assert not log.counts
    assert any(fragment in n for n in log.notes), log.notes
    return log


def test_refuses_training_mode():
    model = _conv_bn(opset=15)
    model.graph.node[1].attribute.append(helper.make_attribute("training_mode", 1))
    _refused(model, "BatchNormalization bn not folded: training_mode=1")


def test_refuses_bn_with_training_outputs():
    model = _conv_bn(opset=9)
    model.graph.node[1].output.extend(["rm", "rv"])
    _refused(model, "it has 3 outputs")


def test_refuses_spatial_zero():
    model = _conv_bn(opset=7)
    model.graph.node[1].attribute.append(helper.make_attribute("spatial", 0))
    _refused(model, "spatial=0")


def test_refuses_conv_output_read_elsewhere():
    model = _conv_bn()
    model.graph.node.append(helper.make_node("Relu", ["c"], ["z"], name="other"))
    model.graph.output.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, None))
    _refused(model, "also read by 1 other node")


def test_refuses_conv_output_that_is_a_graph_output():
    model = _conv_bn()
    model.graph.output.append(helper.make_tensor_value_info("c", TensorProto.FLOAT, None))
    _refused(model, "is a graph output")


def test_refuses_conv_output_read_by_subgraph():
    model = _conv_bn()
    body = helper.make_graph([helper.make_node("Identity", ["c"], ["t"])], "b", [],
                             [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)])
    model.graph.input.append(helper.make_tensor_value_info("cond", TensorProto.BOOL, []))
    model.graph.node.append(helper.make_node("If", ["cond"], ["z"], name="if", then_branch=body, else_branch=body))
    model.graph.output.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, None))
    _refused(model, "'c'")


def test_refuses_dequantized_weight():
    """Q/DQ structure stays: TensorRT's explicit quantization needs it."""
    model = _conv_bn(bias=False)
    w = next(t for t in model.graph.initializer if t.name == "W")
    q = np.clip(np.round(numpy_helper.to_array(w) / 0.01), -127, 127).astype(np.int8)
    model.graph.initializer.remove(w)
    model.graph.initializer.extend([_init("Wq", q), _init("ws", np.float32(0.01)), _init("wz", np.int8(0))])
    model.graph.node.insert(0, helper.make_node("DequantizeLinear", ["Wq", "ws", "wz"], ["W"], name="dq"))
    _refused(model, "comes through DequantizeLinear dq")


def test_refuses_non_constant_bn_parameters():
    model = _conv_bn()
    init = next(t for t in model.graph.initializer if t.name == "bn.mean")
    model.graph.initializer.remove(init)
    model.graph.input.append(helper.make_tensor_value_info("bn.mean", TensorProto.FLOAT, [8]))
    _refused(model, "its mean 'bn.mean' is a graph input")


def test_refuses_matmul_with_rank3_input():
    rng = np.random.default_rng(3)
    inits = [_init("Wm", rng.normal(0, 0.5, (5, 6)).astype(np.float32))] + _bn_params(rng, "bn", 6)
    mm = helper.make_node("MatMul", ["x", "Wm"], ["m"], name="mm")
    model = _model([mm, _bn("m", "y", "bn")], [("x", [2, 6, 5])], [("y", [2, 6, 6])], inits)
    _refused(model, "input rank is not known to be 2")


def test_refuses_non_per_channel_mul():
    rng = np.random.default_rng(5)
    inits = [_init("W", rng.normal(0, 0.5, (8, 4, 3, 3)).astype(np.float32)),
             _init("k", rng.uniform(0.5, 2, (1, 1, 1, 6)).astype(np.float32))]
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Mul", ["c", "k"], ["y"], name="pw")]
    model = _model(nodes, [("x", [1, 4, 6, 6])], [("y", [1, 8, 6, 6])], inits)
    _refused(model, "is not per-channel")


def test_refuses_bn_before_padded_conv():
    rng = np.random.default_rng(9)
    inits = _bn_params(rng, "bn", 4) + [_init("W", rng.normal(0, 0.5, (8, 4, 3, 3)).astype(np.float32))]
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"), _bn("r", "n", "bn"),
             helper.make_node("Conv", ["n", "W"], ["y"], name="conv", pads=[1, 1, 1, 1])]
    model = _model(nodes, [("x", [1, 4, 6, 6])], [("y", [1, 8, 6, 6])], inits)
    _refused(model, "pads its input (pads=[1, 1, 1, 1])")


# --- through the verified pipeline, on real models ----------------------------------------

def test_fix_pipeline_verifies_and_reports():
    model = _conv_bn(dynamic=True, group=2)
    out, report = surgeon.fix(model, [PASS_NAME], rounds=1)
    (p,) = report.passes
    assert p.status == "applied" and p.counts == {"conv-bn": 1} and p.max_abs is not None and p.max_abs < 1e-5
    assert [a["rule"] for a in report.applications] == ["conv-bn"]


@pytest.mark.parametrize("name,expected", [("tutorial_cnn_op12_dynbatch.onnx", {"conv-bn": 2}),
                                           ("rapidocr_ppocr_mobile_v2_cls.onnx", {"conv-bn": 35})])
def test_corpus_models(name, expected):
    mark = requires_corpus(name)
    if mark.name == "skip":
        pytest.skip(mark.kwargs["reason"])
    model = surgeon.load(CORPUS / name)
    out, report = surgeon.fix(model, [PASS_NAME], rounds=1)
    (p,) = report.passes
    assert p.status == "applied", p.reason
    assert p.counts == expected
    assert report.ops_after.get("BatchNormalization", 0) == 0
    assert p.max_abs is not None and p.max_abs < 1e-4


def test_overridable_bn_parameter_is_not_folded():
    """IR >= 4: an initializer also listed as a graph input is a default the user may feed,
    so folding it into the weights would ignore the user's value."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    import surgeon

    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.uniform(0.5, 1.5, 4).astype(np.float32), "gamma"),
             numpy_helper.from_array(np.zeros(4, np.float32), "beta"),
             numpy_helper.from_array(np.zeros(4, np.float32), "mean"),
             numpy_helper.from_array(np.ones(4, np.float32), "var")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("BatchNormalization", ["c", "gamma", "beta", "mean", "var"], ["y"], name="bn")]

    def model(overridable: bool) -> onnx.ModelProto:
        inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])]
        if overridable:
            inputs.append(helper.make_tensor_value_info("gamma", TensorProto.FLOAT, [4]))
        g = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 6, 6])], inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
        m.ir_version = 8
        return m

    out, report = surgeon.fix(model(overridable=True), ["fold-conv-bn"], rounds=1)
    assert "BatchNormalization" in [n.op_type for n in out.graph.node]
    notes = " ".join(n for p in report.passes for n in p.notes)
    assert "may override" in notes
    assert [vi.name for vi in out.graph.input] == ["x", "gamma"]
    out, _ = surgeon.fix(model(overridable=False), ["fold-conv-bn"], rounds=1)
    assert "BatchNormalization" not in [n.op_type for n in out.graph.node]


def test_folded_weight_is_a_recipe_over_the_original_with_the_same_values():
    """Large folded weights are held as recipes (surgeon.weights.Derived) and computed a block of rows at a time."""
    from onnx import helper, numpy_helper

    from surgeon import weights as W
    from surgeon.graph import Model
    from surgeon.pipeline.base import PassContext, PassLog
    from passes.fold_conv_bn import FoldConvBN

    rng = np.random.default_rng(7)
    c = 64
    w = rng.standard_normal((c, 32, 3, 3)).astype(np.float32)
    gamma, beta = rng.uniform(0.5, 1.5, c).astype(np.float32), rng.normal(0, 0.1, c).astype(np.float32)
    mean, var = rng.normal(0, 0.1, c).astype(np.float32), rng.uniform(0.5, 1.5, c).astype(np.float32)
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("BatchNormalization", ["c", "g", "b", "m", "v"], ["y"])], "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 32, 5, 5])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, c, 5, 5])],
        [numpy_helper.from_array(a, n) for a, n in ((w, "w"), (gamma, "g"), (beta, "b"), (mean, "m"), (var, "v"))])
    work = Model.from_proto(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]))
    assert FoldConvBN().run(work, PassContext(pass_name="fold-conv-bn"), PassLog())
    conv = next(n for n in work.graph.nodes if n.op == "Conv")
    held = conv.inputs[1]._values
    assert isinstance(held, W.WeightValues) and isinstance(held.array, W.Derived)
    scale = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + 1e-5)
    expect = (w.astype(np.float64) * scale[:, None, None, None]).astype(np.float32)
    assert np.array_equal(held.array.materialize(), expect)
    assert np.array_equal(np.concatenate(list(held.array.chunks(max_bytes=32 * 9 * 4 * 5))), expect)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("kind,shape,group", [
    ("conv", (16, 4, 3, 3), 1), ("convtranspose", (8, 6, 3, 3), 1), ("convtranspose", (8, 3, 3, 3), 2),
    ("gemm-t", (12, 20), 1), ("gemm", (20, 12), 1), ("matmul", (20, 12), 1),
    ("bn-conv", (16, 4, 3, 3), 1), ("bn-conv", (16, 4, 1, 1), 4),
])
def test_folded_weight_recipe_equals_the_float64_product_rounded_once(kind, shape, group, dtype):
    """The recipe's values, whole or a few rows at a time, are exactly (w in float64 * scale) cast
    to w's dtype (what the eager fold computed), and bn-conv's kernel sums match float64 within 1e-12."""
    from passes.fold_conv_bn import _kernel_sums, fold, folded_weight

    rng = np.random.default_rng(3)
    w = rng.standard_normal(shape).astype(dtype)
    w64 = w.astype(np.float64)
    channels = {"conv": shape[0], "gemm-t": shape[0], "gemm": shape[1], "matmul": shape[1],
                "convtranspose": shape[1] * group, "bn-conv": shape[1] * group}[kind]
    scale, shift = rng.uniform(0.5, 2.0, channels), rng.normal(0, 1, channels)
    if kind in ("conv", "gemm-t"):
        expect = w64 * scale.reshape((-1,) + (1,) * (w.ndim - 1))
    elif kind in ("gemm", "matmul"):
        expect = w64 * scale[None, :]
    else:
        blocks = w64.reshape((group, shape[0] // group) + shape[1:])
        expect = (blocks * scale.reshape((group, 1, shape[1]) + (1,) * (w.ndim - 2))).reshape(shape)
    expect = expect.astype(dtype)
    recipe = folded_weight(kind, w, scale, group)
    assert recipe.dtype == dtype and recipe.shape == shape
    assert np.array_equal(recipe.materialize(), expect)
    row = w.nbytes // shape[0]
    assert np.array_equal(np.concatenate(list(recipe.chunks(max_bytes=3 * row))), expect)
    new_w, bias = fold(kind, w, None, scale, shift, group)
    assert np.array_equal(np.asarray(new_w), expect) and bias.dtype == dtype
    if kind == "bn-conv":
        blocks = w64.reshape((group, shape[0] // group) + shape[1:])
        sums = (blocks * shift.reshape((group, 1, shape[1]) + (1,) * (w.ndim - 2))).sum(
            axis=tuple(range(2, blocks.ndim))).reshape(-1)
        np.testing.assert_allclose(_kernel_sums(w, shift, group), sums, rtol=1e-12, atol=1e-12)


def test_a_second_fold_derives_from_the_first_recipe_without_computing_it():
    """Conv -> BatchNormalization -> per-channel Mul: the Mul folds into the recipe the BN fold left,
    as a recipe over it (nothing is computed during the pass), and the values are the two products."""
    from surgeon import weights as W
    from surgeon.graph import Model
    from surgeon.pipeline.base import PassContext, PassLog

    rng = np.random.default_rng(11)
    c = 32
    w = rng.standard_normal((c, 16, 3, 3)).astype(np.float32)
    gamma, beta = rng.uniform(0.5, 1.5, c).astype(np.float32), rng.normal(0, 0.1, c).astype(np.float32)
    mean, var = rng.normal(0, 0.1, c).astype(np.float32), rng.uniform(0.5, 1.5, c).astype(np.float32)
    k = rng.uniform(0.5, 2.0, (1, c, 1, 1)).astype(np.float32)
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("BatchNormalization", ["c", "g", "b", "m", "v"], ["n"]),
         helper.make_node("Mul", ["n", "k"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c, 5, 5])],
        [numpy_helper.from_array(a, n) for a, n in
         ((w, "w"), (gamma, "g"), (beta, "b"), (mean, "m"), (var, "v"), (k, "k"))])
    work = Model.from_proto(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]))
    computed = []
    original = W.Derived.materialize
    try:
        W.Derived.materialize = lambda self: computed.append(self) or original(self)
        assert FoldConvBN().run(work, PassContext(pass_name=PASS_NAME), PassLog())
    finally:
        W.Derived.materialize = original
    assert not computed and [n.op for n in work.graph.nodes] == ["Conv"]
    held = next(n for n in work.graph.nodes if n.op == "Conv").inputs[1]._values
    recipe = held.array if isinstance(held, W.WeightValues) else held
    assert isinstance(recipe, W.Derived) and any(isinstance(s, W.Derived) for s in recipe.sources)
    scale = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + 1e-5)
    first = (w.astype(np.float64) * scale[:, None, None, None]).astype(np.float32)
    expect = (first.astype(np.float64) * k.reshape(-1).astype(np.float64)[:, None, None, None]).astype(np.float32)
    assert np.array_equal(recipe.materialize(), expect)
