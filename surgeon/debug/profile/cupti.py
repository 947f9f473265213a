"""CUPTI's GPU activity (through PyTorch's profiler) attributed to ONNX Runtime's nodes: the
``timing=cupti`` method of ``profile --backend onnxrt-cuda`` and the CUPTI columns of the GPU
run's ``profile-methods`` part (bench/gpu_profile_methods.py).

Why: the PyPI onnxruntime-gpu wheel has no CUPTI events in its profiler trace, and its
fallback (synchronized runs) counts every launch in full and no copy between host and GPU. The
GPU's own record of what it ran is CUPTI's; PyTorch's profiler (Kineto) collects it in any
process, ONNX Runtime's kernels included. On an H100 (docs/gpu.md) kernels and copies took
0.91-0.93 of the wall latency at large inputs, the input and output copies a large share of it.

How a GPU activity (kernel, copy, memset) finds its node: its launch (the CUDA runtime or
driver call with the same correlation id) falls inside the host window of the top-level node
event that launched it, in ONNX Runtime's profile of the same runs. The two clocks (ONNX
Runtime's ``get_profiling_start_time_ns``, Kineto's ``baseTimeNanoseconds``) are both Unix
time; the offset between them is searched within +-500 us for the most launches inside node
windows, and reported. Activities launched outside every node window are the session's own
work: copies of the inputs to the GPU and of the outputs back (rows ``COPY_IN`` and
``COPY_OUT``), and anything else (``OTHER_GPU``). A node's time is the GPU time of what it
launched; nodes ONNX Runtime placed on the CPU keep their host time. The rows then add up to
the GPU's busy time per run (kernels and copies run on one stream, one after another) plus
the CPU nodes' time.

Everything here but :func:`profile_runs` (which runs under torch.profiler) is pure: Kineto's
Chrome-trace JSON and ONNX Runtime's event list in, figures out (tests/test_gpu_profile_methods.py).
PyTorch is imported only by :func:`profile_runs`, in a worker process (profile/cuda_worker.py).
"""

from __future__ import annotations

import importlib.util
import statistics
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

GPU_CATS = ("kernel", "gpu_memcpy", "gpu_memset")
LAUNCH_CATS = ("cuda_runtime", "cuda_driver")
RUN_MARK = "surgeon_run_"
OFFSET_SEARCH_US = 500

COPY_IN = "[copy] inputs host->device"
COPY_OUT = "[copy] outputs device->host"
OTHER_GPU = "[gpu] launched outside any node"
SESSION_ROWS = (COPY_IN, COPY_OUT, OTHER_GPU)


def torch_missing() -> str | None:
    """None when PyTorch can be imported here, else the one-sentence refusal (PyTorch is not
    imported: the check only looks for it; whether it sees a GPU is the worker's to say)."""
    if importlib.util.find_spec("torch") is not None:
        return None
    return unavailable_sentence("PyTorch is not installed")


def unavailable_sentence(detail: str) -> str:
    return (f"timing=cupti reads the GPU's kernels and copies from CUPTI through PyTorch's profiler, and {detail}; "
            "install a CUDA build of PyTorch beside onnxruntime-gpu ('pip install torch' on a machine with an NVIDIA "
            "GPU), or leave timing=cupti out for the synchronized per-node timing")


def _median(xs: Sequence[float]) -> float | None:
    return float(statistics.median(xs)) if xs else None


def _union_us(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, None
    for s, e in sorted(intervals):
        if end is None or s > end:
            total += e - s
            end = e
        elif e > end:
            total += e - end
            end = e
    return total


def _x_events(kineto: Mapping[str, Any]) -> list[dict]:
    return [e for e in kineto.get("traceEvents", []) if isinstance(e, dict) and e.get("ph") == "X"]


def _run_marks(events: Sequence[dict]) -> list[dict]:
    """The host-side ``surgeon_run_i`` annotations (not their ``gpu_user_annotation`` copies), in order."""
    return sorted((e for e in events if e.get("cat") == "user_annotation" and str(e.get("name", "")).startswith(RUN_MARK)),
                  key=lambda e: float(e["ts"]))


def gpu_activity(kineto: Mapping[str, Any], runs: int) -> dict[str, Any]:
    """Per run (the ``surgeon_run_i`` annotations): the GPU's kernel, copy and set time, their
    union (busy time) and span, medians in ms. An ONNX Runtime run waits for the GPU before it
    returns, so the GPU work of run i lies inside its annotation."""
    base = int(kineto.get("baseTimeNanoseconds") or 0)
    events = _x_events(kineto)
    marks = _run_marks(events)
    gpu = [e for e in events if e.get("cat") in GPU_CATS]
    per_run: list[dict[str, float]] = []
    for m in marks[:runs]:
        lo, hi = float(m["ts"]), float(m["ts"]) + float(m.get("dur", 0))
        inside = [e for e in gpu if lo <= float(e["ts"]) <= hi]
        iv = [(float(e["ts"]), float(e["ts"]) + float(e.get("dur", 0))) for e in inside]
        per_run.append({"kernel_us": sum(float(e.get("dur", 0)) for e in inside if e["cat"] == "kernel"),
                        "copy_us": sum(float(e.get("dur", 0)) for e in inside if e["cat"] != "kernel"),
                        "busy_us": _union_us(iv), "span_us": (max(b for _, b in iv) - min(a for a, _ in iv)) if iv else 0.0,
                        "activities": len(inside)})
    out: dict[str, Any] = {"runs_marked": len(marks), "gpu_events": len(gpu), "base_ns": base}
    for key in ("kernel_us", "copy_us", "busy_us", "span_us"):
        out[key.replace("_us", "_ms")] = _median([r[key] / 1000.0 for r in per_run])
    out["activities_per_run"] = _median([r["activities"] for r in per_run])
    return out


@dataclass
class Activity:
    """One GPU activity with a launch record: when it was launched (ns, Kineto's clock as Unix
    time), how long the GPU spent in it (us), and what it was."""

    launch_ns: float
    dur_us: float
    cat: str
    name: str


@dataclass
class Attribution:
    """Who launched each GPU activity, for the last ``runs`` runs of ONNX Runtime's profile."""

    activities: list[Activity]
    gpu_count: int  # GPU activities in the trace, with or without a launch record
    ort_runs: list  # ort_trace.Run, the last ``runs``
    nodes: list  # (start_ns, end_ns, run index, KernelEvent) for every top-level node
    gpu_nodes: list  # the same for nodes on a GPU provider, by start time
    offset_us: int = 0
    owner: np.ndarray = field(default_factory=lambda: np.zeros(0, int))  # index into gpu_nodes, -1: none
    at_zero: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    run_of: list[int] = field(default_factory=list)  # per activity: index of its run (annotation), -1: none


def _session_row(a: Activity) -> str:
    """The row of an activity no node launched: by the direction of the copy (Kineto names
    copies 'Memcpy HtoD (Pageable -> Device)', 'Memcpy DtoH (...)')."""
    if a.cat == "gpu_memcpy" and "HtoD" in a.name:
        return COPY_IN
    if a.cat == "gpu_memcpy" and "DtoH" in a.name:
        return COPY_OUT
    return OTHER_GPU


def attribute(kineto: Mapping[str, Any], ort_events: Sequence[Mapping[str, Any]], ort_start_ns: int, runs: int,
              search_us: int = OFFSET_SEARCH_US) -> Attribution:
    """Each GPU activity given to the top-level GPU node whose host window holds its launch, at
    the clock offset (1 us steps, +-search_us) that puts the most launches inside node windows;
    ties go to the smallest shift, since both clocks are Unix time and the search only corrects
    what they disagree by."""
    from surgeon.debug.profile import ort_trace

    base = int(kineto.get("baseTimeNanoseconds") or 0)
    events = _x_events(kineto)
    launch_ns = {}
    for e in events:
        corr = (e.get("args") or {}).get("correlation")
        if e.get("cat") in LAUNCH_CATS and corr is not None:
            launch_ns[corr] = base + float(e["ts"]) * 1000.0
    gpu = [e for e in events if e.get("cat") in GPU_CATS]
    acts = [Activity(launch_ns[(e.get("args") or {}).get("correlation")], float(e.get("dur", 0)), str(e.get("cat")),
                     str(e.get("name", ""))) for e in gpu if (e.get("args") or {}).get("correlation") in launch_ns]
    trace = ort_trace.parse_trace(list(ort_events))
    ort_runs = trace.runs[-runs:] if runs else trace.runs
    nodes = [(ort_start_ns + k.ts * 1000.0, ort_start_ns + (k.ts + k.dur + 1) * 1000.0, r, k)
             for r, run in enumerate(ort_runs) for k in run.kernels if k.parent is None]
    # only nodes of a GPU provider launch GPU work: a launch is never given to a node on the CPU
    gpu_nodes = sorted((n for n in nodes if n[3].provider != "CPUExecutionProvider"), key=lambda t: t[0])
    marks = [(base + float(m["ts"]) * 1000.0, base + (float(m["ts"]) + float(m.get("dur", 0))) * 1000.0)
             for m in _run_marks(events)][-len(ort_runs):] if ort_runs else []
    run_of = [next((i for i, (lo, hi) in enumerate(marks) if lo <= a.launch_ns <= hi), -1) for a in acts]
    att = Attribution(acts, len(gpu), ort_runs, nodes, gpu_nodes, run_of=run_of)
    if not acts or not gpu_nodes:
        att.owner = att.at_zero = np.full(len(acts), -1)
        return att
    starts = np.array([n[0] for n in gpu_nodes])
    ends = np.array([n[1] for n in gpu_nodes])
    times = np.array([a.launch_ns for a in acts])

    def inside(offset_ns: float) -> np.ndarray:
        idx = np.searchsorted(starts, times + offset_ns, side="right") - 1
        ok = idx >= 0
        ok[ok] &= (times[ok] + offset_ns) < ends[idx[ok]]
        return np.where(ok, idx, -1)

    best, best_n = 0, -1
    for off_us in sorted(range(-search_us, search_us + 1), key=abs):
        n = int(np.sum(inside(off_us * 1000.0) >= 0))
        if n > best_n:
            best, best_n = off_us, n
    att.offset_us, att.owner, att.at_zero = best, inside(best * 1000.0), inside(0.0)
    return att


def _node_sum(att: Attribution, owner: np.ndarray) -> float | None:
    gpu_us = np.zeros(len(att.gpu_nodes))
    for i, a in zip(owner, att.activities):
        if i >= 0:
            gpu_us[i] += a.dur_us
    sums = [0.0] * len(att.ort_runs)
    for _, _, r, k in att.nodes:
        if k.provider == "CPUExecutionProvider":
            sums[r] += k.dur
    for i, (_, _, r, _) in enumerate(att.gpu_nodes):
        sums[r] += gpu_us[i]
    return _median([s / 1000.0 for s in sums])


def attribute_kernels(kineto: Mapping[str, Any], ort_events: Sequence[Mapping[str, Any]], ort_start_ns: int,
                      runs: int, search_us: int = OFFSET_SEARCH_US) -> dict[str, Any]:
    """The attribution's summary: offset, share attributed, per-run node sum (GPU time for nodes
    that launched work, host time for nodes on the CPU provider; median, ms), the same at offset
    0, and the GPU time per run that no node launched."""
    att = attribute(kineto, ort_events, ort_start_ns, runs, search_us)
    out: dict[str, Any] = {"gpu_activities": att.gpu_count, "with_launch_record": len(att.activities),
                           "nodes": len(att.nodes)}
    if not att.activities or not att.gpu_nodes:
        out["note"] = "nothing to attribute (no launch records or no GPU node events)"
        return out
    owner = att.owner
    out.update(offset_us=att.offset_us, attributed=int(np.sum(owner >= 0)), attributed_share=float(np.mean(owner >= 0)),
               node_sum_ms=_node_sum(att, owner), inside_at_zero_offset=float(np.mean(att.at_zero >= 0)),
               node_sum_ms_at_zero_offset=_node_sum(att, att.at_zero),
               unattributed_gpu_ms_per_run=float(sum(a.dur_us for i, a in zip(owner, att.activities) if i < 0)) / 1000.0
               / max(1, len(att.ort_runs)))
    return out


def node_gpu_us(att: Attribution) -> dict[tuple[str, int], tuple[float, int]]:
    """(node name, its ts in ONNX Runtime's trace) -> (GPU microseconds it launched, activities),
    for every top-level GPU node of the attributed runs (0 for one that launched nothing)."""
    out = {(k.name, k.ts): (0.0, 0) for _, _, _, k in att.gpu_nodes}
    for i, a in zip(att.owner, att.activities):
        if i >= 0:
            k = att.gpu_nodes[i][3]
            us, n = out[(k.name, k.ts)]
            out[(k.name, k.ts)] = (us + a.dur_us, n + 1)
    return out


def session_rows_us(att: Attribution) -> list[dict[str, float]]:
    """Per attributed run: the GPU microseconds of the activities no node launched, by row
    (``COPY_IN``, ``COPY_OUT``, ``OTHER_GPU``), each run found by its ``surgeon_run_i`` mark."""
    rows = [{name: 0.0 for name in SESSION_ROWS} for _ in att.ort_runs]
    for i, a, r in zip(att.owner, att.activities, att.run_of):
        if i < 0 and 0 <= r < len(rows):
            rows[r][_session_row(a)] += a.dur_us
    return rows


def profile_runs(sess: Any, feeds: Sequence[Mapping[str, Any]], warmup: int, runs: int, kineto_path: str) -> None:
    """``warmup`` runs, then ``runs`` runs of ``sess`` under torch.profiler (CPU and CUDA
    activities), each in a ``surgeon_run_i`` annotation; Kineto's trace to ``kineto_path``.
    PyTorch must have been imported before onnxruntime in this process (the worker does), so
    ONNX Runtime uses the CUDA libraries PyTorch loaded."""
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    outputs = [o.name for o in sess.get_outputs()]
    for r in range(warmup):
        sess.run(outputs, dict(feeds[r % len(feeds)]))
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for i in range(runs):
            with record_function(f"{RUN_MARK}{i}"):
                sess.run(outputs, dict(feeds[i % len(feeds)]))
        torch.cuda.synchronize()
    prof.export_chrome_trace(kineto_path)


def import_torch_cuda() -> str:
    """Import PyTorch and start CUDA (before onnxruntime, in a worker); its version, or
    RuntimeError with why not."""
    try:
        import torch
    except ImportError as exc:
        raise RuntimeError(f"PyTorch cannot be imported ({exc})") from None
    if not torch.cuda.is_available():
        raise RuntimeError(f"PyTorch {torch.__version__} sees no CUDA GPU (torch.cuda.is_available() is False)")
    torch.cuda.init()
    return str(torch.__version__)
