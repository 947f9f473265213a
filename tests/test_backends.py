"""Backends on their own: reference vs onnxrt agreement, the FP16 emulation's rules, TensorRT's absence."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest

from helpers import FIXTURES, ROOT, model_from_text, run_ort
from surgeon import backends
from surgeon.backends import fp16 as fp16_mod
from surgeon.backends import trt as trt_mod
from surgeon.errors import BackendError, BackendUnavailableError, UsageError

ATOL, RTOL = 1e-5, 1e-5  # reference vs onnxrt on small float32 models

CONV_BN = """
<ir_version: 8, opset_import: ["" : 12]>
g (float[1,2,6,6] x) => (float[1,3,6,6] y) {
  w = Constant <value = float[3,2,1,1] {0.5, -1.0, 2.0, 0.25, -0.75, 1.5}> ()
  c = Conv (x, w)
  s = Constant <value = float[3] {1.0, 2.0, 0.5}> ()
  b = Constant <value = float[3] {0.1, -0.2, 0.3}> ()
  m = Constant <value = float[3] {0.5, -0.5, 0.0}> ()
  v = Constant <value = float[3] {2.0, 0.5, 1.0}> ()
  y = BatchNormalization <epsilon = 0.00001, momentum = 0.9> (c, s, b, m, v)
}
"""

SHAPES = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1,N] x) => (float[M] y, float[K] r, float[1,2,8,8] z) {
  s = Shape (x)
  sf = Cast <to = 1> (s)
  one = Constant <value = float {1.0}> ()
  n1 = Add (sf, one)
  ni = Cast <to = 7> (n1)
  idx = Constant <value = int64[1] {1}> ()
  len = Gather (ni, idx)
  y = ConstantOfShape <value = float[1] {0.5}> (len)
  st = Constant <value = float {0.0}> ()
  lim = Constant <value = float {3000.0}> ()
  dl = Constant <value = float {1.0}> ()
  r = Range (st, lim, dl)
  img = Constant <value = float[1,2,4,4] {1.,2.,3.,4.,5.,6.,7.,8.,9.,10.,11.,12.,13.,14.,15.,16.,1.,2.,3.,4.,5.,6.,7.,8.,9.,10.,11.,12.,13.,14.,15.,16.}> ()
  xs = ReduceMean <keepdims = 0> (x)
  im = Mul (img, xs)
  roi = Constant <value = float[0] {}> ()
  sc = Constant <value = float[4] {1.0, 1.0, 2.0, 2.0}> ()
  z = Resize <mode = "linear"> (im, roi, sc)
}
"""


def _feeds(model: onnx.ModelProto, shapes: dict, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {k: rng.uniform(-1, 1, v).astype(np.float32) for k, v in shapes.items()}


@pytest.mark.parametrize("fixture,shapes", [
    ("debug_multi_dynamic.onnx", {"a": (3, 5), "b": (3, 5)}),
    ("debug_resize_half_pixel.onnx", {"x": (1, 2, 6, 6)}),
    ("debug_fp16_overflow.onnx", {"x": (2, 16)}),
])
def test_reference_agrees_with_onnxrt(fixture, shapes):
    model = onnx.load(FIXTURES / fixture)
    feeds = _feeds(model, shapes)
    ref = backends.create("reference").session(model).run(feeds)
    ort = backends.create("onnxrt").session(model).run(feeds)
    assert list(ref) == [o.name for o in model.graph.output]
    for name in ort:
        np.testing.assert_allclose(ref[name], ort[name], atol=ATOL, rtol=RTOL, err_msg=name)


def test_reference_batchnorm_opset12_uses_inference_statistics():
    # onnx's own BatchNormalization_9 wrongly trains when 'momentum' is present; ours follows the spec.
    model = model_from_text(CONV_BN)
    feeds = _feeds(model, {"x": (1, 2, 6, 6)})
    ref = backends.create("reference").session(model).run(feeds)["y"]
    np.testing.assert_allclose(ref, run_ort(model, feeds)["y"], atol=ATOL, rtol=RTOL)


def test_reference_failure_is_backend_error():
    model = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[2,3] x, float[3,5] w) => (float[2,5] y) { y = MatMul (x, w) }""")
    sess = backends.create("reference").session(model)
    with pytest.raises(BackendError):
        sess.run({"x": np.ones((2, 3), np.float32), "w": np.ones((4, 5), np.float32)})


def test_fp16_overflow_becomes_inf_only_where_float16_overflows():
    model = onnx.load(FIXTURES / "debug_fp16_overflow.onnx")
    x = np.linspace(-1, 1, 32, dtype=np.float32).reshape(2, 16)
    got = backends.create("fp16").session(model).run({"x": x})
    want = run_ort(model, {"x": x})
    overflow = (400 * np.abs(x)) ** 2 > 65504
    assert overflow.any() and not overflow.all()
    assert np.isinf(got["y"][overflow]).all()
    np.testing.assert_allclose(got["y"][~overflow], want["y"][~overflow], rtol=2e-3, atol=0)
    np.testing.assert_allclose(got["z"], want["z"], rtol=1e-3, atol=1e-4)  # float16 rounding only
    assert got["z"].dtype == np.float32 and got["y"].dtype == np.float32  # float32 I/O


def test_fp16_keep_by_node_name_removes_the_overflow():
    model = onnx.load(FIXTURES / "debug_fp16_overflow.onnx")
    x = np.linspace(-1, 1, 32, dtype=np.float32).reshape(2, 16)
    got = backends.create("fp16", keep=["mul_sq", "sqrt_y"]).session(model).run({"x": x})
    np.testing.assert_allclose(got["y"], run_ort(model, {"x": x})["y"], rtol=2e-3, atol=0)


def test_fp16_keep_unknown_name_is_usage_error():
    model = onnx.load(FIXTURES / "debug_fp16_overflow.onnx")
    with pytest.raises(UsageError, match="Nope"):
        backends.create("fp16", keep=["Nope"]).session(model)
    backends.create("fp16", keep=["Nope"], strict=False).session(model)  # bisect's reduced models may lack it


def test_fp16_keeps_shape_computation_range_and_resize_scales_exact():
    model = model_from_text(SHAPES)
    converted, plan = fp16_mod.emulate(model)
    onnx.checker.check_model(converted, full_check=True)
    nodes = {n.op_type: n for n in converted.graph.node}
    # Range and Resize's roi/scales read the original float32 constants, not rounded copies.
    assert list(nodes["Range"].input) == ["st", "lim", "dl"]
    assert list(nodes["Resize"].input)[1:] == ["roi", "sc"]
    assert any(k["op"] == "Range" for k in plan.kept)
    # Cast targets are untouched (types never change).
    casts = [(n.input[0], onnx.helper.get_attribute_value(n.attribute[0])) for n in model.graph.node if n.op_type == "Cast"]
    for src, to in casts:
        assert any(n.op_type == "Cast" and n.input[0] == src and n.attribute[0].i == to for n in converted.graph.node)
    x = np.random.default_rng(0).uniform(0.5, 1, (1, 2048)).astype(np.float32)
    got = backends.create("fp16").session(model).run({"x": x})
    want = run_ort(model, {"x": x})
    # 2049 and 2999 are not float16 numbers: a shape or Range computed in FP16 would be off by one.
    assert got["y"].shape == want["y"].shape == (2049,)
    assert got["r"].shape == (3000,)
    np.testing.assert_allclose(got["r"], want["r"], rtol=1e-3, atol=0)
    np.testing.assert_allclose(got["z"], want["z"], rtol=2e-3, atol=2e-3)


def test_fp16_weights_are_clamped_like_tensorrt():
    model = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[3] x) => (float[3] y) {
      w = Constant <value = float[3] {100000.0, 1e-9, 2.0}> ()
      y = Mul (x, w)
    }""")
    converted, plan = fp16_mod.emulate(model)
    got = backends.create("fp16").session(model).run({"x": np.ones(3, np.float32)})["y"]
    assert got[0] == np.float32(65504.0)  # clamped, not Inf
    assert got[1] == np.float32(np.float16(2.0**-24))
    assert got[2] == 2.0
    assert any("clamped" in w for w in plan.weights) and any("raised" in w for w in plan.weights)


def test_fp16_backend_recurses_nothing_but_keeps_control_flow_valid():
    model = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[4] x, bool c) => (float[4] y) {
      k = Constant <value = float {300.0}> ()
      a = Mul (x, k)
      y = If (c) <
        then_branch = t () => (float[4] o) { o = Mul (a, k) },
        else_branch = e () => (float[4] o) { o = Add (a, k) }
      >
    }""")
    converted, plan = fp16_mod.emulate(model)
    onnx.checker.check_model(converted, full_check=True)
    assert any(k["op"] == "If" for k in plan.kept)
    x = np.array([1, 2, -1, 0.5], np.float32)
    got = backends.create("fp16").session(model).run({"x": x, "c": np.array(True)})
    np.testing.assert_allclose(got["y"], (x * 300) * 300, rtol=1e-3, atol=0)  # outer 'a' rounded, body in float32


def test_fp16_fuses_follows_its_ort_level():
    assert backends.create("fp16").fuses is True
    assert backends.create("fp16", optimization="disable").fuses is False
    assert backends.create("reference").fuses is False


def test_import_surgeon_imports_no_heavy_backend():
    code = ("import sys, surgeon, surgeon.backends, surgeon.debug.compare_run, surgeon.doctor, surgeon.debug.trt_check; "
            "print(sorted(m for m in ('tensorrt', 'polygraphy', 'onnxruntime', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("name", ["trt", "trt-rtx"])
def test_trt_missing_is_one_clear_sentence(name):
    if trt_mod.available(name):
        pytest.skip(f"{name} is installed here; the missing-TensorRT message cannot be shown")
    with pytest.raises(BackendUnavailableError) as err:
        backends.create(name)
    text = str(err.value)
    assert "not installed" in text and "pip install" in text and "--test fp16" in text and "\n" not in text


@pytest.mark.skipif(not trt_mod.available("trt"), reason="needs the 'tensorrt' Python package and an NVIDIA GPU (import tensorrt fails here)")
def test_trt_runs_fixture_within_fp32_tolerance():  # pragma: no cover - no TensorRT on the build machines
    model = onnx.load(FIXTURES / "debug_multi_dynamic.onnx")
    feeds = _feeds(model, {"a": (2, 8), "b": (2, 8)})
    got = backends.create("trt").session(model).run(feeds)
    for name, want in run_ort(model, feeds).items():
        np.testing.assert_allclose(got[name], want, atol=1e-4, rtol=1e-3)


@pytest.mark.skipif(not trt_mod.available("trt-rtx"),
                    reason="needs the 'tensorrt-rtx' package (the test extra installs it on Linux x86_64; elsewhere pip install tensorrt-rtx)")
def test_trt_rtx_builds_and_saves_engine_without_a_gpu(tmp_path):
    """TensorRT-RTX builds ahead of time with no GPU: the build phase runs for real and the
    engine is saved; only the run phase needs a GPU (and TensorRT-RTX refuses Hopper)."""
    engine = tmp_path / "cnn.engine"
    model = onnx.load(FIXTURES / "tutorial_cnn.onnx")
    session = backends.create("trt-rtx", save_engine=str(engine)).session(model)
    feeds = _feeds(model, {"input": (2, 3, 16, 16)})
    try:
        got = session.run(feeds)
    except BackendError as exc:  # no usable GPU: the failure must name the run phase, not the build
        assert "engine run" in str(exc), str(exc)
    else:  # pragma: no cover - a machine with a GPU TensorRT-RTX supports
        for name, want in run_ort(model, feeds).items():
            np.testing.assert_allclose(got[name], want, atol=1e-3, rtol=1e-3)
    assert engine.is_file() and engine.stat().st_size > 10_000


def test_trt_worker_usage_error_exits_2():
    out = subprocess.run([sys.executable, "-m", "surgeon.backends.trt_worker", "bogus"], capture_output=True,
                         text=True, cwd=ROOT)
    assert out.returncode == 2 and "usage" in out.stderr


@pytest.mark.parametrize("script,needle", [
    ("import os; os.abort()", "crashed during the engine build (SIGABRT)"),
    ("import sys; print('RuntimeError: no CUDA device', file=sys.stderr); sys.exit(1)", "TensorRT engine build failed: RuntimeError: no CUDA device"),
])
def test_trt_worker_crash_becomes_backend_error(monkeypatch, script, needle):
    # The parent's handling of a dead or failing worker, with a stand-in worker (no TensorRT here).
    monkeypatch.setattr(trt_mod, "available", lambda name="trt": True)
    monkeypatch.setattr(trt_mod, "_worker_command", lambda: [sys.executable, "-c", script])
    model = onnx.load(FIXTURES / "debug_multi_dynamic.onnx")
    session = backends.create("trt", fp16=True).session(model)
    with pytest.raises(BackendError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        session.run(_feeds(model, {"a": (2, 3), "b": (2, 3)}))
    session.close()


_STAND_IN_WORKER = """
import json, os, sys, time
for line in sys.stdin:
    req = json.loads(line)
    if req["action"] == "parse":
        os.abort()
    if req["action"] == "build":
        time.sleep(30)
    print(json.dumps({"ok": True, "result": {"action": req["action"]}}), flush=True)
"""


def test_trt_worker_survives_a_crash_and_a_hang(monkeypatch):
    # The persistent worker's parent side, with a stand-in worker (no TensorRT needed): an abort or a
    # hang inside TensorRT costs one request (WorkerCrash), and the next request gets a fresh worker.
    monkeypatch.setattr(trt_mod, "available", lambda name="trt": True)
    monkeypatch.setattr(trt_mod, "_worker_command", lambda: [sys.executable, "-c", _STAND_IN_WORKER])
    with trt_mod.TrtWorker("trt-rtx", timeout=3.0) as worker:
        assert worker.request("info") == {"action": "info"}
        with pytest.raises(trt_mod.WorkerCrash, match=r"crashed during the parse \(SIGABRT\)"):
            worker.request("parse", model="m.onnx")
        assert worker.request("info") == {"action": "info"} and worker.restarts == 1
        with pytest.raises(trt_mod.WorkerCrash, match="did not finish the build within 3 s"):
            worker.request("build", model="m.onnx")
        assert worker.request("info") == {"action": "info"} and worker.restarts == 2


def test_trt_worker_usage_error_by_path_exits_2():
    out = subprocess.run(trt_mod._worker_command() + ["bogus"], capture_output=True, text=True)
    assert out.returncode == 2 and "usage" in out.stderr
