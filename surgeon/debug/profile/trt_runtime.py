"""Per-layer times of a TensorRT engine through its IProfiler, driven by Polygraphy.

A thin adapter: the worker (``trt_worker.py``, a subprocess so that a CUDA or TensorRT
crash is an error message, not a dead session) builds the engine with Polygraphy
(``NetworkFromOnnxPath``, ``CreateConfig(profiling_verbosity=DETAILED)``,
``EngineFromNetwork``), runs it with ``TrtRunner``: first without a profiler for the
latency, then with an ``IProfiler`` on ``runner.context`` for per-layer times, and writes
the engine inspector's layer information (the same JSON as ``trtexec --exportLayerInfo``),
which maps layers back to ONNX nodes exactly as for a trtexec file.

Written from TensorRT's and Polygraphy's documentation: no machine this project is built
on has TensorRT with a GPU, so this path is exercised here only up to the clear message
that says why it cannot run.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from surgeon import model as model_io
from surgeon.debug.profile import trt_files
from surgeon.debug.profile.result import ModelProfile
from surgeon.debug.profile.stats import summarize
from surgeon.errors import BackendError, BackendUnavailableError
from surgeon.input_data import describe_feeds

TIMEOUT_S = 3600.0


def cuda_driver_loadable() -> bool:
    """Whether the NVIDIA driver's CUDA library can be loaded (no engine runs without it)."""
    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            ctypes.CDLL(name)
            return True
        except OSError:
            continue
    return False


def check_runnable(backend: str) -> None:
    """One clear sentence when no TensorRT engine can run on this machine."""
    from surgeon import backends

    backends.create(backend)  # raises BackendUnavailableError with install advice when the package is missing
    if not cuda_driver_loadable():
        what = "TensorRT-RTX" if backend == "trt-rtx" else "TensorRT"
        raise BackendUnavailableError(
            f"{what} is installed but no engine can run here: there is no CUDA driver (libcuda.so.1 cannot be "
            f"loaded); profile on a machine with an NVIDIA GPU, or read a profile made there with "
            f"--trt-profile P.json --trt-layers L.json")


def profile(src, feeds: list[dict], *, backend: str, warmup: int, iterations: int) -> ModelProfile:
    with tempfile.TemporaryDirectory(prefix="surgeon-trt-profile-") as tmp:
        model_path = Path(tmp) / "model.onnx"
        if src.path is not None and not model_io.external_data_paths(src.path):
            shutil.copyfile(src.path, model_path)
        else:
            with model_io.materialized(src.model) as path:
                shutil.copytree(path.parent, Path(tmp) / "model", dirs_exist_ok=True)
            model_path = Path(tmp) / "model" / "model.onnx"
        inputs = Path(tmp) / "inputs.npz"
        np.savez(inputs, **{k: np.asarray(v) for k, v in feeds[0].items()})
        result_path = Path(tmp) / "result.json"
        spec = {"model": str(model_path), "inputs": str(inputs), "result": str(result_path), "warmup": warmup,
                "iterations": iterations, "rtx": backend == "trt-rtx"}
        spec_path = Path(tmp) / "spec.json"
        spec_path.write_text(json.dumps(spec), encoding="utf-8")
        env = dict(os.environ)
        if backend == "trt-rtx":
            env["POLYGRAPHY_USE_TENSORRT_RTX"] = "1"
        try:
            proc = subprocess.run([sys.executable, "-m", "surgeon.debug.profile.trt_worker", str(spec_path)],
                                  capture_output=True, text=True, env=env, timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired as exc:
            raise BackendError(f"TensorRT profiling did not finish within {TIMEOUT_S:g} s") from exc
        if proc.returncode != 0:
            lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
            raise BackendError(f"TensorRT profiling failed: {lines[-1] if lines else f'exit code {proc.returncode}'}")
        result = json.loads(result_path.read_text(encoding="utf-8"))
    layers = trt_files.parse_layer_info(result["layer_info"], "the engine inspector's output")
    runs = [[(name, float(ms)) for name, ms in run] for run in result["layer_runs"]]
    p = trt_files.profile_from_layers(src.label, src.model, runs, layers,
                                      "TensorRT IProfiler via Polygraphy's TrtRunner")
    p.backend, p.inputs, p.warmup, p.iterations = backend, describe_feeds(feeds[0]), warmup, iterations
    p.latency = summarize(result["latency_ms"])
    p.latency_runs_ms = list(result["latency_ms"])
    p.profiled_latency = summarize(result["profiled_ms"])
    p.profiled_runs_ms = list(result["profiled_ms"])
    p.notes.append("latency runs and profiled runs are two consecutive series (the profiler is attached to the "
                   "execution context for the second), not interleaved")
    return p
