"""trt-check's remedies are commands, and the ones that are `surgeon fix` commands are run in
memory and checked with the same engine; every failure carries the parser's or builder's reason."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest

from helpers import FIXTURES, run_cli
from surgeon.backends import trt as trt_backend
from surgeon.debug import trt_check
from surgeon.debug.trt_check import remedies, remedy_check
from surgeon.debug.trt_check.report import Failure
from surgeon.pipeline import registry
from surgeon.pipeline.base import GraphPass

needs_rtx = pytest.mark.skipif(
    not trt_backend.available("trt-rtx"),
    reason="needs the 'tensorrt-rtx' package (pip install '.[test]' on Linux x86_64, or pip install tensorrt-rtx)")

GRID = FIXTURES / "grid_sample_contrib_op11.onnx"
INT8 = FIXTURES / "trt_check" / "int8_cast_mul.onnx"


def _remedy(report, op_or_code):
    f = next(f for f in report.failures if op_or_code in (f.op, f.qualified_op) or op_or_code in f.code)
    return f, f.remedy


@needs_rtx
def test_grid_sample_remedy_is_the_target_opset_command_checked_with_the_parser(tmp_path):
    before = GRID.read_bytes()
    out = tmp_path / "r.json"
    r = run_cli("trt-check", str(GRID), "--engine", "trt-rtx", "--report", str(out))
    assert r.returncode == 1, r.stderr
    (f,) = json.loads(out.read_text())["failures"]
    assert (f["op"], f["domain"], f["code"]) == ("GridSample", "com.microsoft", "DOMAIN_IGNORED")
    remedy = f["remedy"]
    assert remedy["command"] == f"surgeon fix {GRID} -o FIXED.onnx --target-opset 16"
    assert remedy["fix"] == {"passes": None, "target_opset": 16} and remedy["kind"] == "fix-opset"
    assert remedy["verified"] is True
    assert "the model then parses and builds with TensorRT-RTX; this failure is gone" in remedy["check"]
    assert "verification: numeric" in remedy["check"]
    assert "$ surgeon fix" in r.stdout and "[checked on a working copy]" in r.stdout
    assert GRID.read_bytes() == before  # checked in memory


def test_grid_sample_remedy_is_checked_by_the_static_matrix_too():
    report = trt_check.check(onnx.load(GRID), model_path="grid.onnx", engine="matrix")
    _, remedy = _remedy(report, "com.microsoft::GridSample")
    assert remedy.command == "surgeon fix grid.onnx -o FIXED.onnx --target-opset 16"
    assert remedy.verified and "with the static matrix" in remedy.check


def test_a_remedy_that_changes_nothing_is_not_called_verified():
    f = Failure(node="", working_name="", op="", domain="", path="", phase="build", code="X", message="m")
    f.remedy = remedies._fix_remedy("fix-pass", "t", {"passes": ["fold-conv-bn"]}, "m.onnx")
    report = trt_check.TrtCheckReport(model="m.onnx", engine={}, failures=[f])
    model = onnx.load(FIXTURES / "trt_check" / "dynamic_ok.onnx")  # no BatchNormalization to fold
    remedy_check.check_remedies(model, report, lambda m: pytest.fail("nothing to check again"), "x")
    assert not f.remedy.verified and "changes nothing in this model" in f.remedy.check


class _Dequantize(GraphPass):
    """Stand-in for the issue-19 pass where it is not registered: Cast(int8 const) -> Mul(scalar
    const) becomes DequantizeLinear(const, scale) -- the rewrite the remedy names, for real."""

    name = remedies.DEQUANTIZE_PASS
    summary = "int8 Cast -> Mul(scale) as DequantizeLinear (test stand-in)"

    def run_on_graph(self, graph, ctx, log):
        changed = False
        for cast in [n for n in graph.nodes if n.op == "Cast"]:
            w = cast.inputs[0]
            if not isinstance(w, gs.Constant) or w.values.dtype != np.int8 or len(cast.outputs[0].outputs) != 1:
                continue
            mul = cast.outputs[0].outputs[0]
            scale = next((t for t in mul.inputs if t is not cast.outputs[0]), None)
            if mul.op != "Mul" or not isinstance(scale, gs.Constant) or scale.values.size != 1:
                continue
            out = mul.outputs[0]
            mul.outputs.clear()
            cast.inputs.clear()
            cast.outputs.clear()
            graph.nodes.append(gs.Node("DequantizeLinear", name=f"{mul.name}_dq", inputs=[w, scale], outputs=[out]))
            log.count("dequantize")
            changed = True
        graph.cleanup().toposort()
        return changed


@needs_rtx
def test_int8_cast_mul_names_dequantize_linear_and_is_checked_where_the_pass_is_registered(monkeypatch):
    if remedies.DEQUANTIZE_PASS not in registry.all_passes():
        monkeypatch.setitem(registry._PASSES, remedies.DEQUANTIZE_PASS, _Dequantize)
    report = trt_check.check(onnx.load(INT8), model_path="int8.onnx", engine="trt-rtx")
    f, remedy = _remedy(report, "API_USAGE_ERROR")
    assert f.phase == "build" and "Quantized constant (w_q)" in f.message  # the builder's own reason
    assert remedy.kind == "fix-pass" and "DequantizeLinear" in remedy.text
    assert remedy.command == f"surgeon fix int8.onnx -o FIXED.onnx --passes {remedies.DEQUANTIZE_PASS}"
    assert remedy.verified and "parses and builds with TensorRT-RTX; this failure is gone" in remedy.check


@needs_rtx
def test_int8_cast_mul_remedy_says_it_was_not_checked_when_the_pass_is_missing(monkeypatch):
    passes = dict(registry.all_passes())
    passes.pop(remedies.DEQUANTIZE_PASS, None)
    monkeypatch.setattr(registry, "all_passes", lambda: passes)
    report = trt_check.check(onnx.load(INT8), model_path="int8.onnx", engine="trt-rtx")
    _, remedy = _remedy(report, "API_USAGE_ERROR")
    assert remedy.exists is False and not remedy.verified and not remedy.check
    assert f"'{remedies.DEQUANTIZE_PASS}') is not registered in this surgeon, so the remedy was not checked" in remedy.text


def test_a_bare_false_from_the_parser_becomes_a_sentence():
    err = {"code": "UNSUPPORTED_NODE", "desc": "false", "func": "checkMatMulInteger", "file": "onnxOpCheckers.cpp",
           "line": 1140, "op": "MatMulInteger"}
    text = trt_backend.parser_error_text(err)
    assert text.startswith("checkMatMulInteger (onnxOpCheckers.cpp:1140) refuses MatMulInteger unconditionally")
    assert trt_backend.parser_error_text({"desc": "Assertion failed: x"}) == "Assertion failed: x"
    assert "MatMulInteger" in trt_backend.describe_parse_errors([{**err, "node_name": "mm", "node": 3}])
    assert trt_backend.builder_reason([]) .startswith("the builder returned no engine and logged no error")
    assert trt_backend.builder_reason(["false", "Error Code 2: reason"]) == "false (Error Code 2: reason)"


@needs_rtx
def test_no_failure_text_is_just_false_on_a_dynamic_int8_export():
    report = trt_check.check(onnx.load(FIXTURES / "exports" / "speaker_lstm_int8_dynq.onnx"), engine="trt-rtx",
                             build=False)
    texts = {f.op: f.message for f in report.failures}
    assert all(len(t) > 20 for t in texts.values()), texts
    assert "checkDynamicQuantizeLinear" in texts["DynamicQuantizeLinear"]
    dyn = next(f for f in report.failures if f.op == "MatMulInteger")
    assert dyn.remedy.kind == "export" and "quantize statically" in dyn.remedy.text


@needs_rtx
def test_fp16s_tensorrt_rtx_build_carries_the_builders_reason():
    from surgeon.precision.layer_precisions import trt_rtx_build

    result = trt_rtx_build(INT8, {"x": (2, 16)})
    assert result["ran"] and not result["built"]
    assert "Quantized constant (w_q)" in result["reason"] and result["reason"] != "build failed"


def test_fp16_no_trt_check_never_claims_a_parser_check(tmp_path):
    lp = tmp_path / "layers.txt"
    r = run_cli("fp16", str(FIXTURES / "fp16" / "branches_overflow.onnx"), "-o", str(tmp_path / "half.onnx"),
                "--no-trt-check", "--layer-precisions", str(lp))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "names checked against TensorRT's parser" not in r.stdout + lp.read_text()
    assert "not checked against TensorRT's parser (--no-trt-check)" in lp.read_text()
    assert "was not built (--no-trt-check)" in r.stdout


def test_rules_of_is_the_public_way_to_ask_for_a_passes_rules():
    rules = registry.rules_of("replace-custom-ops", {"rules": [], "builtin_rules": True})
    assert any(r.name == "ms-grid-sample" for r in rules)
    from surgeon.errors import UsageError

    with pytest.raises(UsageError, match="applies no rewrite rules"):
        registry.rules_of("cleanup")
