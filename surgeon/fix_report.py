"""Terminal rendering of a FixReport (the JSON form is FixReport.to_dict())."""

from __future__ import annotations

from rich.console import Console

from surgeon.pipeline.runner import APPLIED, ROLLED_BACK, FixReport
from surgeon.report import fmt_delta, fmt_err, table


def render_fix(report: FixReport, out: Console) -> None:
    rows = []
    for p in report.passes:
        status = {APPLIED: "changed", ROLLED_BACK: "ROLLED BACK"}.get(p.status, "unchanged")
        counts = ", ".join(f"{k} x{v}" for k, v in sorted(p.counts.items()))
        rows.append([p.name if p.round == 1 else f"{p.name} (round {p.round})", status,
                     f"{p.nodes_before} -> {p.nodes_after}", fmt_delta(p.op_delta), counts or "-",
                     f"{p.seconds:.2f}s", fmt_err(p.max_abs), fmt_err(p.max_rel)])
    out.print(table("surgeon fix", ["pass", "result", "nodes", "op changes", "applied", "time", "max abs", "max rel"], rows))
    for p in report.passes:
        if p.status == ROLLED_BACK:
            out.print(f"[bold red]rolled back[/] {p.name}: {p.reason}")
        for n in p.notes[:20]:
            out.print(f"  note ({p.name}): {n}", markup=False)
        if len(p.notes) > 20:
            out.print(f"  ... {len(p.notes) - 20} more notes for {p.name} in the JSON report", markup=False)
    out.print(f"nodes {report.nodes_before} -> {report.nodes_after}; verification: {report.verification}; "
              f"{report.seconds:.2f}s", markup=False)
    if report.samples:
        out.print("verified on: " + " | ".join(report.samples), markup=False)
    for n in report.notes:
        out.print(f"note: {n}", markup=False)
