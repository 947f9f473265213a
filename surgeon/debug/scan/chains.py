"""Values beyond float16's range, followed past where they start: every node whose own
float32 value exceeds ±65504, grouped into chains with their readers, and the set of
nodes to keep in float32 checked with the FP16 emulation itself.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

import onnx

from surgeon.backends import fp16 as fp16_rules
from surgeon.debug.bisect import extract
from surgeon.debug.scan.findings import COULD, WILL, Chain, Finding, ScanReport
from surgeon.debug.scan.graph_values import FP16_MAX, ScanGraph, as_float, is_float, max_abs, outputs_diff
from surgeon.disjoint_sets import DisjointSets
from surgeon.errors import BackendError

log = logging.getLogger(__name__)


def range_lines(report: ScanReport, model_path: str) -> list[str]:
    """The terminal lines for values beyond float16's range: each chain (where it starts,
    whether it must be kept in float32), then what to keep and whether that was checked."""
    import shlex

    lines = []
    for c in report.chains:
        lines.append(f"beyond FP16's range in float32: {c.path()}: {c.why}")
    if report.pin:
        names = " ".join(shlex.quote(n) for n in report.pin)
        check = report.pin_check
        verdict = "checked: " if check.get("verified") else "NOT enough: "
        lines.append(f"keep in float32: --fp16-keep {names} (surgeon fp16 {shlex.quote(model_path)} -o OUT.onnx --keep "
                     f"{names}); {verdict}{check.get('detail', '')}")
    return lines


# Readers that give the same result for a huge value and for ±Inf of the same sign in the
# usual cases (a mask compared, or pushed to zero probability): chains read only by them are
# tried as harmless first. Only the FP16 run decides.
_SATURATING_READERS = frozenset({"Softmax", "LogSoftmax", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "Equal",
                                 "ReduceMax", "ReduceMin", "ArgMax", "ArgMin", "Sign", "IsInf", "Relu", "Tanh", "Sigmoid"})
MAX_CHAIN_CHECKS = 16  # chains checked one by one for harmlessness; the rest stay pinned


def range_chains(graph: ScanGraph, ref: list[dict], converted: set[str]) -> list[Chain]:
    """Every main-graph node whose own float32 value (finite) exceeds ±65504 on some sample,
    grouped into chains along the graph's edges, with the nodes that read them.

    Why every node and not just where the overflow starts: ``Exp → Add(1) → Log`` overflows
    at the Exp, but the Add's own value is beyond range too, and the Log reads it; keeping
    only the Exp in float32 leaves the Add to overflow. A chain is only fixed by keeping all
    of its beyond-range nodes and its readers in float32.
    """
    over: dict[str, tuple[int, float]] = {}  # tensor -> (producing node, float32 peak)
    for k, node in enumerate(graph.nodes):
        if node.op_type == "Constant":
            continue  # a constant beyond range is clamped, not Inf: the fp16-clamped findings
        for o in node.output:
            if o and all(is_float(v.get(o)) for v in ref):
                peak = max(max_abs(v[o]) for v in ref)
                if peak > FP16_MAX:
                    over[o] = (k, peak)
    if not over:
        return []
    over_nodes = sorted({k for k, _ in over.values()})
    sets = DisjointSets(over_nodes)
    fed_by: dict[int, set[int]] = {k: set() for k in over_nodes}
    for k in over_nodes:
        for x in extract.node_reads(graph.nodes[k]):
            if x in over:
                j = over[x][0]
                fed_by[k].add(j)
                sets.union(k, j)
    readers: dict[int, set[int]] = {}
    for x, (j, _) in over.items():
        for r in graph.consumers.get(x, []):
            if r not in sets:
                readers.setdefault(r, set()).add(sets.find(j))
    groups: dict[int, list[int]] = {}
    for k in over_nodes:
        groups.setdefault(sets.find(k), []).append(k)
    chains = []
    for root, members in groups.items():
        rows, pin = [], []
        reading = sorted(r for r, roots in readers.items() if root in roots)
        for k in sorted(members + reading):
            label, node = graph.labels[k], graph.nodes[k]
            if k in fed_by:
                tensor = next(o for o in node.output if o in over)
                role = "continues" if fed_by[k] else "starts"
                peak = over[tensor][1]
            else:
                tensor = next(x for x in extract.node_reads(node) if x in over and sets.find(over[x][0]) == root)
                role = "reads" if label in converted else "reads (float32)"
                peak = max(max_abs(as_float(v.get(o))) for v in ref for o in node.output if o)
            rows.append({"node": label, "op_type": node.op_type, "tensor": tensor, "role": role, "max_abs": peak})
            if label in converted:
                pin.append(label)
        chains.append(Chain(rows, pin))
    return chains


def _emulated_outputs(model: onnx.ModelProto, samples: Sequence[Mapping[str, Any]], keep: Sequence[str],
                      keep_nodes: Sequence[str]) -> list[dict[str, Any]] | None:
    """The graph outputs of the FP16 emulation with ``keep`` (op types or names) and
    ``keep_nodes`` (labels) in float32; None when it cannot run."""
    from surgeon.backends.onnxrt import OnnxRuntimeBackend

    try:
        emulated, _ = fp16_rules.emulate(model, keep, keep_nodes=keep_nodes)
        sess = OnnxRuntimeBackend(name="fp16").session(emulated)
        return [sess.run(s) for s in samples]
    except BackendError as exc:
        log.info("FP16 run with chains kept failed: %s", exc)
        return None


def check_chains(model: onnx.ModelProto, graph: ScanGraph, chains: list[Chain], ref: list[dict],
                 samples: Sequence[Mapping[str, Any]], keep: Sequence[str], outputs_match: bool,
                 atol: Any, rtol: Any) -> tuple[list[str], dict]:
    """Which chains must be kept in float32, checked with the FP16 emulation itself.

    If the FP16 run already matches, every chain is harmless. Otherwise the run is repeated
    with every chain's nodes kept in float32; if that matches, chains are let go one at a
    time (those only saturating readers read first) as long as the run still matches, so
    the set that stays is a verified, complete set to pin. ``(pin, check)``.
    """
    if not chains:
        return [], {}

    def matches(pinned: list[Chain]) -> bool | None:
        outs = _emulated_outputs(model, samples, keep, [n for c in pinned for n in c.pin])
        if outs is None:
            return None
        return all(d["passed"] for d in outputs_diff(ref, outs, graph.outputs, atol, rtol).values())

    if outputs_match:
        for c in chains:
            c.harmless, c.why = True, "harmless: the FP16 run's outputs match the reference with it in FP16"
        return [], {"verified": True, "runs": 0, "detail": "the FP16 run already matches; nothing needs pinning"}
    runs = 1
    everything = matches(chains)
    if not everything:
        for c in chains:
            c.why = "needed, not enough: the FP16 run still differs with every chain kept in float32"
        pin = [n for c in chains for n in c.pin]
        detail = ("the FP16 run could not run with the chains kept" if everything is None else
                  "keeping every chain in float32 does not make the FP16 run match: something else differs too "
                  "(see the other findings, or surgeon bisect --test fp16)")
        return pin, {"verified": False, "runs": runs, "detail": detail}
    order = sorted(range(len(chains)), key=lambda i: (not all(n["op_type"] in _SATURATING_READERS for n in chains[i].nodes
                                                              if n["role"].startswith("reads")), i))
    needed = set(range(len(chains)))
    for n, i in enumerate(order):
        if n >= MAX_CHAIN_CHECKS:
            chains[i].why = f"kept: not checked on its own (only {MAX_CHAIN_CHECKS} chains are)"
            continue
        runs += 1
        if matches([chains[j] for j in sorted(needed - {i})]):
            needed.discard(i)
            chains[i].harmless, chains[i].why = True, "harmless: the FP16 run's outputs match with it in FP16"
        else:
            chains[i].harmless, chains[i].why = False, "needed: without it in float32 the FP16 run's outputs differ"
    pin = [n for i in sorted(needed) for n in chains[i].pin]
    return pin, {"verified": True, "runs": runs, "detail": f"the FP16 run's outputs match the reference with {len(pin)} "
                                                           "node(s) kept in float32"}


def chain_findings(graph: ScanGraph, chains: list[Chain], ref: list[dict], findings: list[Finding]) -> None:
    """Every beyond-range node gets a finding (where the overflow starts already has one);
    the severity of a chain's findings follows the chain: needed → will, harmless → could."""
    by_node = {}
    for f in findings:
        by_node.setdefault(f.node, []).append(f)
    for c in chains:
        severity = COULD if c.harmless else WILL
        effect = "absorbed" if c.harmless else ("outputs-differ" if c.harmless is False else "unchecked")
        starts = ", ".join(c.starts) or "a graph input"
        for row in c.nodes:
            if row["role"] not in ("starts", "continues"):
                continue
            own = [f for f in by_node.get(row["node"], []) if f.kind in ("fp16-overflow", "fp16-saturated")]
            if not own:
                what = (f"it continues the chain that starts at {starts}" if row["role"] == "continues" else
                        "the chain starts here (FP16 holds it within range on these inputs)")
                own = [Finding("fp16-beyond-range", severity, row["node"], row["op_type"], row["tensor"],
                               f"{row['node']} ({row['op_type']}): '{row['tensor']}' reaches {row['max_abs']:.4g} in "
                               f"float32, beyond FP16's ±65504; {what}", pattern=row["op_type"],
                               magnitude=row["max_abs"], details={"max_abs": row["max_abs"]})]
                findings.extend(own)
            keep = f"; keep in float32: {', '.join(c.pin)}" if c.pin and not c.harmless else ""
            for f in own:
                f.severity = severity
                f.details.update({"chain_starts": c.starts, "role": row["role"], "pin_chain": c.pin,
                                  "harmless": c.harmless})
                if f.kind == "fp16-beyond-range":
                    f.effect, f.consequence = effect, c.why + keep
                elif c.harmless:
                    f.effect, f.consequence = "absorbed", c.why
                else:
                    f.consequence = "; ".join(x for x in (f.consequence, c.why) if x) + keep
