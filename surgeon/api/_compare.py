"""``surgeon.compare`` and ``surgeon.api.doctor``: run and judge, from files."""

from __future__ import annotations

import os
from typing import Any, Callable, Mapping, Sequence

from surgeon.api._common import check_outputs, input_samples, write_report


def compare(
    model: Any,
    *,
    test: Any = None,
    against: Any = None,
    ref: Any = "onnxrt",
    test_options: Mapping[str, Any] | None = None,
    ref_options: Mapping[str, Any] | None = None,
    samples: Sequence[Mapping[str, Any]] | None = None,
    load_inputs: str | os.PathLike | None = None,
    save_inputs: str | os.PathLike | None = None,
    save_outputs: str | os.PathLike | None = None,
    input_shapes: Mapping[str, tuple[int, ...]] | None = None,
    value_ranges: Mapping[str, tuple[float, float]] | None = None,
    iterations: int = 1,
    seed: int = 0,
    atol: Any = None,
    rtol: Any = None,
    nan_equal: bool = False,
    plot_dir: str | os.PathLike | None = None,
    report: str | os.PathLike | None = None,
):
    """Run ``model`` on ``ref`` and on ``test`` (or a second model ``against`` on ``ref``)
    and judge every output; returns a :class:`surgeon.debug.compare_run.CompareReport`.

    ``test``: a backend name (``fp16``, ``onnxrt-noopt``, ``reference``, ``trt``, ...) or a
    :class:`surgeon.backends.Backend`. Inputs: ``samples``, or ``load_inputs`` (.npz or
    Polygraphy JSON, checked against the model), or generated ones (``input_shapes``,
    ``value_ranges``, ``iterations``, ``seed``); ``save_inputs``/``save_outputs`` write them
    in Polygraphy's formats. Tolerances: one number, a per-output mapping, or None (per
    dtype, loosened for a reduced-precision test backend). Usage and input problems raise
    :class:`surgeon.SurgeonError` before anything runs.
    """
    from surgeon import backends, input_files
    from surgeon import model as model_io
    from surgeon.debug import compare_run

    from_path = isinstance(model, (str, os.PathLike))
    if not from_path and not any((load_inputs, save_inputs, save_outputs, report)):
        return compare_run.compare(model, ref=ref, test=test, against=against, ref_options=ref_options,
                                   test_options=test_options, samples=samples, input_shapes=input_shapes,
                                   value_ranges=value_ranges, iterations=iterations, seed=seed, atol=atol,
                                   rtol=rtol, nan_equal=nan_equal, plot_dir=plot_dir)
    label = str(model) if from_path else (model.graph.name or "<model>")
    if from_path:
        check_outputs(model, report, save_outputs, save_inputs)
    test_backend = backends.create(test, **dict(test_options or {})) if isinstance(test, str) else test
    for path, what in ((save_inputs, "input data"), (save_outputs, "output data"), (load_inputs, "input data")):
        if path:
            input_files.check_path(path, what)
    loaded = model_io.load(model) if from_path else model
    if against is not None and isinstance(against, (str, os.PathLike)):
        model_io.load(against)  # a missing or broken second model is an input error before anything runs
    if hasattr(test_backend, "check"):
        test_backend.check(loaded)
    ref_name = ref if isinstance(ref, str) else "onnxrt"
    if samples is None:
        samples = input_samples(loaded, label, load_inputs=load_inputs, save_inputs=save_inputs,
                                input_shapes=input_shapes, value_ranges=value_ranges, iterations=iterations,
                                seed=seed, reference=ref_name)
    result = compare_run.compare(str(model) if from_path else model, ref=ref, test=test_backend, against=against,
                                 ref_options=ref_options, samples=samples, atol=atol, rtol=rtol, nan_equal=nan_equal,
                                 plot_dir=plot_dir)
    result.model = label
    if save_outputs:
        runs = {f"ref:{ref_name}": result.runs.get("ref", [])}
        if "test" in result.runs:
            runs[f"test:{test if isinstance(test, str) else ('against' if test is None else test.name)}"] = result.runs["test"]
        result.notes.extend(input_files.save_outputs(save_outputs, runs))
    write_report(report, result.to_dict())
    return result


def doctor(
    model: str | os.PathLike,
    output: str | os.PathLike,
    *,
    passes: str | list[str] | None = None,
    ref: str = "onnxrt",
    test: str | None = None,
    test_options: Mapping[str, Any] | None = None,
    test_original: bool = False,
    load_inputs: str | os.PathLike | None = None,
    save_inputs: str | os.PathLike | None = None,
    input_shapes: Mapping[str, tuple[int, ...]] | None = None,
    value_ranges: Mapping[str, tuple[float, float]] | None = None,
    iterations: int = 1,
    seed: int = 0,
    atol: Any = None,
    rtol: Any = None,
    nan_equal: bool = False,
    trt: bool = False,
    trt_engine: str = "auto",
    target_cc: Sequence[str] = (),
    report: str | os.PathLike | None = None,
    progress: Callable[[str], None] | None = None,
):
    """Fix ``model`` into ``output``, then compare the result with the original (and on
    ``test``); with ``trt``, trt-check both. Returns a :class:`surgeon.doctor.DoctorReport`."""
    import surgeon
    from surgeon import doctor as _doctor
    from surgeon.errors import SurgeonError

    check_outputs(model, output, report, save_inputs)
    surgeon.pipeline.registry.parse_pipeline(passes)  # unknown pass names fail before any work
    if (trt_engine != "auto" or target_cc) and not trt:
        raise SurgeonError("{0} and {1} apply with {2} only", "trt_engine", "target_cc", "trt")
    trt_options = {"engine": trt_engine, "target_cc": list(target_cc)} if trt else None
    loaded = surgeon.load(model)
    samples = input_samples(loaded, str(model), load_inputs=load_inputs, save_inputs=save_inputs,
                            input_shapes=input_shapes, value_ranges=value_ranges, iterations=iterations, seed=seed,
                            reference=ref)
    result = _doctor.doctor(model, output, passes=passes, ref=ref, test=test, test_options=test_options,
                            test_original=test_original, samples=samples, input_shapes=input_shapes, atol=atol,
                            rtol=rtol, nan_equal=nan_equal, seed=seed, trt=trt_options, progress=progress)
    write_report(report, result.to_dict())
    return result
