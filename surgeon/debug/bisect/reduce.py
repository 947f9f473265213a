"""The bisect driver: strategy + oracle + artifacts, wired together.

``bisect_model`` runs the reference once (every tensor marked, every sample), builds the
oracle, then feeds the :class:`~surgeon.debug.bisect.strategy.Search` state machine
verdicts until it stops. Every verdict is cached by candidate (and persisted in OUTDIR
when one is given), so no subgraph is judged twice, in this run or a resumed one.

When the very first check shows a *crash* rather than a numeric mismatch, marking
tensors cannot localize anything (every marked run crashes too), so the search restarts
in prefix mode, where each candidate is a truncated model that either crashes or not.

Before marked tensors are trusted, the marking noise is measured (the ``noise`` question of
the search; :mod:`surgeon.debug.bisect.noise`): when marking moves the outputs, suffix cuts
are bisected instead, which compare only outputs computed without marks. The report gives
the noise figures, and says when a divergence is no larger than them.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import onnx

from surgeon import graph_ops as K
from surgeon.debug.bisect import artifacts, extract, growth, noise
from surgeon.debug.bisect.oracle import CommandOracle, NumericOracle, Observation
from surgeon.debug.bisect.strategy import Candidate, CulpritResult, Search
from surgeon.errors import BackendError, InputDataError

log = logging.getLogger(__name__)

PROVENANCE_PREFIX = "surgeon."
MAX_CONTEXT = 16  # a culprit needs at most this many upstream nodes; beyond, the error accumulates


def node_label(node: onnx.NodeProto, index: int) -> str:
    return node.name or f"{node.op_type}#{index}"


def reference_values(model: onnx.ModelProto, backend: Any, samples: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Every main-graph tensor's reference value, per sample (graph inputs included)."""
    names = extract.all_tensor_names(model)
    marked = extract.with_outputs(model, names, extract.inferred_types(model))
    try:
        return extract.run_marked(backend.session(marked), samples)
    except BackendError as exc:
        raise BackendError(f"the reference backend cannot run the model, so there is nothing to compare against: {exc}") from exc


def reference_outputs(model: onnx.ModelProto, backend: Any, samples: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The reference's graph outputs per sample, from the model as it is (nothing marked)."""
    try:
        sess = backend.session(model)
        return [sess.run(s) for s in samples]
    except BackendError as exc:
        raise BackendError(f"the reference backend cannot run the model, so there is nothing to compare against: {exc}") from exc


MODES = {"mark": "marked cuts", "mark-all": "mark all", "prefix": "prefixes", "suffix": "suffix cuts"}


@dataclass
class BisectResult:
    failed: bool
    confirm: Observation
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
    accumulation: list[dict] = field(default_factory=list)  # diverging points no small node set introduces
    max_context: int | None = None
    noise: dict | None = None  # the marking-noise measurement (None: not measured)
    fallback: str = ""  # why suffix cuts were used although the oracle can mark
    reference_calls: int = 0  # runs of the reference side on the same cuts
    noise_calls: int = 0  # runs spent measuring marking noise
    unresolved: int = 0  # --check runs that could not tell (exit 125), counted as passing

    @property
    def within_noise(self) -> dict | None:
        """The figures when the confirmed divergence is no larger than the marking noise."""
        if not self.failed or not self.noise:
            return None
        return noise.within(self.confirm.diffs, self.noise.get("rows", []))

    def _noise_clause(self) -> str:
        w = self.within_noise
        if w is None:
            return ""
        return (f"; the divergence (max abs {w['error']:.3g} on '{w['tensor']}') is within the backend's own marking "
                f"noise ({w['noise']:.3g}: that output moves as much when only marked tensors change), so it is how "
                "the backend computes around this node, not necessarily a wrong result")

    @property
    def diagnosis(self) -> dict:
        """One sentence on what kind of failure this is: culprits, accumulation, or both; and
        when the divergence is within the backend's own marking noise, that figure."""
        if not self.failed:
            return {"kind": "pass", "message": "the full model passes"}
        clause = self._noise_clause()
        if self.accumulation:
            sizes = sorted(len(a["subgraph"]) for a in self.accumulation)
            span = str(sizes[0]) if sizes[0] == sizes[-1] else f"{sizes[0]}–{sizes[-1]}"
            where = "" if len(sizes) == 1 else f" at {len(sizes)} places"
            acc = f"the error accumulates over {span} nodes{where}"
            if not self.culprits:
                return {"kind": "accumulation", "message": f"{acc}; no single culprit{clause}"}
            names = ", ".join(c["node"] for c in self.culprits)
            return {"kind": "mixed", "message": f"culprit(s) {names}; elsewhere {acc} with no single culprit{clause}"}
        if not self.culprits:
            why = clause[2:] if clause else ("no cut reproduces it" + (f" ({self.noise['summary']})" if self.noise else ""))
            return {"kind": "unlocalized", "message": f"the failure could not be pinned to a node: {why}"}
        names = ", ".join(c["node"] + (" (within marking noise)" if c.get("within_noise") and not clause else "")
                          for c in self.culprits)
        kind = "within-noise" if clause else "culprit"
        return {"kind": kind, "message": f"culprit(s): {names}{clause}"}

    def to_dict(self) -> dict:
        return {
            "failed": self.failed,
            "diagnosis": self.diagnosis,
            "culprits": self.culprits,
            "accumulation": self.accumulation,
            "confirm": self.confirm.to_dict(),
            "oracle": self.oracle,
            "mode": self.mode,
            "fallback": self.fallback,
            "noise": self.noise,
            "oracle_calls": self.calls,
            "reference_calls": self.reference_calls,
            "noise_calls": self.noise_calls,
            "checks_unresolved": self.unresolved,
            "verdicts_resumed": self.resumed,
            "wall_s": round(self.wall_s, 3),
            "nodes": self.nodes,
            "samples": self.samples,
            "reduced": {"nodes": self.reduced_nodes, "inputs": self.reduced_inputs, "outputs": self.reduced_outputs,
                        "verified": self.reduced_verified},
            "steps": self.steps,
        }


def make_oracle(view: extract.GraphView, ref_values: list[dict], types: dict, *, test: Any = None,
                against: onnx.ModelProto | None = None, check: Any = None, atol: Any = None,
                rtol: Any = None, nan_equal: bool = False, block_size: int = 32, timeout: float | None = None,
                against_label: str = "B", reference: Any = None, ref_marked: list[dict] | None = None):
    from surgeon.debug.check_command import CheckCommand

    if callable(check) and not isinstance(check, CheckCommand):  # a built-in oracle factory (``--check trt-build``)
        return check(view, ref_values, types, timeout=timeout)
    if check is not None:
        return CommandOracle(view, check, ref_values, types, timeout=timeout)
    return NumericOracle(view, ref_values, types, test=test, against=against, atol=atol, rtol=rtol,
                         nan_equal=nan_equal, block_size=block_size, against_label=against_label, reference=reference,
                         ref_marked=ref_marked)


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
    max_context: int = MAX_CONTEXT,
) -> BisectResult:
    """Confirm, localize, isolate and reduce; see the strategy module for the phases.

    ``max_context``: with an oracle that compares values, a first diverging node that needs
    more upstream nodes than this to fail is reported as accumulated error, with the error
    growth along its path, not as a culprit.
    """
    t0 = time.perf_counter()
    if not samples:
        raise InputDataError("bisect needs at least one input sample")
    say = progress or (lambda msg: None)
    view = extract.GraphView(model)
    say("running the reference with every tensor marked, and as it is")
    ref_values = reference_values(model, ref, samples)
    ref_marked = [{o: v[o] for o in view.output_names if o in v} for v in ref_values]
    for values, plain in zip(ref_values, reference_outputs(model, ref, samples)):
        values.update(plain)  # graph outputs are compared with what the model computes unmarked
    types = extract.types_from_values(ref_values, extract.inferred_types(model))
    if against is not None:
        types = {**extract.inferred_types(against), **types}
    oracle = make_oracle(view, ref_values, types, test=test, against=against, check=check, atol=atol, rtol=rtol,
                         nan_equal=nan_equal, block_size=block_size, timeout=timeout, against_label=against_label,
                         reference=ref, ref_marked=ref_marked)
    b_hash = hashlib.sha256(against.SerializeToString()).hexdigest() if against is not None else ""
    fp = artifacts.fingerprint(model, oracle.describe(), samples, extra=f"{atol!r}|{rtol!r}|{nan_equal}|{block_size}|{b_hash}")
    verdicts: dict = artifacts.load_state(outdir, fp) if outdir is not None else {}
    resumed = len(verdicts)
    context = max_context if oracle.can_mark else None
    search = _new_search(view, oracle.can_mark, oracle.mark_all, verdicts, context, measure_noise=oracle.can_mark)
    steps: list[dict] = []
    calls = 0  # candidates judged in this run (progress display)

    def judge(cand: Candidate, compute: Callable[[], Observation] | None = None) -> Observation:
        """The cached verdict, or a new one (saved at once, so an interrupted run resumes);
        ``compute`` replaces the oracle's judgement for candidates that are not subgraphs."""
        nonlocal calls
        key = (cand.kind, cand.nodes)
        if key in verdicts:  # judged by an earlier, interrupted run
            v = verdicts[key]
        else:
            calls += 1
            say(f"[{calls} oracle calls] {cand.purpose} ({len(cand.nodes)} nodes)")
            v = compute() if compute is not None else oracle.judge(cand)
            verdicts[key] = v
            if outdir is not None:
                artifacts.save_state(outdir, fp, verdicts)
        steps.append({"purpose": cand.purpose, "kind": cand.kind, "nodes": len(cand.nodes), "failed": v.failed,
                      "detail": v.detail})
        return v

    while (cand := search.next_candidate()) is not None:
        v = judge(cand)
        if cand.kind == "mark" and v.crashed and search.failed is None:
            # a crash is not localized by marking: restart with truncated models
            search = _new_search(view, False, False, verdicts, None)
            search.judged[("subgraph", frozenset(range(view.dag.n)))] = True
            continue
        search.record(v.for_strategy(cand.kind))
    confirm = _confirm_verdict(view, verdicts)
    profiles: dict[int, list[dict]] = {}
    if search.failed and search.max_context is not None and any(not c.introduced and c.found_by != "suffix"
                                                                for c in search.culprits):
        profiles = _growth_phase(view, search, oracle, confirm, verdicts, judge, say)
    # oracle.calls counts backend runs / commands (a wide cut on a fusing backend takes several blocks)
    initial = ("mark-all" if search.mark_all else "mark") if search.can_mark else "prefix"
    result = BisectResult(bool(search.failed), confirm, oracle.describe(), calls=oracle.calls, resumed=resumed, nodes=len(view.nodes),
                          samples=len(samples), mode=MODES[search.localized_by or initial], max_context=search.max_context)
    result.steps = steps
    result.fallback = search.fallback
    result.reference_calls = getattr(oracle, "ref_calls", 0)
    result.noise_calls = getattr(oracle, "noise_calls", 0)
    result.unresolved = getattr(oracle, "unresolved", 0)
    measured = verdicts.get(("noise", frozenset(range(view.dag.n))))
    if measured is not None:
        result.noise = {"trusted": not measured.failed, "summary": measured.detail, "rows": measured.diffs,
                        "threshold": f"marked tensors are trusted when no output moves more than {noise.TRUST:g}x its "
                                     "tolerance"}
    if search.failed:
        _fill_result(result, view, search, verdicts, ref_values, types, against, profiles)
    result.wall_s = time.perf_counter() - t0
    return result


def _growth_phase(view: extract.GraphView, search: Search, oracle: Any, confirm: Observation, verdicts: dict,
                  judge: Callable[[Candidate], Observation], say: Callable[[str], None]) -> dict[int, list[dict]]:
    """For each first diverging node that does not fail alone (error accumulated over a long
    stretch, or a culprit that needs a few neighbours): the error of every tensor on a path
    from the input through it to a failing output (one marked run per block, cached like a
    verdict), then each big jump further down that path run alone on reference inputs. The
    search sets a suspect's descendants aside, so a node that introduces error of its own
    behind it is invisible to it; one that fails alone joins the culprits, and the reduced
    model becomes the true culprits' subgraphs (verified) instead of the accumulating stretch."""
    failing_outputs = {d["tensor"] for d in confirm.diffs}
    sinks = {view.owner(t) for t in failing_outputs} - {None} or set(view.dag.sinks)
    profiles: dict[int, list[dict]] = {}
    found: list[int] = []
    for c in [c for c in search.culprits if not c.introduced and c.found_by != "suffix"]:
        nodes = growth.path(view, c.node, sinks)

        def measure(nodes=nodes, point=c.node) -> Observation:
            tensors = growth.path_tensors(view, nodes, failing_outputs)
            rows = growth.rows(view, nodes, tensors, oracle.tensor_errors(tensors), point)
            first = growth.first_exceeding(rows)
            return Observation(first is not None, f"{len(rows)} tensors on the path" +
                           (f"; first beyond tolerance: {rows[first]['tensor']}" if first is not None else ""), diffs=rows)

        v = judge(Candidate("profile", frozenset(nodes), f"error growth along the path through node {c.node}"), measure)
        profiles[c.node] = v.diffs
        for i in growth.jump_candidates(v.diffs, nodes.index(c.node)):
            k = nodes[i]
            if k in found or any(x.node == k for x in search.culprits):
                continue
            alone = judge(Candidate("subgraph", frozenset({k}), f"node {k} alone: the error jumps there"))
            if alone.failed:
                found.append(k)
    if found:
        search.culprits.extend(CulpritResult(k, True, frozenset({k}), found_by="growth") for k in found)
    true = [c for c in search.culprits if not c.accumulates]
    if true:
        reduced = frozenset().union(*(c.subgraph for c in true))
        if reduced != search.reduced:
            verdict = judge(Candidate("subgraph", reduced, "verify the reduced model (the culprits only)"))
            if verdict.failed:
                search.reduced, search.reduced_verified = reduced, True
    return profiles


def _new_search(view: extract.GraphView, can_mark: bool, mark_all: bool, verdicts: Mapping, max_context: int | None,
                measure_noise: bool = False) -> Search:
    search = Search(view.dag, can_mark=can_mark, mark_all=mark_all, max_context=max_context, measure_noise=measure_noise)
    for (kind, nodes), v in verdicts.items():
        search.judged[(kind, nodes)] = v.for_strategy(kind)
    return search


def _confirm_verdict(view: extract.GraphView, verdicts: Mapping) -> Observation:
    for key in (("mark", view.dag.sinks), ("subgraph", frozenset(range(view.dag.n)))):
        if key in verdicts:
            return verdicts[key]
    return Observation(False, "not judged")


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
                 ref_values: list[dict], types: dict, against: onnx.ModelProto | None,
                 profiles: Mapping[int, list[dict]]) -> None:
    confirm = result.confirm
    noise_rows = result.noise["rows"] if result.noise else []
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
        if c.found_by == "suffix" and not c.introduced:
            if c.reduced and c.downstream and len(c.subgraph) == c.downstream + 1:
                verdict = (f"the model fails from this node on (fed reference values up to it) and passes from the next "
                           f"one on; alone it passes, together with the {c.downstream} node(s) after it it fails: the "
                           "backend computes it differently depending on what follows it")
            else:
                verdict = ("the model fails from this node on (fed reference values up to it) and passes from the next "
                           "one on; no smaller subgraph around it reproduces the failure")
        elif c.introduced and c.found_by == "growth":
            verdict = ("introduces the error: fails alone on the reference values of its inputs (a jump on the "
                       "error-growth path, past the point where accumulated error first exceeds the tolerance)")
        elif c.introduced:
            verdict = "introduces the error: fails alone on the reference values of its inputs"
        elif c.accumulates:
            verdict = (f"not a culprit: the error exceeds the tolerance here first, but it passes alone on the reference "
                       f"values of its inputs and fails only together with {c.upstream} upstream nodes "
                       f"(more than {search.max_context})")
        elif c.reduced:
            verdict = f"does not fail alone; fails together with {len(c.subgraph) - 1} upstream node(s)"
        else:
            verdict = "first diverging node, but no subgraph smaller than the model reproduces the failure"
        entry = {
            "node": node_label(node, idx),
            "op_type": node.op_type if K.is_default_domain(node) else f"{node.domain}::{node.op_type}",
            "introduced": c.introduced,
            "verdict": verdict,
            "error": error,
            "first_divergence": _first_divergence(view, c.node, verdicts),
            "provenance": _provenance(node) or _provenance_in(against, node),
            "inputs": list(node.input),
            "outputs": list(node.output),
            "subgraph": [node_label(view.node(k), view.searchable[k]) for k in sorted(c.subgraph)],
        }
        if c.found_by == "suffix":
            cut = search.suffix_of.get(c.node)
            named_by = verdicts.get(("subgraph", cut)) if cut is not None and not view.is_everything(cut) else None
            entry["cut_error"] = (named_by or confirm).diffs[:1]  # the graph outputs of the cut that named it
            entry["within_noise"] = noise.within((named_by or confirm).diffs, noise_rows) if noise_rows else None
        if not c.introduced and c.found_by == "suffix":
            entry["downstream_nodes"] = c.downstream
        elif not c.introduced:
            entry["upstream_nodes"] = c.upstream
        entry["found_by"] = {"suffix": "suffix cuts", "growth": "error growth"}.get(c.found_by, result.mode)
        if c.node in profiles:
            rows = profiles[c.node]
            first = growth.first_exceeding(rows)
            entry["growth"] = rows
            entry["first_beyond_tolerance"] = ({"index": first, "node": rows[first]["node"], "tensor": rows[first]["tensor"]}
                                               if first is not None else None)
        (result.accumulation if c.accumulates else result.culprits).append(entry)
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
    """REPRO.md: culprits first (or, for accumulated error, that there is none and how the
    error grows), then the one command to run from OUTDIR."""
    lines = ["# Reproducing the failure", ""]
    diagnosis = result.diagnosis
    if diagnosis["kind"] in ("accumulation", "mixed", "within-noise", "unlocalized"):
        lines += [f"**{diagnosis['message'][0].upper()}{diagnosis['message'][1:]}.**", ""]
    if result.noise:
        used = (f" Bisect therefore used suffix cuts ({result.fallback}): the model from a node on, fed the reference "
                "values of everything before it, compared on outputs computed without marks, against the reference "
                "running the same cut." if result.mode == "suffix cuts" else " Marked tensors were trusted.")
        lines += [f"Marking noise ({result.noise['threshold']}): {result.noise['summary']}.{used}", ""]
    for c in result.culprits:
        err = c.get("error") or {}
        what = err.get("reason") or "fails"
        prov = c.get("provenance") or {}
        src = f" (made by pass `{prov.get('pass')}`, rule `{prov.get('rule')}`)" if prov.get("pass") else ""
        lines.append(f"- **{c['node']}** ({c['op_type']}){src}: {c['verdict']}; {what}")
    for c in result.culprits:
        if c.get("growth"):
            lines += ["", f"## Error growth through {c['node']} ({c['op_type']})", "",
                      f"{c['node']} fails together with {c['upstream_nodes']} upstream node(s). The error of each tensor on "
                      "a path from the input through it to a failing output, against the reference (worst over all "
                      "samples; `x tol`: the worst error in multiples of the tolerance):", "", growth.markdown(c["growth"])]
    for a in result.accumulation:
        first = a.get("first_beyond_tolerance")
        lines += [
            "",
            f"## Error growth through {a['node']} ({a['op_type']})",
            "",
            f"{a['node']} is where the error first exceeds the tolerance, but it is not a culprit: it passes alone on the "
            f"reference values of its inputs and fails only together with {a['upstream_nodes']} upstream nodes; every "
            "node on the way adds a little. The error of each tensor on a path from the input through it to a "
            "failing output, against the reference (worst over all samples; `x tol`: the worst error in multiples "
            "of the tolerance)"
            + (f"; first beyond tolerance at row {first['index']}, `{first['tensor']}`" if first else "") + ":",
            "",
            growth.markdown(a.get("growth") or []) if a.get("growth") else "(no profile: the oracle cannot compare tensors)",
        ]
    if result.culprits:
        reduced_what = "the culprits' subgraph"
    elif result.accumulation:
        reduced_what = "the accumulating stretch: no smaller subgraph fails"
    else:
        reduced_what = "the reduced model"
    lines += [
        "",
        f"Found by `surgeon bisect` on `{model_path}` ({result.nodes} nodes, {result.samples} input sample(s)) "
        f"with {result.calls} oracle calls: {result.oracle}.",
        f"`reduced.onnx` ({reduced_what}) has {len(result.reduced_nodes)} node(s); its inputs are intermediate tensors "
        "of the original model, and `inputs.npz` holds their reference values for every sample (`expected.npz`: the "
        "reference outputs).",
        "",
        "Run from this folder (exit status 1 = the failure reproduces):",
        "",
        "```sh",
        command,
        "```",
        "",
    ]
    return "\n".join(lines)
