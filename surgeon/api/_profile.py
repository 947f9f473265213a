"""``surgeon.profile``: where the time goes, per kernel, op type and ONNX origin; or two
models side by side."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from surgeon.api._common import check_outputs, write_report
from surgeon.errors import UsageError

BACKENDS = ("onnxrt", "onnxrt-noopt", "trt", "trt-rtx")


@dataclass
class ProfileResult:
    """A :class:`surgeon.debug.profile.result.ModelProfile` (one model) or ``Comparison``
    (``against``), and the plots written."""

    result: Any
    plots: list[Path] = field(default_factory=list)

    @property
    def comparison(self) -> bool:
        return hasattr(self.result, "diff")

    def to_dict(self) -> dict:
        return {**self.result.to_dict(), "plots": [str(p) for p in self.plots]}


def profile(
    model: str | os.PathLike,
    *,
    against: str | os.PathLike | None = None,
    backend: str = "onnxrt",
    input_shapes: Mapping[str, tuple[int, ...]] | None = None,
    load_inputs: str | os.PathLike | None = None,
    seed: int = 0,
    warmup: int = 5,
    iterations: int = 30,
    threads: int = 0,
    top: int = 15,
    plot_dir: str | os.PathLike | None = None,
    trt_profile: str | os.PathLike | None = None,
    trt_layers: str | os.PathLike | None = None,
    report: str | os.PathLike | None = None,
    progress: Callable[[str], None] | None = None,
) -> ProfileResult:
    """Time ``model`` on ``backend`` (ONNX Runtime CPU with or without graph optimizations,
    or a TensorRT engine): per-kernel medians and confidence intervals, grouped by op type
    and ONNX origin. With ``against``, a second model on the same inputs, runs interleaved,
    and the latency change with its noise. With ``trt_profile`` (and ``trt_layers``), read
    ``trtexec --exportProfile`` output instead of running anything. ``plot_dir``: bar charts
    of the top ``top`` kernels and op types.
    """
    from surgeon import input_files
    from surgeon.debug import profile as _profile

    for option, value, low in (("iterations", iterations, 1), ("warmup", warmup, 0),
                               ("threads", threads, 0), ("top", top, 1)):
        if value < low:
            raise UsageError(f"{{0}} must be at least {low}", option)
    if trt_layers and not trt_profile:
        raise UsageError("{0} goes with {1}", "trt_layers", "trt_profile")
    if trt_profile and (against or backend not in ("onnxrt", "trt")):
        raise UsageError("{0} reads one trtexec profile; it does not combine with {1} or {2}", "trt_profile", "against", "backend")
    check_outputs(model, report)
    if plot_dir and Path(plot_dir).exists() and not Path(plot_dir).is_dir():
        raise UsageError(f"{{0}} needs a folder; '{plot_dir}' is a file", "plot_dir")
    samples = input_files.load_inputs(load_inputs) if load_inputs else None
    shapes = dict(input_shapes or {})
    if trt_profile:
        measured = _profile.read_trt_profile(model, trt_profile, trt_layers)
    elif against:
        measured = _profile.compare_models(model, against, backend=backend, samples=samples, input_shapes=shapes,
                                           seed=seed, warmup=warmup, iterations=iterations, threads=threads,
                                           progress=progress)
    else:
        measured = _profile.profile_model(model, backend=backend, samples=samples, input_shapes=shapes, seed=seed,
                                          warmup=warmup, iterations=iterations, threads=threads, progress=progress)
    plots: list = []
    if plot_dir:
        from surgeon.debug.profile.plot import plot_comparison, plot_profile

        plots = plot_comparison(measured, plot_dir, top) if against else plot_profile(measured, plot_dir, top)
    result = ProfileResult(measured, list(plots))
    write_report(report, result.to_dict())
    return result
