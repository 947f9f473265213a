"""Remedies that are commands, checked: run the proposed ``surgeon fix`` in memory, check again.

Why: "move it to the standard domain" is advice; ``surgeon fix MODEL -o FIXED.onnx
--target-opset 16`` is a command, and whether it removes the failure is a fact trt-check
can establish before the user runs anything. For every distinct ``surgeon fix`` remedy of
a report (``Remedy.fix``), the exact pipeline the command runs
(:func:`surgeon.pipeline.registry.fix_pipeline`) is applied to a copy of the model with
the pipeline's own verification, the same check (parse, then build where the original
got that far) runs on the result with the same engine, and each failure the remedy was
proposed for is looked for again. The remedy's ``check`` sentence says what happened;
``verified`` is True only when that failure is gone.

The input model is never touched; nothing is written but the engine's private working
files.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

import onnx

from surgeon.debug.trt_check.report import Failure, TrtCheckReport
from surgeon.errors import SurgeonError

log = logging.getLogger(__name__)


def _key(fix: dict) -> tuple:
    return (tuple(fix.get("passes") or ()), fix.get("target_opset"))


def same_failure(a: Failure, b: Failure) -> bool:
    """Whether ``b`` (after the fix) is ``a`` again: the same node (by its original name, or
    the same op for a node without one) failing the same way; model-level failures by code."""
    if a.code != b.code or a.phase != b.phase:
        return False
    if a.node or b.node:
        return a.node == b.node
    if a.working_name or b.working_name:
        return a.op == b.op
    return True


def apply_fix(model: onnx.ModelProto, fix: dict) -> tuple[onnx.ModelProto, str, bool]:
    """(fixed copy, a summary of the fix run, whether it changed anything)."""
    from surgeon.pipeline import registry, runner

    passes = registry.fix_pipeline(fix.get("passes"), target_opset=fix.get("target_opset"))
    options = {"rules": [], "target_opset": fix.get("target_opset")}
    fixed, report = runner.fix(model, passes, options=options)
    applied = [p.name for p in report.passes if p.changed]
    rolled = [p.name for p in report.rolled_back]
    parts = [f"{len(applied)} pass(es) changed it ({', '.join(dict.fromkeys(applied))})" if applied else "no pass changed it"]
    if rolled:
        parts.append(f"rolled back: {', '.join(dict.fromkeys(rolled))}")
    parts.append(f"verification: {report.verification}")
    return fixed, "; ".join(parts), bool(applied)


def check_remedies(model: onnx.ModelProto, report: TrtCheckReport, check_again: Callable[[onnx.ModelProto], TrtCheckReport],
                   engine_label: str, say: Callable[[str], None] = lambda _m: None) -> None:
    """Apply each distinct ``surgeon fix`` remedy of ``report`` and check the model again (see the module docstring)."""
    groups: dict[tuple, list[Failure]] = {}
    for f in report.failures:
        if f.remedy is not None and f.remedy.fix is not None and f.remedy.exists:
            groups.setdefault(_key(f.remedy.fix), []).append(f)
    for failures in groups.values():
        remedy = failures[0].remedy
        say(f"checking the remedy: {remedy.command}")
        t0 = time.perf_counter()
        try:
            fixed, summary, changed = apply_fix(model, remedy.fix)
        except SurgeonError as exc:
            for f in failures:
                f.remedy.check = f"not checked: the fix could not run in memory ({exc})"
            continue
        if not changed:
            for f in failures:
                f.remedy.check = f"checked in memory: the command changes nothing in this model ({summary}); the failure stays"
            continue
        try:
            after = check_again(fixed)
        except SurgeonError as exc:
            for f in failures:
                f.remedy.check = f"not checked: {engine_label} could not check the fixed model ({exc})"
            continue
        seconds = time.perf_counter() - t0
        if after.ready:
            state = "parses and builds" if after.builds else ("parses" if after.parse_ok else "passes the static checks")
            outcome = f"the model then {state} with {engine_label}"
        else:
            outcome = f"{len(after.failures)} failure(s) remain with {engine_label}"
        for f in failures:
            gone = not any(same_failure(f, g) for g in after.failures)
            f.remedy.verified = gone
            f.remedy.check = (f"checked in memory ({seconds:.1f} s): after the command ({summary}), {outcome}; "
                              + ("this failure is gone" if gone else "this failure remains"))
