"""The pure parts of the GPU run's bench code: CUPTI kernels (in Kineto's trace format) attributed to
the ONNX Runtime node that launched them across two clocks, the GPU's busy time per run, and the
rendering of an output that is all NaN/Inf (the first GPU run printed such an output as '0x tol, max abs 0')."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from helpers import ROOT

BENCH = ROOT / "bench"


def _load(name: str):
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


gpm = _load("gpu_profile_methods")
common = _load("gpu_common")

ORT_START_NS = 1_700_000_000_000_000_000
KINETO_AHEAD_US = 37  # Kineto's clock reads 37 us later than ONNX Runtime's for the same instant


def _traces(runs: int = 3):
    """Two runs' worth of a 3-node model: conv (2 kernels), a CPU node, gemm (1 kernel), an input
    copy before the first node. Node windows 10 us with 20 us gaps; launches 2-8 us into them."""
    ort, kin = [], []
    base_ns = ORT_START_NS - 5_000_000  # Kineto's own base: 5 ms before ORT's profiling start
    corr = 0
    expected_sums = []

    def k_us(ort_us: float) -> float:  # an instant on ORT's clock, as Kineto's ts
        return (ORT_START_NS + ort_us * 1000 - base_ns) / 1000 + KINETO_AHEAD_US

    for r in range(runs):
        t = 1000 + r * 500
        ort.append({"cat": "Session", "name": "model_run", "ph": "X", "ts": t, "dur": 200})
        kin.append({"cat": "user_annotation", "name": f"surgeon_run_{r}", "ph": "X", "ts": k_us(t - 5), "dur": 215})
        kin.append({"cat": "gpu_user_annotation", "name": f"surgeon_run_{r}", "ph": "X", "ts": k_us(t + 90), "dur": 100})
        nodes = [("conv", "CUDAExecutionProvider", t + 20, [(3, 40.0), (7, 25.0)]),
                 ("shape", "CPUExecutionProvider", t + 50, []),
                 ("gemm", "CUDAExecutionProvider", t + 80, [(4, 30.0)])]
        gpu_t = t + 100
        corr += 1  # the input copy: launched before any node
        kin.append({"cat": "cuda_runtime", "name": "cudaMemcpyAsync", "ph": "X", "ts": k_us(t + 2), "dur": 1,
                    "args": {"correlation": corr}})
        kin.append({"cat": "gpu_memcpy", "name": "Memcpy HtoD", "ph": "X", "ts": k_us(t + 3), "dur": 12.0,
                    "args": {"correlation": corr}})
        total = 0.0
        for name, provider, ts, kernels in nodes:
            ort.append({"cat": "Node", "name": f"{name}_kernel_time", "ph": "X", "ts": ts, "dur": 10,
                        "args": {"op_name": name, "provider": provider}})
            if provider == "CPUExecutionProvider":
                total += 10
            for at, dur in kernels:
                corr += 1
                kin.append({"cat": "cuda_driver", "name": "cuLaunchKernel", "ph": "X", "ts": k_us(ts + at), "dur": 1,
                            "args": {"correlation": corr}})
                kin.append({"cat": "kernel", "name": f"{name}_k", "ph": "X", "ts": k_us(gpu_t), "dur": dur,
                            "args": {"correlation": corr}})
                gpu_t += dur + 1
                total += dur
        expected_sums.append(total / 1000.0)
    return {"baseTimeNanoseconds": base_ns, "traceEvents": kin}, ort, expected_sums


def test_kernels_go_to_the_node_that_launched_them_across_two_clocks():
    kineto, ort, sums = _traces()
    got = gpm.attribute_kernels(kineto, ort, ORT_START_NS, runs=3)
    # every launch 2-8 us into a 10 us window: offsets within 2 us of the true one hold them all
    assert abs(got["offset_us"] - (-KINETO_AHEAD_US)) <= 3, got
    assert got["attributed"] == 9 and got["with_launch_record"] == 12  # 3 copies before the first node stay out
    assert got["inside_at_zero_offset"] < 0.5
    assert got["node_sum_ms"] == pytest.approx(sums[0], abs=1e-9)  # conv 65 + shape 10 (host) + gemm 30 us
    assert got["unattributed_gpu_ms_per_run"] == pytest.approx(0.012)


def test_gpu_busy_time_per_run_is_the_union_of_kernels_and_copies():
    kineto, _, _ = _traces()
    act = gpm.gpu_activity(kineto, runs=3)
    assert act["runs_marked"] == 3 and act["activities_per_run"] == 4
    assert act["kernel_ms"] == pytest.approx(0.095) and act["copy_ms"] == pytest.approx(0.012)
    assert act["busy_ms"] == pytest.approx(0.107)
    assert act["span_ms"] > act["busy_ms"]  # the copy, then the kernels 97 us later


def test_closest_method_is_judged_on_a_log_scale():
    row = {"methods": {"synchronized-node-events": {"ratio": 2.0}, "host-node-events": {"ratio": 0.45},
                       "cupti-kernels-per-node": {"skipped": "no torch"}}}
    assert gpm.closest(row) == "synchronized-node-events"  # log 2 < |log 0.45|


def test_an_all_nan_output_is_described_by_its_count_not_by_a_zero_error():
    import numpy as np

    ref = np.ones((4, 8), np.float32)
    nan = np.full_like(ref, np.nan)
    s = common.stats(ref, nan, 1e-2, 1e-2)
    assert not s["passed"] and s["max_abs"] == 0.0  # what the first GPU run printed as '0x tol, max abs 0'
    assert common.error_phrase(s) == "32/32 non-finite"
    half = nan.copy()
    half[:2] = 1.5
    assert common.error_phrase(common.stats(ref, half, 1e-2, 1e-2)).startswith("16/32 non-finite; finite elements")
    finite = common.stats(ref, ref * 1.5, 1e-2, 1e-2)
    per = {"a": finite, "b": s}
    assert common.worst_output(per) == "b"  # NaN/Inf ranks before any finite error
