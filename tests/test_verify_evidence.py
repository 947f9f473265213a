"""Proofs that mean something (issue 18): the fix verifier, compare, doctor and fp16 on degenerate references.

Fixtures come from ``fixtures/make_evidence_fixtures.py``; the wrong rule is
``fixtures/rules/tanh_as_sigmoid.py``. Tolerances are the per-dtype defaults (float32:
atol 1e-4, rtol 1e-3), stated where a test relies on them.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from helpers import FIXTURES, ROOT, model_from_text, run_cli
import surgeon
from surgeon.debug import compare_run

WRONG_RULE = str(FIXTURES / "rules" / "tanh_as_sigmoid.py")


def _fix_json(tmp_path, model: str, *extra: str):
    report = tmp_path / "report.json"
    res = run_cli("fix", str(FIXTURES / model), "-o", str(tmp_path / "out.onnx"), "--report", str(report), *extra,
                  cwd=tmp_path)
    return res, json.loads(report.read_text()) if report.exists() else None


def test_t5_mask_wrong_rule_is_rolled_back_without_load_inputs(tmp_path):
    res, report = _fix_json(tmp_path, "evidence_t5_mask.onnx", "--rules", WRONG_RULE, "--strict")
    assert res.returncode == 1, res.stdout + res.stderr  # --strict: a pass was rolled back
    assert "replace-custom-ops" in report["rolled_back"]
    assert report["verification"] == "numeric"
    out = onnx.load(str(tmp_path / "out.onnx"))
    assert "Tanh" in {n.op_type for n in out.graph.node} and "Sigmoid" not in {n.op_type for n in out.graph.node}


def test_t5_mask_drawn_from_1_to_4_is_not_verified_and_says_why(tmp_path):
    # The masks issue 18 saw: (1 - m) * -3.4e38 overflows for m >= 3, so every output is NaN.
    res, report = _fix_json(tmp_path, "evidence_t5_mask.onnx", "--rules", WRONG_RULE, "--strict",
                            "--val-range", "attention_mask:[1,4]")
    assert res.returncode == 1
    assert report["verification"].startswith("not verified: the reference is NaN on every sample")
    assert "give --load-inputs" in report["verification"]
    assert "not verified numerically" in res.stderr
    assert "verified: numeric" not in res.stdout


def test_nan_reference_is_never_verified_numerically(tmp_path):
    res, report = _fix_json(tmp_path, "evidence_nan_reference.onnx", "--strict")
    assert res.returncode == 1
    assert report["verification"].startswith("not verified: the reference is NaN on every sample")
    # other samples were tried before giving up, and the report says which
    assert "float inputs in [0, 1]" in report["verification"]


@pytest.mark.parametrize("name,size", [("evidence_lstm_feature_dim.onnx", 26), ("evidence_conv_channels.onnx", 5)])
def test_dims_fixed_by_weights_verify_numerically_without_input_shapes(name, size):
    model = onnx.load(str(FIXTURES / name))
    fixed, report = surgeon.fix(model)
    assert report.verification == "numeric" and report.changed
    assert len(report.samples) == 2 and all(f", {size}" in s or f"[{size}" in s or f" {size}," in s
                                            for s in report.samples)
    assert "numeric" in [p.checked for p in report.passes if p.changed]


@pytest.mark.parametrize("name", ["evidence_lstm_feature_dim.onnx", "evidence_conv_channels.onnx"])
def test_trt_check_builds_models_whose_dims_the_weights_fix(tmp_path, name):
    pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX (the test extra on Linux x86-64) is not installed")
    report = tmp_path / "tc.json"
    res = run_cli("trt-check", str(FIXTURES / name), "--engine", "trt-rtx", "--report", str(report), cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    data = json.loads(report.read_text())
    assert data["ready"] is True
    assert data["profile"]["source"].startswith("probed")


def test_if_branch_no_default_sample_takes_gets_a_sample_and_a_wrong_rule_there_is_rolled_back(tmp_path):
    res, report = _fix_json(tmp_path, "evidence_if_branch.onnx", "--rules", WRONG_RULE, "--strict")
    assert "replace-custom-ops" in report["rolled_back"]  # the Tanh sits in the else branch
    assert any("added so that every branch" in n for n in report["notes"])
    assert len(report["samples"]) == 3


def test_if_branch_no_sample_can_take_is_reported(tmp_path):
    res, report = _fix_json(tmp_path, "evidence_if_unreachable.onnx")
    assert res.returncode == 0
    assert any("the then branch of If 'branch'" in n and "taken by no sample" in n for n in report["notes"])
    assert report["verification"] == "numeric"  # nothing inside the uncovered branch changed


WRONG_THEN = '''
from surgeon.rewrite import Op, rule

def _check(match, ctx):
    return None if match.nodes[0].name == "then_double" else "another Mul"

def _rewrite(match, b):
    return [b.op("Add", list(match.inputs))]

RULES = [rule("mul-as-add", Op("Mul"), _rewrite, check=_check)]
'''


def test_a_change_inside_a_branch_no_sample_takes_is_not_verified(tmp_path):
    rules = tmp_path / "wrong_then.py"
    rules.write_text(WRONG_THEN)
    res, report = _fix_json(tmp_path, "evidence_if_unreachable.onnx", "--rules", str(rules), "--strict")
    assert res.returncode == 1, res.stdout + res.stderr
    assert report["verification"].startswith("not verified: the then branch of If 'branch' changed and no sample "
                                              "takes it")


def test_compare_blames_the_reference_for_its_own_nan(tmp_path):
    report = compare_run.compare(str(FIXTURES / "evidence_fp32_nan.onnx"), test="fp16")
    (out,) = report.outputs
    assert not out.passed
    assert "the reference (FP32, onnxrt) is NaN at" in out.worst.reason
    assert "where the test (fp16) is finite" in out.worst.reason
    assert "NaN mismatches" not in out.worst.reason


def test_compare_of_a_nan_reference_is_inconclusive_never_a_match(tmp_path):
    model = str(FIXTURES / "evidence_nan_reference.onnx")
    for nan_equal in (False, True):
        report = compare_run.compare(model, test="onnxrt-noopt", nan_equal=nan_equal)
        assert report.verdict == compare_run.INCONCLUSIVE and not report.passed
    res = run_cli("compare", model, "--test", "onnxrt-noopt", "--nan-equal", cwd=tmp_path)
    assert res.returncode == 1
    assert "INCONCLUSIVE: the reference is NaN on every sample" in res.stdout
    assert "MATCH:" not in res.stdout.replace("MISMATCH", "")


def test_doctor_on_a_nan_reference_is_inconclusive(tmp_path):
    res = run_cli("doctor", str(FIXTURES / "evidence_nan_reference.onnx"), "-o", str(tmp_path / "o.onnx"), cwd=tmp_path)
    assert res.returncode == 1
    assert "INCONCLUSIVE" in res.stdout and "doctor: OK" not in res.stdout


def test_fp16_does_not_fail_a_finite_fp16_output_for_the_fp32_reference_nan(tmp_path):
    report = tmp_path / "fp16.json"
    res = run_cli("fp16", str(FIXTURES / "evidence_fp32_nan.onnx"), "-o", str(tmp_path / "o.onnx"),
                  "--no-trt-check", "--report", str(report), cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    data = json.loads(report.read_text())
    mixed = data["errors"]["mixed_emulation"]["outputs"][0]
    assert mixed["passed"] and mixed["ref_nonfinite"] > 0 and mixed["nonfinite"] == 0
    assert "FAIL" not in res.stdout
    assert "the FP32 reference is NaN/Inf at" in res.stdout


def test_fp16_refuses_a_reference_that_is_nan_on_every_sample(tmp_path):
    res = run_cli("fp16", str(FIXTURES / "evidence_nan_reference.onnx"), "-o", str(tmp_path / "o.onnx"),
                  "--no-trt-check", cwd=tmp_path)
    assert res.returncode == 2
    assert "the FP32 reference is NaN on every sample" in res.stderr
    assert not (tmp_path / "o.onnx").exists()


def test_fixture_script_reproduces_the_committed_files(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_evidence_fixtures", ROOT / "fixtures" / "make_evidence_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name, model in module.build().items():
        assert model.SerializeToString() == (FIXTURES / name).read_bytes(), name


SQRT_SHIFTED = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[batch, 16] x) => (float[batch, 16] y) {
  one = Constant <value = float {1.0}> ()
  d = Sub (x, one)
  r = Sqrt (d)
  y = Mul (r, one)
}"""


def test_other_samples_are_drawn_when_the_default_ones_give_a_nan_reference():
    # sqrt(x - 1) is NaN for every x in [-1, 1] (the default floats); [-10, 10] reaches its domain.
    model = model_from_text(SQRT_SHIFTED)
    _fixed, report = surgeon.fix(model)
    assert report.verification == "numeric"
    assert any(n.startswith("samples: float inputs in [-10, 10] (with the default samples the reference is NaN")
               for n in report.notes), report.notes
    cmp = compare_run.compare(model, test="onnxrt-noopt", nan_equal=True)  # the debug commands draw the same way
    assert cmp.verdict == compare_run.MATCH
    assert float(np.nanmax(cmp.runs["ref"][0]["y"])) > 0


def test_loaded_inputs_that_give_a_nan_reference_are_not_replaced(tmp_path):
    rng = np.random.default_rng(0)
    feeds = {"input_ids": rng.integers(0, 64, size=(2, 8)).astype(np.int64),
             "attention_mask": np.full((2, 8), 3, np.int64)}  # (1 - 3) * -3.4e38 = Inf: every output NaN
    np.savez(tmp_path / "in.npz", **feeds)
    res, report = _fix_json(tmp_path, "evidence_t5_mask.onnx", "--load-inputs", str(tmp_path / "in.npz"), "--strict",
                            "--rules", WRONG_RULE)
    assert res.returncode == 1
    assert report["verification"] == ("not verified: the reference is NaN on every sample; the given inputs cannot "
                                      "show a difference; give others")
