"""``surgeon match``: what replace-custom-ops rules would replace."""

from __future__ import annotations

from typing import Any

from surgeon.report import table


def render_match(report: Any, out: Any) -> None:
    rows = [[f.graph, f.node, f.op, f.rule, "would replace" if f.status == "replace" else f.status,
             ", ".join(f.inputs), ", ".join(f.outputs), f.reason] for f in report.findings]
    out.print(table(f"surgeon match ({len(report.rules)} rules)", ["graph", "node", "op", "rule", "result", "inputs",
                                                                   "outputs", "reason"], rows))
    replaced = sum(f.status == "replace" for f in report.findings)
    out.print(f"{replaced} replacement(s), {len(report.findings) - replaced} refusal(s)", markup=False)
    for op, n in report.untouched.items():
        out.print(f"untouched custom op: {op} x{n}", markup=False)
