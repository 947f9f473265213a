"""``surgeon bisect``: culprits first; for accumulated error, the growth table instead."""

from __future__ import annotations

from typing import Any

from surgeon.report import table


def render_bisect(outcome: Any, out: Any) -> None:
    result, outdir = outcome.result, outcome.outdir
    if not result.failed:
        out.print(f"[bold green]no failure[/]: {result.oracle}: the full model passes ({result.confirm.detail}); "
                  "nothing to bisect")
        return
    from surgeon.debug.bisect import growth

    rows = []
    for c in result.culprits:
        err = c.get("error") or {}
        prov = c.get("provenance") or {}
        if c["introduced"]:
            short = "introduced here"
        elif len(c["subgraph"]) >= result.nodes:
            short = "not isolated"
        elif "downstream_nodes" in c:
            short = f"with {c['downstream_nodes']} downstream"
        else:
            short = f"with {len(c['subgraph']) - 1} upstream"
        if c.get("within_noise"):
            short += ", within marking noise"
        error = f"max abs {err['max_abs']:.3g}, {err['mismatches']}/{err['elements']} off" if "max_abs" in err else err.get("reason", "")
        rows.append([c["node"], c["op_type"], short, error, f"{prov.get('pass')} / {prov.get('rule')}" if prov.get("pass") else "-"])
    if rows:
        out.print(table("surgeon bisect: culprits", ["node", "op", "verdict", "error", "made by"], rows))
    for c in result.culprits:
        measured = [r for r in c.get("growth") or [] if r.get("compared")]
        if measured:
            peak = max(measured, key=lambda r: r["tol_ratio"])
            out.print(f"{c['node']}: along the path the error peaks at {peak['tol_ratio']:.3g}x the tolerance ('{peak['tensor']}') "
                      f"and ends at {measured[-1]['tol_ratio']:.3g}x ('{measured[-1]['tensor']}'); profile in {outdir}/REPRO.md")
    for a in result.accumulation:
        profile = a.get("growth") or []
        first = growth.first_exceeding(profile)
        cells = []
        for item in growth.condense(profile, 16):
            if item is None:
                cells.append(["…"] + [""] * (len(growth.COLUMNS) - 1))
                continue
            i, r = item
            c = growth.cells(i, r)
            if i == first:
                c[-1] = "; ".join(x for x in ("first beyond tolerance", c[-1]) if x and not x.startswith("bisect's"))
            cells.append(c)
        title = (f"error growth through {a['node']} ({a['op_type']}): passes alone, fails only with "
                 f"{a['upstream_nodes']} upstream nodes")
        if cells:
            out.print(table(title, growth.COLUMNS, cells))
        else:
            out.print(title)
    if result.noise:
        how = f"; so bisect used suffix cuts ({result.fallback})" if result.mode == "suffix cuts" else ""
        out.print(f"marking noise: {result.noise['summary']}{how}", markup=False)
    elif result.fallback:
        out.print(f"bisect used suffix cuts: {result.fallback}", markup=False)
    diagnosis = result.diagnosis
    if diagnosis["kind"] in ("accumulation", "mixed"):
        out.print(f"[bold yellow]accumulated error[/]: {diagnosis['message']}")
    elif diagnosis["kind"] in ("within-noise", "unlocalized"):
        out.print(f"[bold yellow]{diagnosis['kind']}[/]: {diagnosis['message']}")
    extra = "".join(f" + {n} {what}" for n, what in ((result.reference_calls, "reference runs of the same cuts"),
                                                     (result.noise_calls, "runs measuring marking noise")) if n)
    out.print(f"[bold red]FAILS[/]: reduced {result.nodes} nodes to {len(result.reduced_nodes)} in {outdir}/reduced.onnx "
              f"({result.calls} oracle calls{extra}, {result.wall_s:.1f} s); see {outdir}/REPRO.md")
