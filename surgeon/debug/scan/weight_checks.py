"""Weights the FP16 run converts (clamped beyond ±65504, raised below 2**-24), and whether
converting them changes the outputs, checked by running the reference with them converted.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

import numpy as np
import onnx
from onnx import TensorProto

from surgeon import model as model_io
from surgeon.backends import fp16 as fp16_rules
from surgeon.debug.scan.findings import COULD, WILL, Finding
from surgeon.debug.scan.graph_values import FP16_MIN_SUBNORMAL, ScanGraph, max_abs, outputs_diff
from surgeon.errors import BackendError

log = logging.getLogger(__name__)

WEIGHT_CHECKS = 16  # most weights checked one by one when converting them all changes the outputs


def _converted_weight_inputs(node: onnx.NodeProto, graph: ScanGraph) -> list[str]:
    """The float32 weights a converted node reads in FP16 (what ``fp16.emulate`` rounds via
    ``_to_fp16_weights``): every input but the ones the ONNX spec keeps in float32.
    (A helper the emulation could expose; written here because fp16.py is not ours to edit.)"""
    exempt = fp16_rules._EXEMPT_INPUTS.get(node.op_type, frozenset())
    return [x for i, x in enumerate(node.input) if x and i not in exempt and graph.is_static(x)]


def weight_findings(model: onnx.ModelProto, graph: ScanGraph, converted: set[str], ref: list[dict],
                    samples: Sequence[Mapping[str, Any]], backend: Any, atol: Any, rtol: Any,
                    findings: list[Finding], notes: list[str]) -> int:
    """Weights the FP16 run converts: clamped beyond ±65504, raised below 2**-24; then what that changes."""
    readers: dict[str, list[int]] = {}
    for k, node in enumerate(graph.nodes):
        if graph.labels[k] in converted:
            for x in _converted_weight_inputs(node, graph):
                readers.setdefault(x, []).append(k)
    found: list[tuple[Finding, str, np.ndarray]] = []
    for name, users in readers.items():
        arr = graph.weight(name)
        if arr is None or not arr.size:
            continue
        conv, clamped, raised = fp16_rules._to_fp16_weights(arr)
        if not (clamped or raised):
            continue
        owner = graph.labels[graph.constants[name]] if name in graph.constants else name
        op = "Constant" if name in graph.constants else "initializer"
        ops = "/".join(sorted({graph.nodes[u].op_type for u in users}))
        peak = max_abs(arr)
        if clamped:
            f = Finding("fp16-clamped", COULD, owner, op, name,
                        f"{owner} ({op}): {clamped} values of '{name}' beyond ±65504 (up to {peak:.3g}) are clamped "
                        f"to ±65504 in FP16; read by {ops}", pattern=f"{ops} input", magnitude=peak,
                        details={"count": clamped, "max_abs": peak, "readers": [graph.labels[u] for u in users]})
        else:
            tiny = np.abs(arr[(arr != 0) & np.isfinite(arr)]).min()
            f = Finding("fp16-raised", COULD, owner, op, name,
                        f"{owner} ({op}): {raised} nonzero values of '{name}' are below float16's smallest subnormal "
                        f"({FP16_MIN_SUBNORMAL:.3g}, smallest {tiny:.3g}) and are raised to it in FP16, as TensorRT does; "
                        f"read by {ops}", pattern=f"{ops} input", magnitude=float(raised),
                        details={"count": raised, "min_abs": float(tiny), "max_abs": peak,
                                 "readers": [graph.labels[u] for u in users]})
        found.append((f, name, conv))
        findings.append(f)
    if found:
        _check_weights(model, graph, found, ref, samples, backend, atol, rtol, notes)
    return len(readers)


def _weight_probe(model: onnx.ModelProto, graph: ScanGraph, names: set[str]) -> onnx.ModelProto:
    """The model with the flagged weights turned into graph inputs: one copy and one session
    serve every check, each run feeding the original or the converted values. (Inputs without
    an initializer behind them, so no backend can quietly keep the original.)"""
    out = model_io.copy(model)
    g = out.graph
    kept = [t for t in g.initializer if t.name not in names]
    del g.initializer[:]
    g.initializer.extend(kept)
    nodes = [n for n in g.node if not (n.op_type == "Constant" and n.output and n.output[0] in names)]
    del g.node[:]
    g.node.extend(nodes)
    for name in sorted(names):
        w = graph.weight(name)
        g.input.append(onnx.helper.make_tensor_value_info(name, TensorProto.FLOAT, list(w.shape)))
    return out


def _check_weights(model: onnx.ModelProto, graph: ScanGraph, found: list[tuple[Finding, str, np.ndarray]], ref: list[dict],
                   samples: Sequence[Mapping[str, Any]], backend: Any, atol: Any, rtol: Any, notes: list[str]) -> None:
    """Run the reference with converted weights: each kind (clamped, raised) all at once, then one
    by one (largest first, at most WEIGHT_CHECKS) for a kind whose conversion changes the outputs."""
    original = {name: graph.weight(name) for _, name, _ in found}
    try:
        sess = backend.session(_weight_probe(model, graph, set(original)))
    except BackendError as exc:
        log.info("weight checks cannot run: %s", exc)
        sess = None

    def outputs_change(names: Mapping[str, np.ndarray]) -> dict[str, dict] | None:
        if sess is None:
            return None
        try:
            runs = [sess.run({**s, **original, **names}) for s in samples]
        except BackendError as exc:
            log.info("weight check failed to run: %s", exc)
            return None
        diff = outputs_diff(ref, runs, graph.outputs, atol, rtol)
        return {o: d for o, d in diff.items() if not d["passed"]}

    def settle(f: Finding, changed: dict[str, dict] | None) -> None:
        if changed is None:
            f.effect, f.consequence = "unchecked", "the check run failed"
        elif changed:
            worst = max(changed, key=lambda o: changed[o]["max_abs"])
            f.effect = "nonfinite-outputs" if any(d["nonfinite"] for d in changed.values()) else "outputs-differ"
            f.consequence = (f"converting it alone changes output(s) {', '.join(sorted(changed))} beyond tolerance "
                             f"(max abs {changed[worst]['max_abs']:.3g})")
            f.severity = WILL
        else:
            f.effect, f.consequence = "none", "none: the outputs stay within tolerance with it converted"

    for kind in ("fp16-clamped", "fp16-raised"):
        batch = sorted((x for x in found if x[0].kind == kind), key=lambda x: -x[0].magnitude)
        if not batch:
            continue
        together = outputs_change({name: conv for _, name, conv in batch})
        if together is not None and not together:
            for f, _, _ in batch:
                f.effect, f.consequence = "none", "none: the outputs stay within tolerance with it converted"
            continue
        jointly = (f" (converting all {len(batch)} together changes output(s) {', '.join(sorted(together))} "
                   "beyond tolerance)") if together and len(batch) > 1 else ""
        for n, (f, name, conv) in enumerate(batch):
            if len(batch) == 1:
                settle(f, together)
            elif together is None or n >= WEIGHT_CHECKS:
                f.effect, f.consequence = "unchecked", "not checked on its own" + jointly
            else:
                settle(f, outputs_change({name: conv}))
                if f.effect == "none":
                    f.consequence += jointly
        if together and len(batch) > WEIGHT_CHECKS:
            notes.append(f"converting all {len(batch)} {kind} weights changes the outputs; only the {WEIGHT_CHECKS} "
                         "largest were checked one by one")
