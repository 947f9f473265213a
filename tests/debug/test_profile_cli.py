"""`surgeon profile` and `surgeon fix --profile` on the command line: reports, plots, bad input."""

from __future__ import annotations

import importlib.util
import json

import onnx
import pytest

from helpers import FIXTURES, run_cli
from surgeon.debug.profile.trt_runtime import cuda_driver_loadable

CNN = str(FIXTURES / "tutorial_cnn.onnx")
FAST = ("--iterations", "3", "--warmup", "1", "--threads", "1")
PNG = b"\x89PNG\r\n\x1a\n"


def _one_line_error(r, text: str) -> None:
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stdout == "" and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert text in r.stderr, r.stderr


def test_profile_report_and_plots(tmp_path):
    report, plots = tmp_path / "r.json", tmp_path / "plots"
    r = run_cli("profile", CNN, *FAST, "--top", "5", "--report", str(report), "--plot", str(plots))
    assert r.returncode == 0, r.stderr
    assert "latency, profiler off" in r.stdout and "by op type" in r.stdout
    data = json.loads(report.read_text())
    assert data["backend"] == "onnxrt" and data["latency"]["runs"] == 3 and data["profiled_latency"]["runs"] == 3
    assert isinstance(data["profiling_overhead"], float)
    kernels = data["kernels"]
    assert kernels and all(k["median_ms"] <= k["p90_ms"] for k in kernels)
    assert {k["how"] for k in kernels} <= {"same", "fused", "rewritten", "added by ONNX Runtime", "by name"}
    # every BatchNormalization of the model is accounted for: inside a fused kernel, or folded at load
    model = onnx.load(CNN)
    bns = {n.name for n in model.graph.node if n.op_type == "BatchNormalization"}
    covered = {n for k in kernels for n in k["origin"]} | {r["node"] for r in data["removed_at_load"]}
    assert bns and bns <= covered
    assert data["memory"]["arena_peak_in_use_bytes"] > 0
    assert sorted(p.name for p in plots.iterdir()) == ["op_types.png", "top_kernels.png"]
    assert all(p.read_bytes()[:8] == PNG for p in plots.iterdir())
    assert data["plots"] == [str(plots / "top_kernels.png"), str(plots / "op_types.png")]


def test_against_side_by_side_with_noise(tmp_path):
    fixed, report, plots = tmp_path / "fixed.onnx", tmp_path / "r.json", tmp_path / "plots"
    model = onnx.load(CNN)  # B: the same model without its dead Mul
    dead = [n for n in model.graph.node if n.name == "Mul_dead"]
    assert dead
    model.graph.node.remove(dead[0])
    onnx.save(model, fixed)
    r = run_cli("profile", CNN, "--against", str(fixed), *FAST, "--report", str(report), "--plot", str(plots))
    assert r.returncode == 0, r.stderr
    assert "A against B" in r.stdout and "run-to-run noise" in r.stdout
    data = json.loads(report.read_text())
    assert data["difference"]["verdict"] in ("faster", "slower", "within noise")
    assert data["difference"]["ci_low"] <= data["difference"]["ratio"] <= data["difference"]["ci_high"]
    assert data["a"]["onnx_nodes"] > data["b"]["onnx_nodes"]
    assert data["op_type_diff"] and data["headline"].startswith(f"nodes {data['a']['onnx_nodes']} → ")
    assert len(data["a"]["latency_runs_ms"]) == len(data["b"]["latency_runs_ms"]) == 3
    assert sorted(p.name for p in plots.iterdir()) == ["a_op_types.png", "a_top_kernels.png", "b_op_types.png",
                                                         "b_top_kernels.png", "op_types_a_vs_b.png"]


def test_fix_profile_prints_the_change(tmp_path):
    out, report = tmp_path / "out.onnx", tmp_path / "fix.json"
    r = run_cli("fix", CNN, "-o", str(out), "--passes", "fold-conv-bn", "--profile", "--report", str(report))
    assert r.returncode == 0, r.stderr
    text = " ".join(r.stdout.split())
    nodes_in = sum(1 for _ in onnx.load(CNN).graph.node)
    nodes_out = sum(1 for _ in onnx.load(str(out)).graph.node)
    assert f"nodes {nodes_in} → {nodes_out}, latency " in text and "median of 50) on ONNX Runtime CPU, 1 thread" in text
    prof = json.loads(report.read_text())["profile"]
    assert prof["difference"]["verdict"] in ("faster", "slower", "within noise")
    assert len(prof["a"]["latency_runs_ms"]) == 50 and prof["a"]["kernels"] == []  # latency only, no profiler


@pytest.mark.parametrize("args, text", [
    ((CNN, "--iterations", "0"), "--iterations must be at least 1"),
    ((str(FIXTURES / "custom_op.onnx"), *FAST), "ONNX Runtime (onnxrt) cannot load"),
    ((CNN, "--trt-layers", "l.json"), "--trt-layers goes with --trt-profile"),
    ((CNN, "--trt-profile", "missing.json"), "cannot read the TensorRT profile 'missing.json'"),
    ((CNN, "--against", CNN, "--backend", "trt"), "--against compares two models on ONNX Runtime"),
])
def test_bad_input_is_one_line(args, text):
    _one_line_error(run_cli("profile", *args), text)


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed here")
def test_trt_backend_without_tensorrt_says_how_to_install():
    _one_line_error(run_cli("profile", CNN, "--backend", "trt"), "TensorRT is not installed here")


@pytest.mark.skipif(importlib.util.find_spec("tensorrt_rtx") is None, reason="tensorrt_rtx is not installed")
@pytest.mark.skipif(cuda_driver_loadable(), reason="a CUDA driver is present: an engine may run here")
def test_trt_rtx_without_a_cuda_driver_is_one_clear_line():
    _one_line_error(run_cli("profile", CNN, "--backend", "trt-rtx"), "no engine can run here: there is no CUDA driver")


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is None or not cuda_driver_loadable(),
                    reason="needs the tensorrt package and an NVIDIA GPU with its CUDA driver (neither is here)")
def test_trt_backend_profiles_layers_and_maps_them(tmp_path):
    report = tmp_path / "r.json"
    r = run_cli("profile", CNN, "--backend", "trt", *FAST, "--report", str(report))
    assert r.returncode == 0, r.stderr
    data = json.loads(report.read_text())
    assert data["source"].startswith("TensorRT IProfiler") and data["kernels"]
    assert any(k["how"] == "metadata" and k["origin"] for k in data["kernels"])


def test_fix_profile_on_a_model_ort_cannot_run_keeps_the_fix(tmp_path):
    out, report = tmp_path / "out.onnx", tmp_path / "fix.json"
    r = run_cli("fix", str(FIXTURES / "custom_op.onnx"), "-o", str(out), "--passes", "cleanup", "--profile",
                "--report", str(report))
    assert r.returncode == 0 and out.is_file(), r.stderr
    assert r.stderr.count("surgeon: --profile: not timed: ONNX Runtime (onnxrt) cannot load") == 1
    assert "cannot load" in json.loads(report.read_text())["profile"]["error"]
