"""Terminal tables for a profile and for a comparison of two models (rich)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from rich.markup import escape

from surgeon.debug.profile.result import Comparison, ModelProfile, fmt_ms
from surgeon.report import table as _table

_RIGHT = {c: "right" for c in ("median ms", "p90 ms", "share", "calls", "kernels", "A ms", "B ms", "Δ ms", "A", "B",
                               "runs", "B/A", "A kernels", "B kernels")}


def table(title: str, columns: list[str], rows: list[list[Any]], **kw):
    """Layer and node names hold brackets ("{ForeignNode[a...b]}"): never read them as markup."""
    return _table(escape(title), columns, [[escape(v) if isinstance(v, str) else v for v in r] for r in rows], **kw)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _origin(k) -> str:
    """Compact: the op types fused, and where they start (full lists are in the JSON)."""
    if k.how == "same":
        return "itself"
    if not k.origin:
        return f"({k.how})"
    ops = "+".join(k.origin_ops) if len(k.origin_ops) <= 4 else f"{len(k.origin_ops)} nodes"
    return f"{ops}: {k.origin[0]}" + (" …" if len(k.origin) > 1 else "")


def _mb(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:.1f} MB"


def render_profile(p: ModelProfile, out: Any, top: int = 15) -> None:
    head = f"surgeon profile: {p.model} on {p.backend} ({p.source})"
    if p.iterations:
        head += f"; {p.iterations} runs" + (f" after {p.warmup} warm-up" if p.warmup else "")
    if p.threads:
        head += f", {p.threads} thread(s)"
    out.print(head, markup=False)
    if p.inputs:
        out.print(f"inputs: {p.inputs}", markup=False)
    rows = []
    if p.latency:
        rows.append(["latency, profiler off", fmt_ms(p.latency.median_ms), fmt_ms(p.latency.p90_ms), p.latency.runs])
    if p.profiled_latency:
        rows.append([f"latency, profiler on (overhead {_pct(p.overhead)})", fmt_ms(p.profiled_latency.median_ms),
                     fmt_ms(p.profiled_latency.p90_ms), p.profiled_latency.runs])
    if p.run_time:
        rows.append(["ONNX Runtime's own run time (profiled)", fmt_ms(p.run_time.median_ms), fmt_ms(p.run_time.p90_ms),
                     p.run_time.runs])
    if rows:
        out.print(table("latency", ["", "median ms", "p90 ms", "runs"], rows, justify=_RIGHT))
    if p.kernels:
        rows = []
        with_calls = any(k.calls != 1 for k in p.kernels[:top])
        for i, k in enumerate(p.kernels[:top], 1):
            name = k.name if k.parent is None else f"{k.name} (in {k.parent})"
            row = [i, name, k.op_type, fmt_ms(k.median_ms), fmt_ms(k.p90_ms), _pct(k.share), _origin(k)]
            rows.append(row + [f"{k.calls:g}"] if with_calls else row)
        columns = ["#", "kernel", "op", "median ms", "p90 ms", "share", "from ONNX nodes"] + (["calls"] if with_calls else [])
        out.print(table(f"top {min(top, len(p.kernels))} of {len(p.kernels)} kernels", columns, rows, justify=_RIGHT))
        rows = [[g.key, g.kernels, fmt_ms(g.median_ms), fmt_ms(g.p90_ms), _pct(g.share)] for g in p.op_types[:top]]
        rows += [[g.key, g.kernels, fmt_ms(g.median_ms), fmt_ms(g.p90_ms), "in parent"] for g in p.body_op_types[:top]]
        out.print(table("by op type (kernels inside If/Loop/Scan bodies are part of their parent's time)"
                        if p.body_op_types else "by op type", ["op", "kernels", "median ms", "p90 ms", "share"], rows,
                        justify=_RIGHT))
        fused = [g for g in p.origins if g.kernels > 1 or len(g.origin) > 1]
        if fused:
            rows = [[g.key, g.kernels, fmt_ms(g.median_ms), _pct(g.share)] for g in p.origins[:top]]
            out.print(table("by ONNX origin (kernels that came from the same ONNX nodes)",
                            ["ONNX nodes", "kernels", "median ms", "share"], rows, justify=_RIGHT))
        line = f"{p.kernel_count} kernels ran for {p.nodes} ONNX nodes"
        if p.run_time:  # shares are of the runtime's own run time: the rest is spent between kernels
            inside = sum(g.share or 0 for g in p.op_types)
            line += f"; kernels take {_pct(inside)} of the run, the rest is the runtime between kernels"
        out.print(line, markup=False)
    if p.removed:
        ops = Counter(op for _, op in p.removed)
        out.print(f"{len(p.removed)} ONNX nodes have no kernel of their own (folded or eliminated by the backend): "
                  + ", ".join(f"{op} x{n}" for op, n in ops.most_common(6)), markup=False)
    if p.memory:
        out.print(f"memory: arena peak in use {_mb(p.memory.get('arena_peak_in_use_bytes'))}, "
                  f"arena held {_mb(p.memory.get('arena_held_bytes'))}", markup=False)
    for note in p.notes:
        out.print(f"note: {note}", markup=False)


def render_comparison(c: Comparison, out: Any, top: int = 15) -> None:
    a, b, d = c.a, c.b, c.difference
    out.print(f"surgeon profile: A = {a.model}, B = {b.model} on {a.backend}, same inputs ({a.inputs}), "
              f"{a.iterations} interleaved rounds after {a.warmup} warm-up", markup=False)
    rows = [["ONNX nodes", a.nodes, b.nodes, f"{b.nodes / a.nodes:.2f}" if a.nodes else "-"]]
    if a.kernels or b.kernels:
        rows.append(["kernels", a.kernel_count, b.kernel_count,
                     f"{b.kernel_count / a.kernel_count:.2f}" if a.kernel_count else "-"])
    rows.append(["latency median ms", fmt_ms(a.latency.median_ms), fmt_ms(b.latency.median_ms), f"{d.ratio:.3f}"])
    rows.append(["latency p90 ms", fmt_ms(a.latency.p90_ms), fmt_ms(b.latency.p90_ms),
                 f"{b.latency.p90_ms / a.latency.p90_ms:.3f}"])
    if a.profiled_latency and b.profiled_latency:
        rows.append(["profiled median ms", fmt_ms(a.profiled_latency.median_ms), fmt_ms(b.profiled_latency.median_ms),
                     f"{b.profiled_latency.median_ms / a.profiled_latency.median_ms:.3f}"])
        rows.append(["profiling overhead", _pct(a.overhead), _pct(b.overhead), ""])
    out.print(table("A against B", ["", "A", "B", "B/A"], rows, justify=_RIGHT))
    if c.op_diff:
        rows = [[o.op_type, fmt_ms(o.a_ms), fmt_ms(o.b_ms), f"{o.delta_ms:+.3f}", o.a_kernels, o.b_kernels]
                for o in c.op_diff[:top]]
        out.print(table("per op type (median per run)", ["op", "A ms", "B ms", "Δ ms",
                        "A kernels", "B kernels"], rows, justify=_RIGHT))
    out.print(c.headline(), markup=False)
    out.print(c.noise_line(), markup=False)
    if d.verdict == "within noise":
        out.print("[bold yellow]warning[/]: the difference is within the run-to-run noise; "
                  "run more --iterations, or on a quieter machine, before drawing a conclusion")
