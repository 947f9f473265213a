"""The FP16/BF16 emulation on quantized and bfloat16 cases (issue 12, item 12): integer and
quantization islands stay in their own types, and what is kept is named for what it is."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from helpers import FIXTURES, model_from_text, run_ort
from surgeon import backends
from surgeon.backends import fp16 as fp16_mod

QUANT = FIXTURES / "fp16" / "dynamic_quant.onnx"


def test_dynamic_quantization_is_not_all_nan_and_matches_the_reference():
    model = onnx.load(QUANT)
    x = np.random.default_rng(1).uniform(-1, 1, (4, 512)).astype(np.float32)
    want = run_ort(model, {"x": x})["y"]
    got = backends.create("fp16").session(model).run({"x": x})["y"]
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, want, atol=1e-3, rtol=1e-2)


def test_the_int32_accumulator_really_exceeds_float16_so_the_island_matters():
    """Rounding the dequantizing Cast through float16 (what the emulation did before) overflows:
    the fixture exercises the case, it does not pass by luck."""
    model = onnx.load(QUANT)
    marked = fp16_mod.model_io.copy(model)
    marked.graph.output.append(onnx.helper.make_tensor_value_info("h0_int", onnx.TensorProto.INT32, None))
    x = np.random.default_rng(1).uniform(-1, 1, (4, 512)).astype(np.float32)
    acc = run_ort(marked, {"x": x})["h0_int"]
    assert np.abs(acc).max() > 65504


def test_kept_quantization_nodes_are_named_for_what_needs_float32():
    _, plan = fp16_mod.emulate(onnx.load(QUANT))
    reasons = {k["node"]: k["reason"] for k in plan.kept}
    assert reasons["h0_cast"] == fp16_mod.DEQUANT_REASON and reasons["h0_dequant"] == fp16_mod.DEQUANT_REASON
    assert reasons["x_scale_mul"] == fp16_mod.QUANT_SCALE_REASON
    assert "h0_relu" in plan.converted  # the float activation after dequantization is FP16


def test_bf16_emulation_keeps_float32_range_and_rounds_to_8_bits():
    model = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[3] x) => (float[3] y) { k = Constant <value = float {1000.0}> ()  y = Mul (x, k) }""")
    x = np.array([100.0, 1.00390625, -3.0], np.float32)
    got = backends.create("fp16", precision="bf16").session(model).run({"x": x})["y"]
    assert got[0] == np.float32(100000.0) or abs(got[0] - 100000.0) / 100000.0 < 2**-8  # no overflow in bf16
    assert got[1] == np.float32(1000.0)  # 1.00390625 is not a bfloat16 number: rounded to 1.0 first
    fp16 = backends.create("fp16").session(model).run({"x": x})["y"]
    assert np.isinf(fp16[0])


def test_unknown_precision_is_a_usage_error():
    from surgeon.errors import UsageError

    with pytest.raises(UsageError, match="fp16 or bf16"):
        backends.create("fp16", precision="fp8")
