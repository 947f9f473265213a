"""``surgeon.isolate``: the minimal set of rewrites, ONNX Runtime optimizers or TensorRT
tactics that breaks a model (delta debugging with an oracle)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from surgeon.api._common import input_samples
from surgeon.errors import SurgeonError

TARGETS = ("passes", "onnxrt-optimizers", "trt-tactics", "cuda-options")


@dataclass
class IsolateOutcome:
    """The search result and the report written to ``outdir/report.json`` (``to_dict()``)."""

    result: Any  # surgeon.debug.isolate.IsolateResult
    report: dict
    outdir: Path

    @property
    def status(self) -> str:
        return self.result.status

    @property
    def diverges(self) -> bool:
        """Anything but "no divergence": the configuration breaks the model (exit 1)."""
        from surgeon.debug import isolate as _isolate

        return self.result.status != _isolate.NO_DIVERGENCE

    def to_dict(self) -> dict:
        return self.report


def isolate(
    model: str | os.PathLike,
    *,
    target: str,
    outdir: str | os.PathLike,
    passes: str | list[str] | None = None,
    rules: Sequence[str] = (),
    check: str | None = None,
    check_timeout: float | None = 600.0,
    reference: str = "onnxrt-noopt",
    optimizers: Sequence[str] | None = None,
    layers: Sequence[str] = (),
    fp16: bool = False,
    test: str | None = None,
    max_sets: int = 4,
    confirm_repeats: int = 2,
    fresh: bool = False,
    load_inputs: str | os.PathLike | None = None,
    save_inputs: str | os.PathLike | None = None,
    input_shapes: Mapping[str, tuple[int, ...]] | None = None,
    value_ranges: Mapping[str, tuple[float, float]] | None = None,
    iterations: int = 1,
    seed: int = 0,
    atol: Any = None,
    rtol: Any = None,
    nan_equal: bool = False,
    progress: Callable[[str], None] | None = None,
) -> IsolateOutcome:
    """Search the choices of ``target`` (``passes``: our own rewrite applications;
    ``onnxrt-optimizers``; ``trt-tactics``; ``cuda-options``: the CUDA provider's choices of
    the configuration ``test``, default ``onnxrt-cuda``) for the minimal sets that make the model
    diverge from ``reference``, confirm them, and write report.json, the oracle-call log
    and an avoid-file into ``outdir`` (resumable unless ``fresh``)."""
    import surgeon
    from surgeon.comparison import diff_outputs
    from surgeon.debug import isolate as _isolate

    if max_sets < 1 or confirm_repeats < 1:
        raise SurgeonError("{0} and {1} must be at least 1", "max_sets", "confirm_repeats")
    if check and target != "passes":
        raise SurgeonError("{0} is supported with {1} only", "check", "target=passes")
    for flag, value, wanted in (("layers", layers, "trt-tactics"), ("rules", rules, "passes"),
                                ("passes", passes, "passes"), ("test", test, "cuda-options")):
        if value and target != wanted:
            raise SurgeonError("{0} applies to {1} only", flag, f"target={wanted}")
    if optimizers and target not in ("onnxrt-optimizers", "cuda-options"):
        raise SurgeonError("{0} applies to {1} only", "optimizers", "target=onnxrt-optimizers and cuda-options")
    out = Path(outdir)
    if out.exists() and not out.is_dir():
        raise SurgeonError(f"output directory '{out}' exists and is not a directory")
    loaded = surgeon.load(model)
    say = progress or (lambda _m: None)
    samples = input_samples(loaded, str(model), load_inputs=load_inputs, save_inputs=save_inputs,
                            input_shapes=input_shapes, value_ranges=value_ranges, iterations=iterations, seed=seed,
                            probe=False)
    if target == "passes":
        from surgeon.debug.isolate.passes_target import PassesTarget
        from surgeon.pipeline import registry

        registry.parse_pipeline(passes)
        say("first full run of the pipeline (numbering rewrite applications)")
        chosen: Any = PassesTarget(loaded, samples, passes=passes, options={"rules": list(rules)}, backend=reference,
                                   atol=atol, rtol=rtol, nan_equal=nan_equal)
        if check:
            from surgeon.debug.check_command import CheckCommand
            from surgeon.debug.isolate.check_target import CheckedTarget

            chosen = CheckedTarget(chosen, CheckCommand(check, check_timeout))
    elif target == "cuda-options":
        from surgeon.debug.isolate.cuda_options import CudaOptionsTarget

        chosen = CudaOptionsTarget(loaded, samples, test=test or "onnxrt-cuda", reference=reference,
                                   optimizers=optimizers, atol=atol, rtol=rtol, nan_equal=nan_equal, progress=say)
    elif target == "onnxrt-optimizers":
        from surgeon.debug.isolate.ort_optimizers import OrtOptimizersTarget

        say("asking ONNX Runtime which optimizers it runs on this model")
        chosen = OrtOptimizersTarget(loaded, samples, reference=reference, optimizers=optimizers, atol=atol, rtol=rtol,
                                     nan_equal=nan_equal)
    elif target == "trt-tactics":
        from surgeon import backends
        from surgeon.debug.isolate import trt_tactics

        version = trt_tactics.tensorrt_version()
        say(f"TensorRT {version}: {trt_tactics.mechanism_for(version)}; first build")
        session = backends.create(reference).session(loaded)
        expected = [session.run(f) for f in samples]

        def agree(ref, test):
            return all(d.passed for d in diff_outputs(ref, test, atol=atol, rtol=rtol, nan_equal=nan_equal))

        chosen = trt_tactics.TrtTacticsTarget(loaded, samples, reference_outputs=expected, compare=agree,
                                              flagged=list(layers), fp16=fp16)
    else:
        raise SurgeonError(f"unknown isolate target '{target}'; choose one of {', '.join(TARGETS)}")
    result, report = _isolate.run(chosen, str(outdir), max_sets=max_sets, confirm_repeats=confirm_repeats,
                                  resume=not fresh, progress=progress)
    return IsolateOutcome(result, report, out)
