"""Terminal rendering of a FixReport (the JSON form is FixReport.to_dict())."""

from __future__ import annotations

import re

from rich.console import Console

from surgeon.pipeline.runner import APPLIED, ROLLED_BACK, FixReport
from surgeon.report import fmt_delta, fmt_err, table

MAX_NOTE_GROUPS = 20  # per pass; the JSON report keeps every note


def _shape_of(note: str) -> str:
    """A note with its names and numbers blanked: notes alike in everything else are one line."""
    note = re.sub(r"'[^']*'", "'…'", note)
    return re.sub(r"\S*\d\S*", "#", note)


def group_notes(report: FixReport) -> dict[str, list[tuple[str, int]]]:
    """pass → [(first note of a kind, how many notes of that kind)], across rounds, in order.

    Why: a pass that refuses the same thing at 40 nodes, in each of two rounds, would print
    80 near-identical lines; one line with a count says the same.
    """
    groups: dict[str, dict[str, list]] = {}
    for p in report.passes:
        if p.status == "unchanged" and p.round > 1:
            continue  # a replay of the first round's notes on the same model
        kinds = groups.setdefault(p.name, {})
        for note in p.notes:
            entry = kinds.setdefault(_shape_of(note), [note, set()])
            entry[1].add(note)
    return {name: [(first, len(seen)) for first, seen in kinds.values()] for name, kinds in groups.items()}


def render_fix(report: FixReport, out: Console, err: Console | None = None) -> None:
    rows = []
    for p in report.passes:
        status = {APPLIED: "changed", ROLLED_BACK: "ROLLED BACK"}.get(p.status, "unchanged")
        counts = ", ".join(f"{k} x{v}" for k, v in sorted(p.counts.items()))
        rows.append([p.name if p.round == 1 else f"{p.name} (round {p.round})", status,
                     f"{p.nodes_before} -> {p.nodes_after}", fmt_delta(p.op_delta), counts or "-",
                     p.checked or "-", f"{p.seconds:.2f}s", fmt_err(p.max_abs), fmt_err(p.max_rel)])
    out.print(table("surgeon fix", ["pass", "result", "nodes", "op changes", "applied", "verified", "time",
                                    "max abs", "max rel"], rows))
    for p in report.passes:
        if p.status == ROLLED_BACK:
            out.print(f"[bold red]rolled back[/] {p.name}: {p.reason}")
    for name, notes in group_notes(report).items():
        for note, count in notes[:MAX_NOTE_GROUPS]:
            more = f" (and {count - 1} more like it)" if count > 1 else ""
            out.print(f"  note ({name}): {note}{more}", markup=False)
        if len(notes) > MAX_NOTE_GROUPS:
            out.print(f"  ... {len(notes) - MAX_NOTE_GROUPS} more kinds of notes for {name} in the JSON report", markup=False)
    out.print(f"nodes {report.nodes_before} -> {report.nodes_after}; verification: {report.verification}; "
              f"{report.seconds:.2f}s", markup=False)
    if report.samples:
        out.print("verified on: " + " | ".join(report.samples), markup=False)
    for n in report.notes:
        out.print(f"note: {n}", markup=False)
    if not report.verified and err is not None:
        err.print(f"warning: the output was not verified numerically ({report.verification}); "
                  "only structural checks ran", markup=False, style="bold yellow")
