"""Built-in pack ``ms-standard``: contrib ops that became standard, replaced where the opset allows.

ONNX Runtime runs both the contrib kernels and the standard ones on CPU, so each
replacement is compared with the contrib op it replaces, at several batch sizes (and
against the documented formula where ORT has no CPU kernel: BiasSplitGelu).
Tolerances: the same kernel behind both ops (GridSample, Trilu, Range, Q/DQ) must agree
exactly (atol 0, or one quantization step of float rounding for Q); the normalization
formulas reorder float32 operations and agree to ~1e-6 (atol 1e-5, rtol 1e-5).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from helpers import model_from_text, run_ort, run_pass
from passes.replace_custom_ops import ReplaceCustomOps
from surgeon import graph as G

SIZES = (1, 3)


def _run(model):
    out, log = run_pass(ReplaceCustomOps, model)
    if out is not None:
        onnx.checker.check_model(out, full_check=True)
    return out, log


def _model(opset: int, inputs: str, outputs: str, body: str, inits: str = "") -> onnx.ModelProto:
    init = f"<{inits}>" if inits else ""
    return model_from_text(f'''<ir_version: 10, opset_import: ["" : {opset}, "com.microsoft" : 1]>
    g ({inputs}) => ({outputs}) {init} {{ {body} }}''')


def _compare(a, b, feeds_for, *, atol, rtol):
    for i, n in enumerate(SIZES):
        feeds = feeds_for(np.random.default_rng(i), n)
        ra, rb = run_ort(a, feeds), run_ort(b, feeds)
        assert list(ra) == list(rb)
        for k in ra:
            np.testing.assert_allclose(rb[k], ra[k], atol=atol, rtol=rtol, err_msg=f"{k} at batch {n}")


def _standard_ops(model) -> set[str]:
    ops = set(G.op_histogram(model))
    assert not any("::" in o for o in ops), ops
    return ops


def _attrs(model, op):
    node = next(n for n in model.graph.node if n.op_type == op)
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


# --- GridSample --------------------------------------------------------------------------------

@pytest.mark.parametrize("opset", [16, 20])
@pytest.mark.parametrize("mode", ["bilinear", "nearest", "bicubic"])
@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("align", [0, 1])
def test_grid_sample(opset, mode, padding, align):
    m = _model(opset, "float[N,2,5,6] x, float[N,4,3,2] grid", "float[N,2,4,3] y",
               f'y = com.microsoft.GridSample<mode = "{mode}", padding_mode = "{padding}", align_corners = {align}>(x, grid)')
    out, log = _run(m)
    assert log.counts == {"ms-grid-sample": 1}
    assert _standard_ops(out) == {"GridSample"}
    want = {"bilinear": "linear", "bicubic": "cubic"}.get(mode, mode) if opset >= 20 else mode
    assert _attrs(out, "GridSample") == {"mode": want.encode(), "padding_mode": padding.encode(), "align_corners": align}

    def feeds(rng, n):  # grid reaches outside [-1, 1] so every padding mode matters
        return {"x": rng.normal(size=(n, 2, 5, 6)).astype(np.float32),
                "grid": rng.uniform(-1.3, 1.3, size=(n, 4, 3, 2)).astype(np.float32)}
    _compare(m, out, feeds, atol=1e-6, rtol=1e-6)


def test_grid_sample_default_attributes():
    m = _model(16, "float[N,1,4,4] x, float[N,2,2,2] grid", "float[N,1,2,2] y", "y = com.microsoft.GridSample(x, grid)")
    out, _ = _run(m)
    assert _attrs(out, "GridSample") == {"mode": b"bilinear", "padding_mode": b"zeros", "align_corners": 0}
    _compare(m, out, lambda rng, n: {"x": rng.normal(size=(n, 1, 4, 4)).astype(np.float32),
                                     "grid": rng.uniform(-1, 1, size=(n, 2, 2, 2)).astype(np.float32)},
             atol=1e-6, rtol=1e-6)


def test_grid_sample_refused_before_opset_16():
    m = _model(15, "float[N,1,4,4] x, float[N,2,2,2] grid", "float[N,1,2,2] y", "y = com.microsoft.GridSample(x, grid)")
    out, log = _run(m)
    assert out is None
    assert any("standard GridSample exists from opset 16; the model is at opset 15 (try --target-opset 16)" in n
               for n in log.notes), log.notes
    assert "untouched custom op: com.microsoft::GridSample x1" in log.notes


# --- Trilu, Range, ExpandDims ---------------------------------------------------------------------

@pytest.mark.parametrize("upper", [0, 1])
@pytest.mark.parametrize("with_k", [False, True])
def test_trilu(upper, with_k):
    body = f"y = com.microsoft.Trilu<upper = {upper}>(x{', k' if with_k else ''})"
    m = _model(14, "float[N,5,4] x" + (", int64 k" if with_k else ""), "float[N,5,4] y", body)
    out, log = _run(m)
    assert log.counts == {"ms-trilu": 1} and _standard_ops(out) == {"Trilu"}

    def feeds(rng, n):
        f = {"x": rng.normal(size=(n, 5, 4)).astype(np.float32)}
        if with_k:
            f["k"] = np.array(n - 2, np.int64)
        return f
    _compare(m, out, feeds, atol=0, rtol=0)


def test_trilu_refused_at_opset_13():
    out, log = _run(_model(13, "float[3,3] x", "float[3,3] y", "y = com.microsoft.Trilu(x)"))
    assert out is None and any("standard Trilu exists from opset 14" in n for n in log.notes)


@pytest.mark.parametrize("dtype,shape,with_delta", [
    ("int64", "", False), ("int64", "[1]", False), ("float", "", True), ("int32", "[1]", True),
])
def test_range(dtype, shape, with_delta):
    inputs = f"{dtype}{shape} a, {dtype}{shape} b" + (f", {dtype}{shape} d" if with_delta else "")
    m = _model(11, inputs, f"{dtype}[M] y", f"y = com.microsoft.Range(a, b{', d' if with_delta else ''})")
    out, log = _run(m)
    assert log.counts == {"ms-range": 1} and "Range" in _standard_ops(out)
    np_type = {"int64": np.int64, "int32": np.int32, "float": np.float32}[dtype]

    def feeds(rng, n):
        wrap = (lambda v: np.array([v], np_type)) if shape else (lambda v: np.array(v, np_type))
        f = {"a": wrap(-2), "b": wrap(3 + 2 * n)}
        if with_delta:
            f["d"] = wrap(2)
        return f
    _compare(m, out, feeds, atol=0, rtol=0)


def test_range_of_unknown_rank_refused():
    m = _model(11, "int64 a, int64 b", "int64[M] y", "y = com.microsoft.Range(a, b)")
    m.graph.input[0].type.tensor_type.ClearField("shape")
    out, log = _run(m)
    assert out is None and any("the rank of 'a' is unknown" in n for n in log.notes), log.notes


@pytest.mark.parametrize("opset,axis", [(11, -1), (13, 1), (13, -3), (17, 0)])
def test_expand_dims(opset, axis):
    m = _model(opset, "float[N,4] x", "float[A,B,C] y", "y = com.microsoft.ExpandDims(x, ax)",
               inits=f"int32 ax = {{{axis}}}")
    out, log = _run(m)
    assert log.counts == {"ms-expand-dims": 1} and _standard_ops(out) == {"Unsqueeze"}
    _compare(m, out, lambda rng, n: {"x": rng.normal(size=(n, 4)).astype(np.float32)}, atol=0, rtol=0)


def test_expand_dims_with_input_axis_refused():
    m = _model(13, "float[N,4] x, int32 ax", "float[A,B,C] y", "y = com.microsoft.ExpandDims(x, ax)")
    out, log = _run(m)
    assert out is None and any("the axis is not a constant scalar" in n for n in log.notes)


# --- QuantizeLinear / DequantizeLinear -----------------------------------------------------------

def _qdq(opset, itype, per_axis, scale_type="float"):
    c = 3
    np_scale = np.float16 if scale_type == "float16" else np.float32
    np_int = {"int8": np.int8, "uint8": np.uint8, "int16": np.int16, "uint16": np.uint16}[itype]
    scale = np.array([0.05, 0.1, 0.02] if per_axis else 0.05, np_scale)
    zero = np.array([1, 0, 2] if per_axis else 1, np_int)
    dims = f"[{c}]" if per_axis else ""
    m = _model(opset, f"{scale_type}[N,{c},4] x, {scale_type}{dims} s, {itype}{dims} z",
               f"{itype}[N,{c},4] q, {scale_type}[N,{c},4] y",
               "q = com.microsoft.QuantizeLinear<axis = 1>(x, s, z)\n y = com.microsoft.DequantizeLinear<axis = 1>(q, s, z)")
    del m.graph.input[1:]  # scale and zero point become initializers (the parser has no float16 literals)
    m.graph.initializer.extend([onnx.numpy_helper.from_array(scale, "s"), onnx.numpy_helper.from_array(zero, "z")])
    onnx.checker.check_model(m)
    return m


def _qdq_feeds(scale_type):
    dtype = np.float16 if scale_type == "float16" else np.float32
    return lambda rng, n: {"x": rng.uniform(-4, 4, size=(n, 3, 4)).astype(dtype)}


@pytest.mark.parametrize("opset,itype,per_axis,scale_type", [
    (10, "int8", False, "float"), (10, "uint8", False, "float"), (13, "int8", True, "float"),
    (19, "uint8", True, "float16"), (21, "int16", True, "float"), (21, "uint16", False, "float"),
])
def test_quantize_dequantize(opset, itype, per_axis, scale_type):
    m = _qdq(opset, itype, per_axis, scale_type)
    out, log = _run(m)
    assert log.counts == {"ms-quantize-linear": 1, "ms-dequantize-linear": 1}
    assert _standard_ops(out) == {"QuantizeLinear", "DequantizeLinear"}
    if opset < 13:
        assert _attrs(out, "QuantizeLinear") == {}  # no axis attribute before 13
    _compare(m, out, _qdq_feeds(scale_type), atol=0, rtol=0)


@pytest.mark.parametrize("opset,itype,per_axis,scale_type,reason", [
    (12, "int8", True, "float", "standard QuantizeLinear takes int8 per axis from opset 13; the model is at opset 12"),
    (18, "uint8", False, "float16", "takes float16 scales from opset 19; the model is at opset 18"),
    (20, "int16", False, "float", "standard QuantizeLinear takes int16 from opset 21; the model is at opset 20"),
])
def test_quantize_dequantize_refused(opset, itype, per_axis, scale_type, reason):
    out, log = _run(_qdq(opset, itype, per_axis, scale_type))
    assert out is None
    assert any(reason in n for n in log.notes), log.notes
    assert "untouched custom op: com.microsoft::QuantizeLinear x1" in log.notes


# --- SkipSimplifiedLayerNormalization, BiasSplitGelu ----------------------------------------------

@pytest.mark.parametrize("opset,fused", [(17, False), (18, False), (23, True)])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("use_sum", [False, True])
def test_skip_simplified_layer_norm(opset, fused, with_bias, use_sum):
    outs = "float[N,4,8] y" + (", float[N,4,8] s" if use_sum else "")
    lhs = "y, m, v, s" if use_sum else "y"
    body = f"{lhs} = com.microsoft.SkipSimplifiedLayerNormalization<epsilon = 1e-5>(x, skip, gamma{', bias' if with_bias else ''})"
    m = _model(opset, "float[N,4,8] x, float[N,4,8] skip, float[8] gamma" + (", float[8] bias" if with_bias else ""),
               outs, body)
    out, log = _run(m)
    assert log.counts == {"ms-skip-simplified-layer-norm": 1}
    ops = _standard_ops(out)
    assert ("RMSNormalization" in ops) == fused and ("ReduceMean" in ops) == (not fused)
    assert [o.name for o in out.graph.output] == [o.name for o in m.graph.output]

    def feeds(rng, n):
        f = {k: rng.normal(size=(n, 4, 8)).astype(np.float32) for k in ("x", "skip")}
        f["gamma"] = rng.uniform(0.5, 1.5, size=8).astype(np.float32)
        if with_bias:
            f["bias"] = rng.normal(size=8).astype(np.float32)
        return f
    _compare(m, out, feeds, atol=1e-5, rtol=1e-5)


def test_skip_simplified_layer_norm_inv_std_output_refused():
    m = _model(23, "float[N,4,8] x, float[N,4,8] skip, float[8] gamma", "float[N,4,8] y, float[N,4,1] v",
               "y, m, v = com.microsoft.SkipSimplifiedLayerNormalization(x, skip, gamma)")
    out, log = _run(m)
    assert out is None and any("uses output 2 (inv_std_var)" in n for n in log.notes), log.notes


def _gelu(x):
    from math import erf
    return 0.5 * x * (1 + np.vectorize(erf)(x / np.sqrt(2)))


@pytest.mark.parametrize("opset,gelu_op", [(17, "Erf"), (18, "Erf"), (20, "Gelu"), (12, "Erf")])
def test_bias_split_gelu_against_its_definition(opset, gelu_op):
    # ORT has no CPU kernel for BiasSplitGelu: check against the documented formula
    m = _model(opset, "float[N,4,8] x, float[8] bias", "float[N,4,4] y", "y = com.microsoft.BiasSplitGelu(x, bias)")
    out, log = _run(m)
    assert log.counts == {"ms-bias-split-gelu": 1}
    assert {"Add", "Split", "Mul", gelu_op} <= _standard_ops(out)
    for i, n in enumerate(SIZES):
        rng = np.random.default_rng(i)
        f = {"x": rng.normal(size=(n, 4, 8)).astype(np.float32), "bias": rng.normal(size=8).astype(np.float32)}
        s = f["x"] + f["bias"]
        want = s[..., :4] * _gelu(s[..., 4:].astype(np.float64))
        np.testing.assert_allclose(run_ort(out, f)["y"], want, atol=1e-5, rtol=1e-5)


def test_bias_split_gelu_dynamic_last_dim_refused_before_18():
    m = _model(17, "float[N,4,C] x, float[C] bias", "float[N,4,H] y", "y = com.microsoft.BiasSplitGelu(x, bias)")
    out, log = _run(m)
    assert out is None and any("the last dim of 'x' is not static" in n for n in log.notes), log.notes
