"""Where the time goes: per-kernel profiles, and whether one model is faster than another.

- :func:`profile_model`: one model on ONNX Runtime (its profiler), or on TensorRT where it
  runs (its IProfiler through Polygraphy);
- :func:`read_trt_profile`: an existing ``trtexec --exportProfile`` (+ ``--exportLayerInfo``)
  mapped back to the ONNX model's nodes, on any machine;
- :func:`compare_models`: two models (typically before and after ``surgeon fix``) on the
  same inputs, runs interleaved, with the run-to-run noise measured;
- :func:`fix_summary`: the one line ``surgeon fix --profile`` prints.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import onnx

from surgeon import model as model_io
from surgeon.debug.profile.result import Comparison, GroupTime, KernelTime, ModelProfile, OpDiff
from surgeon.debug.profile.stats import compare as compare_timings
from surgeon.errors import UsageError

__all__ = ["profile_model", "compare_models", "read_trt_profile", "fix_summary", "ModelProfile", "Comparison",
           "KernelTime", "GroupTime", "BACKENDS"]

BACKENDS = ("onnxrt", "onnxrt-noopt", "trt", "trt-rtx", "onnxrt-cuda")


def check_backend(spec: str, runnable: bool = False) -> str:
    """A profiling backend name, ``onnxrt-cuda`` with its options (``onnxrt-cuda:tf32=0``) and
    profile's own ``timing=auto|synchronized|cupti`` included; unknown names and malformed
    options are usage errors; with ``runnable``, an onnxrt-cuda this onnxruntime cannot run (or
    ``timing=cupti`` without PyTorch) is refused too (before any work). Returns ``spec`` unchanged."""
    from surgeon.backends import split_spec

    name, options = split_spec(spec)
    timing = "auto"
    if name == "onnxrt-cuda":
        from surgeon.debug.profile.cuda import split_timing

        stripped, timing = split_timing(spec)
        options = split_spec(stripped)[1]
    if name not in BACKENDS:
        raise UsageError(f"unknown profiling backend '{name}'; choose one of {', '.join(BACKENDS)}")
    if options:
        if name != "onnxrt-cuda":
            raise UsageError(f"profiling backend '{name}' takes no options after its name")
        from surgeon.backends.onnxrt_cuda import options_from, parse_options

        options_from(parse_options(options))
    if runnable and name == "onnxrt-cuda":
        from surgeon.backends.onnxrt_cuda import unavailable_reason
        from surgeon.errors import BackendUnavailableError

        missing = unavailable_reason()
        if missing:
            raise BackendUnavailableError(missing)
        from surgeon.debug.profile.cuda import check_timing

        check_timing(timing)
    return spec


def _is_cuda(backend: str) -> bool:
    from surgeon.backends import split_spec

    return split_spec(backend)[0] == "onnxrt-cuda"


def _source(model: Any, label: str | None = None):
    from surgeon.debug.profile.onnxrt import Source

    if isinstance(model, onnx.ModelProto):
        return Source(label or model.graph.name or "model", model, None)
    path = Path(model)
    loaded, repairs = model_io.load_repaired(path)
    return Source(label or str(model), loaded, None if repairs else path)  # a repaired model runs from memory


def _samples(src, samples, input_shapes, seed, backend) -> list[dict]:
    from surgeon.input_data import make_samples

    if samples:
        from surgeon.input_data import check_feeds

        return check_feeds(src.model, samples, f"'{src.label}'")
    runs = None
    if backend in ("onnxrt", "onnxrt-noopt") or _is_cuda(backend):
        from surgeon.debug.profile import onnxrt

        backend = "onnxrt" if _is_cuda(backend) else backend  # which sizes run does not depend on the device

        holder: list = []

        def runs(feeds) -> bool:  # made on first use: only models with unresolved dynamic dims need it
            if not holder:
                holder.append(onnxrt.session(src, backend))
            try:
                holder[0].run(None, dict(feeds))
                return True
            except Exception:  # onnxruntime's own exception types: these sizes do not run
                return False

    return make_samples(src.model, input_shapes=input_shapes, iterations=1, seed=seed, runs=runs)


def _check(warmup: int, iterations: int, backend: str) -> None:
    if iterations < 1:
        raise UsageError("{0} must be at least 1", "iterations")
    if warmup < 0:
        raise UsageError("{0} must not be negative", "warmup")
    check_backend(backend)


def profile_model(model: Any, *, backend: str = "onnxrt", samples: Sequence[Mapping[str, Any]] | None = None,
                  input_shapes: Mapping[str, tuple[int, ...]] | None = None, seed: int = 0, warmup: int = 5,
                  iterations: int = 30, threads: int = 0, label: str | None = None, progress=None,
                  cpu_stand_in: bool = False) -> ModelProfile:
    """Per-kernel times of one model (path or ModelProto) on ``backend``.

    ``cpu_stand_in`` (onnxrt-cuda only): run the CUDA code path on the CPU provider, for
    exercising it without a GPU; the profile then says it is a CPU stand-in.
    """
    _check(warmup, iterations, backend)
    src = _source(model, label)
    if _is_cuda(backend):
        from surgeon.debug.profile import cuda

        feeds = _samples(src, samples, input_shapes, seed, backend)
        return cuda.run([src], feeds, spec=backend, warmup=warmup, iterations=iterations, progress=progress,
                        cpu_stand_in=cpu_stand_in)[0]
    if backend in ("trt", "trt-rtx"):
        from surgeon.debug.profile import trt_runtime

        trt_runtime.check_runnable(backend)
        feeds = _samples(src, samples, input_shapes, seed, backend)
        return trt_runtime.profile(src, feeds, backend=backend, warmup=warmup, iterations=iterations)
    from surgeon.debug.profile import onnxrt

    feeds = _samples(src, samples, input_shapes, seed, backend)
    return onnxrt.run([src], feeds, backend=backend, threads=threads, warmup=warmup, iterations=iterations,
                      progress=progress)[0]


def _op_diff(a: ModelProfile, b: ModelProfile) -> list[OpDiff]:
    """Per op type, top-level kernels and (labelled "inside ...") kernels in control-flow bodies."""
    ga = {g.key: g for g in (*a.op_types, *a.body_op_types)}
    gb = {g.key: g for g in (*b.op_types, *b.body_op_types)}
    rows = []
    for key in set(ga) | set(gb):
        x, y = ga.get(key), gb.get(key)
        rows.append(OpDiff(key, x.median_ms if x else 0.0, y.median_ms if y else 0.0, x.kernels if x else 0,
                           y.kernels if y else 0))
    rows.sort(key=lambda d: (-abs(d.delta_ms), d.op_type))
    return rows


def compare_models(a: Any, b: Any, *, backend: str = "onnxrt", samples: Sequence[Mapping[str, Any]] | None = None,
                   input_shapes: Mapping[str, tuple[int, ...]] | None = None, seed: int = 0, warmup: int = 5,
                   iterations: int = 30, threads: int = 0, profile: bool = True, labels: tuple[str, str] | None = None,
                   progress=None, cpu_stand_in: bool = False) -> Comparison:
    """B against A on the same inputs and backend (ONNX Runtime, CPU or CUDA), all runs interleaved.

    With ``profile=False`` only latency is measured (no per-op breakdown, half the runs).
    """
    _check(warmup, iterations, backend)
    if backend not in ("onnxrt", "onnxrt-noopt") and not _is_cuda(backend):
        raise UsageError("{0} compares two models on ONNX Runtime (onnxrt, onnxrt-noopt or onnxrt-cuda); "
                         "for TensorRT, compare two trtexec profiles of their engines", "against")
    from surgeon.debug.profile import onnxrt

    sa = _source(a, labels[0] if labels else None)
    sb = _source(b, labels[1] if labels else None)
    feeds = _samples(sa, samples, input_shapes, seed, backend)
    from surgeon.input_data import check_feeds

    feeds = check_feeds(sb.model, feeds, f"'{sb.label}'")
    if _is_cuda(backend):
        from surgeon.debug.profile import cuda

        pa, pb = cuda.run([sa, sb], feeds, spec=backend, warmup=warmup, iterations=iterations, profile=profile,
                          progress=progress, cpu_stand_in=cpu_stand_in)
    else:
        pa, pb = onnxrt.run([sa, sb], feeds, backend=backend, threads=threads, warmup=warmup, iterations=iterations,
                            profile=profile, progress=progress)
    diff = compare_timings(pa.latency_runs_ms, pb.latency_runs_ms)
    return Comparison(pa, pb, diff, _op_diff(pa, pb) if profile else [])


def read_trt_profile(model: Any, profile_json: str | os.PathLike, layers_json: str | os.PathLike | None = None,
                     label: str | None = None) -> ModelProfile:
    """A ``trtexec --exportProfile`` file (and ``--exportLayerInfo``), mapped to ``model``'s nodes."""
    from surgeon.debug.profile import trt_files

    src = _source(model, label)
    return trt_files.profile_from_files(src.label, src.model, profile_json, layers_json)


def fix_summary(input_path: Any, output_path: Any, *, samples=None, input_shapes=None, seed: int = 0,
                warmup: int = 5, iterations: int = 50, threads: int = 1, progress=None, backend: str = "onnxrt",
                cpu_stand_in: bool = False) -> Comparison:
    """Latency of the fixed model against the input model (the line ``fix --profile`` prints).

    One thread by default: the question is what the graph change did, and a thread pool
    on a busy machine adds stalls of 10+ ms that swamp it (measured on the 2-core CI box).
    ``backend="onnxrt-cuda[:options]"`` times both on the GPU (``fix --profile-on``).
    """
    return compare_models(input_path, output_path, samples=samples, input_shapes=input_shapes, seed=seed,
                          warmup=warmup, iterations=iterations, threads=threads, profile=False, progress=progress,
                          backend=backend, cpu_stand_in=cpu_stand_in)


def where_timed(backend: str) -> str:
    """The words ``fix --profile`` prints after its headline: on what the two models were timed."""
    if _is_cuda(backend):
        return f"on ONNX Runtime CUDA ({backend})"
    return "on ONNX Runtime CPU, 1 thread"
