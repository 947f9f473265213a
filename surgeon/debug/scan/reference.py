"""What the reference run shows by itself: the first NaN/Inf (and its cause), scatter writes
that hit one position twice, divisions by values near zero.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx

from surgeon.debug.scan.findings import COULD, WILL, Finding
from surgeon.debug.scan.graph_values import ScanGraph, as_float, fmt_range, value_range

NEAR_ZERO = 1e-6


def _cause(node: onnx.NodeProto, ins: list[Any], out: np.ndarray) -> str:
    op = node.op_type
    bad = ~np.isfinite(out)
    try:
        if op == "Div" and len(ins) == 2:
            a, b = np.broadcast_arrays(np.asarray(ins[0], np.float64), np.asarray(ins[1], np.float64))
            a, b = np.broadcast_to(a, out.shape), np.broadcast_to(b, out.shape)
            if np.any(bad & (a == 0) & (b == 0)):
                return "0/0"
            if np.any(bad & (b == 0)):
                return "division by zero"
        if op == "Reciprocal" and np.any(np.asarray(ins[0]) == 0):
            return "reciprocal of zero"
        if op == "Log" and ins:
            x = np.asarray(ins[0])
            if np.any(x == 0):
                return "log of zero"
            if np.any(x < 0):
                return "log of a negative number"
        if op in ("Sqrt", "Pow") and ins and np.any(np.asarray(ins[0]) < 0):
            return f"{op.lower()} of a negative number"
    except ValueError:  # shapes that do not broadcast as expected: no diagnosis, still a finding
        pass
    if np.any(np.isinf(out)) and all(np.all(np.isfinite(i)) for i in ins if as_float(i) is not None):
        return "overflow beyond float32's range"
    return "non-finite result"


def _dup_positions(node: onnx.NodeProto, data: np.ndarray, idx: np.ndarray, upd: Any) -> tuple[int, int, int]:
    """(positions written more than once, writes, of those positions how many get different values)."""
    idx = np.asarray(idx).astype(np.int64)
    if node.op_type == "ScatterND":
        k = idx.shape[-1]
        rows = idx.reshape(-1, k).copy()
        dims = np.array(data.shape[:k], np.int64)
        rows = np.where(rows < 0, rows + dims, rows)
        slices = None if upd is None else np.asarray(upd).reshape(rows.shape[0], -1)
    else:
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        axis = axis + data.ndim if axis < 0 else axis
        grid = np.indices(idx.shape)
        norm = np.where(idx < 0, idx + data.shape[axis], idx)
        grid[axis] = norm
        rows = grid.reshape(idx.ndim, -1).T
        slices = None if upd is None else np.asarray(upd).reshape(-1, 1)
    if rows.size == 0:
        return 0, 0, 0
    uniq, inverse, counts = np.unique(rows, axis=0, return_inverse=True, return_counts=True)
    inverse = np.asarray(inverse).reshape(-1)
    dups = np.flatnonzero(counts > 1)
    conflicting = 0
    if slices is not None and slices.shape[0] == rows.shape[0]:
        for u in dups:
            written = slices[inverse == u]
            if not np.all(written == written[0]):
                conflicting += 1
    return int(dups.size), int(rows.shape[0]), conflicting


def reference_findings(model: onnx.ModelProto, graph: ScanGraph, values: list[dict], near_zero: float,
                       findings: list[Finding]) -> int:
    """What the reference run shows by itself: the first NaN/Inf, scatter and division hazards."""

    def val(name: str, i: int) -> Any:
        if name in values[i]:
            return values[i][name]
        return graph.static_value(name) if graph.is_static(name) else None

    first_nan: Finding | None = None
    tensors = 0
    for k, node in enumerate(graph.nodes):
        label = graph.labels[k]
        if node.op_type != "Constant":
            tensors += sum(1 for o in node.output if o)
        for i in range(len(values)):
            if first_nan is not None:
                break
            ins = [val(x, i) if x else None for x in node.input]
            if any(as_float(x) is not None and not np.all(np.isfinite(x)) for x in ins):
                continue
            for o in node.output:
                out = as_float(values[i].get(o))
                if out is not None and not np.all(np.isfinite(out)):
                    ranges = {x: value_range(v) for x, v in zip(node.input, ins) if x}
                    cause = _cause(node, [v for v in ins if v is not None], out)
                    shown = "; ".join(f"{x} {fmt_range(r)}" for x, r in ranges.items())
                    reached = sorted(o2 for o2 in graph.reachable_outputs(k)
                                     if any(as_float(s.get(o2)) is not None and not np.all(np.isfinite(s[o2])) for s in values))
                    first_nan = Finding(
                        "nan-inf", WILL, label, node.op_type, o,
                        f"{label} ({node.op_type}): first NaN/Inf of the reference run, in '{o}' ({cause}); inputs: {shown}",
                        pattern=f"{node.op_type} ({cause})", magnitude=float("inf"),
                        effect="nonfinite-outputs" if reached else "absorbed",
                        consequence=(f"the reference outputs {', '.join(reached)} hold NaN/Inf" if reached
                                     else "no output of the reference holds NaN/Inf"),
                        details={"cause": cause, "sample": i, "inputs": ranges, "output": value_range(out)})
                    findings.append(first_nan)
                    break
        if node.op_type in ("ScatterND", "ScatterElements") and len(node.input) >= 2:
            reduction = next((a.s.decode() for a in node.attribute if a.name == "reduction"), "none")
            if reduction == "none":
                for i in range(len(values)):
                    data, idx = val(node.input[0], i), val(node.input[1], i)
                    upd = val(node.input[2], i) if len(node.input) > 2 else None
                    if not isinstance(data, np.ndarray) or idx is None:
                        continue
                    dups, writes, conflicting = _dup_positions(node, data, idx, upd)
                    if dups:
                        what = (f"{conflicting} of them get different values: the result depends on write order, "
                                "nondeterministic on GPUs" if conflicting else
                                "every duplicate writes the same value, so the order does not matter on these inputs")
                        findings.append(Finding(
                            "scatter-duplicates", WILL if conflicting else COULD, label, node.op_type, node.input[1],
                            f"{label} ({node.op_type}): indices '{node.input[1]}' write {dups} position(s) more than once "
                            f"(of {writes} writes) with reduction='none'; {what}",
                            pattern=node.op_type, magnitude=float(conflicting or dups),
                            effect="outputs-differ" if conflicting else "none",
                            consequence=("the output depends on the write order" if conflicting
                                         else "none: duplicates write equal values"),
                            details={"duplicates": dups, "writes": writes, "conflicting": conflicting, "sample": i}))
                        break
        if node.op_type in ("Div", "Reciprocal"):
            den_name = node.input[1] if node.op_type == "Div" else node.input[0]
            dens = [as_float(val(den_name, i)) for i in range(len(values))]
            mags = [np.abs(d[np.isfinite(d)]) for d in dens if d is not None]
            mags = [m for m in mags if m.size]
            if mags:
                low = min(float(m.min()) for m in mags)
                count = sum(int(np.count_nonzero(m < near_zero)) for m in mags)
                if low < near_zero:
                    findings.append(Finding(
                        "near-zero-division", COULD, label, node.op_type, den_name,
                        f"{label} ({node.op_type}): divides by '{den_name}', whose smallest magnitude is {low:.3g} "
                        f"({count} value(s) below {near_zero:g})", pattern=node.op_type, magnitude=1.0 / max(low, 1e-300),
                        details={"min_abs": low, "count": count}))
    return tensors
