"""The onnxrt-cuda backend: options, the refusal without a CUDA build, the fallback check, the CPU
stand-in, TF32 emulation; and, where a GPU is there, real CUDA runs (skipped here, saying why)."""

from __future__ import annotations

import importlib.util

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from helpers import FIXTURES
from surgeon import backends
from surgeon.backends import onnxrt_cuda as cuda
from surgeon.backends.onnxrt import OnnxRuntimeBackend
from surgeon.comparison import diff_outputs
from surgeon.errors import BackendUnavailableError, UsageError

spec = importlib.util.spec_from_file_location("make_gpu_fixtures", FIXTURES / "make_gpu_fixtures.py")
G = importlib.util.module_from_spec(spec)
spec.loader.exec_module(G)

HAS_CUDA_BUILD = cuda.unavailable_reason() is None
CUDA_OK, CUDA_WHY = cuda.cuda_runs() if HAS_CUDA_BUILD else (False, "onnxruntime here has no CUDAExecutionProvider "
                                                              "(the CPU build); GPU tests need onnxruntime-gpu and a GPU")
needs_gpu = pytest.mark.skipif(not CUDA_OK, reason=f"no CUDA session can start here: {CUDA_WHY}"[:300])
no_cuda_build = pytest.mark.skipif(HAS_CUDA_BUILD, reason="onnxruntime here has the CUDA provider: the refusal cannot be shown")


# --- options --------------------------------------------------------------------------------------

def test_options_parse_from_the_name_and_round_trip():
    opts = cuda.options_from(cuda.parse_options("tf32=0, algo-search=HEURISTIC,nhwc=on,device=1,opt=basic"))
    assert opts == cuda.CudaOptions(tf32=False, algo_search="heuristic", nhwc=True, device=1, optimization="basic")
    assert opts.provider_options() == {"device_id": "1", "cudnn_conv_algo_search": "HEURISTIC", "use_tf32": "0",
                                       "prefer_nhwc": "1"}
    assert cuda.options_from(cuda.parse_options(opts.spec())) == opts
    assert cuda.CudaOptions() == cuda.CudaOptions(tf32=True, algo_search="exhaustive", nhwc=False, device=0,
                                                  optimization="all")  # ONNX Runtime's own defaults


@pytest.mark.parametrize("text, needle", [
    ("tf32=maybe", "not a switch"), ("algo-search=fast", "not one of exhaustive, heuristic, default"),
    ("opt=max", "not one of disable"), ("device=-1", "not a CUDA device id"), ("device=gpu0", "not a whole number"),
    ("tf32", "needs a value"), ("tf16=1", "has no option 'tf16'"),
])
def test_bad_options_are_one_sentence_usage_errors(text, needle):
    with pytest.raises(UsageError) as err:
        cuda.options_from(cuda.parse_options(text))
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_options_after_the_name_only_where_the_backend_takes_them():
    with pytest.raises(UsageError, match="takes no options"):
        backends.create("fp16:keep=Add")
    b = backends.create("onnxrt-cuda:tf32=0,nhwc=1", cpu_stand_in=True)
    assert (b.options.tf32, b.options.nhwc, b.options.algo_search) == (False, True, "exhaustive")
    again = backends.create(b.spec(), cpu_stand_in=True)
    assert again.options == b.options and again.describe() == b.describe()


def test_default_algo_search_warns_that_it_is_slow(caplog):
    with caplog.at_level("WARNING"):
        backends.create("onnxrt-cuda:algo-search=default", cpu_stand_in=True)
    assert "slower" in caplog.text and "algo-search=default" in caplog.text


# --- the refusal and the fallback check -------------------------------------------------------------

@no_cuda_build
def test_without_a_cuda_build_asking_is_one_sentence_naming_the_install():
    with pytest.raises(BackendUnavailableError) as err:
        backends.create("onnxrt-cuda")
    text = str(err.value)
    assert "\n" not in text and "onnxruntime-gpu" in text and "pip uninstall -y onnxruntime" in text
    assert "cuDNN" in text and "--test fp16" in text


@no_cuda_build
@pytest.mark.parametrize("argv", [
    ["compare", "fixtures/tutorial_cnn.onnx", "--test", "onnxrt-cuda"],
    ["compare", "fixtures/tutorial_cnn.onnx", "--test", "onnxrt-cuda:tf32=0"],
    ["doctor", "fixtures/tutorial_cnn.onnx", "-o", "{tmp}/f.onnx", "--test", "onnxrt-cuda"],
    ["bisect", "fixtures/tutorial_cnn.onnx", "--test", "onnxrt-cuda", "-o", "{tmp}/b"],
    ["isolate", "fixtures/tutorial_cnn.onnx", "--target", "cuda-options", "-o", "{tmp}/i"],
    ["profile", "fixtures/tutorial_cnn.onnx", "--backend", "onnxrt-cuda", "--iterations", "2"],
    ["fix", "fixtures/tutorial_cnn.onnx", "-o", "{tmp}/x.onnx", "--profile", "--profile-on", "onnxrt-cuda"],
])
def test_every_command_refuses_in_one_line_with_exit_2(argv, tmp_path, capsys, monkeypatch):
    import cli
    from helpers import ROOT

    monkeypatch.chdir(ROOT)
    rc = cli.main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    err = capsys.readouterr().err
    lines = [l for l in err.splitlines() if l.strip() and not l.startswith("WARNING")]
    assert rc == 2, err
    assert len(lines) == 1 and "onnxruntime-gpu" in lines[0] and "--test fp16" in lines[0], err
    assert not list(tmp_path.iterdir()), "nothing is written before the refusal"


def test_a_session_that_falls_back_to_the_cpu_is_refused(monkeypatch):
    """A CPU-only onnxruntime handed the CUDA provider warns and runs on the CPU: exactly the
    silent fallback an onnxruntime-gpu without a usable GPU does. The backend must refuse it."""
    monkeypatch.setattr(cuda, "unavailable_reason", lambda: None)  # as if the GPU build were installed
    backend = cuda.OnnxRuntimeCudaBackend()
    with pytest.raises(BackendUnavailableError) as err:
        backend.session(onnx.load(FIXTURES / "tutorial_cnn.onnx"))
    text = str(err.value)
    assert "did not start its CUDA execution provider" in text and "CPUExecutionProvider" in text
    assert "never reported as a GPU run" in text and "\n" not in text


@pytest.mark.parametrize("backend, needle", [("onnxrt-cuda:tf32=2", "not a switch"),
                                             ("cuda", "unknown profiling backend 'cuda'")])
def test_profile_backend_names_are_checked_before_anything_runs(backend, needle, capsys):
    import cli

    with pytest.raises(SystemExit) as stop:
        cli.main(["profile", str(FIXTURES / "tutorial_cnn.onnx"), "--backend", backend])
    assert stop.value.code == 2 and needle in capsys.readouterr().err


# --- the CPU stand-in and TF32 emulation ------------------------------------------------------------

def test_stand_in_runs_the_cuda_code_on_the_cpu_and_says_so():
    b = cuda.OnnxRuntimeCudaBackend(cpu_stand_in=True, tf32=False)
    assert "CPU STAND-IN" in b.describe() and "not a GPU run" in b.describe()
    model = onnx.load(FIXTURES / "tutorial_cnn.onnx")
    s = b.session(model)
    assert s.on_gpu is False and s.providers == ["CPUExecutionProvider"]
    assert s.placement["CPUExecutionProvider"]["nodes"] >= 1  # parsed from ONNX Runtime's verbose log
    feeds = {"input": np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)}
    ref = OnnxRuntimeBackend().session(model).run(feeds)
    assert all(d.passed for d in diff_outputs(ref, s.run(feeds), atol=1e-6, rtol=1e-6))


def test_placement_is_read_from_onnx_runtimes_log():
    log = ("2026 [V:onnxruntime:, session_state.cc:1345 VerifyEachNodeIsAssignedToAnEp]  Node(s) placed on "
           "[CUDAExecutionProvider]. Number of nodes: 3\n"
           "2026 [V:onnxruntime:, session_state.cc:1347 VerifyEachNodeIsAssignedToAnEp]   Conv (conv1)\n"
           "2026 [V:onnxruntime:, session_state.cc:1347 VerifyEachNodeIsAssignedToAnEp]   MemcpyToHost (Memcpy)\n"
           "2026 [V:onnxruntime:, session_state.cc:1345 VerifyEachNodeIsAssignedToAnEp]  Node(s) placed on "
           "[CPUExecutionProvider]. Number of nodes: 1\n"
           "2026 [V:onnxruntime:, session_state.cc:1347 VerifyEachNodeIsAssignedToAnEp]   Shape (shape_of_x)\n"
           "2026 [W:onnxruntime:, session_state.cc:1359 VerifyEachNodeIsAssignedToAnEp] Some nodes were not assigned\n")
    got = cuda.parse_placement(log)
    assert got["CUDAExecutionProvider"] == {"nodes": 3, "ops": [("Conv", "conv1"), ("MemcpyToHost", "Memcpy")]}
    assert got["CPUExecutionProvider"] == {"nodes": 1, "ops": [("Shape", "shape_of_x")]}
    assert cuda.parse_placement("All nodes placed on [CUDAExecutionProvider]. Number of nodes: 12") == {
        "CUDAExecutionProvider": {"nodes": 12, "ops": []}}


def _tf32_samples() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    edges = np.array([0.0, -0.0, 1.0, -1.0, 1 + 2.0 ** -11, 1 + 2.0 ** -10, 1 - 2.0 ** -12, 3.0e30, -7.5e-30,
                      1.17549435e-38, 65504.0, 1.0 / 3.0], dtype=np.float32)
    return [edges] + [(rng.standard_normal(16) * 10.0 ** rng.integers(-20, 20, 16)).astype(np.float32) for _ in range(20)]


@pytest.mark.parametrize("x", _tf32_samples(), ids=lambda a: f"{a.size}values")
def test_tf32_emulation_rounds_to_a_10_bit_mantissa(x):
    values = list(x)
    g = helper.make_graph([helper.make_node("MatMul", ["a", "I"], ["y"])], "t",
                          [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, len(values)])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, len(values)])],
                          [onnx.numpy_helper.from_array(np.eye(len(values), dtype=np.float32), "I")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    y = OnnxRuntimeBackend(optimization="disable").session(cuda.emulate_tf32(m)).run({"a": x[None]})["y"][0]
    bits = y.view(np.uint32)
    assert np.all(bits & 0x1FFF == 0), "13 low mantissa bits are zero: 10 remain"
    assert np.all(np.abs(y.astype(np.float64) - x) <= np.abs(x.astype(np.float64)) * 2.0 ** -11 + 1e-45)


def test_stand_in_with_tf32_misses_the_tolerance_only_on_the_planted_model():
    model = G.tf32_planted()
    feeds = G.tf32_planted_inputs(model)
    ref = OnnxRuntimeBackend().session(model).run(feeds)
    on = cuda.OnnxRuntimeCudaBackend(cpu_stand_in=True).session(model).run(feeds)
    off = cuda.OnnxRuntimeCudaBackend(cpu_stand_in=True, tf32=False).session(model).run(feeds)
    assert not diff_outputs(ref, on)[0].passed  # float32 defaults atol 1e-4 / rtol 1e-3
    assert diff_outputs(ref, off, atol=1e-6, rtol=1e-6)[0].passed


# --- a real GPU (skipped where there is none) -------------------------------------------------------

@needs_gpu
def test_on_a_gpu_tf32_is_what_breaks_the_planted_model():  # pragma: no cover - no GPU on the build machines
    model = G.tf32_planted()
    feeds = G.tf32_planted_inputs(model)
    ref = OnnxRuntimeBackend().session(model).run(feeds)
    s_on = backends.create("onnxrt-cuda").session(model)
    s_off = backends.create("onnxrt-cuda:tf32=0").session(model)
    assert s_on.on_gpu and "CUDAExecutionProvider" in s_on.providers
    assert s_on.provider_options.get("use_tf32") == "1" and s_off.provider_options.get("use_tf32") == "0"
    assert not diff_outputs(ref, s_on.run(feeds))[0].passed
    assert diff_outputs(ref, s_off.run(feeds))[0].passed


@needs_gpu
def test_on_a_gpu_a_float16_model_runs_float16_kernels():  # pragma: no cover - no GPU on the build machines
    g = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["y"])], "h",
                          [helper.make_tensor_value_info("a", TensorProto.FLOAT16, [4, 8]),
                           helper.make_tensor_value_info("b", TensorProto.FLOAT16, [8, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [4, 4])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    s = backends.create("onnxrt-cuda").session(m)
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((4, 8)).astype(np.float16), rng.standard_normal((8, 4)).astype(np.float16)
    y = s.run({"a": a, "b": b})["y"]
    assert y.dtype == np.float16 and "CPUExecutionProvider" not in s.placement
    np.testing.assert_allclose(y.astype(np.float32), a.astype(np.float32) @ b.astype(np.float32), atol=1e-2, rtol=1e-2)
