"""``surgeon doctor``: fix a model, then prove the result on the backends that matter.

Why a separate command: the usual session is "clean the export up, check nothing
changed, check it runs right where it will be deployed". Doctor does the three in one
go with one report and one exit code: the default (or given) pass pipeline, a comparison
of the fixed model against the original on the reference backend (independent of the
pipeline's own per-pass verification, and on the same inputs the user asked for), and,
with a test backend, the fixed model (or the original) on that backend against the
original on the reference.

With ``trt=...`` (``--trt``) it also runs ``trt-check`` on the original and on the fixed
model, so the report says what the fix made TensorRT accept and what is still not ready.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from surgeon import model as model_io
from surgeon.debug.compare_run import INCONCLUSIVE, MISMATCH, CompareReport, compare


@dataclass
class DoctorReport:
    model: str
    output: str
    fix: Any  # FixReport
    comparisons: list[tuple[str, CompareReport]] = field(default_factory=list)
    trt_before: Any = None  # TrtCheckReport of the original (with trt=...)
    trt_after: Any = None  # TrtCheckReport of the fixed model
    seconds: float = 0.0
    suggestions: list[str] = field(default_factory=list)  # commands that address a failure

    @property
    def matched(self) -> bool:
        return all(c.passed for _, c in self.comparisons)

    @property
    def passed(self) -> bool:
        return self.matched and (self.trt_after is None or self.trt_after.ready)

    @property
    def verdict(self) -> str:
        """mismatch, then inconclusive (a reference that cannot show a difference), then TensorRT readiness."""
        verdicts = {c.verdict for _, c in self.comparisons}
        if MISMATCH in verdicts:
            return "mismatch"
        if INCONCLUSIVE in verdicts:
            return "inconclusive"
        return "ok" if self.passed else "not ready for TensorRT"

    def to_dict(self) -> dict:
        out = {"verdict": self.verdict, "model": self.model, "output": self.output, "fix": self.fix.to_dict(),
               "comparisons": [{"check": what, **c.to_dict()} for what, c in self.comparisons],
               "suggestions": self.suggestions, "seconds": round(self.seconds, 3)}
        if self.trt_after is not None:
            out["trt"] = {"original": self.trt_before.to_dict(), "fixed": self.trt_after.to_dict(),
                          "resolved_by_fix": resolved_by_fix(self.trt_before, self.trt_after)}
        return out


def resolved_by_fix(before: Any, after: Any) -> list[str]:
    """Failures of the original that the fixed model no longer has (by node name and op)."""
    key = lambda f: (f.node or f.working_name, f.op, f.phase)  # noqa: E731
    still = {key(f) for f in after.failures}
    return [f"{f.label} ({f.qualified_op}, {f.phase})" for f in before.failures if key(f) not in still]


def doctor(
    model_path: str | os.PathLike,
    output_path: str | os.PathLike,
    *,
    passes: str | list[str] | None = None,
    ref: str = "onnxrt",
    test: str | None = None,
    test_options: Mapping[str, Any] | None = None,
    test_original: bool = False,
    samples: Sequence[Mapping[str, Any]] | None = None,
    input_shapes: Mapping[str, tuple[int, ...]] | None = None,
    value_ranges: Mapping[str, tuple[float, float]] | None = None,
    iterations: int = 1,
    seed: int = 0,
    atol: float | Mapping[str, float] | None = None,
    rtol: float | Mapping[str, float] | None = None,
    nan_equal: bool = False,
    trt: Mapping[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
) -> DoctorReport:
    """Fix ``model_path`` into ``output_path`` and compare; see the module docstring."""
    import surgeon

    from surgeon import backends

    start = time.perf_counter()
    model_io.check_output_path(model_path, output_path)
    original = model_io.load(model_path)
    # Create the test backend first: a missing TensorRT must stop us before anything is written.
    test_backend = backends.create(test, **dict(test_options or {})) if test else None
    if trt is not None:
        from surgeon.debug.trt_check import engines

        name = engines.resolve(trt.get("engine", "auto"))
        engines.parse_target_cc(trt.get("target_cc"), name)
    say = progress or (lambda _msg: None)
    say("running passes")
    fixed, fix_report = surgeon.fix(original, passes, input_shapes=input_shapes, seed=seed,
                                    samples=[dict(s) for s in samples] if samples else None,
                                    atol=atol if not isinstance(atol, Mapping) else None,
                                    rtol=rtol if not isinstance(rtol, Mapping) else None, progress=progress)
    model_io.save(fixed, output_path)
    report = DoctorReport(str(model_path), str(output_path), fix_report)
    common = dict(samples=samples, input_shapes=input_shapes, value_ranges=value_ranges, iterations=iterations,
                  seed=seed, atol=atol, rtol=rtol, nan_equal=nan_equal)
    say(f"comparing the fixed model with the original on {ref}")
    report.comparisons.append(("fixed vs original", compare(original, ref=ref, against=fixed, **common)))
    if test:
        what = "original" if test_original else "fixed"
        say(f"running the {what} model on {test}")
        report.comparisons.append((f"{what} on {test} vs original on {ref}",
                                   compare(original, ref=ref, test=test_backend,
                                           against=None if test_original else fixed, **common)))
        if test == "fp16" and not report.comparisons[-1][1].passed:
            report.suggestions.append(fp16_suggestion(model_path if test_original else output_path, input_shapes, atol, rtol))
    if trt is not None:
        from surgeon.debug import trt_check

        options = dict(trt)
        options.setdefault("input_shapes", input_shapes)
        say("trt-check: the original model")
        report.trt_before = trt_check.check(original, model_path=str(model_path), seed=seed, progress=progress, **options)
        say("trt-check: the fixed model")
        report.trt_after = trt_check.check(fixed, model_path=str(output_path), seed=seed, progress=progress, **options)
    report.seconds = time.perf_counter() - start
    return report


def fp16_suggestion(model: str | os.PathLike, input_shapes: Mapping[str, tuple[int, ...]] | None, atol: Any, rtol: Any) -> str:
    """The ``surgeon fp16`` command that searches the FP32 islands this model needs."""
    import shlex

    path = str(model)
    stem = path[:-5] if path.endswith(".onnx") else path
    parts = ["surgeon", "fp16", path, "-o", f"{stem}.fp16.onnx"]
    if input_shapes:
        parts += ["--input-shapes", *(f"{k}:{'x'.join(map(str, v))}" for k, v in input_shapes.items())]
    for flag, value in (("--atol", atol), ("--rtol", rtol)):
        if isinstance(value, Mapping):
            parts += [flag, *(f"{k}:{v:g}" for k, v in value.items())]
        elif value is not None:
            parts += [flag, f"{value:g}"]
    parts += ["--report", f"{stem}.fp16.json"]
    return " ".join(shlex.quote(p) for p in parts)
