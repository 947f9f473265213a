"""``surgeon scan``: findings grouped by severity, kind and op pattern, and the FP16 line."""

from __future__ import annotations

from typing import Any

from surgeon.report import table


def render_scan(result: Any, out: Any) -> None:
    report, model = result.report, result.model
    fp16 = report.fp16
    fp16_line, bad = "", []
    if fp16:
        tol = fp16["tolerance"]
        bad = result.fp16_mismatching
        fp16_line = (f"FP16 emulation: outputs match the reference (atol={tol['atol']}, rtol={tol['rtol']})" if not bad
                     else f"FP16 emulation: output(s) {', '.join(bad)} differ from the reference beyond atol={tol['atol']}, rtol={tol['rtol']}")
    if report.clean:
        out.print(f"[bold green]clean[/]: no NaN/Inf, nothing outside float16's range, no scatter or division hazards "
                  f"({report.tensors} tensors, {report.constants} FP16 weights, {report.samples} sample(s))")
        if bad:
            out.print(fp16_line + f"; no finding explains it: try `surgeon bisect {model} --test fp16`")
        return
    groups = report.groups
    rows = [[g.severity, g.kind, g.where(), g.worst.message.split(": ", 1)[-1], g.consequence()] for g in groups]
    will, could = len(report.will), len(report.findings) - len(report.will)
    out.print(table(f"surgeon scan: {will} will go wrong on these inputs, {could} could ({len(groups)} group(s))",
                    ["severity", "kind", "where", "detail (worst)", "consequence"], rows))
    if fp16_line:
        explained = any(f.effect in ("nonfinite-outputs", "outputs-differ") for f in report.findings)
        out.print(fp16_line + ("" if explained or not bad else
                               f"; no finding explains it on its own: try `surgeon bisect {model} --test fp16`"))
    from surgeon.debug.scan import range_lines

    for line in range_lines(report, model):
        out.print(line, markup=False)
    for note in report.notes:
        out.print(f"note: {note}")
    if will:
        out.print(f"[bold red]{will} finding(s) go wrong on these inputs[/] (first: {report.will[0].node}, {report.will[0].kind})")
        return
    out.print("[bold yellow]no finding goes wrong on these inputs[/]: the 'could' findings are hazards for other inputs "
              "or engines (exit 0)")
