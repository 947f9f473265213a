"""``surgeon.isolate``: the minimal set of rewrites, ONNX Runtime optimizers or TensorRT
tactics that breaks a model (delta debugging with an oracle)."""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from surgeon.api._common import input_samples
from surgeon.errors import SurgeonError

TARGETS = ("passes", "onnxrt-optimizers", "trt-tactics")


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


class CheckCommand:
    """An external oracle for the passes target: run a command on each candidate model file.

    ``{model}`` in the command is replaced by the candidate's path (appended when absent);
    exit 0 = good, 125 = cannot tell, anything else = bad.
    """

    def __init__(self, target: Any, command: str):
        self.target, self.argv = target, shlex.split(command)
        if not self.argv:
            raise SurgeonError("{0} is empty", "check")
        self.name, self.choices, self.describe, self.label = target.name, target.choices, target.describe, target.label
        self.write_avoid = target.write_avoid
        self.mechanism = target.mechanism.split(",")[0] + f", judged by: {command}"

    def __call__(self, subset):
        from surgeon import model as model_io
        from surgeon.debug.isolate import Verdict

        model = self.target.candidate(subset)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "candidate.onnx"
            model_io.save(model, path)
            argv = [a.replace("{model}", str(path)) for a in self.argv]
            if argv == self.argv:
                argv.append(str(path))
            try:
                rc = subprocess.run(argv, capture_output=True).returncode
            except OSError as exc:
                raise SurgeonError(f"cannot run the {{0}} command '{argv[0]}': {exc.strerror}", "check") from exc
        return Verdict.UNRESOLVED if rc == 125 else (Verdict.PASS if rc == 0 else Verdict.FAIL)


def isolate(
    model: str | os.PathLike,
    *,
    target: str,
    outdir: str | os.PathLike,
    passes: str | list[str] | None = None,
    rules: Sequence[str] = (),
    check: str | None = None,
    reference: str = "onnxrt-noopt",
    optimizers: Sequence[str] | None = None,
    layers: Sequence[str] = (),
    fp16: bool = False,
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
    ``onnxrt-optimizers``; ``trt-tactics``) for the minimal sets that make the model
    diverge from ``reference``, confirm them, and write report.json, the oracle-call log
    and an avoid-file into ``outdir`` (resumable unless ``fresh``)."""
    import surgeon
    from surgeon.comparison import diff_outputs
    from surgeon.debug import isolate as _isolate

    if max_sets < 1 or confirm_repeats < 1:
        raise SurgeonError("{0} and {1} must be at least 1", "max_sets", "confirm_repeats")
    if check and target != "passes":
        raise SurgeonError("{0} is supported with {1} only", "check", "target=passes")
    for flag, value, wanted in (("optimizers", optimizers, "onnxrt-optimizers"), ("layers", layers, "trt-tactics"),
                                ("rules", rules, "passes"), ("passes", passes, "passes")):
        if value and target != wanted:
            raise SurgeonError("{0} applies to {1} only", flag, f"target={wanted}")
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
            chosen = CheckCommand(chosen, check)
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
