"""Which way of timing nodes on ONNX Runtime's CUDA provider adds up to the wall latency: the
'profile-methods' part of bench/gpu_run.py.

The first GPU run (2026-12-05, H100, onnxruntime-gpu 1.31.1, a wheel without CUPTI) profiled with
``synchronized-node-events`` and found the per-node sum 0.2 to 4.3 times the latency, none of 17
profiles within 10%: high on models of many small kernels (every launch waits for its kernel),
low on large inputs. This part measures, side by side on the same models and inputs:

- ``synchronized-node-events``: what ``profile --backend onnxrt-cuda`` does with such a wheel
  (surgeon.debug.profile.cuda, a worker with ``CUDA_LAUNCH_BLOCKING=1``);
- ``host-node-events``: ONNX Runtime's profiler without synchronization. A CUDA node's event is
  its ``Compute`` on the host: launches, plus whatever waits inside it;
- ``ort-model-run``: the profiler's own ``model_run`` event per run (host, whole run);
- ``cupti-gpu-busy``: the GPU's own time, kernels and copies, from CUPTI through PyTorch's
  profiler (Kineto) in a worker, where PyTorch is installed (the GPU machine's python3 has it):
  per run, the union of the GPU's busy intervals. No per-node split; it says how much of the
  latency the GPU is busy at all;
- ``cupti-kernels-per-node``: the same CUPTI kernels attributed to ONNX nodes: each kernel's
  launch (its CUDA runtime or driver API call, same correlation id) falls inside the host window
  of the node event that launched it, in ONNX Runtime's profile of the same runs. The two
  clocks (ONNX Runtime: ``get_profiling_start_time_ns``, Kineto: ``baseTimeNanoseconds``) are
  both Unix time; the offset between them is searched within +-500 us for the most launches
  inside node windows, and both the offset and the share inside at offset 0 are reported. A
  node's time is the GPU time of its kernels; nodes placed on the CPU keep their host time.

And two latencies: with numpy inputs and outputs (what ``profile`` reports), and with inputs
already on the device and outputs left there (IOBinding), with the host-device copies timed
apart: copies of large inputs are in no node.

Nsight Compute (``ncu``) is not used: it replays each kernel under serialization, seconds per
model of a few hundred kernels, and times kernels CUPTI already times.

``python bench/gpu_profile_methods.py --kineto-worker SPEC.json`` is the worker; the rest is
imported by gpu_run.py. ``attribute_kernels`` and ``gpu_activity`` are pure and live in
surgeon.debug.profile.cupti, which ``profile --backend onnxrt-cuda:timing=cupti`` uses too
(tests/test_gpu_profile_methods.py).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PAUSE_S = 0.001  # as surgeon.debug.profile.onnxrt: a sleep before each timed run


def _median(xs: Sequence[float]) -> float | None:
    return float(statistics.median(xs)) if xs else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


# --- the pure part lives in surgeon (profile --backend onnxrt-cuda:timing=cupti uses it too) -------------

from surgeon.debug.profile.cupti import RUN_MARK, attribute_kernels, gpu_activity  # noqa: E402,F401


# --- the worker: ONNX Runtime under PyTorch's profiler ------------------------------------------------------

def kineto_worker(spec_path: str) -> int:
    """For each model of SPEC: a profiled ONNX Runtime CUDA session, warm-up runs, then ``runs``
    runs under torch.profiler (CPU and CUDA activities), each in a ``surgeon_run_i`` annotation.
    Writes ``{"models": {label: {"ort_trace", "ort_start_ns", "kineto_trace"} | {"error"}}}``."""
    spec = json.loads(Path(spec_path).read_text())
    answer: dict[str, Any] = {"models": {}}
    try:
        from surgeon.debug.profile.cupti import import_torch_cuda, profile_runs

        answer["torch"] = import_torch_cuda()  # before onnxruntime: ONNX Runtime then uses PyTorch's CUDA libraries
    except Exception as exc:  # noqa: BLE001 - the answer says why
        answer["unavailable"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
        Path(spec["answer"]).write_text(json.dumps(answer))
        return 0
    from surgeon import backends, input_files
    from surgeon.debug.profile.cuda import profiled_session

    for m in spec["models"]:
        label = m["label"]
        try:
            backend = backends.create(spec.get("spec", "onnxrt-cuda"))
            feed = dict(input_files.load_inputs(m["inputs"])[0])
            sess, _ = profiled_session(backend, m["model"], m["prefix"], m["prefix"] + "_optimized.onnx")
            kpath = m["prefix"] + "_kineto.json"
            profile_runs(sess, [feed], int(spec["warmup"]), int(spec["runs"]), kpath)
            answer["models"][label] = {"ort_trace": sess.end_profiling(), "ort_start_ns": sess.get_profiling_start_time_ns(),
                                       "kineto_trace": kpath}
        except Exception as exc:  # noqa: BLE001 - one model's failure is its row
            answer["models"][label] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]}
        Path(spec["answer"]).write_text(json.dumps(answer))
    Path(spec["answer"]).write_text(json.dumps(answer))
    return 0


def run_kineto_worker(models: list[dict], workdir: Path, warmup: int, runs: int, timeout: float) -> dict:
    from surgeon.backends.ort_worker import worker_env

    spec = {"models": models, "warmup": warmup, "runs": runs, "answer": str(workdir / "kineto_answer.json")}
    spec_path = workdir / "kineto_spec.json"
    spec_path.write_text(json.dumps(spec))
    try:
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--kineto-worker", str(spec_path)],
                              capture_output=True, text=True, timeout=max(5.0, timeout), env=worker_env())
        tail = (proc.stderr or "").strip().splitlines()[-3:]
    except subprocess.TimeoutExpired:
        proc, tail = None, [f"did not finish within {timeout:.0f} s"]
    ans = Path(spec["answer"])
    answer = json.loads(ans.read_text()) if ans.is_file() else {"models": {}}
    if proc is None or proc.returncode != 0:
        answer["worker_error"] = f"exit {None if proc is None else proc.returncode}: {' | '.join(tail)}"[:600]
    return answer


# --- the parent: latencies, host events, the synchronized method ---------------------------------------------

def _iobinding(sess: Any, feed: Mapping[str, np.ndarray], device: str):
    """An IOBinding with the inputs already on ``device`` and the outputs left there."""
    import onnxruntime as ort

    io = sess.io_binding()
    for name, x in feed.items():
        io.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(x), device, 0))
    for o in sess.get_outputs():
        io.bind_output(o.name, device)
    return io


def _copy_times(io: Any, feed: Mapping[str, np.ndarray], device: str, reps: int = 7) -> dict:
    import onnxruntime as ort

    h2d, d2h = [], []
    for _ in range(reps):
        t = time.perf_counter()
        for x in feed.values():
            ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(x), device, 0)
        h2d.append((time.perf_counter() - t) * 1e3)
    outs, got = io.get_outputs(), []
    for _ in range(reps):
        t = time.perf_counter()
        got = [v.numpy() for v in outs]
        d2h.append((time.perf_counter() - t) * 1e3)
    return {"h2d_ms": _median(h2d), "d2h_ms": _median(d2h), "input_mb": sum(x.nbytes for x in feed.values()) / 1e6,
            "output_mb": sum(getattr(a, "nbytes", 0) for a in got) / 1e6}


def measure_host(path: Path, label: str, feed: Mapping[str, np.ndarray], make_backend: Callable[[str], Any], cpu: bool,
                 workdir: Path, warmup: int = 5, iterations: int = 20) -> dict:
    """Latency with numpy I/O and with device-resident I/O, copy times, the unsynchronized
    profiler's node sum and model_run, runs interleaved; then the synchronized method as
    ``profile --backend onnxrt-cuda`` runs it."""
    import onnxruntime as ort

    from surgeon import model as model_io
    from surgeon.debug.profile import cuda, ort_trace
    from surgeon.debug.profile.onnxrt import Source

    backend = make_backend("onnxrt-cuda")
    device = "cpu" if cpu else "cuda"
    plain = backend.ort_session(str(path))
    prof, _ = cuda.profiled_session(backend, str(path), str(workdir / f"{label}_host"), str(workdir / f"{label}_opt.onnx"))
    ro = ort.RunOptions()
    ro.log_severity_level = 3
    outputs = [o.name for o in plain.get_outputs()]
    row: dict[str, Any] = {"device_io": device}
    try:
        io = _iobinding(plain, feed, device)
    except Exception as exc:  # noqa: BLE001 - e.g. a non-tensor output: no device-resident series
        io, row["device_io_error"] = None, f"{type(exc).__name__}: {exc}"[:300]

    def run_io():
        plain.run_with_iobinding(io, ro)
        io.synchronize_outputs()

    series: dict[str, Callable[[], Any]] = {"host_io": lambda: plain.run(outputs, dict(feed), ro),
                                            "profiled": lambda: prof.run(outputs, dict(feed))}
    if io is not None:
        series["device_io"] = run_io
    times: dict[str, list[float]] = {k: [] for k in series}
    names = list(series)
    for r in range(warmup + iterations):
        for j in range(len(names)):
            k = names[(r + j) % len(names)]
            time.sleep(PAUSE_S)
            t = time.perf_counter()
            series[k]()
            if r >= warmup:
                times[k].append((time.perf_counter() - t) * 1e3)
    lat = _median(times["host_io"])
    row["latency_ms"] = lat
    row["latency_device_io_ms"] = _median(times.get("device_io", []))
    row["profiled_run_ms"] = _median(times["profiled"])
    if io is not None:
        row["copies"] = _copy_times(io, feed, device)
    trace_file = prof.end_profiling()
    host = cuda.node_sums(trace_file, warmup, gpu_kernels=False)
    with open(trace_file, encoding="utf-8") as f:
        tr = ort_trace.parse_trace(json.load(f))
    runs = tr.runs[warmup:] if len(tr.runs) > warmup else tr.runs
    model_run = _median([r.dur_us / 1000.0 for r in runs])
    m: dict[str, Any] = {
        "host-node-events": {"node_sum_ms": _median(host), "ratio": _ratio(_median(host), lat),
                             "what": "unsynchronized ORT profiler: host time of each node's Compute"},
        "ort-model-run": {"node_sum_ms": model_run, "ratio": _ratio(model_run, lat),
                          "what": "ORT profiler's model_run event (whole run, host; not per node)"}}
    try:
        p = cuda.run([Source(label, model_io.load(path), path)], [dict(feed)], warmup=3, iterations=10,
                     cpu_stand_in=cpu)[0]
        t = p.gpu_timing or {}
        m["synchronized-node-events"] = {"node_sum_ms": t.get("node_sum_ms"), "ratio": t.get("ratio"),
                                         "own_latency_ms": t.get("latency_ms"), "method_reported": t.get("method"),
                                         "what": "profile --backend onnxrt-cuda's own figure (its own latency runs)"}
    except Exception as exc:  # noqa: BLE001
        m["synchronized-node-events"] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
    row["methods"] = m
    return row


def add_kineto(row: dict, answer: Mapping[str, Any], runs: int) -> None:
    """The two CUPTI figures of one model, from the worker's traces, into its row."""
    got = answer.get("models", {}).get(row["label"])
    why = answer.get("unavailable") or answer.get("worker_error")
    if not got or got.get("error"):
        reason = (got or {}).get("error") or why or "no answer from the worker"
        row["methods"]["cupti-gpu-busy"] = {"skipped": reason}
        row["methods"]["cupti-kernels-per-node"] = {"skipped": reason}
        return
    with open(got["kineto_trace"], encoding="utf-8") as f:
        kineto = json.load(f)
    with open(got["ort_trace"], encoding="utf-8") as f:
        ort_events = json.load(f)
    lat, dev = row.get("latency_ms"), row.get("latency_device_io_ms")
    act = gpu_activity(kineto, runs)
    row["methods"]["cupti-gpu-busy"] = dict(act, node_sum_ms=act.get("busy_ms"), ratio=_ratio(act.get("busy_ms"), lat),
                                            ratio_to_device_io=_ratio(act.get("busy_ms"), dev),
                                            what="CUPTI via torch.profiler: union of GPU kernel and copy intervals per run")
    try:
        att = attribute_kernels(kineto, ort_events, int(got["ort_start_ns"]), runs)
    except Exception as exc:  # noqa: BLE001
        att = {"error": f"{type(exc).__name__}: {exc}"[:300]}
    att["ratio"] = _ratio(att.get("node_sum_ms"), lat)
    att["what"] = "CUPTI kernels attributed to the ORT node whose host window holds their launch"
    row["methods"]["cupti-kernels-per-node"] = att
    for p in (got["kineto_trace"],):
        try:
            os.remove(p)  # large; the figures are in the row
        except OSError:
            pass


METHODS = ("synchronized-node-events", "host-node-events", "ort-model-run", "cupti-gpu-busy", "cupti-kernels-per-node")
PER_NODE = ("synchronized-node-events", "host-node-events", "cupti-kernels-per-node")


def closest(row: Mapping[str, Any], among: Sequence[str] = PER_NODE) -> str | None:
    """The per-node method whose sum is nearest the latency (by |log ratio|)."""
    got = {k: v.get("ratio") for k, v in (row.get("methods") or {}).items() if k in among and v.get("ratio")}
    return min(got, key=lambda k: abs(np.log(got[k]))) if got else None


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--kineto-worker":
        sys.exit(kineto_worker(sys.argv[2]))
    print("usage: python bench/gpu_profile_methods.py --kineto-worker SPEC.json (started by bench/gpu_run.py)",
          file=sys.stderr)
    sys.exit(2)
