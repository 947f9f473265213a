"""``surgeon.fp16``: a mixed-precision model with the fewest FP32 islands that keep the tolerance."""

from __future__ import annotations

import os
from typing import Any, Callable, Mapping, Sequence

from surgeon.api._common import input_samples, write_report
from surgeon.errors import UsageError


def fp16(
    model: str | os.PathLike,
    output: str | os.PathLike,
    *,
    precision: str = "fp16",
    keep: Sequence[str] = (),
    keep_io_types: bool = False,
    layer_precisions: str | os.PathLike | None = None,
    max_oracle_calls: int = 300,
    trt_check: bool | None = None,
    load_inputs: str | os.PathLike | None = None,
    save_inputs: str | os.PathLike | None = None,
    input_shapes: Mapping[str, tuple[int, ...]] | None = None,
    value_ranges: Mapping[str, tuple[float, float]] | None = None,
    iterations: int = 2,
    seed: int = 0,
    atol: Any = None,
    rtol: Any = None,
    report: str | os.PathLike | None = None,
    progress: Callable[[str], None] | None = None,
):
    """Write ``output``: ``model`` in FP16 (or BF16) except the fewest FP32 islands that keep
    every output within tolerance on every sample (the FP16 emulation is the oracle, and the
    written model is checked on ONNX Runtime). ``keep``: op types or node names kept in FP32
    whatever the search finds. ``trt_check``: None builds the output with TensorRT-RTX where
    it is installed, False skips it. Returns a :class:`surgeon.precision.report.Fp16Report`
    (``passed``: the written model meets the tolerance).
    """
    import surgeon
    from surgeon import input_files
    from surgeon.precision import Fp16Options, convert_mixed_precision
    from surgeon.precision.api import output_path_checks

    output_path_checks(str(model), output, report, layer_precisions, save_inputs)
    if iterations < 1:
        raise UsageError("{0} must be at least 1", "iterations")
    for path in (save_inputs, load_inputs):
        if path:
            input_files.check_path(path, "input data")
    loaded = surgeon.load(model)
    samples = input_samples(loaded, str(model), load_inputs=load_inputs, save_inputs=save_inputs,
                            input_shapes=input_shapes, value_ranges=value_ranges, iterations=iterations, seed=seed)
    options = Fp16Options(precision=precision, keep=list(keep), keep_io_types=keep_io_types, atol=atol, rtol=rtol,
                          max_oracle_calls=max_oracle_calls, trt_check=trt_check,
                          layer_precisions=str(layer_precisions) if layer_precisions else None,
                          realistic=not (load_inputs or input_shapes))  # loaded or pinned sizes are the user's
    result = convert_mixed_precision(model, output, samples=samples, options=options, progress=progress)
    write_report(report, result.to_dict())
    return result
