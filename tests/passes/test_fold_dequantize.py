"""fold-dequantize: int8/uint8 weights dequantized as Cast -> (Sub) -> Mul become one DequantizeLinear.

Positive cases check the structure (fewer nodes, int8 storage kept, the application
counted) and the numbers (ONNX Runtime at two sizes; the two forms compute the same
float32 operations, so the tolerance is one float32 ulp-ish: atol 1e-6, rtol 1e-6).
Negative cases check that the graph is unchanged and the note says why. The TensorRT-RTX
case builds both forms: its builder refuses the Cast from INT8 and accepts the result.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

import helpers
import surgeon
from helpers import FIXTURES, assert_equivalent
from passes.fold_dequantize import PASS_NAME, per_axis
from surgeon.backends import trt as trt_backend

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "fixtures"))
from make_int8_fixtures import int8_mlp  # noqa: E402

EXACT = dict(atol=1e-6, rtol=1e-6)
SHAPES = [{"x": (1, 3, 16)}, {"x": (4, 7, 16)}]


def _ops(model):
    return [n.op_type for n in model.graph.node]


def _init(model, name):
    return next(t for t in model.graph.initializer if t.name == name)


@pytest.mark.parametrize("zero_point", [False, True], ids=["cast-mul", "cast-sub-mul"])
@pytest.mark.parametrize("per_axis_scale", [True, False], ids=["per-axis", "per-tensor"])
def test_folds_and_keeps_int8_storage(zero_point, per_axis_scale):
    model = int8_mlp(zero_point=zero_point, per_axis=per_axis_scale)
    out, log = helpers.run_pass(PASS_NAME, model)
    assert _ops(out) == ["DequantizeLinear", "MatMul", "Relu", "DequantizeLinear", "MatMul"]
    assert log.counts == {"cast-sub-mul" if zero_point else "cast-mul": 2}
    dq = out.graph.node[0]
    assert dq.input[0] == "w0_q" and _init(out, "w0_q").data_type in (TensorProto.INT8, TensorProto.UINT8)
    assert {a.name: a.i for a in dq.attribute} == ({"axis": 1} if per_axis_scale else {})
    if zero_point:
        assert _init(out, dq.input[2]).data_type == TensorProto.UINT8
    onnx.checker.check_model(out, full_check=True)
    assert_equivalent(model, out, SHAPES, **EXACT)


def test_fixtures_through_the_default_pipeline():
    for name in ("int8_castmul_mlp.onnx", "int8_castsubmul_mlp.onnx"):
        model = onnx.load(FIXTURES / name)
        out, report = surgeon.fix(model)
        assert report.verification == "numeric" and not report.rolled_back
        assert "Cast" not in _ops(out) and _ops(out).count("DequantizeLinear") == 2
        assert sum(t.data_type == TensorProto.FLOAT and t.dims and t.dims[0] == 16 for t in out.graph.initializer) == 0, \
            "the int8 weights must not be folded into float ones"
        assert_equivalent(model, out, SHAPES, **EXACT)


def _refused(model, fragment, folded=0):
    """Only weight 0 is made unfit (unless the whole model is): ``folded`` weights still fold."""
    out, log = helpers.run_pass(PASS_NAME, model)
    assert (out is None) == (folded == 0) and sum(log.counts.values()) == folded
    assert any(fragment in n for n in log.notes), log.notes


def test_per_axis_scale_needs_opset_13():
    _refused(int8_mlp(opset=12), "per-axis scale needs opset 13")


def test_per_tensor_scale_folds_at_opset_12():
    model = int8_mlp(opset=12, per_axis=False)
    out, log = helpers.run_pass(PASS_NAME, model)
    assert log.counts == {"cast-mul": 2}
    assert_equivalent(model, out, SHAPES, **EXACT)


def test_scale_that_is_not_per_axis_is_refused():
    model = int8_mlp()
    s = _init(model, "w0_scale")
    s.CopyFrom(numpy_helper.from_array(np.full((16, 32), 0.01, np.float32), "w0_scale"))
    s.float_data[:] = []
    _refused(model, "is not per-tensor or per-axis", folded=1)


def test_non_integral_zero_point_is_refused():
    model = int8_mlp(zero_point=True)
    z = _init(model, "w0_zp")
    z.CopyFrom(numpy_helper.from_array(np.full(32, 127.5, np.float32), "w0_zp"))
    _refused(model, "zero point is not made of uint8 values", folded=1)


def test_intermediate_read_elsewhere_is_refused():
    model = int8_mlp()
    model.graph.output.append(onnx.helper.make_tensor_value_info("w0_f", TensorProto.FLOAT, [16, 32]))
    out, log = helpers.run_pass(PASS_NAME, model)
    assert log.counts == {"cast-mul": 1}  # the other weight still folds
    assert any("w0_f" in n for n in log.notes), log.notes


def test_per_axis_shapes():
    assert per_axis((32,), (16, 32)) == 1
    assert per_axis((16, 1), (16, 32)) == 0
    assert per_axis((1,), (16, 32)) is None and per_axis((), (16, 32)) is None
    assert isinstance(per_axis((2, 16, 32), (16, 32)), str)
    assert isinstance(per_axis((16,), (16, 32)), str)  # broadcasts along the last axis: 16 != 32


@pytest.mark.skipif(not trt_backend.available("trt-rtx"),
                    reason="needs the 'tensorrt-rtx' package (pip install '.[test]' on Linux x86_64)")
def test_tensorrt_rtx_builds_the_folded_form_where_it_refused_cast_mul():
    from surgeon.debug import trt_check

    model = onnx.load(FIXTURES / "int8_castmul_mlp.onnx")
    before = trt_check.check(model, engine="trt-rtx")
    assert not before.build_ok and any("w0_q" in f.message for f in before.failures), before.failures
    out, _ = helpers.run_pass(PASS_NAME, model)
    after = trt_check.check(out, engine="trt-rtx")
    assert after.parse_ok and after.build_ok and after.ready, after.failures
