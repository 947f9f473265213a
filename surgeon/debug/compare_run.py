"""``surgeon compare``: run one model on two backends (or two models on one) and judge.

The judging rule is :mod:`surgeon.comparison`'s (``|test-ref| <= atol + rtol*|ref|``),
the same one the fix pipeline verifies with. This module adds what a person debugging a
deployment needs around it: inputs (generated, seeded, or loaded), every sample run on
both sides, per-output statistics over all samples, the tolerances that were actually
used (per dtype, loosened for reduced-precision backends, or given), and one verdict.

A failure of the *reference* run is an input problem (exit 2); a failure of the *test*
run is a verdict (the engine under test cannot run the model), reported as a mismatch.

A match is only evidence when the reference can show a difference: when it is NaN on
every sample, or every output is constant or blind to the inputs (:mod:`surgeon.evidence`),
the verdict is ``inconclusive`` (exit 1), never ``match``; a NaN the reference has and the
test does not is blamed on the reference, by name.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import onnx

from surgeon import model as model_io
from surgeon import backends, evidence, input_data
from surgeon.comparison import DEFAULT_TOLERANCES, OutputDiff, diff_values, tolerance_for
from surgeon.errors import BackendError, UsageError
from surgeon.report import table

log = logging.getLogger(__name__)

RULE = "|test - ref| <= atol + rtol * |ref| (elementwise)"
MATCH, MISMATCH, INCONCLUSIVE = "match", "mismatch", "inconclusive"

# The precision a backend computes in, when it is not the model's own: tolerances for
# float outputs default to at least this dtype's defaults.
_PRECISION_OPTIONS = (("int8", "int8"), ("fp16", "float16"), ("bf16", "bfloat16"))
_INT8_TOLERANCE = (1e-1, 1e-1)


@dataclass
class OutputResult:
    """One output over all samples: the worst sample's statistics and every sample's diff."""

    name: str
    passed: bool
    worst: OutputDiff
    worst_sample: int
    per_sample: list[OutputDiff] = field(default_factory=list)
    ref_dtype: str = ""
    test_dtype: str = ""
    weak: str = ""  # what makes the reference of this output weak evidence ("is NaN on every sample")

    def to_dict(self) -> dict:
        d = self.worst.to_dict()
        d.update(name=self.name, passed=self.passed, worst_sample=self.worst_sample,
                 ref_dtype=self.ref_dtype, test_dtype=self.test_dtype, weak=self.weak,
                 samples=[s.to_dict() for s in self.per_sample])
        return d


@dataclass
class CompareReport:
    model: str
    ref: str
    test: str
    against: str | None
    outputs: list[OutputResult]
    samples: list[str]
    seconds: float
    error: str | None = None  # the test run failed (a verdict, not a usage error)
    notes: list[str] = field(default_factory=list)
    plots: list[str] = field(default_factory=list)
    followups: list[dict[str, Any]] = field(default_factory=list)  # re-runs that explain the result (TF32 off)
    runs: dict[str, list[dict[str, Any]]] = field(default_factory=dict, repr=False)  # outputs, for --save-outputs
    evidence: evidence.Evidence | None = None  # whether the reference outputs can show a difference

    @property
    def passed(self) -> bool:
        """A match on a reference that is evidence (an inconclusive comparison is not a pass)."""
        return self.verdict == MATCH

    @property
    def verdict(self) -> str:
        if self.error is not None or not all(o.passed for o in self.outputs):
            return MISMATCH
        if self.evidence is not None and not self.evidence.conclusive:
            return INCONCLUSIVE
        return MATCH

    @property
    def mismatching(self) -> list[str]:
        return [o.name for o in self.outputs if not o.passed]

    def to_dict(self) -> dict:
        return {"verdict": self.verdict, "model": self.model, "against": self.against, "ref": self.ref,
                "test": self.test, "rule": RULE, "error": self.error, "samples": self.samples,
                "evidence": self.evidence.to_dict() if self.evidence is not None else None,
                "outputs": [o.to_dict() for o in self.outputs], "mismatching": self.mismatching,
                "notes": self.notes, "plots": self.plots, "followups": self.followups,
                "seconds": round(self.seconds, 3)}


def _load(model: str | os.PathLike | onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    if isinstance(model, onnx.ModelProto):
        return model, model.graph.name or "<model>"
    return model_io.load(model), str(model)


def _backend(spec: str | backends.Backend, options: Mapping[str, Any] | None) -> backends.Backend:
    if isinstance(spec, backends.Backend):
        return spec
    return backends.create(spec, **dict(options or {}))


def backend_precision(backend: backends.Backend) -> str | None:
    """The reduced precision a backend computes in (None: the model's own)."""
    if getattr(backend, "name", "") == "fp16":
        return "float16"
    for attr, precision in _PRECISION_OPTIONS:
        if getattr(backend, attr, False) is True:
            return precision
    return None


def _tolerance(name: str, value: Any, given: float | Mapping[str, float] | None, precision: str | None, which: int) -> float | None:
    if isinstance(given, Mapping) and name in given:
        return given[name]  # named for this output: used as given
    if isinstance(value, np.ndarray) and value.dtype.kind in "biu":
        return 0.0  # integer and boolean outputs must be equal, whatever the global tolerance
    if isinstance(given, Mapping):
        got = given.get(name)
        if got is not None:
            return got
    elif given is not None:
        return given
    if precision is None or not isinstance(value, np.ndarray) or value.dtype.kind not in "fc":
        return None  # per-dtype default
    base = tolerance_for(value.dtype)
    loose = _INT8_TOLERANCE if precision == "int8" else DEFAULT_TOLERANCES[precision]
    return max((base.atol, base.rtol)[which], loose[which])


def _check_tolerance_names(tol: Any, outputs: list[str], flag: str) -> None:
    if isinstance(tol, Mapping):
        unknown = [n for n in tol if n not in outputs]
        if unknown:
            raise UsageError(f"{{0}} names '{unknown[0]}', which is not an output of the model; outputs: {', '.join(outputs)}",
                             flag)


def _run_all(session: backends.Session, samples: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [session.run(s) for s in samples]


def _dtype(value: Any) -> str:
    return str(value.dtype) if isinstance(value, np.ndarray) else type(value).__name__


def _judge(name: str, refs: list[Any], tests: list[Any], atol, rtol, nan_equal: bool,
           sides: tuple[str, str] = ("the reference", "the test")) -> OutputResult:
    per = []
    for r, t in zip(refs, tests):
        tol = tolerance_for(r.dtype, atol, rtol) if isinstance(r, np.ndarray) else None  # None: per sequence element
        d = diff_values(name, r, t, tol, nan_equal=nan_equal, atol=atol, rtol=rtol, sides=sides)
        if isinstance(r, np.ndarray) and isinstance(t, np.ndarray) and r.dtype != t.dtype:
            d.passed = False
            d.reason = f"dtype {t.dtype} differs from the reference {r.dtype}" + (f"; {d.reason}" if d.reason else "")
        per.append(d)
    failing = [i for i, d in enumerate(per) if not d.passed]
    if failing:
        worst = max(failing, key=lambda i: (per[i].mismatches, per[i].max_abs))
    else:
        worst = max(range(len(per)), key=lambda i: per[i].max_abs)
    return OutputResult(name, not failing, per[worst], worst, per, _dtype(refs[worst]), _dtype(tests[worst]))


def compare(
    model: str | os.PathLike | onnx.ModelProto,
    *,
    ref: str | backends.Backend = "onnxrt",
    test: str | backends.Backend | None = None,
    against: str | os.PathLike | onnx.ModelProto | None = None,
    ref_options: Mapping[str, Any] | None = None,
    test_options: Mapping[str, Any] | None = None,
    samples: Sequence[Mapping[str, Any]] | None = None,
    input_shapes: Mapping[str, tuple[int, ...]] | None = None,
    value_ranges: Mapping[str, tuple[float, float]] | None = None,
    iterations: int = 1,
    seed: int = 0,
    atol: float | Mapping[str, float] | None = None,
    rtol: float | Mapping[str, float] | None = None,
    nan_equal: bool = False,
    plot_dir: str | os.PathLike | None = None,
) -> CompareReport:
    """Run ``model`` on ``ref`` and on ``test`` (or ``against`` on ``ref``) and judge every output.

    With both ``test`` and ``against``, the second model runs on the test backend.

    ``samples``: input samples to use (else seeded random ones from the model's inputs,
    ``input_shapes`` and ``value_ranges``). Tolerances: one number, a per-output mapping,
    or None (per dtype; at least the float16/bfloat16 defaults when the test backend
    computes in that precision). Returns a :class:`CompareReport`; raises SurgeonError
    for usage or input problems.
    """
    if test is None and against is None:
        raise UsageError("give a test backend ({0}) or a second model ({1})", "test", "against")
    if iterations < 1:
        raise UsageError("{0} must be at least 1", "iterations")
    start = time.perf_counter()
    ref_model, model_label = _load(model)
    ref_backend = _backend(ref, ref_options)
    if against is not None:
        # The second model runs on the test backend when one is given, else on the reference backend.
        test_model, against_label = _load(against)
        test_backend = _backend(ref, ref_options) if test is None else _backend(test, test_options)
        test_label = f"{against_label} on {test_backend.describe()}"
    else:
        test_model, against_label = ref_model, None
        test_backend = _backend(test, test_options)
        test_label = test_backend.describe()
    out_names = [o.name for o in ref_model.graph.output]
    _check_tolerance_names(atol, out_names, "atol")
    _check_tolerance_names(rtol, out_names, "rtol")
    notes: list[str] = []

    ref_session = ref_backend.session(ref_model)
    generated = samples is None
    if samples is None:
        samples = input_data.make_samples(ref_model, input_shapes=input_shapes, value_ranges=value_ranges,
                                          iterations=iterations, seed=seed, runs=input_data.runs_on(ref_session))
    else:
        samples = input_data.check_feeds(ref_model, samples)
        if input_shapes or value_ranges:
            notes.append("inputs were loaded: --input-shapes and --val-range were not used")
    if against is not None:
        input_data.check_feeds(test_model, samples, what=f"'{against_label}'")
        missing = [n for n in out_names if n not in {o.name for o in test_model.graph.output}]
        if missing:
            notes.append(f"'{against_label}' has no output '{missing[0]}'")

    try:
        ref_runs = _run_all(ref_session, samples)
    except BackendError as exc:  # a failing reference run is an input problem (exit 2), with a way out
        problems = "" if generated is False else "; ".join(input_data.input_problems(ref_model, input_shapes))
        why = f"; no valid sample could be made: {problems}" if problems else ""
        raise BackendError(f"the reference backend cannot run the model on inputs {input_data.describe_feeds(samples[0])} "
                           f"({exc}){why}; give --input-shapes and --val-range, or --load-inputs") from exc
    ref_label = f"{model_label} on {ref_backend.describe()}" if against is not None else ref_backend.describe()
    report = CompareReport(model_label, ref_label, test_label, against_label, [],
                           [input_data.describe_feeds(s) for s in samples], 0.0, notes=notes)
    report.runs["ref"] = ref_runs
    report.evidence = evidence.assess(ref_runs, samples, dependent=evidence.input_dependent_outputs(ref_model),
                                      atol=atol, rtol=rtol)
    try:
        test_session = test_backend.session(test_model)
        plan = getattr(test_session, "plan", None)
        if plan is not None:
            report.notes.append(f"fp16 emulation: {len(plan.converted)} nodes in FP16, {len(plan.kept)} kept in float32, "
                                f"{plan.rounded_tensors} tensors rounded")
            clamped = [w for w in plan.weights if "clamped" in w]
            raised = [w for w in plan.weights if "raised" in w]
            if clamped:
                report.notes.append(f"fp16 emulation: {len(clamped)} weight(s) had values beyond +/-65504, clamped "
                                    f"as TensorRT does (first: {clamped[0]})")
            if raised:
                report.notes.append(f"fp16 emulation: {len(raised)} weight(s) had nonzero values below the smallest "
                                    f"float16 subnormal, raised to it (first: {raised[0]})")
        test_runs = _run_all(test_session, samples)
    except BackendError as exc:
        report.error = str(exc)
        report.seconds = time.perf_counter() - start
        return report
    report.runs["test"] = test_runs

    precision = backend_precision(test_backend)
    sides = _sides(ref_backend, test_backend, model_label, against_label, precision)
    extra = [n for n in test_runs[0] if n not in ref_runs[0]]
    if extra:
        report.notes.append(f"the test run has outputs the reference lacks: {', '.join(extra)}")
    for name in out_names:
        refs = [r[name] for r in ref_runs]
        if any(name not in t for t in test_runs):
            report.outputs.append(OutputResult(name, False, OutputDiff(name, False, reason="missing from the test run"), 0,
                                               ref_dtype=_dtype(refs[0])))
            continue
        tests = [t[name] for t in test_runs]
        a = _tolerance(name, refs[0], atol, precision, 0)
        r = _tolerance(name, refs[0], rtol, precision, 1)
        result = _judge(name, refs, tests, a, r, nan_equal, sides)
        weak = report.evidence.weakness(name)
        result.weak = weak.phrase() if weak else ""
        if weak is not None and weak.kind == evidence.NONFINITE and all(
                d.mismatches == d.both_nan for d in result.per_sample):
            result.passed = True  # NaN in both runs everywhere: nothing was compared (the verdict is inconclusive)
        report.outputs.append(result)
    for w in report.evidence.nonfinite:
        report.notes.append(f"{sides[0]}'s output '{w.output}' {w.phrase()}: no comparison of it can show whether the "
                            "test is right; give --load-inputs with inputs the model computes real values on")
    if report.evidence.conclusive:
        report.notes.extend(report.evidence.notes())

    from surgeon.debug import tf32

    if tf32.applies(test_backend):  # the GPU's numbers differ: is it TF32? run again with it off and say
        def judge(name, refs, tests):
            return _judge(name, refs, tests, _tolerance(name, refs[0], atol, precision, 0),
                          _tolerance(name, refs[0], rtol, precision, 1), nan_equal)

        report.followups.append(tf32.follow_up(test_backend, test_model, samples, ref_runs, report.outputs, judge))

    if plot_dir is not None and not report.passed:
        from surgeon.debug import plot

        Path(plot_dir).mkdir(parents=True, exist_ok=True)
        taken: set[str] = set()
        for o in report.outputs:
            if o.passed or o.name not in ref_runs[o.worst_sample] or o.name not in test_runs[o.worst_sample]:
                continue
            r_arr, t_arr = ref_runs[o.worst_sample][o.name], test_runs[o.worst_sample][o.name]
            if isinstance(r_arr, np.ndarray) and isinstance(t_arr, np.ndarray) and r_arr.shape == t_arr.shape and r_arr.size:
                report.plots.append(str(plot.plot_output(plot_dir, o.name, r_arr, t_arr, o.worst, taken)))
            else:
                report.notes.append(f"no plot for '{o.name}': not two tensors of one shape")
    report.seconds = time.perf_counter() - start
    return report


def _sides(ref: backends.Backend, test: backends.Backend, model_label: str, against_label: str | None,
           precision: str | None) -> tuple[str, str]:
    """How a mismatch reason names the two runs: by backend, or by model file with --against."""
    if against_label is not None:
        return f"the reference ({Path(model_label).name})", f"the test ({Path(against_label).name})"
    ref_name = getattr(ref, "name", "reference")
    return (f"the reference ({'FP32, ' if precision else ''}{ref_name})", f"the test ({getattr(test, 'name', 'test')})")


# --- terminal rendering ---------------------------------------------------------------------


def _shape(d: OutputDiff) -> str:
    if d.ref_shape is None:
        return "-"
    if d.test_shape is not None and d.test_shape != d.ref_shape:
        return f"{d.ref_shape} vs {d.test_shape}"
    return str(d.ref_shape)


def _e(value: float | None) -> str:
    return "-" if value is None else f"{value:.1e}"


def render_compare(report: CompareReport, out: Any, title: str | None = None) -> None:
    rows = []
    for o in report.outputs:
        d = o.worst
        dtype = o.ref_dtype if o.ref_dtype == o.test_dtype or not o.test_dtype else f"{o.ref_dtype} vs {o.test_dtype}"
        naninf = f"{d.nan_mismatches}/{d.inf_mismatches}"
        abs_err = "\n".join(_e(v) for v in (d.max_abs, d.p99_abs, d.median_abs, d.mean_abs))
        rel_err = "\n".join(_e(v) for v in (d.max_rel, d.p99_rel, d.median_rel, d.mean_rel))
        verdict = "MISMATCH" if not o.passed else ("weak" if o.weak else "ok")
        rows.append([o.name, verdict, f"{_shape(d)}\n{dtype}", abs_err, rel_err,
                     f"{d.mismatches}/{d.elements}", naninf, f"{d.atol:g}\n{d.rtol:g}"])
    title = title or f"surgeon compare: {report.test} vs {report.ref}"
    out.print(table(title, ["output", "verdict", "shape / dtype", "abs err max p99 med mean",
                            "rel err max p99 med mean", "outside", "NaN/Inf",
                            "atol / rtol"], rows))
    for o in report.outputs:
        if not o.passed:
            where = f" (sample {o.worst_sample})" if len(report.samples) > 1 else ""
            pos = f"; first at {o.worst.first_mismatches[:3]}" if o.worst.first_mismatches else ""
            out.print(f"  {o.name}{where}: {o.worst.reason}{pos}", markup=False)
    for n in report.notes:
        out.print(f"note: {n}", markup=False)
    for p in report.plots:
        out.print(f"plot: {p}", markup=False)
    for f in report.followups:
        if f.get("kind") == "tf32":
            from surgeon.debug import tf32

            tf32.render(f, out)
    out.print(f"inputs: {' | '.join(report.samples[:3])}{' ...' if len(report.samples) > 3 else ''}", markup=False)
    if report.error:
        out.print(f"[bold red]MISMATCH[/]: the test run failed: {report.error}")
    elif report.verdict == INCONCLUSIVE:
        out.print(f"[bold yellow]INCONCLUSIVE[/]: {report.evidence.summary()}: a match on it proves nothing; "
                  "give --load-inputs with inputs the model computes real values on")
    elif report.passed:
        out.print(f"[bold green]MATCH[/]: all {len(report.outputs)} outputs agree within tolerance on "
                  f"{len(report.samples)} sample(s) ({RULE})")
    else:
        bad = report.mismatching
        out.print(f"[bold red]MISMATCH[/]: {len(bad)} of {len(report.outputs)} outputs differ: {', '.join(bad)}")
