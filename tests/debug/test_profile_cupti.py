"""``profile --backend onnxrt-cuda:timing=cupti``: how the option is spelled and checked, and the
refusals where it cannot run (no PyTorch, no GPU, the CPU stand-in). The attribution itself is
tested on synthetic traces in tests/test_gpu_profile_methods.py; it runs for real only on a GPU."""

from __future__ import annotations

import importlib.util
import json

import pytest

from helpers import FIXTURES
from surgeon import backends
from surgeon.debug.profile import check_backend, cuda, cupti, profile_model
from surgeon.errors import BackendUnavailableError, UsageError


@pytest.mark.parametrize("spec, expected", [
    ("onnxrt-cuda", ("onnxrt-cuda", "auto")),
    ("onnxrt-cuda:timing=cupti", ("onnxrt-cuda", "cupti")),
    ("onnxrt-cuda:tf32=0,timing=CUPTI,nhwc=1", ("onnxrt-cuda:tf32=0,nhwc=1", "cupti")),
    ("onnxrt-cuda:timing=synchronized", ("onnxrt-cuda", "synchronized")),
])
def test_timing_is_taken_off_before_the_backend_sees_its_options(spec, expected):
    assert cuda.split_timing(spec) == expected
    assert check_backend(spec) == spec


def test_an_unknown_timing_is_a_usage_error_naming_the_choices():
    with pytest.raises(UsageError, match="timing=kernels is not one of auto, synchronized, cupti"):
        check_backend("onnxrt-cuda:timing=kernels")


def test_timing_is_profiles_option_not_the_backends():
    """compare/bisect take the backend itself: there timing means nothing and is refused."""
    with pytest.raises(UsageError, match="no option 'timing'"):
        backends.create("onnxrt-cuda:timing=cupti", cpu_stand_in=True)


def test_the_profile_cli_checks_timing_before_anything_runs(capsys):
    import cli

    with pytest.raises(SystemExit) as stop:
        cli.main(["profile", str(FIXTURES / "tutorial_cnn.onnx"), "--backend", "onnxrt-cuda:timing=gpu"])
    assert stop.value.code == 2 and "timing=gpu is not one of" in capsys.readouterr().err


def _no_torch(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))


def test_without_pytorch_asking_for_cupti_is_one_sentence_saying_what_to_install(monkeypatch):
    _no_torch(monkeypatch)
    with pytest.raises(BackendUnavailableError) as err:
        cuda.check_timing("cupti")
    text = str(err.value)
    assert "PyTorch is not installed" in text and "pip install torch" in text and "\n" not in text
    cuda.check_timing("auto")  # the default never needs PyTorch
    cuda.check_timing("synchronized")


def test_without_pytorch_profile_refuses_before_any_run(monkeypatch):
    """The whole path, with the CUDA backend replaced by the CPU stand-in (this machine has no
    GPU build): the refusal comes before a session is made or a run is timed."""
    _no_torch(monkeypatch)
    made = []
    stand_in = cuda.backend_for

    def backend_for(spec, cpu_stand_in=False):
        made.append(spec)
        b = stand_in(spec, cpu_stand_in=True)
        b.ort_session = lambda *a, **k: pytest.fail("a session was made before the refusal")
        return b

    monkeypatch.setattr(cuda, "backend_for", backend_for)
    with pytest.raises(BackendUnavailableError, match="install a CUDA build of PyTorch"):
        profile_model(FIXTURES / "tutorial_cnn.onnx", backend="onnxrt-cuda:tf32=0,timing=cupti", iterations=2)
    assert made == ["onnxrt-cuda:tf32=0,timing=cupti"]


def test_the_cpu_stand_in_has_no_gpu_kernels_for_cupti():
    with pytest.raises(UsageError, match="CPU stand-in runs none"):
        profile_model(FIXTURES / "tutorial_cnn.onnx", backend="onnxrt-cuda:timing=cupti", iterations=2,
                      cpu_stand_in=True)


def test_the_worker_without_a_gpu_pytorch_says_why_as_an_unavailable_backend(tmp_path):
    """The real worker process: where PyTorch is missing or sees no GPU (this machine), it exits
    with its one sentence before loading anything, and the parent refuses with it (exit 2)."""
    spec = {"model": str(FIXTURES / "tutorial_cnn.onnx"), "inputs": str(tmp_path / "none.npz"), "spec": "onnxrt-cuda",
            "timing": "cupti", "warmup": 1, "iterations": 1, "folder": str(tmp_path), "prefix": str(tmp_path / "p"),
            "optimized": str(tmp_path / "o.onnx"), "answer": str(tmp_path / "a.json")}
    try:
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine's PyTorch sees a GPU: the worker would profile, not refuse")
    except ImportError:
        pass
    with pytest.raises(BackendUnavailableError) as err:
        cuda.run_worker(spec, timeout=120)
    assert "timing=cupti" in str(err.value) and "install a CUDA build of PyTorch" in str(err.value)
    assert not (tmp_path / "a.json").exists()


def test_the_synchronized_timing_can_be_asked_for_by_name():
    p = profile_model(FIXTURES / "tutorial_cnn.onnx", backend="onnxrt-cuda:timing=synchronized", iterations=2,
                      warmup=1, cpu_stand_in=True)
    assert p.gpu_timing["method"] == cuda.SYNCHRONIZED
    assert json.loads(json.dumps(p.to_dict()))["gpu_timing"]["ratio"] > 0
    assert cupti.COPY_IN not in {k.name for k in p.kernels}
