"""``surgeon fp16`` from the command line: the written model, the report, the TensorRT flags,
and every bad input as one line with exit code 2 and nothing written."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from helpers import FIXTURES, model_from_text, run_cli, run_ort

BRANCHES = str(FIXTURES / "fp16" / "branches_overflow.onnx")


def test_cli_writes_a_checked_mixed_model_report_and_layer_flags(tmp_path):
    out, rep, flags = tmp_path / "m.onnx", tmp_path / "r.json", tmp_path / "layers.txt"
    r = run_cli("fp16", BRANCHES, "-o", str(out), "--report", str(rep), "--layer-precisions", str(flags),
                "--atol", "1e-2", "--rtol", "1e-2", "--no-trt-check")
    assert r.returncode == 0, r.stderr
    onnx.checker.check_model(onnx.load(out), full_check=True)
    data = json.loads(rep.read_text())
    assert data["verdict"] == "ok" and data["status"] == "minimal"
    assert sorted(data["fp32_nodes"]["searched"]) == ["b5_down", "b5_scale2"]
    assert data["islands"][0]["op_types"] == ["Mul", "Div"]
    assert data["errors"]["full_reduced_precision"]["passed"] is False
    assert data["errors"]["mixed_emulation"]["passed"] is True and data["errors"]["mixed_onnxruntime"]["passed"] is True
    assert sum(p["oracle_calls"] for p in data["search"]["phases"]) + 1 == data["search"]["oracle_calls"]  # + the confirmation
    assert data["search"]["oracle_calls"] <= 8 and data["search"]["onnxruntime_runs"] >= data["search"]["oracle_calls"]
    text = flags.read_text()
    assert "--layerPrecisions=b5_scale2:fp32,b5_down:fp32" in text and "--precisionConstraints=obey" in text
    assert "--layerOutputTypes=b5_scale2:fp32,b5_down:fp32" in text
    assert "--layer-precisions b5_scale2:float32 b5_down:float32" in text and "--precision-constraints obey" in text
    assert "FP32 islands" in r.stdout and "b5_scale2" in r.stdout
    x = np.random.default_rng(3).uniform(-1, 1, (2, 16)).astype(np.float32)
    got = run_ort(onnx.load(out), {"x": x.astype(np.float16)})["y"].astype(np.float32)
    np.testing.assert_allclose(got, run_ort(onnx.load(BRANCHES), {"x": x})["y"], atol=2e-2, rtol=1e-2)


def test_cli_keep_and_keep_io_types(tmp_path):
    out, rep = tmp_path / "m.onnx", tmp_path / "r.json"
    r = run_cli("fp16", BRANCHES, "-o", str(out), "--report", str(rep), "--keep", "Tanh", "--keep-io-types", "--no-trt-check")
    assert r.returncode == 0, r.stderr
    data = json.loads(rep.read_text())
    assert len(data["fp32_nodes"]["requested"]) == 7  # the seven Tanh nodes
    assert data["conversion"]["io_types"] == {"x": "FLOAT", "y": "FLOAT"}
    tanh_out = {n.output[0] for n in onnx.load(out).graph.node if n.op_type == "Tanh"}
    inferred = onnx.shape_inference.infer_shapes(onnx.load(out))
    types = {vi.name: vi.type.tensor_type.elem_type for vi in inferred.graph.value_info}
    assert all(types[t] == onnx.TensorProto.FLOAT for t in tanh_out)


def test_cli_per_output_tolerance_names_must_exist(tmp_path):
    r = run_cli("fp16", BRANCHES, "-o", str(tmp_path / "m.onnx"), "--atol", "nope:1e-3", "--no-trt-check")
    assert r.returncode == 2 and "nope" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("case, text, args, message", [
    ("no-floats", """
     <ir_version: 8, opset_import: ["" : 17]>
     g (int64[4] a, int64[4] b) => (int64[4] c) { c = Add (a, b) }""", [], "has no float32 tensors"),
    ("nondeterministic", """
     <ir_version: 8, opset_import: ["" : 17]>
     g (float[64] x) => (float[64] y) { r = RandomUniformLike (x)  y = Add (x, r) }""", [], "misses the tolerance against its own reference run"),
    ("keep-typo", """
     <ir_version: 8, opset_import: ["" : 17]>
     g (float[4] x) => (float[4] y) { a = Relu (x)  y = Sigmoid (a) }""", ["--keep", "Sigmoud"], "did you mean 'Sigmoid'"),
    ("bf16-old-opset", """
     <ir_version: 7, opset_import: ["" : 12]>
     g (float[4] x) => (float[4] y) { y = Relu (x) }""", ["--precision", "bf16"], "opset 13"),
])
def test_cli_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, case, text, args, message):
    src = tmp_path / f"{case}.onnx"
    onnx.save(model_from_text(text), src)
    out = tmp_path / "out.onnx"
    r = run_cli("fp16", str(src), "-o", str(out), "--no-trt-check", *args)
    assert r.returncode == 2, r.stdout + r.stderr
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert not out.exists()


def test_cli_output_equal_to_input_is_refused(tmp_path):
    r = run_cli("fp16", BRANCHES, "-o", BRANCHES)
    assert r.returncode == 2 and "is the input model" in r.stderr


def test_cli_trt_rtx_builds_the_strongly_typed_output_on_the_cpu(tmp_path):
    import importlib.util

    if importlib.util.find_spec("tensorrt_rtx") is None:
        pytest.skip("tensorrt_rtx is not installed: the strongly typed build check cannot run here")
    rep = tmp_path / "r.json"
    r = run_cli("fp16", BRANCHES, "-o", str(tmp_path / "m.onnx"), "--report", str(rep), "--layer-precisions",
                str(tmp_path / "l.txt"))
    assert r.returncode == 0, r.stderr
    data = json.loads(rep.read_text())
    assert data["trt_rtx"]["built"] is True and data["trt_rtx"]["engine_bytes"] > 0
    assert "every name above is a layer" in (tmp_path / "l.txt").read_text()


def test_cli_per_output_tolerance_makes_only_that_output_exact(tmp_path):
    """z = Relu(x) must be bit-exact (atol=rtol=0 for z), y keeps float16's defaults: Relu joins
    the overflow island's two nodes, and nothing else does."""
    rep = tmp_path / "r.json"
    r = run_cli("fp16", str(FIXTURES / "debug_fp16_overflow.onnx"), "-o", str(tmp_path / "m.onnx"), "--report", str(rep),
                "--atol", "z:0", "--rtol", "z:0", "--input-shapes", "x:2x16", "--no-trt-check")
    assert r.returncode == 0, r.stderr
    data = json.loads(rep.read_text())
    assert data["tolerances"] == {"y": {"atol": 0.01, "rtol": 0.01}, "z": {"atol": 0.0, "rtol": 0.0}}
    assert sorted(data["fp32_nodes"]["searched"]) == ["mul_sq", "relu_z", "sqrt_y"]
    assert data["errors"]["mixed_onnxruntime"]["outputs"][1]["max_abs"] == 0.0
