"""Per-kernel times from ONNX Runtime's own profiler, and latency measured without it.

For each model two sessions with the same options are made: a plain one, whose wall-clock
``run`` times are the latency, and one with ``enable_profiling``, whose JSON trace gives
every kernel's time. The profiled session also saves its optimized graph
(``optimized_model_filepath``), from which fused kernels are mapped back to ONNX nodes.
All sessions (of one or two models) run in interleaved rounds, the order rotating from
round to round, so that a slow spell of a shared machine hits every series alike; the
first ``warmup`` rounds are not counted, and each run starts after a 1 ms sleep (see
PAUSE_S). The profiled session's wall times, measured in
the same rounds, give the profiler's overhead.

onnxruntime is imported lazily, only here.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import onnx

from surgeon import model as model_io
from surgeon.debug.profile import aggregate, fusion_map, ort_trace
from surgeon.debug.profile.result import ModelProfile
from surgeon.debug.profile.stats import summarize
from surgeon.errors import BackendError, UsageError
from surgeon.graph import count_nodes
from surgeon.input_data import describe_feeds

log = logging.getLogger(__name__)

BACKENDS = {"onnxrt": "ORT_ENABLE_ALL", "onnxrt-noopt": "ORT_DISABLE_ALL"}

# Each timed run starts after a short sleep. On a shared CPU a process that runs without
# pause is preempted once per scheduler time slice, and with runs of a few milliseconds
# that lands on every other run (measured here: 2.2 ms runs read as 6.5 ms medians, the
# rotation of A/B turning it into a fake A-vs-B difference); waking from a sleep gives the
# scheduler its switch point before the run instead of inside it. On an idle machine the
# sleep changes nothing but the wall time of the whole measurement.
PAUSE_S = 0.001


@dataclass
class Source:
    """A model to run: its label, the file ONNX Runtime loads (or None), and its graph."""

    label: str
    model: onnx.ModelProto
    path: Path | None = None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    if "[ONNXRuntimeError]" in text:  # "[ONNXRuntimeError] : 1 : FAIL : message"
        text = text.split(" : ", 3)[-1]
    return text.splitlines()[0] if text else type(exc).__name__


def _options(backend: str, threads: int, profile_prefix: str | None = None, optimized_path: str | None = None):
    import onnxruntime as ort

    ort.set_default_logger_severity(4)  # failures reach the user as BackendError, not ORT's log
    so = ort.SessionOptions()
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, BACKENDS[backend])
    so.log_severity_level = 4
    if threads:
        so.intra_op_num_threads = threads
    enable_profiling(so, profile_prefix, optimized_path)
    return so


def enable_profiling(so: Any, prefix: str | None, optimized: str | None) -> None:
    """ONNX Runtime's profiler on ``so`` (trace files named from ``prefix``), and with ``optimized``
    the optimized graph saved there, its weights in a side file (any model size; only the graph
    is read back, to map fused kernels to ONNX nodes)."""
    if prefix:
        so.enable_profiling = True
        so.profile_file_prefix = prefix
    if optimized:
        so.optimized_model_filepath = optimized
        so.add_session_config_entry("session.optimized_model_external_initializers_file_name",
                                    Path(optimized).name + ".data")
        so.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")


def _session(source: Source, backend: str, so) -> Any:
    import onnxruntime as ort

    try:
        if source.path is not None:
            return ort.InferenceSession(str(source.path), so, providers=["CPUExecutionProvider"])
        if model_io.needs_external_data(source.model):
            with model_io.materialized(source.model) as path:
                return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        return ort.InferenceSession(source.model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise BackendError(f"ONNX Runtime ({backend}) cannot load '{source.label}': {_first_line(exc)}") from exc


def session(source: Source, backend: str, threads: int = 0) -> Any:
    """A plain ONNX Runtime session for ``source`` (BackendError when it cannot load)."""
    return _session(source, backend, _options(backend, threads))


class _Timed:
    """One session fed the samples in turn; ``run`` returns wall-clock milliseconds."""

    def __init__(self, label: str, sess: Any, samples: Sequence[Mapping[str, Any]], backend: str):
        self.label, self.sess, self.samples, self.backend = label, sess, samples, backend
        self.outputs = [o.name for o in sess.get_outputs()]
        self.times: list[float] = []

    def run(self, i: int) -> float:
        feeds = dict(self.samples[i % len(self.samples)])
        time.sleep(PAUSE_S)
        t0 = time.perf_counter_ns()
        try:
            self.sess.run(self.outputs, feeds)
        except Exception as exc:
            raise BackendError(f"ONNX Runtime ({self.backend}) cannot run '{self.label}': {_first_line(exc)}") from exc
        return (time.perf_counter_ns() - t0) / 1e6


def interleave(timers: Sequence[_Timed], warmup: int, iterations: int, progress=None) -> None:
    """Run every timer once per round, the order rotating; keep the times after warm-up."""
    n = len(timers)
    for r in range(warmup + iterations):
        order = [timers[(r + j) % n] for j in range(n)]
        for t in order:
            ms = t.run(r)
            if r >= warmup:
                t.times.append(ms)
        if progress and (r % 5 == 0 or r == warmup + iterations - 1):
            progress(f"round {r + 1} of {warmup + iterations} ({warmup} warm-up)")


def _check_counts(warmup: int, iterations: int) -> None:
    if iterations < 1:
        raise UsageError("{0} must be at least 1", "iterations")
    if warmup < 0:
        raise UsageError("{0} must not be negative", "warmup")


def run(sources: Sequence[Source], samples: Sequence[Mapping[str, Any]], *, backend: str = "onnxrt",
        threads: int = 0, warmup: int = 5, iterations: int = 30, profile: bool = True,
        progress=None) -> list[ModelProfile]:
    """Profile (or, with ``profile=False``, only time) each source on the same samples."""
    _check_counts(warmup, iterations)
    if backend not in BACKENDS:
        raise UsageError(f"backend '{backend}' is not an ONNX Runtime backend ({', '.join(BACKENDS)})")
    if not samples:
        raise UsageError("no input samples to run the model on")
    with tempfile.TemporaryDirectory(prefix="surgeon-profile-") as tmp:
        plain, profiled = [], []
        for i, src in enumerate(sources):
            plain.append(_Timed(src.label, _session(src, backend, _options(backend, threads)), samples, backend))
            if profile:
                opt = os.path.join(tmp, f"optimized{i}.onnx") if backend == "onnxrt" else None
                so = _options(backend, threads, profile_prefix=os.path.join(tmp, f"trace{i}"), optimized_path=opt)
                profiled.append(_Timed(src.label, _session(src, backend, so), samples, backend))
        interleave([t for pair in zip(plain, profiled or [None] * len(plain)) for t in pair if t is not None],
                   warmup, iterations, progress)
        results = []
        for i, src in enumerate(sources):
            p = ModelProfile(model=src.label, backend=backend, source="ONNX Runtime profiler (enable_profiling)",
                             nodes=count_nodes(src.model), inputs=describe_feeds(samples[0]), threads=threads,
                             warmup=warmup, iterations=iterations)
            p.latency = summarize(plain[i].times)
            p.latency_runs_ms = list(plain[i].times)
            if len(samples) > 1:
                p.notes.append(f"{len(samples)} input samples, used in turn")
            if profile:
                p.profiled_latency = summarize(profiled[i].times)
                p.profiled_runs_ms = list(profiled[i].times)
                trace_file = profiled[i].sess.end_profiling()
                opt_path = Path(tmp) / f"optimized{i}.onnx"
                _fill_from_trace(p, src, trace_file, opt_path if opt_path.is_file() else None, warmup, backend)
            else:
                p.source = "latency only (profiler off)"
            results.append(p)
        return results


def _fill_from_trace(p: ModelProfile, src: Source, trace_file: str, optimized: Path | None, warmup: int,
                     backend: str, gpu_kernels: bool = False,
                     node_us: Mapping[tuple[str, int], tuple[float, int]] | None = None,
                     extra_rows: Sequence[Sequence[aggregate.Observed]] | None = None) -> None:
    """``gpu_kernels``: a node's time is the GPU time of the kernels it launched (CUPTI's
    "Kernel" events, or ``node_us``: (name, ts) -> (GPU us, activities) from elsewhere), except
    for nodes that ran on the CPU, whose own time is their time. ``extra_rows``: per measured
    run, rows that are no ONNX node (the session's copies), origin ``session``."""
    with open(trace_file, encoding="utf-8") as f:
        trace = ort_trace.parse_trace(json.load(f), what=f"ONNX Runtime's trace of '{src.label}'")
    runs = trace.runs[warmup:] if len(trace.runs) > warmup else trace.runs
    opt_model = onnx.load(str(optimized), load_external_data=False) if optimized is not None else None
    if backend != "onnxrt-noopt" and opt_model is None:
        p.notes.append("ONNX Runtime did not save its optimized graph; kernels are matched to ONNX nodes by name only")
    origins = fusion_map.map_kernels(src.model, opt_model)
    def dur_us(k: ort_trace.KernelEvent) -> float:
        if not gpu_kernels or k.provider == "CPUExecutionProvider":
            return k.dur
        return node_us.get((k.name, k.ts), (0.0, 0))[0] if node_us is not None else k.gpu_us

    observed = [[aggregate.Observed(k.name, k.op_type, dur_us(k) / 1000.0, key=k.node_index, parent=k.parent,
                                    detail={"provider": k.provider})
                 for k in run.kernels] for run in runs]
    session = {k.name for rows in (extra_rows or []) for k in rows}
    for run_rows, rows in zip(observed, extra_rows or []):
        run_rows.extend(rows)
    run_ms = [r.dur_us / 1000.0 for r in runs]
    p.run_time = summarize(run_ms)
    p.kernels, p.op_types, p.origins, p.body_op_types = aggregate.tables(
        observed, run_ms, lambda name, op, key, occ: (fusion_map.Origin((), (), "session") if name in session
                                                      else origins.origin(name, op, key, occ)))
    p.removed = list(origins.removed)
    shared = sorted({k.name.rsplit("#", 1)[0] for k in p.kernels if k.parent is None and "#" in k.name
                     and k.name.rsplit("#", 1)[0] in origins.duplicates})
    if shared:
        p.notes.append(f"ONNX Runtime gave one name to several fused kernels ({', '.join(shared[:4])}"
                       f"{', …' if len(shared) > 4 else ''}); they are numbered and matched to graph nodes in the order they ran")
    unmapped = [k.name for k in p.kernels if k.how == "unmapped"]
    if unmapped:
        p.notes.append(f"{len(unmapped)} kernel(s) could not be traced back to ONNX nodes: {', '.join(unmapped[:5])}")
    if trace.memory:
        p.memory = {"arena_peak_in_use_bytes": trace.memory.get("mem_in_use_peak"),
                    "arena_held_bytes": trace.memory.get("mem_arena_held")}
        p.notes.append("memory: ONNX Runtime's CPU allocator statistics as its profiler reports them "
                       "(mem_in_use_peak, mem_arena_held), for the profiled session")
    else:
        p.notes.append("memory: this ONNX Runtime's profiler trace has no allocator statistics "
                       "(mem_in_use_peak); no arena peak can be read")
