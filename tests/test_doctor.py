"""surgeon doctor: fix, then compare the result with the original (and on a test backend)."""

from __future__ import annotations

import json

import onnx
import pytest

from helpers import FIXTURES, run_cli
from surgeon.doctor import doctor

CNN = str(FIXTURES / "tutorial_cnn.onnx")


def test_doctor_api_fixes_and_proves(tmp_path):
    out = tmp_path / "fixed.onnx"
    report = doctor(CNN, out, test="fp16", iterations=2)
    assert out.is_file() and report.passed
    assert [what for what, _ in report.comparisons] == ["fixed vs original", "fixed on fp16 vs original on onnxrt"]
    fixed_nodes = len(onnx.load(out).graph.node)
    assert fixed_nodes < len(onnx.load(CNN).graph.node)  # the pipeline did something to prove
    first = report.comparisons[0][1]
    assert first.outputs[0].worst.max_abs < 1e-4 and len(first.samples) == 2


def test_doctor_finds_fp16_overflow_on_the_fixed_model(tmp_path):
    out = tmp_path / "fixed.onnx"
    report = doctor(str(FIXTURES / "debug_fp16_overflow.onnx"), out, test="fp16")
    assert not report.passed and report.verdict == "mismatch"
    assert report.comparisons[0][1].passed  # the fix itself is fine
    assert report.comparisons[1][1].mismatching == ["y"]


def test_doctor_cli_report_and_exit_codes(tmp_path):
    out, rep = tmp_path / "fixed.onnx", tmp_path / "doctor.json"
    res = run_cli("doctor", CNN, "-o", str(out), "--report", str(rep), "--test", "reference")
    assert res.returncode == 0, res.stdout + res.stderr
    data = json.loads(rep.read_text())
    assert data["verdict"] == "ok" and len(data["comparisons"]) == 2 and "passes" in data["fix"]
    res = run_cli("doctor", str(FIXTURES / "debug_fp16_overflow.onnx"), "-o", str(out), "--test", "fp16")
    assert res.returncode == 1 and "MISMATCH" in res.stdout


@pytest.mark.parametrize("args,needle", [
    (["missing.onnx", "-o", "OUT"], "does not exist"),
    ([CNN, "-o", "OUT", "--test", "bogus"], "unknown backend"),
    ([CNN, "-o", "OUT", "--input-shapes", "input:1x3"], "rank"),
    ([CNN, "-o", "OUT", "--passes", "no-such-pass"], "no-such-pass"),
])
def test_doctor_bad_input_writes_nothing(tmp_path, args, needle):
    args = [str(tmp_path / "out.onnx") if a == "OUT" else a for a in args]
    res = run_cli("doctor", *args, cwd=tmp_path)
    assert res.returncode == 2 and needle in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert list(tmp_path.iterdir()) == []


def test_doctor_refuses_to_overwrite_input(tmp_path):
    res = run_cli("doctor", CNN, "-o", CNN)
    assert res.returncode == 2 and "input model" in res.stderr
