"""compare's TF32 follow-up, bisect, isolate --target cuda-options and profile --backend onnxrt-cuda,
driven here through the onnxrt-cuda code on the CPU stand-in (TF32 emulated) and scripted backends;
the same code runs on a GPU in bench/gpu_run.py."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass

import numpy as np
import onnx
import pytest

from helpers import FIXTURES
from surgeon.backends import Backend, Session
from surgeon.backends.onnxrt import OnnxRuntimeBackend
from surgeon.backends.onnxrt_cuda import OnnxRuntimeCudaBackend
from surgeon.comparison import OutputDiff
from surgeon.debug import isolate, tf32
from surgeon.debug.bisect import bisect_model
from surgeon.debug.compare_run import OutputResult, compare, render_compare
from surgeon.debug.isolate.cuda_options import CudaOptionsTarget
from surgeon.debug.isolate.ddmin import one_at_a_time
from surgeon.debug.profile import compare_models, ort_trace, profile_model
from surgeon.debug.profile.cuda import node_sums

spec = importlib.util.spec_from_file_location("make_gpu_fixtures", FIXTURES / "make_gpu_fixtures.py")
G = importlib.util.module_from_spec(spec)
spec.loader.exec_module(G)


def stand_in(**options) -> OnnxRuntimeCudaBackend:
    return OnnxRuntimeCudaBackend(cpu_stand_in=True, **options)


# --- compare: is it TF32? -------------------------------------------------------------------------

def _result(name: str, passed: bool, max_abs: float) -> OutputResult:
    d = OutputDiff(name, passed, max_abs=max_abs)
    return OutputResult(name, passed, d, 0, [d])


@pytest.mark.parametrize("on, off, kind", [
    ([("y", False, 2e-3)], [("y", True, 1e-7)], tf32.EXPLAINED),
    ([("y", False, 2e-3)], [("y", False, 1e-3)], tf32.NOT_EXPLAINED),
    ([("y", False, 2e-3), ("z", False, 1.0)], [("y", True, 1e-7), ("z", False, 1.0)], tf32.PARTLY),
    ([("y", True, 3.5e-5)], [("y", True, 1.8e-7)], tf32.WITHIN),
    ([("y", True, 1e-7)], [("y", True, 1e-7)], tf32.NO_EFFECT),
])
def test_tf32_verdict(on, off, kind):
    got, sentence = tf32.verdict([_result(*o) for o in on], [_result(*o) for o in off])
    assert got == kind and "\n" not in sentence
    if kind == tf32.PARTLY:
        assert "explains y" in sentence and "not z" in sentence


def test_compare_says_tf32_explains_the_planted_mismatch_and_reports_both_runs():
    model = G.tf32_planted()
    feeds = [G.tf32_planted_inputs(model)]
    report = compare(model, test=stand_in(), samples=feeds)
    assert not report.passed  # the verdict stays that of the configuration asked for (TF32 on)
    [f] = report.followups
    assert f["kind"] == "tf32" and f["verdict"] == tf32.EXPLAINED and "TF32 off" in f["backend"]
    [o] = f["outputs"]
    assert o["tf32_on"]["passed"] is False and o["tf32_off"]["passed"] is True
    assert o["tf32_off"]["max_abs"] < 1e-6 < 1e-4 < o["tf32_on"]["max_abs"]
    assert json.loads(json.dumps(report.to_dict()))["followups"][0]["verdict"] == tf32.EXPLAINED

    from io import StringIO

    from rich.console import Console

    buf = StringIO()
    render_compare(report, Console(file=buf, width=200))
    text = buf.getvalue()
    assert "TF32: TF32 explains the mismatch" in text and "TF32 on -> off" in text


def test_no_follow_up_with_tf32_off_and_no_effect_without_matmul():
    model = G.tf32_planted()
    feeds = [G.tf32_planted_inputs(model)]
    assert compare(model, test=stand_in(tf32=False), samples=feeds).followups == []
    conv_free = onnx.load(FIXTURES / "debug_fp16_overflow.onnx")
    report = compare(conv_free, test=stand_in(), iterations=1)
    if any(n.op_type in ("MatMul", "Gemm", "Conv", "ConvTranspose") for n in conv_free.graph.node):
        pytest.skip("the fixture gained a TF32 op")
    assert report.followups[0]["verdict"] == tf32.NO_EFFECT


# --- bisect ---------------------------------------------------------------------------------------

class MarkingChangesOutputs(Backend):
    """A scripted backend whose outputs change when tensors are marked as outputs, as a fusing GPU
    provider's do (a fusion that marking prevents rounds differently): every output of a model
    with more outputs than ``original`` is nudged by ``noise`` relative, deterministic per name."""

    fuses = True
    name = "marking-noise"

    def __init__(self, inner: Backend, original: int, noise: float):
        self.inner, self.original, self.noise = inner, original, noise

    def describe(self) -> str:
        return f"{self.inner.describe()} with marking noise {self.noise:g}"

    def session(self, model: onnx.ModelProto) -> Session:
        inner = self.inner.session(model)
        marked = len(model.graph.output) > self.original
        noise = self.noise

        @dataclass
        class S(Session):
            output_names = inner.output_names

            def run(self, feeds):
                out = inner.run(feeds)
                if not marked:
                    return out
                return {k: (v * np.float32(1 + noise * ((hash(k) % 7) - 3) / 3)).astype(v.dtype)
                        if isinstance(v, np.ndarray) and v.dtype == np.float32 else v for k, v in out.items()}

        return S()


@pytest.mark.parametrize("noise", [0.0, 2e-4])
def test_bisect_names_the_matmul_that_tf32_breaks(noise, tmp_path):
    """Marking noise below the tolerance (rtol 1e-3) leaves the answer alone; noise at or above it
    is issue 18's noise-aware bisect, which measures it first."""
    model = G.tf32_planted()
    samples = [G.tf32_planted_inputs(model)]
    test = stand_in() if not noise else MarkingChangesOutputs(stand_in(), len(model.graph.output), noise)
    result = bisect_model(model, samples, ref=OnnxRuntimeBackend(), test=test, outdir=tmp_path)
    assert result.failed
    assert [c["node"] for c in result.culprits] == [G.CULPRIT]
    assert result.culprits[0]["introduced"] is True
    assert result.reduced_nodes == [G.CULPRIT]


def test_bisect_finds_nothing_with_tf32_off(tmp_path):
    model = G.tf32_planted()
    result = bisect_model(model, [G.tf32_planted_inputs(model)], ref=OnnxRuntimeBackend(), test=stand_in(tf32=False))
    assert not result.failed


# --- isolate --target cuda-options ------------------------------------------------------------------

def test_isolate_names_tf32_in_fewer_calls_than_one_at_a_time(tmp_path):
    model = G.tf32_planted()
    samples = [G.tf32_planted_inputs(model)]
    target = CudaOptionsTarget(model, samples, test=stand_in(nhwc=True))
    assert target.choices[:3] == ["tf32=1", "algo-search=exhaustive", "nhwc=1"]
    assert len(target.choices) > 3, "ONNX Runtime's optimizers that fire are choices too"
    result, report = isolate.run(target, str(tmp_path), confirm_repeats=1)
    assert report["status"] == "culprits"
    assert [[c["choice"] for c in s] for s in report["culprit_sets"]] == [["tf32=1"]]
    found, naive_calls = one_at_a_time(len(target.choices), target)
    assert found == [0] and result.oracle_calls <= naive_calls
    avoid = (tmp_path / "cuda_options.txt").read_text()
    assert "--test onnxrt-cuda:tf32=0,algo-search=exhaustive,nhwc=1" in avoid
    assert "'use_tf32': '0'" in avoid


def test_isolate_without_a_problem_says_so(tmp_path):
    model = G.tf32_planted()
    target = CudaOptionsTarget(model, [G.tf32_planted_inputs(model)], test=stand_in(tf32=False))
    _, report = isolate.run(target, str(tmp_path))
    assert report["status"] == "no-divergence"


def test_isolate_cli_rejects_a_test_backend_that_is_not_cuda(tmp_path):
    from surgeon.errors import UsageError

    with pytest.raises(UsageError, match="onnxrt-cuda configuration"):
        CudaOptionsTarget(G.tf32_planted(), [G.tf32_planted_inputs(G.tf32_planted())], test="fp16")


# --- profile ----------------------------------------------------------------------------------------

def _trace_with_kernels() -> list[dict]:
    """A trace as a CUPTI build writes it: Kernel events right after the node that launched them,
    their ts rewritten to just after the node's, their dur the GPU's time."""
    def node(name, op, ts, dur, provider="CUDAExecutionProvider", idx=0):
        return {"cat": "Node", "name": f"{name}_kernel_time", "ph": "X", "ts": ts, "dur": dur,
                "args": {"op_name": op, "provider": provider, "node_index": str(idx)}}

    def kern(name, ts, dur):
        return {"cat": "Kernel", "name": name, "ph": "X", "ts": ts, "dur": dur, "args": {"op_name": "?"}}

    ev = []
    for r, base in enumerate((1000, 2000)):
        ev += [node("conv1", "FusedConv", base + 10, 5, idx=0), kern("implicit_gemm", base + 11, 300),
               kern("bias_add", base + 12, 20),
               {"cat": "Node", "name": "conv1_fence_after", "ph": "X", "ts": base + 16, "dur": 0, "args": {}},
               node("shape", "Shape", base + 20, 3, provider="CPUExecutionProvider", idx=1),
               node("mm", "MatMul", base + 30, 4, idx=2), kern("sm90_gemm", base + 31, 500 + r),
               {"cat": "Session", "name": "model_run", "ph": "X", "ts": base, "dur": 900}]
    return ev


def test_kernel_events_are_summed_into_the_node_that_launched_them(tmp_path):
    events = _trace_with_kernels()
    assert ort_trace.has_gpu_kernels(events) and not ort_trace.has_gpu_kernels([e for e in events if e["cat"] != "Kernel"])
    trace = ort_trace.parse_trace(events)
    assert len(trace.runs) == 2
    k = {e.name: e for e in trace.runs[1].kernels}
    assert (k["conv1"].gpu_us, k["conv1"].gpu_kernels) == (320, 2)
    assert (k["mm"].gpu_us, k["mm"].gpu_kernels) == (501, 1)
    assert (k["shape"].gpu_us, k["shape"].dur) == (0, 3)
    path = tmp_path / "t.json"
    path.write_text(json.dumps(events))
    # GPU time for CUDA nodes, host time for the CPU node; the launch times are not counted
    assert node_sums(str(path), warmup=0, gpu_kernels=True) == [pytest.approx(0.823), pytest.approx(0.824)]
    assert node_sums(str(path), warmup=1, gpu_kernels=False) == [pytest.approx(0.012)]


def test_profile_on_the_stand_in_takes_the_synchronized_path_and_says_what_it_is():
    p = profile_model(FIXTURES / "tutorial_cnn.onnx", backend="onnxrt-cuda:tf32=0", iterations=4, warmup=1,
                      cpu_stand_in=True)
    assert "CPU STAND-IN" in p.backend
    t = p.gpu_timing
    assert t["method"] == "synchronized-node-events" and t["gpu"] is False
    assert t["node_sum_ms"] > 0 and t["latency_ms"] > 0 and t["ratio"] == pytest.approx(t["node_sum_ms"] / t["latency_ms"])
    assert p.kernels and any(k.how != "unmapped" for k in p.kernels)
    assert any("add up to" in n for n in p.notes)
    assert json.loads(json.dumps(p.to_dict()))["gpu_timing"]["method"] == "synchronized-node-events"


def test_fix_profile_on_the_stand_in_compares_two_models_on_the_cuda_path():
    c = compare_models(FIXTURES / "tutorial_cnn.onnx", FIXTURES / "tutorial_cnn.onnx", backend="onnxrt-cuda",
                       iterations=6, warmup=1, profile=False, cpu_stand_in=True)
    assert c.a.latency.runs == 6 and c.b.latency.runs == 6
    assert "CPU STAND-IN" in c.a.backend
    assert c.difference.ci_low <= c.difference.ratio <= c.difference.ci_high
