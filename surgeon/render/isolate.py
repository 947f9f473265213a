"""``surgeon isolate``: the culprit sets, the confirmation runs, and how to avoid them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from surgeon.report import table


def render_isolate(report: dict, outdir: str | Path, con: Any) -> None:
    con.print(f"surgeon isolate --target {report['target']}: {report['mechanism']}", markup=False)
    rows = []
    for n, cset in enumerate(report["culprit_sets"], 1):
        for c in cset:
            rows.append([str(n), c["label"]])
    if rows:
        con.print(table("culprits (minimal failing sets)", ["set", "choice"], rows))
    if report["confirmations"]:
        con.print(table("confirmation runs", ["run", "applied", "expected", "got"],
                        [[c["what"], f"{c['applied']} of {report['choices']}", c["expected"], ", ".join(c["verdicts"])]
                         for c in report["confirmations"]]))
    con.print(f"{report['status']}: {report['message']}", markup=False)
    con.print(f"{report['oracle_calls']} oracle calls over {report['choices']} choices "
              f"({report['cache_hits']} answered from cache, {report['resumed_verdicts']} resumed)", markup=False)
    if report["avoid"]:
        con.print(f"avoid them: {report['avoid']['file']}  ->  {report['avoid']['how']}", markup=False)
    con.print(f"report: {Path(outdir) / 'report.json'}", markup=False)
