"""The five steps of a sweep job, each a call into the public API that also writes the
reports its single command writes, and a summary a baseline can be compared on.

Runs inside the job's own process. A step that refuses the model (a
:class:`surgeon.SurgeonError`) or hits a bug of ours is a result with a one-line message,
never an exception out of the job: the next step and the next model go on.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from surgeon.files import write_text_atomic
from surgeon.errors import ModelLoadError, SurgeonError
from surgeon.sweep.results import PASSING, Status, StepResult

CI_RESAMPLES = 2000
CI_SEED = 0


@dataclass
class StepContext:
    """Where a step reads and writes: the model it runs on, and the model's folder in OUT."""

    model: Path  # the input model of this step (the original or the fixed one)
    input: str  # "original" or "fixed"
    folder: Path  # OUT/<model name>
    out: Path  # OUT (report paths are stored relative to it)
    options: dict[str, Any]
    expect: list[str] | None = None

    def rel(self, path: Path) -> str:
        return path.relative_to(self.out).as_posix()


def _text(render: Callable[[Any], None]) -> str:
    """What a renderer prints on a terminal, as plain text for ``<step>.txt``."""
    from rich.console import Console

    buf = io.StringIO()
    render(Console(file=buf, width=160, color_system=None, highlight=False, soft_wrap=True))
    return buf.getvalue()


def _judge(ctx: StepContext, step: str, result: StepResult, accepted: set[str] | None = None) -> StepResult:
    allowed = set(ctx.expect) if ctx.expect else (accepted if accepted is not None else PASSING[step])
    result.passed = result.status == Status.OK and result.verdict in allowed
    if ctx.expect and result.status == Status.OK and not result.passed:
        result.message = f"expected {' or '.join(ctx.expect)}, got {result.verdict}: {result.message}"
    return result


def run_fix(ctx: StepContext) -> StepResult:
    from surgeon.api import fix
    from surgeon.render.fix import render_fix_result

    opts = dict(ctx.options)
    output, report = ctx.folder / "fixed.onnx", ctx.folder / "fix.json"
    try:
        res = fix(str(ctx.model), opts.pop("passes", None), output=output, report=report, **opts)
    except ModelLoadError as exc:  # fix cannot hold or repair this model: a verdict of its own, for baselines
        return _judge(ctx, "fix", StepResult("fix", Status.OK, "refused", message=str(exc), input=ctx.input))
    write_text_atomic(ctx.folder / "fix.txt", _text(lambda c: render_fix_result(res, c)))
    r = res.report
    verdict = "verified" if r.verified else "unverified"
    rolled = [p.name for p in r.rolled_back]
    message = f"nodes {r.nodes_before} -> {r.nodes_after}; verification: {r.verification}"
    if rolled:
        message += f"; rolled back: {', '.join(dict.fromkeys(rolled))}"
    result = StepResult("fix", Status.OK, verdict, message=message, input=ctx.input,
                        metrics={"nodes_before": r.nodes_before, "nodes_after": r.nodes_after,
                                 "verification": r.verification, "rolled_back": sorted(set(rolled))},
                        reports=[ctx.rel(output), ctx.rel(report), ctx.rel(ctx.folder / "fix.txt")])
    strict = bool(ctx.options.get("strict"))
    result = _judge(ctx, "fix", result, {"verified"} if strict else None)
    if strict and rolled and not ctx.expect:
        result.passed = False
    return result


def _failure_key(f: Any) -> dict:
    return {"node": f.label, "op": f.qualified_op, "phase": f.phase}


def run_trt_check(ctx: StepContext) -> StepResult:
    from surgeon.api import trt_check
    from surgeon.debug.trt_check.report import render

    report = ctx.folder / "trt-check.json"
    res = trt_check(str(ctx.model), report=report, **ctx.options)
    write_text_atomic(ctx.folder / "trt-check.txt", _text(lambda c: render(res, c)))
    failures = [_failure_key(f) for f in res.failures]
    engine = res.engine.get("name") or res.engine.get("mode") or ""
    named = [f"{f.label} ({f.qualified_op})" if f.op else f"{f.label}: {f.message.splitlines()[0][:120] if f.message else f.phase}"
             for f in res.failures]
    what = "ready" if res.ready else (
        f"{len(failures)} failure(s): " + ", ".join(named[:3]) + (", ..." if len(named) > 3 else "") if failures
        else "not ready")
    result = StepResult("trt-check", Status.OK, "ready" if res.ready else "not-ready", input=ctx.input,
                        message=f"{what} [{engine}]", metrics={"engine": res.engine, "failures": failures},
                        reports=[ctx.rel(report), ctx.rel(ctx.folder / "trt-check.txt")])
    return _judge(ctx, "trt-check", result)


def run_scan(ctx: StepContext) -> StepResult:
    from surgeon.api import scan
    from surgeon.render.scan import render_scan

    report = ctx.folder / "scan.json"
    res = scan(str(ctx.model), report=report, **ctx.options)
    write_text_atomic(ctx.folder / "scan.txt", _text(lambda c: render_scan(res, c)))
    will, could = len(res.will), len(res.findings) - len(res.will)
    verdict = "will" if will else ("could" if could else "clean")
    result = StepResult("scan", Status.OK, verdict, input=ctx.input,
                        message=f"{will} finding(s) go wrong on these inputs, {could} could",
                        metrics={"will": will, "could": could, "kinds": sorted({f.kind for f in res.findings}),
                                 "fp16_mismatching": res.fp16_mismatching},
                        reports=[ctx.rel(report), ctx.rel(ctx.folder / "scan.txt")])
    return _judge(ctx, "scan", result)


def run_fp16(ctx: StepContext) -> StepResult:
    from surgeon.api import fp16
    from surgeon.precision.report import render

    output, report = ctx.folder / "fp16.onnx", ctx.folder / "fp16.json"
    res = fp16(str(ctx.model), output, report=report, **ctx.options)
    write_text_atomic(ctx.folder / "fp16.txt", _text(lambda c: render(res, c)))
    fp32 = len(res.kept) + len(res.user_kept)
    result = StepResult("fp16", Status.OK, "passed" if res.passed else "mismatch", input=ctx.input,
                        message=f"{fp32} FP32 node(s) of {res.candidates}; {res.status}: {res.message}",
                        metrics={"fp32_nodes": fp32, "searched": sorted(res.kept), "requested": sorted(res.user_kept),
                                 "candidates": res.candidates, "search": res.status},
                        reports=[ctx.rel(output), ctx.rel(report), ctx.rel(ctx.folder / "fp16.txt")])
    return _judge(ctx, "fp16", result)


def median_interval(runs_ms: list[float]) -> tuple[float, float]:
    """95% bootstrap interval of the median latency (seeded, so a result can be reproduced)."""
    v = np.asarray(runs_ms, dtype=np.float64)
    rng = np.random.default_rng(CI_SEED)
    boot = np.median(v[rng.integers(0, v.size, size=(CI_RESAMPLES, v.size))], axis=1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return float(lo), float(hi)


def run_profile(ctx: StepContext) -> StepResult:
    from surgeon.api import profile
    from surgeon.debug.profile.render import render_profile

    opts = {"threads": 1, **ctx.options}  # one thread: the steadiest number, on a box shared by other jobs
    report = ctx.folder / "profile.json"
    res = profile(str(ctx.model), report=report, **opts)
    write_text_atomic(ctx.folder / "profile.txt", _text(lambda c: render_profile(res.result, c)))
    runs = list(res.result.latency_runs_ms)
    median = float(np.median(runs))
    lo, hi = median_interval(runs)
    result = StepResult("profile", Status.OK, "measured", input=ctx.input,
                        message=f"median {median:.3f} ms (95% CI {lo:.3f}-{hi:.3f} ms, {len(runs)} runs)",
                        metrics={"latency_ms": {"median": median, "ci_low": lo, "ci_high": hi, "runs": len(runs)}},
                        reports=[ctx.rel(report), ctx.rel(ctx.folder / "profile.txt")])
    return _judge(ctx, "profile", result)


RUNNERS: dict[str, Callable[[StepContext], StepResult]] = {
    "fix": run_fix, "trt-check": run_trt_check, "scan": run_scan, "fp16": run_fp16, "profile": run_profile,
}


def run_step(step: str, ctx: StepContext) -> StepResult:
    """One step; whatever goes wrong short of losing the process is this step's result."""
    t0 = time.perf_counter()
    try:
        result = RUNNERS[step](ctx)
    except SurgeonError as exc:
        result = StepResult(step, Status.ERROR, message=str(exc), input=ctx.input)
    except Exception as exc:  # a bug of ours: one row, the sweep goes on
        first = str(exc).splitlines()[0] if str(exc) else ""
        result = StepResult(step, Status.ERROR, message=f"internal error: {type(exc).__name__}: {first}",
                            input=ctx.input)
    result.seconds = time.perf_counter() - t0
    return result


