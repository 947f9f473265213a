"""Per-node time on ONNX Runtime's CUDA provider (``profile --backend onnxrt-cuda``), and how
well it adds up to the wall latency.

The difficulty: on CUDA a kernel launch returns at once and the GPU runs later, so ONNX
Runtime's profiler (``enable_profiling``), which times each node's ``Compute`` call on the host,
measures how long the *launch* took, not the work. Two ways around it, chosen by what the
installed wheel gives, and said in the report (``gpu_timing.method``):

1. ``cupti-kernel-events``: builds with CUDA profiling (CUPTI) add a ``Kernel`` event per GPU
   kernel, with the time the GPU spent in it, right after the node that launched it. A node's
   time is then the sum of its kernels' GPU times (nodes ONNX Runtime placed on the CPU keep
   their own time). Gaps between kernels (launch latency the GPU waits on) are in no node, so
   the sum falls short of the latency where the GPU idles between small kernels.
2. ``synchronized-node-events``: builds without CUPTI (the usual PyPI wheel) have no such
   events. The profiled runs are then made in a worker process started with
   ``CUDA_LAUNCH_BLOCKING=1``, where every launch waits for its kernel to finish, so a node's
   event spans its launch and its execution. The sum over nodes then counts every launch's
   overhead in full, where an unsynchronized run overlaps launches with the GPU's work: it
   reads high on models of many small kernels. It reads low where copying large inputs and
   outputs between host and GPU is part of the latency: those copies are in no node. On an H100
   (onnxruntime-gpu 1.31.1, whose PyPI wheel gives this method; two runs of bench/gpu_run.py,
   docs/gpu.md) the sum was 1.09 to 4.33 times the latency on 21 of the 24 profiles of corpus
   models at their own inputs, and 0.62 to 0.93 times on 4 of 5 with large inputs (ViT 1.52);
   within 10% on 0 of 17 profiles in the first run and 2 of 17 in the second, none in both.

Why no method here adds up, measured in the second run (bench/gpu_profile_methods.py, CUPTI
through PyTorch's profiler): on small inputs the GPU is busy only about 0.21 of the latency, the
rest being host-side launches, so the synchronized sum over-counts 2.7 to 3.5 times and even
CUPTI's kernel times per node sum to 0.31 to 0.48 of it; on large inputs the GPU is busy 0.91 to
0.93 of the latency, the host-device copies take 40 to 50% of it, and CUPTI's kernels,
attributed to nodes at 91 to 99.5%, sum to 0.94 of the latency with the inputs and outputs kept
on the GPU. That attribution needs PyTorch beside onnxruntime-gpu, which surgeon does not depend
on, so it stays a bench measurement and this module keeps the two methods above.

3. ``cupti-kernels-per-node`` (asked for with ``timing=cupti``: ``--backend
   onnxrt-cuda:timing=cupti``): the profiled runs are made in a worker under PyTorch's
   profiler, which reads CUPTI's record of every kernel and copy the GPU ran; each is given to
   the node that launched it (profile/cupti.py), and the copies of the inputs to the GPU and of
   the outputs back, which no node launches, are rows of their own (``[copy] inputs
   host->device``, ``[copy] outputs device->host``). The rows add up to the GPU's busy time
   (and CPU nodes' host time); what is left of the latency is the GPU waiting on launches and
   the host's own work. It needs a CUDA build of PyTorch beside onnxruntime-gpu, so it is not
   the default; ``timing=synchronized`` forces method 2, ``timing=auto`` (the default) is 1 or 2.

Latency is always measured without the profiler and without synchronization, in this process,
runs interleaved with the profiled session's (when that is in this process too). The report
gives the per-run sum of top-level node times against that latency (``gpu_timing.ratio``), so
every profile says how far its per-node times can be trusted to add up.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from surgeon import model as model_io
from surgeon.debug.profile import ort_trace
from surgeon.debug.profile.onnxrt import Source, _fill_from_trace, _Timed, enable_profiling, interleave
from surgeon.debug.profile.result import ModelProfile
from surgeon.debug.profile.stats import summarize
from surgeon.errors import BackendError, BackendUnavailableError, UsageError
from surgeon.graph import count_nodes
from surgeon.input_data import describe_feeds

KERNEL_EVENTS = "cupti-kernel-events"
SYNCHRONIZED = "synchronized-node-events"
CUPTI = "cupti-kernels-per-node"
TIMINGS = ("auto", "synchronized", "cupti")
WORKER_TIMEOUT_S = 900.0


def split_timing(spec: str) -> tuple[str, str]:
    """``onnxrt-cuda:tf32=0,timing=cupti`` -> ("onnxrt-cuda:tf32=0", "cupti"). ``timing`` says how
    profile times nodes, not how the backend runs, so it is taken off before the backend sees
    the options; absent, it is "auto". Unknown values are usage errors."""
    from surgeon import backends

    name, options = backends.split_spec(spec)
    kept, timing = [], "auto"
    for item in (o.strip() for o in options.split(",") if o.strip()):
        key, _, value = item.partition("=")
        if key.strip().lower() != "timing":
            kept.append(item)
            continue
        timing = value.strip().lower()
        if timing not in TIMINGS:
            raise UsageError(f"onnxrt-cuda: timing={value.strip()} is not one of {', '.join(TIMINGS)} "
                             "(how profile times nodes; see docs/gpu.md)")
    return (f"{name}:{','.join(kept)}" if kept else name), timing


def check_timing(timing: str, cpu_stand_in: bool = False) -> None:
    """Refuse ``timing=cupti`` before any work where it cannot run: on the CPU stand-in (no GPU
    kernels to read) and without PyTorch (the one sentence saying what to install)."""
    if timing != "cupti":
        return
    if cpu_stand_in:
        raise UsageError("timing=cupti reads the GPU's kernels from CUPTI; the CPU stand-in runs none")
    from surgeon.debug.profile.cupti import torch_missing

    missing = torch_missing()
    if missing:
        raise BackendUnavailableError(missing)


def backend_for(spec: str, cpu_stand_in: bool = False) -> Any:
    """The ``onnxrt-cuda`` backend a profile spec names (``onnxrt-cuda:tf32=0``)."""
    from surgeon import backends

    name, _ = backends.split_spec(spec)
    if name != "onnxrt-cuda":
        raise UsageError(f"'{spec}' is not an onnxrt-cuda backend")
    spec, _ = split_timing(spec)
    return backends.create(spec, cpu_stand_in=True) if cpu_stand_in else backends.create(spec)


def _model_file(src: Source, folder: str, index: int) -> str:
    """A path ONNX Runtime (and the worker) can load: the source's own file, or a copy."""
    if src.path is not None:
        return str(src.path)
    path = Path(folder) / f"model{index}.onnx"
    model_io.save(src.model, path)
    return str(path)


def _profiling(prefix: str, optimized: str | None):
    def configure(so: Any) -> None:
        enable_profiling(so, prefix, optimized)
    return configure


def profiled_session(backend: Any, path: str, prefix: str, optimized: str) -> tuple[Any, bool]:
    """A profiled session that also saves its optimized graph (for mapping fused kernels back to
    ONNX nodes); when ONNX Runtime cannot save that graph for this provider, one without it.
    Returns (session, whether the optimized graph is saved)."""
    try:
        return backend.ort_session(path, _profiling(prefix, optimized)), True
    except BackendUnavailableError:
        raise
    except BackendError:
        return backend.ort_session(path, _profiling(prefix, None)), False


def node_sums(trace_file: str, warmup: int, gpu_kernels: bool) -> list[float]:
    """Per measured run: the sum of top-level node times in ms (as the profile counts them)."""
    with open(trace_file, encoding="utf-8") as f:
        trace = ort_trace.parse_trace(json.load(f))
    runs = trace.runs[warmup:] if len(trace.runs) > warmup else trace.runs
    out = []
    for run in runs:
        total = 0
        for k in run.kernels:
            if k.parent is None:
                total += k.gpu_us if gpu_kernels and k.provider != "CPUExecutionProvider" else k.dur
        out.append(total / 1000.0)
    return out


def run_worker(spec: Mapping[str, Any], timeout: float = WORKER_TIMEOUT_S) -> dict[str, Any]:
    """Run the profiling worker (synchronized, or under PyTorch's profiler with ``"timing":
    "cupti"``); its JSON answer, or BackendError with its last line (BackendUnavailableError
    when PyTorch or its GPU is not there)."""
    from surgeon.backends.ort_worker import worker_env
    from surgeon.debug.profile.cuda_worker import CUPTI_UNAVAILABLE

    cupti = spec.get("timing") == "cupti"
    what = "CUPTI (PyTorch profiler)" if cupti else "synchronized"

    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False, dir=spec["folder"]) as f:
        json.dump(dict(spec), f)
        spec_path = f.name
    try:
        proc = subprocess.run([sys.executable, "-m", "surgeon.debug.profile.cuda_worker", spec_path],
                              capture_output=True, text=True, timeout=timeout,
                              env=worker_env({} if cupti else {"CUDA_LAUNCH_BLOCKING": "1"}))
    except subprocess.TimeoutExpired:
        raise BackendError(f"the {what} profiling run did not finish within {timeout:g} s") from None
    if proc.returncode != 0:
        lines = [l for l in (proc.stderr or "").strip().splitlines() if l.strip()]
        why = lines[-1] if lines else f"exit code {proc.returncode}"
        if cupti and proc.returncode == CUPTI_UNAVAILABLE:
            raise BackendUnavailableError(why)
        raise BackendError(f"the {what} profiling run failed: {why}")
    return json.loads(Path(spec["answer"]).read_text(encoding="utf-8"))


def _placement_note(sess: Any) -> str | None:
    from surgeon.backends.onnxrt_cuda import parse_placement

    placement = parse_placement(getattr(sess, "_surgeon_log", ""))
    cpu = placement.get("CPUExecutionProvider")
    if not placement or not cpu:
        return None
    ops = ", ".join(sorted({op for op, _ in cpu["ops"]})) or "not listed"
    total = sum(v["nodes"] for v in placement.values())
    return f"ONNX Runtime placed {cpu['nodes']} of {total} nodes on the CPU (op types: {ops})"


def run(sources: Sequence[Source], samples: Sequence[Mapping[str, Any]], *, spec: str = "onnxrt-cuda",
        warmup: int = 5, iterations: int = 30, profile: bool = True, progress=None,
        cpu_stand_in: bool = False) -> list[ModelProfile]:
    """Profile (or, with ``profile=False``, only time) each source on ONNX Runtime CUDA."""
    if iterations < 1:
        raise UsageError("--iterations must be at least 1")
    if warmup < 0:
        raise UsageError("--warmup must not be negative")
    if not samples:
        raise UsageError("no input samples to run the model on")
    _, timing = split_timing(spec)
    backend = backend_for(spec, cpu_stand_in)
    if profile:
        check_timing(timing, cpu_stand_in)
    say = progress or (lambda _m: None)
    with tempfile.TemporaryDirectory(prefix="surgeon-cuda-profile-") as tmp:
        paths = [_model_file(src, tmp, i) for i, src in enumerate(sources)]
        plain, profiled, saved = [], [], []
        for i, (src, path) in enumerate(zip(sources, paths)):
            try:
                plain.append(_Timed(src.label, backend.ort_session(path), samples, backend.name))
                if profile:
                    sess, ok = profiled_session(backend, path, os.path.join(tmp, f"trace{i}"),
                                                os.path.join(tmp, f"optimized{i}.onnx"))
                    profiled.append(_Timed(src.label, sess, samples, backend.name))
                    saved.append(ok)
            except BackendError as exc:
                if "cannot load" in str(exc):
                    raise BackendError(f"{str(exc).replace('the model', repr(src.label))}") from exc
                raise
        interleave([t for pair in zip(plain, profiled or [None] * len(plain)) for t in pair if t is not None],
                   warmup, iterations, say)
        results = []
        for i, src in enumerate(sources):
            p = ModelProfile(model=src.label, backend=backend.describe(), source="latency only (profiler off)",
                             nodes=count_nodes(src.model), inputs=describe_feeds(samples[0]), threads=0,
                             warmup=warmup, iterations=iterations)
            p.latency = summarize(plain[i].times)
            p.latency_runs_ms = list(plain[i].times)
            note = _placement_note(plain[i].sess)
            if note:
                p.notes.append(note)
            if len(samples) > 1:
                p.notes.append(f"{len(samples)} input samples, used in turn")
            if profile:
                p.profiled_latency = summarize(profiled[i].times)
                p.profiled_runs_ms = list(profiled[i].times)
                _fill_profile(p, src, paths[i], samples, profiled[i].sess.end_profiling(),
                              Path(tmp) / f"optimized{i}.onnx" if saved[i] else None, warmup, iterations,
                              backend, spec, cpu_stand_in, tmp, i, say, timing)
            results.append(p)
        return results


def _fill_profile(p: ModelProfile, src: Source, path: str, samples: Sequence[Mapping[str, Any]], trace_file: str,
                  optimized: Path | None, warmup: int, iterations: int, backend: Any, spec: str, cpu_stand_in: bool,
                  tmp: str, index: int, say, timing: str = "auto") -> None:
    with open(trace_file, encoding="utf-8") as f:
        events = json.load(f)
    if timing == "cupti":
        method, source, sums, note = _fill_cupti(p, src, path, samples, warmup, iterations, spec, tmp, index, say)
    elif timing == "auto" and ort_trace.has_gpu_kernels(events):
        method, source = KERNEL_EVENTS, "ONNX Runtime profiler with CUPTI kernel events (GPU time per node)"
        opt = optimized if optimized is not None and optimized.is_file() else None
        _fill_from_trace(p, src, trace_file, opt, warmup, "onnxrt-cuda", gpu_kernels=True)
        sums = node_sums(trace_file, warmup, gpu_kernels=True)
        note = ("node time = the GPU time of the kernels it launched (CUPTI); gaps between kernels are in no node, "
                "so the sum reads low where the GPU waits on launches")
    else:
        why = "timing=synchronized" if timing == "synchronized" else "no GPU kernel events in this build's trace"
        say(f"{why}: synchronized profiling of '{src.label}' in a worker (CUDA_LAUNCH_BLOCKING=1)")
        from surgeon import input_files

        inputs = str(Path(tmp) / f"inputs{index}.npz")
        input_files.save_inputs(inputs, list(samples))
        answer = run_worker({"model": path, "inputs": inputs, "spec": spec, "cpu_stand_in": cpu_stand_in,
                             "warmup": warmup, "iterations": iterations, "folder": tmp,
                             "prefix": str(Path(tmp) / f"sync{index}"),
                             "optimized": str(Path(tmp) / f"sync_optimized{index}.onnx"),
                             "answer": str(Path(tmp) / f"answer{index}.json")})
        trace_file = answer["trace"]
        opt = Path(answer["optimized"]) if answer.get("optimized") and Path(answer["optimized"]).is_file() else None
        method, source = SYNCHRONIZED, "ONNX Runtime profiler, synchronized runs (CUDA_LAUNCH_BLOCKING=1, a worker process)"
        _fill_from_trace(p, src, trace_file, opt, warmup, "onnxrt-cuda", gpu_kernels=False)
        sums = node_sums(trace_file, warmup, gpu_kernels=False)
        note = ("node time = launch + execution with every launch synchronized; the sum counts each launch's "
                "overhead that an unsynchronized run overlaps with the GPU's work, so it reads high on models "
                "of many small kernels; copies of the inputs and outputs between host and GPU are in no node, so it "
                "reads low where those are large")
        if cpu_stand_in:
            note += " (CPU stand-in: the CPU provider ran, no GPU was timed)"
    p.source = source
    latency = p.latency.median_ms if p.latency else None
    node_sum = float(np.median(sums)) if sums else None
    p.gpu_timing = {**(p.gpu_timing or {}), "method": method, "node_sum_ms": node_sum, "latency_ms": latency,
                    "ratio": (node_sum / latency) if node_sum is not None and latency else None,
                    "profiled_run_ms": p.run_time.median_ms if p.run_time else None, "note": note,
                    "gpu": not cpu_stand_in}
    if node_sum is not None and latency:
        p.notes.append(f"per-node times ({method}) add up to {node_sum:.3g} ms per run against a latency of "
                       f"{latency:.3g} ms ({node_sum / latency:.2f}x): {note}")


CUPTI_NOTE = ("node time = the GPU time (CUPTI, through PyTorch's profiler) of the kernels and copies the node launched; "
              "the copies of the inputs to the GPU and of the outputs back, launched by no node, are rows of their own, so "
              "the rows add up to the GPU's busy time (CPU nodes: their host time); the rest of the latency is the GPU "
              "waiting on launches and the host's own work")


def cupti_rows(att: Any) -> tuple[dict, list[list[Any]], list[float]]:
    """From an attribution (profile/cupti.py): per-node GPU time, the session's rows per run
    (copies in and out, other GPU work no node launched; a row only where it took time), and
    the per-run sum of all rows in ms."""
    from surgeon.debug.profile import cupti
    from surgeon.debug.profile.aggregate import Observed

    node_us = cupti.node_gpu_us(att)
    session = cupti.session_rows_us(att)
    present = [name for name in cupti.SESSION_ROWS if any(r[name] > 0 for r in session)]
    extra = [[Observed(name, "copy" if name.startswith("[copy]") else "gpu", r[name] / 1000.0,
                       detail={"provider": "CUDAExecutionProvider"}) for name in present] for r in session]
    sums = [sum(r.values()) for r in session]
    for _, _, run, k in att.nodes:
        sums[run] += k.dur if k.provider == "CPUExecutionProvider" else node_us[(k.name, k.ts)][0]
    return node_us, extra, [s / 1000.0 for s in sums]


def _by_name(runs: Sequence[Sequence[Any]]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for run in runs:
        for row in run:
            out.setdefault(row.name, []).append(row.dur_ms)
    return out


def _fill_cupti(p: ModelProfile, src: Source, path: str, samples: Sequence[Mapping[str, Any]], warmup: int,
                iterations: int, spec: str, tmp: str, index: int, say) -> tuple[str, str, list[float], str]:
    from surgeon import input_files
    from surgeon.debug.profile import cupti

    say(f"profiling '{src.label}' under PyTorch's profiler (CUPTI) in a worker")
    inputs = str(Path(tmp) / f"inputs{index}.npz")
    input_files.save_inputs(inputs, list(samples))
    answer = run_worker({"model": path, "inputs": inputs, "spec": spec, "cpu_stand_in": False, "timing": "cupti",
                         "warmup": warmup, "iterations": iterations, "folder": tmp,
                         "prefix": str(Path(tmp) / f"cupti{index}"),
                         "optimized": str(Path(tmp) / f"cupti_optimized{index}.onnx"),
                         "answer": str(Path(tmp) / f"answer{index}.json")})
    with open(answer["kineto"], encoding="utf-8") as f:
        kineto = json.load(f)
    with open(answer["trace"], encoding="utf-8") as f:
        events = json.load(f)
    att = cupti.attribute(kineto, events, int(answer["ort_start_ns"]), iterations)
    node_us, extra, sums = cupti_rows(att)
    opt = Path(answer["optimized"]) if answer.get("optimized") and Path(answer["optimized"]).is_file() else None
    _fill_from_trace(p, src, answer["trace"], opt, warmup, "onnxrt-cuda", gpu_kernels=True, node_us=node_us,
                     extra_rows=extra)
    busy = cupti.gpu_activity(kineto, iterations)
    owner = att.owner
    p.gpu_timing = {"torch": answer.get("torch"), "gpu_busy_ms": busy.get("busy_ms"),
                    "clock_offset_us": att.offset_us,
                    "attributed_share": float(np.mean(owner >= 0)) if len(owner) else None,
                    "session_rows_ms": {name: float(np.median(ms)) for name, ms in _by_name(extra).items()}}
    return (CUPTI, "ONNX Runtime's profiler and CUPTI through PyTorch's profiler (a worker process): GPU time per node",
            sums, CUPTI_NOTE)
