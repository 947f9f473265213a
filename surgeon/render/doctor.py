"""``surgeon doctor``: the fix, each comparison, the TensorRT check, and one verdict line."""

from __future__ import annotations

from typing import Any

from surgeon.debug.compare_run import render_compare
from surgeon.fix_report import render_fix


def render_doctor(report: Any, out: Any, *, load_inputs: str | None = None) -> None:
    render_fix(report.fix, out)
    for what, comparison in report.comparisons:
        render_compare(comparison, out, title=f"surgeon doctor: {what}")
    if report.trt_after is not None:
        render_doctor_trt(report, out)
    for suggestion in report.suggestions:
        if load_inputs:
            suggestion += f" --load-inputs {load_inputs}"
        out.print(f"the FP16 comparison fails: search the FP32 islands it needs with\n  {suggestion}", markup=False,
                  soft_wrap=True)
    verdict = "[bold green]OK[/]" if report.passed else f"[bold red]{report.verdict.upper()}[/]"
    out.print(f"doctor: {verdict}: wrote {report.output}; {len(report.comparisons)} comparison(s), "
              f"{sum(c.passed for _, c in report.comparisons)} matched")


def render_doctor_trt(report: Any, out: Any) -> None:
    """doctor --trt: what the fix changed for TensorRT, then the fixed model's trt-check."""
    from surgeon.debug import trt_check
    from surgeon.doctor import resolved_by_fix

    before, after = report.trt_before, report.trt_after
    resolved = resolved_by_fix(before, after)
    out.print(f"trt-check, original: {before.verdict} ({len(before.failures)} failure(s)); fixed: {after.verdict} "
              f"({len(after.failures)} failure(s))", markup=False)
    for item in resolved:
        out.print(f"  resolved by the fix: {item}", markup=False)
    if not after.ready:
        out.print("still not ready after the fix:", markup=False)
    trt_check.render(after, out)
