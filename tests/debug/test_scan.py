"""`surgeon scan`: each hazard model gives its finding, node name first; a clean model one line."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import onnx
import pytest

from helpers import FIXTURES, run_cli
from surgeon import backends
from surgeon.debug.scan import FP16_MAX, scan_model

spec = importlib.util.spec_from_file_location("make_bisect_fixtures", FIXTURES / "make_bisect_fixtures.py")
F = importlib.util.module_from_spec(spec)
spec.loader.exec_module(F)
MODELS = F.scan_models()


def _scan(name: str, seed: int = 0):
    model = MODELS[name]
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    x = np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)
    return scan_model(model, [{"x": x}], backends.create("onnxrt"))


def _kinds(report):
    return [(f.kind, f.node) for f in report.findings]


def test_zero_over_zero_is_the_first_nan_with_its_inputs_ranges():
    r = _scan("nan_div")
    first = r.findings[0]
    assert (first.kind, first.node, first.details["cause"]) == ("nan-inf", "div", "0/0")
    assert first.details["inputs"]["zero"]["min"] == 0.0 and first.details["inputs"]["zero"]["zeros"] == 8
    assert first.message.startswith("div (Div): first NaN/Inf")
    # 'after' also holds NaN but only propagates it: not reported as the first
    assert [f.node for f in r.findings if f.kind == "nan-inf"] == ["div"]
    assert ("near-zero-division", "div") in _kinds(r)


def test_log_of_zero():
    first = _scan("log_zero").findings[0]
    assert (first.kind, first.node, first.details["cause"]) == ("nan-inf", "log", "log of zero")
    assert first.details["output"]["inf"] == 8


def test_fp16_overflow_in_activations_names_where_it_starts():
    r = _scan("act_overflow")
    over = {f.node: f for f in r.findings if f.kind == "fp16-overflow"}
    assert set(over) == {"scale_up", "big"}  # the Mul's output and the initializer; Tanh brings it back
    assert over["scale_up"].details["max_abs"] > FP16_MAX and over["scale_up"].details["starts_here"] is True
    assert over["big"].details["max_abs"] == pytest.approx(1e5)


def test_fp16_overflow_and_underflow_in_constants():
    r = _scan("const_overflow")
    kinds = _kinds(r)
    assert ("fp16-overflow", "huge_const") in kinds
    assert ("fp16-underflow", "tiny_w") in kinds and ("fp16-underflow", "mul_tiny") in kinds
    huge = next(f for f in r.findings if f.node == "huge_const")
    assert huge.details["max_abs"] == pytest.approx(70000.0) and huge.op_type == "Constant"


def test_duplicate_scatternd_indices():
    r = _scan("scatter_dup")
    (f,) = [f for f in r.findings if f.kind == "scatter-duplicates"]
    assert f.node == "scatter" and f.details["duplicates"] == 1 and f.details["writes"] == 3


def test_scatter_elements_duplicates_only_along_the_axis():
    text = """<ir_version: 8, opset_import: ["" : 17]>
    g (float[3,2] x) => (float[3,2] y) {
      idx = Constant <value = int64[2,2] {0, 1, 0, 2}> ()
      upd = Constant <value = float[2,2] {1, 2, 3, 4}> ()
      y = ScatterElements <axis = 0> (x, idx, upd)
    }"""
    model = onnx.parser.parse_model(text)
    x = np.zeros([3, 2], np.float32)
    r = scan_model(model, [{"x": x}], backends.create("onnxrt"))
    # column 0 writes row 0 twice; column 1 writes rows 1 and 2 once each
    (f,) = [f for f in r.findings if f.kind == "scatter-duplicates"]
    assert f.details["duplicates"] == 1


def test_division_by_a_value_near_zero():
    r = _scan("div_near_zero")
    (f,) = [f for f in r.findings if f.kind == "near-zero-division"]
    assert f.node == "div_small" and f.details["min_abs"] == pytest.approx(1e-8, rel=1e-3)


def test_clean_model_says_so_in_one_line(tmp_path):
    report = tmp_path / "r.json"
    r = run_cli("scan", str(FIXTURES / "bisect" / "scan_clean.onnx"), "--report", str(report))
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.strip().splitlines()) <= 2 and "clean" in r.stdout  # one line (may wrap at 80 columns)
    assert json.loads(report.read_text())["clean"] is True


def test_cli_findings_exit_1_with_node_first(tmp_path):
    report = tmp_path / "r.json"
    r = run_cli("scan", str(FIXTURES / "bisect" / "scan_nan_div.onnx"), "--report", str(report))
    assert r.returncode == 1, r.stderr
    data = json.loads(report.read_text())
    assert list(data["findings"][0])[:2] == ["node", "op_type"] and data["findings"][0]["node"] == "div"


def test_cli_bad_model_is_exit_2(tmp_path):
    bad = tmp_path / "x.onnx"
    bad.write_bytes(b"not a model")
    r = run_cli("scan", str(bad))
    assert r.returncode == 2 and "Traceback" not in r.stderr
