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


def _traces(runs: int = 3, out_copy: bool = False):
    """Runs of a 3-node model: conv (2 kernels), a CPU node, gemm (1 kernel), an input copy
    before the first node (with ``out_copy``, an 8 us output copy after the last). Node windows
    10 us with 20 us gaps; launches 2-8 us into them."""
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
        if out_copy:  # launched after the last node's window, on ORT's clock t + 95
            corr += 1
            kin.append({"cat": "cuda_runtime", "name": "cudaMemcpyAsync", "ph": "X", "ts": k_us(t + 95), "dur": 1,
                        "args": {"correlation": corr}})
            kin.append({"cat": "gpu_memcpy", "name": "Memcpy DtoH (Device -> Pageable)", "ph": "X", "ts": k_us(gpu_t),
                        "dur": 8.0, "args": {"correlation": corr}})
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


# --- the same attribution as profile --backend onnxrt-cuda:timing=cupti uses it ---------------------------

def test_the_bench_calls_surgeons_attribution_not_a_copy():
    from surgeon.debug.profile import cupti

    assert gpm.attribute_kernels is cupti.attribute_kernels and gpm.gpu_activity is cupti.gpu_activity


def test_copies_no_node_launched_are_rows_of_their_own_and_the_rows_add_up_to_the_gpus_work():
    from surgeon.debug.profile import cupti
    from surgeon.debug.profile.cuda import cupti_rows

    kineto, ort, sums = _traces(out_copy=True)
    att = cupti.attribute(kineto, ort, ORT_START_NS, runs=3)
    assert abs(att.offset_us - (-KINETO_AHEAD_US)) <= 3
    assert att.run_of == sorted(att.run_of) and set(att.run_of) == {0, 1, 2}  # every activity in its run's mark
    node_us, extra, row_sums = cupti_rows(att)
    # per node: conv's two kernels, gemm's one; the CPU node launched nothing on the GPU
    conv = {k: v for k, v in node_us.items() if k[0] == "conv"}
    gemm = {k: v for k, v in node_us.items() if k[0] == "gemm"}
    assert len(conv) == 3 and all(v == (65.0, 2) for v in conv.values())
    assert len(gemm) == 3 and all(v == (30.0, 1) for v in gemm.values())
    assert not any(k[0] == "shape" for k in node_us)
    for run in extra:
        by = {r.name: r.dur_ms for r in run}
        assert by == {cupti.COPY_IN: pytest.approx(0.012), cupti.COPY_OUT: pytest.approx(0.008)}  # no "other" row
        assert all(r.op_type == "copy" for r in run)
    # kernels 95 us + copies 20 us (the GPU's busy time) + the CPU node's 10 us host time
    assert row_sums == [pytest.approx(s + 0.020) for s in sums] == [pytest.approx(0.125)] * 3
    busy = cupti.gpu_activity(kineto, runs=3)["busy_ms"]
    assert row_sums[0] == pytest.approx(busy + 0.010)


def test_gpu_work_launched_outside_nodes_that_is_no_copy_gets_its_own_row():
    from surgeon.debug.profile import cupti

    kineto, ort, _ = _traces(runs=2)
    for e in kineto["traceEvents"]:
        if e.get("cat") == "gpu_memcpy":
            e.update(cat="gpu_memset", name="Memset (Device)")
    att = cupti.attribute(kineto, ort, ORT_START_NS, runs=2)
    assert cupti.session_rows_us(att) == [{cupti.COPY_IN: 0.0, cupti.COPY_OUT: 0.0, cupti.OTHER_GPU: 12.0}] * 2


def test_the_profile_tables_carry_the_copy_rows_beside_the_nodes(tmp_path):
    """_fill_from_trace with the attribution: node times are CUPTI's GPU times, the copies are
    kernels of origin 'session' (not 'unmapped'), and the top-level rows add up to the run sums."""
    import json

    from onnx import TensorProto, helper

    from surgeon.debug.profile import cupti
    from surgeon.debug.profile.cuda import cupti_rows
    from surgeon.debug.profile.onnxrt import Source, _fill_from_trace
    from surgeon.debug.profile.result import ModelProfile

    kineto, ort, _ = _traces(out_copy=True)
    att = cupti.attribute(kineto, ort, ORT_START_NS, runs=3)
    node_us, extra, row_sums = cupti_rows(att)
    trace = tmp_path / "ort.json"
    trace.write_text(json.dumps(ort))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["a"], name="conv"),
                           helper.make_node("Identity", ["a"], ["b"], name="shape"),
                           helper.make_node("Relu", ["b"], ["y"], name="gemm")], "g", [x], [y])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    p = ModelProfile(model="m", backend="onnxrt-cuda", source="", nodes=3, inputs="x[1, 4]", threads=0,
                     warmup=0, iterations=3)
    _fill_from_trace(p, Source("m", model, None), str(trace), None, 0, "onnxrt-cuda", gpu_kernels=True,
                     node_us=node_us, extra_rows=extra)
    k = {r.name: r for r in p.kernels}
    assert k["conv"].median_ms == pytest.approx(0.065) and k["gemm"].median_ms == pytest.approx(0.030)
    assert k["shape"].median_ms == pytest.approx(0.010)  # the CPU node: its host time
    assert k[cupti.COPY_IN].how == k[cupti.COPY_OUT].how == "session" and k[cupti.COPY_IN].origin == []
    assert k[cupti.COPY_OUT].median_ms == pytest.approx(0.008)
    assert not any("could not be traced back" in n for n in p.notes)
    assert sum(r.median_ms for r in p.kernels if r.parent is None) == pytest.approx(row_sums[0])
