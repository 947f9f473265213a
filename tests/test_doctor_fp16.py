"""``surgeon doctor --test fp16`` points to ``surgeon fp16`` when the FP16 comparison fails."""

from __future__ import annotations

import shlex

from helpers import FIXTURES, run_cli
from surgeon.doctor import doctor


def test_failing_fp16_comparison_suggests_the_concrete_fp16_command(tmp_path):
    out = tmp_path / "fixed.onnx"
    r = run_cli("doctor", str(FIXTURES / "debug_fp16_overflow.onnx"), "-o", str(out), "--test", "fp16",
                "--input-shapes", "x:2x16", "--atol", "0.01", "--passes", "cleanup")
    assert r.returncode == 1
    line = next(l.strip() for l in r.stdout.splitlines() if l.strip().startswith("surgeon fp16 "))
    argv = shlex.split(line)
    assert argv[:5] == ["surgeon", "fp16", str(out), "-o", str(tmp_path / "fixed.fp16.onnx")]
    assert "--input-shapes" in argv and "x:2x16" in argv and "--atol" in argv
    # the suggested command works as printed (minus the console-script name)
    r2 = run_cli(*argv[1:], "--no-trt-check")
    assert r2.returncode == 0, r2.stderr
    assert (tmp_path / "fixed.fp16.onnx").exists() and (tmp_path / "fixed.fp16.json").exists()


def test_no_suggestion_when_fp16_matches(tmp_path):
    report = doctor(FIXTURES / "tutorial_cnn.onnx", tmp_path / "o.onnx", test="fp16", passes="cleanup")
    assert report.passed and report.suggestions == []
