"""The bisect driver: strategy + oracle + artifacts, wired together.

``bisect_model`` runs the reference once (every tensor marked, every sample), builds the
oracle, then feeds the :class:`~surgeon.debug.bisect.strategy.Search` state machine
verdicts until it stops. Every verdict is cached by candidate (and persisted in OUTDIR
when one is given), so no subgraph is judged twice, in this run or a resumed one.

When the very first check shows a *crash* rather than a numeric mismatch, marking
tensors cannot localize anything (every marked run crashes too), so the search restarts
in prefix mode, where each candidate is a truncated model that either crashes or not.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import onnx

from surgeon.debug.bisect import artifacts, extract
from surgeon.debug.bisect.oracle import CommandOracle, NumericOracle, Verdict
from surgeon.debug.bisect.strategy import Search
from surgeon.errors import BackendError, InputDataError

log = logging.getLogger(__name__)

PROVENANCE_PREFIX = "surgeon."


def node_label(node: onnx.NodeProto, index: int) -> str:
    return node.name or f"{node.op_type}#{index}"


def reference_values(model: onnx.ModelProto, backend: Any, samples: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Every main-graph tensor's reference value, per sample (graph inputs included)."""
    names = extract.all_tensor_names(model)
    marked = extract.with_outputs(model, names, extract.inferred_types(model))
    try:
        sess = backend.session(marked)
        out = []
        for s in samples:
            values = dict(s)
            values.update(sess.run(s))
            out.append(values)
    except BackendError as exc:
        raise BackendError(f"the reference backend cannot run the model, so there is nothing to compare against: {exc}") from exc
    return out


@dataclass
class BisectResult:
    failed: bool
    confirm: Verdict
    oracle: str
    culprits: list[dict] = field(default_factory=list)
    reduced_nodes: list[str] = field(default_factory=list)
    reduced_inputs: list[str] = field(default_factory=list)
    reduced_outputs: list[str] = field(default_factory=list)
    reduced_verified: bool = False
    reduced_model: onnx.ModelProto | None = None
    reduced_against: onnx.ModelProto | None = None
    inputs: list[dict] = field(default_factory=list)
    expected: list[dict] = field(default_factory=list)
    calls: int = 0
    resumed: int = 0
    wall_s: float = 0.0
    nodes: int = 0
    samples: int = 0
    mode: str = ""
    steps: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "failed": self.failed,
            "culprits": self.culprits,
            "confirm": self.confirm.to_dict(),
            "oracle": self.oracle,
            "mode": self.mode,
            "oracle_calls": self.calls,
            "verdicts_resumed": self.resumed,
            "wall_s": round(self.wall_s, 3),
            "nodes": self.nodes,
            "samples": self.samples,
            "reduced": {"nodes": self.reduced_nodes, "inputs": self.reduced_inputs, "outputs": self.reduced_outputs,
                        "verified": self.reduced_verified},
            "steps": self.steps,
        }


def make_oracle(view: extract.GraphView, ref_values: list[dict], types: dict, *, test: Any = None,
                against: onnx.ModelProto | None = None, check: str | Callable | None = None, atol: Any = None,
                rtol: Any = None, nan_equal: bool = False, block_size: int = 32, timeout: float | None = None,
                against_label: str = "B"):
    if callable(check):  # a built-in oracle factory, e.g. trt-check's ``--check trt-build``
        return check(view, ref_values, types, timeout=timeout)
    if check is not None:
        return CommandOracle(view, check, ref_values, types, timeout=timeout)
    return NumericOracle(view, ref_values, types, test=test, against=against, atol=atol, rtol=rtol,
                         nan_equal=nan_equal, block_size=block_size, against_label=against_label)


def bisect_model(
    model: onnx.ModelProto,
    samples: Sequence[Mapping[str, Any]],
    *,
    ref: Any,
    test: Any = None,
    against: onnx.ModelProto | None = None,
    against_label: str = "B",
    check: str | Callable | None = None,
    atol: Any = None,
    rtol: Any = None,
    nan_equal: bool = False,
    block_size: int = 32,
    timeout: float | None = None,
    outdir: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> BisectResult:
    """Confirm, localize, isolate and reduce; see the strategy module for the phases."""
    t0 = time.perf_counter()
    if not samples:
        raise InputDataError("bisect needs at least one input sample")
    say = progress or (lambda msg: None)
    view = extract.GraphView(model)
    say("running the reference with every tensor marked")
    ref_values = reference_values(model, ref, samples)
    types = extract.types_from_values(ref_values, extract.inferred_types(model))
    if against is not None:
        types = {**extract.inferred_types(against), **types}
    oracle = make_oracle(view, ref_values, types, test=test, against=against, check=check, atol=atol, rtol=rtol,
                         nan_equal=nan_equal, block_size=block_size, timeout=timeout, against_label=against_label)
    b_hash = hashlib.sha256(against.SerializeToString()).hexdigest() if against is not None else ""
    fp = artifacts.fingerprint(model, oracle.describe(), samples, extra=f"{atol!r}|{rtol!r}|{nan_equal}|{block_size}|{b_hash}")
    verdicts: dict = artifacts.load_state(outdir, fp) if outdir is not None else {}
    resumed = len(verdicts)
    search = _new_search(view, oracle.can_mark, oracle.mark_all, verdicts)
    steps: list[dict] = []
    calls = 0  # candidates judged in this run (progress display)
    while (cand := search.next_candidate()) is not None:
        key = (cand.kind, cand.nodes)
        if key in verdicts:  # judged by an earlier, interrupted run
            v = verdicts[key]
        else:
            calls += 1
            say(f"[{calls} oracle calls] {cand.purpose} ({len(cand.nodes)} nodes)")
            v = oracle.judge(cand)
            verdicts[key] = v
            if outdir is not None:
                artifacts.save_state(outdir, fp, verdicts)
        steps.append({"purpose": cand.purpose, "kind": cand.kind, "nodes": len(cand.nodes), "failed": v.failed,
                      "detail": v.detail})
        if cand.kind == "mark" and v.crashed and search.failed is None:
            # a crash is not localized by marking: restart with truncated models
            search = _new_search(view, False, False, verdicts)
            search.judged[("subgraph", frozenset(range(view.dag.n)))] = True
            continue
        search.record(v.for_strategy(cand.kind))
    confirm = _confirm_verdict(view, verdicts)
    # oracle.calls counts backend runs / commands (a wide cut on a fusing backend takes several blocks)
    result = BisectResult(bool(search.failed), confirm, oracle.describe(), calls=oracle.calls, resumed=resumed, nodes=len(view.nodes),
                          samples=len(samples), mode=("mark all" if search.mark_all else "marked cuts") if search.can_mark else "prefixes")
    result.steps = steps
    if search.failed:
        _fill_result(result, view, search, verdicts, ref_values, types, against)
    result.wall_s = time.perf_counter() - t0
    return result


def _new_search(view: extract.GraphView, can_mark: bool, mark_all: bool, verdicts: Mapping) -> Search:
    search = Search(view.dag, can_mark=can_mark, mark_all=mark_all)
    for (kind, nodes), v in verdicts.items():
        search.judged[(kind, nodes)] = v.for_strategy(kind)
    return search


def _confirm_verdict(view: extract.GraphView, verdicts: Mapping) -> Verdict:
    for key in (("mark", view.dag.sinks), ("subgraph", frozenset(range(view.dag.n)))):
        if key in verdicts:
            return verdicts[key]
    return Verdict(False, "not judged")


def _provenance(node: onnx.NodeProto) -> dict[str, str]:
    return {p.key[len(PROVENANCE_PREFIX):]: p.value for p in node.metadata_props if p.key.startswith(PROVENANCE_PREFIX)}


def _provenance_in(other: onnx.ModelProto | None, node: onnx.NodeProto) -> dict[str, str]:
    """With --against, the rewrite that made B's node producing the culprit's outputs."""
    if other is None:
        return {}
    outs = set(node.output)
    for n in other.graph.node:
        if outs & set(n.output):
            return _provenance(n)
    return {}


def _first_divergence(view: extract.GraphView, k: int, verdicts: Mapping) -> dict | None:
    outs = set(view.node(k).output)
    for (kind, _), v in verdicts.items():
        if kind == "mark":
            for d in v.diffs:
                if d.get("tensor") in outs:
                    return d
    return None


def _fill_result(result: BisectResult, view: extract.GraphView, search: Search, verdicts: Mapping,
                 ref_values: list[dict], types: dict, against: onnx.ModelProto | None) -> None:
    for c in search.culprits:
        node = view.node(c.node)
        idx = view.searchable[c.node]
        alone = verdicts.get(("subgraph", frozenset({c.node})))
        sub = verdicts.get(("subgraph", c.subgraph)) or alone
        error = None
        source = sub if (sub and sub.failed) else None
        if source is not None and source.diffs:
            error = source.diffs[0]
        elif source is not None:
            error = {"reason": source.detail}
        if c.introduced:
            verdict = "introduces the error: fails alone on the reference values of its inputs"
        elif c.reduced:
            verdict = f"does not fail alone; fails together with {len(c.subgraph) - 1} upstream node(s)"
        else:
            verdict = "first diverging node, but no subgraph smaller than the model reproduces the failure"
        result.culprits.append({
            "node": node_label(node, idx),
            "op_type": node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}",
            "introduced": c.introduced,
            "verdict": verdict,
            "error": error,
            "first_divergence": _first_divergence(view, c.node, verdicts),
            "provenance": _provenance(node) or _provenance_in(against, node),
            "inputs": list(node.input),
            "outputs": list(node.output),
            "subgraph": [node_label(view.node(k), view.searchable[k]) for k in sorted(c.subgraph)],
        })
    reduced = search.reduced
    model, inputs, outputs = view.subgraph_model(reduced, types)
    result.reduced_model = model
    result.reduced_nodes = [node_label(view.node(k), view.searchable[k]) for k in sorted(reduced)]
    result.reduced_inputs, result.reduced_outputs = inputs, outputs
    result.reduced_verified = search.reduced_verified
    result.inputs = [{n: r[n] for n in inputs if n in r} for r in ref_values]
    result.expected = [{n: r[n] for n in outputs if n in r} for r in ref_values]
    if against is not None:
        if view.is_everything(reduced):
            result.reduced_against = against
        else:
            result.reduced_against = extract.extract_by_names(against, inputs, outputs, types, available=set(ref_values[0]))


def repro_text(result: BisectResult, command: str, *, model_path: str) -> str:
    """REPRO.md: culprits first, then the one command to run from OUTDIR."""
    lines = ["# Reproducing the failure", ""]
    for c in result.culprits:
        err = c.get("error") or {}
        what = err.get("reason") or "fails"
        prov = c.get("provenance") or {}
        src = f" (made by pass `{prov.get('pass')}`, rule `{prov.get('rule')}`)" if prov.get("pass") else ""
        lines.append(f"- **{c['node']}** ({c['op_type']}){src}: {c['verdict']}; {what}")
    lines += [
        "",
        f"Found by `surgeon bisect` on `{model_path}` ({result.nodes} nodes, {result.samples} input sample(s)) "
        f"with {result.calls} oracle calls: {result.oracle}.",
        f"`reduced.onnx` has {len(result.reduced_nodes)} node(s); its inputs are intermediate tensors of the original "
        "model, and `inputs.npz` holds their reference values for every sample (`expected.npz`: the reference outputs).",
        "",
        "Run from this folder (exit status 1 = the failure reproduces):",
        "",
        "```sh",
        command,
        "```",
        "",
    ]
    return "\n".join(lines)
