"""surgeon compare: real divergences (FP16 overflow, Resize coordinate modes), agreement, and bad input."""

from __future__ import annotations

import json

import pytest

import surgeon
from helpers import FIXTURES, model_from_text, run_cli
from surgeon.debug.compare_run import compare
from surgeon.errors import UsageError

OVERFLOW = str(FIXTURES / "debug_fp16_overflow.onnx")
HALF = str(FIXTURES / "debug_resize_half_pixel.onnx")
ALIGN = str(FIXTURES / "debug_resize_align_corners.onnx")
MULTI = str(FIXTURES / "debug_multi_dynamic.onnx")


def test_api_fp16_overflow_names_the_overflowing_output():
    report = compare(OVERFLOW, test="fp16", iterations=2)
    assert not report.passed and report.mismatching == ["y"]
    y = {o.name: o for o in report.outputs}["y"]
    assert y.worst.inf_mismatches > 0 and y.worst.first_mismatches
    z = {o.name: o for o in report.outputs}["z"]
    # z passes under the float16 tolerance chosen for the fp16 backend, and that tolerance is reported.
    assert z.passed and (z.worst.atol, z.worst.rtol) == (1e-2, 1e-2)
    assert 0 < z.worst.max_abs < 1e-2
    d = report.to_dict()
    assert d["verdict"] == "mismatch" and len(d["outputs"][0]["samples"]) == 2
    for key in ("max_abs", "mean_abs", "median_abs", "p99_abs", "max_rel", "mean_rel", "median_rel", "p99_rel"):
        assert key in d["outputs"][1]


def test_api_resize_coordinate_mode_variant_differs_and_same_model_matches():
    report = compare(HALF, against=ALIGN)
    assert report.mismatching == ["y"] and report.outputs[0].worst.max_abs > 1e-2
    assert compare(HALF, against=HALF).passed


def test_api_reference_agrees_on_multi_output_dynamic_model():
    report = compare(MULTI, test="reference", input_shapes={"a": (4, 7), "b": (4, 7)}, iterations=2, atol=1e-5, rtol=1e-5)
    assert report.passed, report.to_dict()
    assert [o.name for o in report.outputs] == ["s", "m", "i"]
    assert report.samples == ["a[4, 7], b[4, 7]"] * 2
    assert report.outputs[2].ref_dtype == "int64" and report.outputs[2].worst.atol == 0.0


def test_api_backend_object_and_sessions_usable_alone():
    fp16 = surgeon.backend("fp16", keep=["sqrt_y", "mul_sq"])
    assert compare(OVERFLOW, test=fp16).passed  # keeping the overflowing nodes in float32 fixes it


def test_per_output_tolerance_and_nan_equal():
    report = compare(HALF, against=ALIGN, atol={"y": 1.0}, rtol={"y": 0.0})
    assert report.passed
    with pytest.raises(UsageError, match="not an output"):
        compare(HALF, against=ALIGN, atol={"nope": 1.0})
    nan_model = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[8] x) => (float[8] y) { y = Sqrt (x) }""")
    assert not compare(nan_model, test="onnxrt-noopt").passed  # NaN where x < 0, in both runs
    assert compare(nan_model, test="onnxrt-noopt", nan_equal=True).passed


def test_dtype_and_shape_differences_are_mismatches():
    a = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[2,3] x) => (float[2,3] y) { y = Relu (x) }""")
    b16 = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[2,3] x) => (float16[2,3] y) { r = Relu (x)
      y = Cast <to = 10> (r) }""")
    bshape = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[2,3] x) => (float[3,2] y) { r = Relu (x)
      s = Constant <value = int64[2] {3, 2}> ()
      y = Reshape (r, s) }""")
    r16 = compare(a, against=b16, atol=1e-2, rtol=1e-2)
    assert not r16.passed and "dtype float16" in r16.outputs[0].worst.reason
    rs = compare(a, against=bshape)
    assert not rs.passed and "shape [3, 2]" in rs.outputs[0].worst.reason


def test_sequence_outputs_compare_structurally():
    model = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[3] x) => (seq(float[3]) s) { y = Relu (x)
      s = SequenceConstruct (x, y) }""")
    assert compare(model, test="reference").passed


def test_test_backend_failure_is_a_verdict_not_a_crash():
    model = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[3] x) => (float[3] y) { y = Relu (x) }""")
    report = compare(model, test=_Failing())
    assert not report.passed and "boom" in report.error and report.to_dict()["verdict"] == "mismatch"


class _Failing(surgeon.backends.Backend):
    name = "failing"

    def session(self, model):
        from surgeon.errors import BackendError

        raise BackendError("boom: the engine cannot be built")


# --- CLI ----------------------------------------------------------------------------------


def test_cli_fp16_overflow_exit_1_report_and_plot(tmp_path):
    report, plots = tmp_path / "r.json", tmp_path / "plots"
    res = run_cli("compare", OVERFLOW, "--test", "fp16", "--report", str(report), "--plot", str(plots))
    assert res.returncode == 1, res.stderr
    assert "MISMATCH" in res.stdout and "y" in res.stdout
    data = json.loads(report.read_text())
    assert data["mismatching"] == ["y"] and data["rule"].startswith("|test - ref|")
    assert sorted(p.name for p in plots.iterdir()) == ["y.png"]  # one PNG per mismatching output only
    assert (plots / "y.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_match_exit_0_with_inputs_roundtrip(tmp_path):
    saved = tmp_path / "in.npz"
    outs = tmp_path / "out.json"
    res = run_cli("compare", MULTI, "--test", "reference", "--input-shapes", "a:2x9", "b:[2,9]", "--iterations", "2",
                  "--save-inputs", str(saved), "--save-outputs", str(outs), "--atol", "1e-5", "--rtol", "1e-5")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "MATCH" in res.stdout
    res2 = run_cli("compare", MULTI, "--against", MULTI, "--load-inputs", str(saved))
    assert res2.returncode == 0 and "a[2, 9]" in res2.stdout
    from polygraphy.comparator import RunResults

    assert list(RunResults.load(str(outs)).keys()) == ["ref:onnxrt", "test:reference"]


def test_cli_against_resize_variant_exit_1():
    res = run_cli("compare", HALF, "--against", ALIGN)
    assert res.returncode == 1 and "MISMATCH" in res.stdout


@pytest.mark.parametrize("args,needle", [
    (["missing.onnx", "--test", "fp16"], "does not exist"),
    ([MULTI, "--test", "fp16", "--input-shapes", "q:2x3"], "not an input"),
    ([MULTI, "--test", "fp16", "--input-shapes", "a:3,4"], "cannot parse input shape"),
    ([MULTI, "--test", "fp16", "--input-shapes", "a:[3,x]"], "whole numbers"),
    ([MULTI, "--test", "fp16", "--input-shapes", "a:3x4x5"], "rank"),
    ([MULTI, "--test", "bogus"], "unknown backend"),
    ([MULTI, "--test", "onnxrt", "--fp16-keep", "Add"], "does not apply"),
    ([MULTI, "--test", "fp16", "--fp16-keep", "Nope"], "names no op type"),
    ([MULTI, "--test", "fp16", "--atol", "zz:1e-3"], "not an output"),
    ([MULTI, "--test", "fp16", "--val-range", "a:[1,0]"], "LOW above HIGH"),
    ([MULTI, "--test", "fp16", "--load-inputs", "nope.npz"], "does not exist"),
    ([MULTI, "--against", "nope.onnx"], "does not exist"),
    ([MULTI], "required"),
    ([MULTI, "--test", "fp16", "--save-inputs", "x.txt"], ".npz or .json"),
])
def test_cli_bad_input_exit_2_one_line_nothing_written(tmp_path, args, needle):
    report = tmp_path / "r.json"
    res = run_cli("compare", *args, "--report", str(report), cwd=tmp_path)
    assert res.returncode == 2, res.stdout + res.stderr
    assert needle in res.stderr and len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_cli_trt_missing_exit_2():
    from surgeon.backends import trt

    if trt.available("trt"):
        pytest.skip("TensorRT is installed here")
    res = run_cli("compare", MULTI, "--test", "trt", "--fp16")
    assert res.returncode == 2 and "TensorRT is not installed" in res.stderr and "--test fp16" in res.stderr


def test_plots_of_outputs_with_alike_names_do_not_overwrite(tmp_path):
    model = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[2,8] x) => (float[2,8] "o/1", float[2,8] "o:1") {
      k = Constant <value = float {400.0}> ()
      b = Mul (x, k)
      "o/1" = Mul (b, b)
      "o:1" = Mul (b, k)
    }""")
    report = compare(model, test="fp16", plot_dir=tmp_path, value_ranges={"x": (0.5, 1.0)})
    assert sorted(report.mismatching) == ["o/1", "o:1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o_1.png", "o_1_2.png"]


# --- loaded inputs that do not fit the model: exit 2, one line naming the input -----------------------------------

TOKENS = """
<ir_version: 8, opset_import: ["" : 17]>
g (int64[B, 4] ids, float[B, 3] x, int64[2] shape) => (float[B, 4, 2] e, float[?, ?] y)
  <float[10, 2] table = {0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0, 16.0, 17.0, 18.0, 19.0}> {
  e = Gather (table, ids)
  y = Reshape (x, shape)
}
"""


def _tokens_model(tmp_path):
    import numpy as np
    import onnx

    path = tmp_path / "tokens.onnx"
    onnx.save(model_from_text(TOKENS), str(path))
    good = {"ids": np.array([[0, 1, 2, 9]], np.int64), "x": np.zeros((1, 3), np.float32), "shape": np.array([3, 1], np.int64)}
    return path, good


def test_cli_loaded_inputs_that_fit_run(tmp_path):
    from surgeon import input_files

    path, sample = _tokens_model(tmp_path)
    good = tmp_path / "good.npz"
    input_files.save_inputs(good, [sample])
    res = run_cli("compare", str(path), "--test", "onnxrt-noopt", "--load-inputs", str(good))
    assert res.returncode == 0, res.stdout + res.stderr


# One case per kind of check (names, values, a run); every kind is covered at the API level in tests/test_input_data.py.
@pytest.mark.parametrize("change,needle", [
    (lambda s: s.update(IDS=s.pop("ids")), "names 'IDS', which is not an input of"),
    (lambda s: s.update(ids=s["ids"] + 10), "input 'ids' holds values in [10, 19], but"),
    (lambda s: s.update(shape=s["shape"] * 2), "cannot run on the input data"),
])
def test_cli_loaded_inputs_that_do_not_fit_exit_2_one_line(tmp_path, change, needle):
    import numpy as np

    path, sample = _tokens_model(tmp_path)
    change(sample)
    bad = tmp_path / "bad.npz"
    np.savez(bad, **sample)
    res = run_cli("compare", str(path), "--test", "onnxrt-noopt", "--load-inputs", str(bad))
    assert res.returncode == 2, res.stdout + res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in res.stderr, res.stderr
    assert "tokens.onnx" in lines[0]  # says which model the data does not fit


def test_cli_scan_checks_loaded_inputs_too(tmp_path):
    import numpy as np

    path, sample = _tokens_model(tmp_path)
    sample["ids"] = sample["ids"] + 10
    bad = tmp_path / "bad.npz"
    np.savez(bad, **sample)
    res = run_cli("scan", str(path), "--load-inputs", str(bad))
    assert res.returncode == 2 and "input 'ids' holds values in [10, 19]" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_api_generated_inputs_that_cannot_be_valid_say_which_input_and_why():
    from surgeon.errors import BackendError

    model = model_from_text("""
    <ir_version: 8, opset_import: ["" : 13]>
    g (float[3, 2, 4] x, int64[1] axes) => (float[?, ?] y) {
      y = Squeeze (x, axes)
    }""")
    with pytest.raises(BackendError) as err:
        compare(model, test="onnxrt-noopt")
    text = str(err.value)
    assert "no valid sample could be made" in text and "input 'axes'" in text and "Squeeze" in text
    assert "--load-inputs" in text
