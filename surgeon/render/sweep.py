"""``surgeon sweep``: the terminal summary table and the markdown summary for a PR comment."""

from __future__ import annotations

from typing import Any

from surgeon.report import table

_MARK = {True: "✅", False: "❌"}


def _cell(s: Any) -> str:
    """One step of one model in a few words."""
    if s.status.value != "ok":
        return s.status.value
    m = s.metrics
    if s.step == "fix" and "nodes_after" in m:
        return f"{s.verdict} {m['nodes_before']}→{m['nodes_after']}"
    if s.step == "trt-check" and not s.passed and m.get("failures"):
        return f"{s.verdict} ({len(m['failures'])})"
    if s.step == "fp16" and "fp32_nodes" in m:
        return f"{s.verdict}, {m['fp32_nodes']} FP32"
    if s.step == "profile" and "latency_ms" in m:
        return f"{m['latency_ms']['median']:.2f} ms"
    return s.verdict or ""


def summary_line(result: Any) -> str:
    c = result.counts()
    lost = f" ({c['lost']} lost: crash, timeout or memory)" if c["lost"] else ""
    line = (f"{c['models']} model(s), {c['steps']} step(s): {c['passed']} passed, {c['failed']} failed{lost}; "
            f"{c['cached']} from the cache; {result.seconds:.1f} s on {result.engine} with {result.jobs} job(s)")
    if result.baseline is not None:
        line += f"; {len(result.regressions)} regression(s) against {result.baseline}"
    return line


def render_sweep(result: Any, out: Any) -> None:
    rows = [[m.name, *[(_cell(s) + ("" if s.passed else " ✗")) if (s := m.step(step)) else "-" for step in result.steps]]
            for m in result.models]
    out.print(table("surgeon sweep", ["model", *result.steps], rows))
    for name, s in result.failures:
        out.print(f"  {name} / {s.step}: {s.status.value if s.status.value != 'ok' else s.verdict}: {s.message}",
                  markup=False)
    for r in result.regressions:
        out.print(f"[bold red]regression[/] {r}", highlight=False)
    for note in result.notes:
        out.print(f"note: {note}", markup=False)
    verdict = "[bold red]FAILED[/]" if result.failed else "[bold green]OK[/]"
    out.print(f"{verdict}: {summary_line(result)}")
    out.print(f"results: {result.files.get('json', '')}", markup=False)


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(result: Any) -> str:
    """A summary fit for a pull-request comment: verdict, regressions, the table, the failures."""
    lines = [f"### surgeon sweep: {'❌ failed' if result.failed else '✅ ok'}", "", summary_line(result), ""]
    if result.regressions:
        lines += ["**Regressions**", ""] + [f"- `{r.model}` {r.step}: {_md_escape(r.message)}" for r in result.regressions]
        lines.append("")
    lines.append("| model | " + " | ".join(result.steps) + " |")
    lines.append("|---|" + "---|" * len(result.steps))
    for m in result.models:
        cells = []
        for step in result.steps:
            s = m.step(step)
            cells.append("-" if s is None else f"{_MARK[s.passed]} {_md_escape(_cell(s))}")
        lines.append(f"| `{m.name}` | " + " | ".join(cells) + " |")
    if result.failures:
        lines += ["", "<details><summary>Failures</summary>", ""]
        lines += [f"- `{name}` {s.step}: {s.status.value if s.status.value != 'ok' else s.verdict}: {_md_escape(s.message)}"
                  for name, s in result.failures]
        lines += ["", "</details>"]
    if result.notes:
        lines += ["", "<details><summary>Notes</summary>", ""] + [f"- {_md_escape(n)}" for n in result.notes]
        lines += ["", "</details>"]
    return "\n".join(lines) + "\n"


def json_lines(result: Any) -> str:
    """``--json``: one line per model, then one line with the summary and the regressions."""
    import json

    d = result.to_dict()
    summary = {k: v for k, v in d.items() if k != "models"}
    return "".join(json.dumps(m) + "\n" for m in d["models"]) + json.dumps({"summary": summary}) + "\n"
