"""``surgeon.trt_check``: will TensorRT take this model? Every failing node, why, and what to do."""

from __future__ import annotations

import os
from typing import Callable, Mapping, Sequence

from surgeon.api._common import check_outputs, write_report
from surgeon.errors import SurgeonError


def trt_check(
    model: str | os.PathLike,
    *,
    engine: str = "auto",
    input_shapes: Mapping[str, tuple[int, ...]] | None = None,
    profile: Mapping[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]] | None = None,
    build: bool = True,
    target_cc: Sequence[str] = (),
    matrix_version: str | None = None,
    seed: int = 0,
    timeout: float = 600.0,
    report: str | os.PathLike | None = None,
    progress: Callable[[str], None] | None = None,
):
    """Parse (and unless ``build=False`` build) ``model`` with TensorRT, TensorRT-RTX or the
    static operator matrix (``engine``: auto, trt, trt-rtx, matrix) and return a
    :class:`surgeon.debug.trt_check.report.TrtCheckReport`: ``ready``, every failure in
    graph order with its reason and remedy. ``profile``: per input (min, opt, max) shapes.
    """
    import surgeon
    from surgeon.debug import trt_check as _trt_check

    if timeout <= 0:
        raise SurgeonError("{0} must be a positive number of seconds", "timeout")
    check_outputs(model, report)
    loaded = surgeon.load(model)
    result = _trt_check.check(loaded, model_path=str(model), engine=engine, input_shapes=dict(input_shapes or {}),
                              profile=dict(profile or {}), build=build, target_cc=list(target_cc),
                              matrix_version=matrix_version, seed=seed, timeout=timeout, progress=progress)
    write_report(report, result.to_dict())
    return result
