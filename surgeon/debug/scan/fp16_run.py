"""The FP16 run: every main-graph tensor in the emulation, and what it shows about the
activations it rounds (overflow where it starts, saturation carried from a clamped
constant, values close to ±65504, flush to zero, subnormals).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import onnx

from surgeon.backends import fp16 as fp16_rules
from surgeon.debug.bisect import extract
from surgeon.debug.scan.findings import COULD, WILL, Finding
from surgeon.debug.scan.graph_values import (
    FP16_MAX, FP16_MIN_NORMAL, FP16_MIN_SUBNORMAL, ScanGraph, as_float, effect_on, is_float, max_abs,
)

NEAR_MAX = 0.5  # an activation within this fraction of ±65504 is "close to the edge"
UNDERFLOW_FRACTION = 0.01  # report flush/subnormal when at least this share of the nonzero values is hit


def emulated_values(model: onnx.ModelProto, samples: Sequence[Mapping[str, Any]], keep: Sequence[str],
                    types: Mapping[str, onnx.TypeProto]) -> tuple[list[dict[str, Any]], Any]:
    """Every main-graph tensor's value in the FP16 emulation, per sample, and the emulation's plan."""
    backend = fp16_rules.Fp16Backend(keep=keep)
    marked = extract.with_outputs(model, extract.all_tensor_names(model), types)
    sess = backend.session(marked)
    return extract.run_marked(sess, samples), sess.plan


def activation_findings(graph: ScanGraph, ref: list[dict], emu: list[dict], converted: set[str],
                        out_diff: Mapping[str, dict], findings: list[Finding]) -> None:
    """Overflow, saturation, near-max and underflow of the tensors the FP16 run rounds."""
    for k, node in enumerate(graph.nodes):
        label = graph.labels[k]
        if label not in converted or node.op_type == "Constant":
            continue
        float_ins = [x for x in node.input if x and not graph.is_static(x)]
        for o in node.output:
            if not o or not all(is_float(s.get(o)) for s in ref):
                continue
            r_all = [s[o] for s in ref]
            e_all = [s.get(o) for s in emu]
            if not all(isinstance(e, np.ndarray) and e.shape == r.shape for e, r in zip(e_all, r_all)):
                continue
            new_bad = [np.isfinite(r) & ~np.isfinite(e) for r, e in zip(r_all, e_all)]
            count = sum(int(b.sum()) for b in new_bad)
            peak_ref = max(max_abs(r) for r in r_all)
            if count:
                # only where the overflow starts: the node's inputs are finite in the FP16 run
                if any(as_float(s.get(x)) is not None and not np.all(np.isfinite(s[x])) for s in emu for x in float_ins):
                    continue
                carried = _carried_from_clamps(node, graph, ref, emu)
                effect, text = effect_on(graph.reachable_outputs(k), out_diff)
                if carried:
                    sev = WILL if effect == "nonfinite-outputs" else COULD
                    findings.append(Finding(
                        "fp16-saturated", sev, label, node.op_type, o,
                        f"{label} ({node.op_type}): '{o}' gets {count} ±Inf in FP16 from '{carried[0][0]}', which holds "
                        f"values beyond ±65504 in float32 (up to {carried[0][1]:.3g}) that FP16 clamps, such as a −1e9 mask",
                        pattern=node.op_type, effect=effect, consequence=text, magnitude=float(count),
                        details={"count": count, "carried_from": [c[0] for c in carried], "max_abs": peak_ref}))
                else:
                    findings.append(Finding(
                        "fp16-overflow", WILL, label, node.op_type, o,
                        f"{label} ({node.op_type}): '{o}' overflows FP16 on these inputs: {count} values become ±Inf "
                        f"(float32 reaches {peak_ref:.4g}); its inputs are finite in FP16: the overflow starts here",
                        pattern=node.op_type, effect=effect, consequence=text, magnitude=peak_ref,
                        details={"count": count, "max_abs": peak_ref, "starts_here": True}))
                continue
            if peak_ref > FP16_MAX:  # beyond range in float32, clamped (not Inf) in FP16: carried from a clamped constant
                continue
            if peak_ref >= NEAR_MAX * FP16_MAX:
                findings.append(Finding(
                    "fp16-near-max", COULD, label, node.op_type, o,
                    f"{label} ({node.op_type}): '{o}' reaches {peak_ref:.4g}, within {FP16_MAX / peak_ref:.2g}x of "
                    "float16's ±65504; larger inputs would overflow", pattern=node.op_type, magnitude=peak_ref,
                    details={"max_abs": peak_ref}))
                continue
            nonzero = flushed = subnormal = 0
            for r, e in zip(r_all, e_all):
                fin = np.isfinite(r)
                nonzero += int(np.count_nonzero(fin & (r != 0)))
                # as the FP16 run computes them: zero there, nonzero and tiny in float32
                flushed += int(np.count_nonzero(fin & (r != 0) & (np.abs(r) < FP16_MIN_NORMAL) & (e == 0)))
                subnormal += int(np.count_nonzero((e != 0) & (np.abs(e) < FP16_MIN_NORMAL)))
            if not nonzero:
                continue
            if flushed / nonzero >= UNDERFLOW_FRACTION:
                kind, share, counts = "fp16-underflow", flushed / nonzero, {"flushed": flushed, "subnormal": subnormal}
                what = (f"{flushed} of {nonzero} nonzero values of '{o}' become 0 in FP16 (below "
                        f"{FP16_MIN_SUBNORMAL / 2:.3g}, half the smallest subnormal)")
            elif subnormal / nonzero >= UNDERFLOW_FRACTION:
                kind, share, counts = "fp16-subnormal", subnormal / nonzero, {"subnormal": subnormal}
                what = (f"{subnormal} of {nonzero} nonzero values of '{o}' are float16 subnormals "
                        f"(below {FP16_MIN_NORMAL:.3g}: kept, with fewer significant bits)")
            else:
                continue
            findings.append(Finding(kind, COULD, label, node.op_type, o,
                                    f"{label} ({node.op_type}): {what}; max |value| {peak_ref:.4g}",
                                    pattern=node.op_type, magnitude=share,
                                    details={**counts, "nonzero": nonzero, "max_abs": peak_ref}))


def _carried_from_clamps(node: onnx.NodeProto, graph: ScanGraph, ref: list[dict], emu: list[dict]) -> list[tuple[str, float]]:
    """Inputs of ``node`` beyond ±65504 in float32 that the FP16 run holds within range: weights it
    clamps, or activations computed from them (a mask times −1e9). (name, float32 max |value|)."""
    out = []
    for x in node.input:
        if not x:
            continue
        if graph.is_static(x):
            w = graph.weight(x)
            peak = max_abs(w) if w is not None else 0.0
            if peak > FP16_MAX:
                out.append((x, peak))
            continue
        peak = max(max_abs(as_float(s.get(x))) for s in ref)
        if peak > FP16_MAX and max(max_abs(as_float(s.get(x))) for s in emu) <= FP16_MAX:
            out.append((x, peak))
    return out
