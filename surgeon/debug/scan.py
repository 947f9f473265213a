"""``surgeon scan``: one reference run with every intermediate inspected.

Why: most "TensorRT gives garbage" reports are not engine bugs but numerics the model
already has on the reference backend, hidden until a lower-precision engine or a GPU
exposes them: a 0/0 or a log of zero producing NaN, activations or weights beyond
float16's ±65504 (an FP16 engine turns them into Inf), values so small that float16
flushes them to zero, ScatterND/ScatterElements writing the same position twice (the
order is undefined, so GPUs give nondeterministic results), and divisions by values
near zero. Each finding names the node first, then the tensor and the numbers that make
the cause visible (the inputs' value ranges for the first NaN/Inf).

Only the main graph's tensors are run-time inspected (bodies of If/Loop/Scan cannot be
marked as outputs); constants and initializers are checked everywhere, bodies included.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import onnx
from onnx import numpy_helper

from surgeon.debug.bisect.reduce import node_label, reference_values

log = logging.getLogger(__name__)

FP16_MAX = 65504.0
FP16_TINY = 2.0**-24  # smallest float16 subnormal: smaller magnitudes become 0
UNDERFLOW_FRACTION = 0.01  # report underflow when at least this share of the nonzero values is lost
NEAR_ZERO = 1e-6


@dataclass
class Finding:
    kind: str  # nan-inf | fp16-overflow | fp16-underflow | scatter-duplicates | near-zero-division
    node: str  # node name (or initializer name) first, always
    op_type: str
    tensor: str
    message: str
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"node": self.node, "op_type": self.op_type, "kind": self.kind, "tensor": self.tensor,
                "message": self.message, **self.details}


@dataclass
class ScanReport:
    findings: list[Finding]
    tensors: int
    constants: int
    samples: int
    notes: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.findings

    def to_dict(self) -> dict:
        return {"clean": self.clean, "findings": [f.to_dict() for f in self.findings], "tensors_inspected": self.tensors,
                "constants_inspected": self.constants, "samples": self.samples, "notes": self.notes}


def _float(a: Any) -> np.ndarray | None:
    if isinstance(a, np.ndarray) and a.dtype.kind == "f" and a.size:
        return a
    return None


def value_range(a: Any) -> dict:
    """min/max/zeros/negatives/non-finite of one value, for showing a cause."""
    if not isinstance(a, np.ndarray) or a.size == 0 or a.dtype.kind not in "fiub":
        return {"shape": list(np.shape(a))} if isinstance(a, np.ndarray) else {}
    x = a.astype(np.float64)
    fin = x[np.isfinite(x)]
    return {
        "shape": list(a.shape), "dtype": str(a.dtype),
        "min": float(fin.min()) if fin.size else None, "max": float(fin.max()) if fin.size else None,
        "zeros": int(np.count_nonzero(x == 0)), "negatives": int(np.count_nonzero(x < 0)),
        "nan": int(np.count_nonzero(np.isnan(x))), "inf": int(np.count_nonzero(np.isinf(x))),
    }


def _fmt_range(r: Mapping[str, Any]) -> str:
    if r.get("min") is None:
        return "no finite values"
    text = f"[{r['min']:.3g}, {r['max']:.3g}]"
    extra = [f"{r[k]} {k}" for k in ("zeros", "nan", "inf") if r.get(k)]
    return text + (f" ({', '.join(extra)})" if extra else "")


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
    if np.any(np.isinf(out)) and all(np.all(np.isfinite(i)) for i in ins if _float(i) is not None):
        return "overflow beyond float32's range"
    return "non-finite result"


def _dup_positions(node: onnx.NodeProto, data: np.ndarray, idx: np.ndarray) -> tuple[int, int]:
    """(positions written more than once, writes) for ScatterND / ScatterElements."""
    idx = np.asarray(idx).astype(np.int64)
    if node.op_type == "ScatterND":
        k = idx.shape[-1]
        rows = idx.reshape(-1, k).copy()
        dims = np.array(data.shape[:k], np.int64)
        rows = np.where(rows < 0, rows + dims, rows)
    else:
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        axis = axis + data.ndim if axis < 0 else axis
        grid = np.indices(idx.shape)
        norm = np.where(idx < 0, idx + data.shape[axis], idx)
        grid[axis] = norm
        rows = grid.reshape(idx.ndim, -1).T
    if rows.size == 0:
        return 0, 0
    uniq, counts = np.unique(rows, axis=0, return_counts=True)
    return int(np.count_nonzero(counts > 1)), int(rows.shape[0])


def _iter_constants(graph: onnx.GraphProto) -> Iterator[tuple[str, str, str, np.ndarray]]:
    """(owner name, op type, tensor name, value) for initializers and Constant nodes, bodies included."""
    for t in graph.initializer:
        try:
            yield t.name, "initializer", t.name, numpy_helper.to_array(t)
        except Exception:  # a dtype numpy cannot hold (e.g. float8): nothing to check against float16
            continue
    for i, n in enumerate(graph.node):
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value" and a.HasField("t"):
                    yield node_label(n, i), "Constant", n.output[0], numpy_helper.to_array(a.t)
        for a in n.attribute:
            for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                yield from _iter_constants(g)


def _range_findings(owner: str, op: str, tensor: str, values: Sequence[np.ndarray]) -> list[Finding]:
    arrs = [v for v in (_float(x) for x in values) if v is not None]
    if not arrs:
        return []
    out = []
    mags = [np.abs(a[np.isfinite(a)].astype(np.float64)) for a in arrs]
    peak = max((float(m.max()) for m in mags if m.size), default=0.0)
    if peak > FP16_MAX:
        over = sum(int(np.count_nonzero(m > FP16_MAX)) for m in mags)
        out.append(Finding("fp16-overflow", owner, op, tensor,
                           f"{owner} ({op}): '{tensor}' reaches {peak:.4g}, beyond float16's ±65504 ({over} values become Inf in FP16)",
                           {"max_abs": peak, "count": over}))
    nonzero = sum(int(np.count_nonzero(m)) for m in mags)
    tiny = sum(int(np.count_nonzero((m > 0) & (m < FP16_TINY))) for m in mags)
    if nonzero and tiny / nonzero >= UNDERFLOW_FRACTION:
        out.append(Finding("fp16-underflow", owner, op, tensor,
                           f"{owner} ({op}): {tiny} of {nonzero} nonzero values of '{tensor}' are below float16's smallest "
                           f"subnormal ({FP16_TINY:.3g}) and become 0 in FP16; max |value| {peak:.4g}",
                           {"max_abs": peak, "count": tiny, "nonzero": nonzero}))
    return out


def scan_model(model: onnx.ModelProto, samples: Sequence[Mapping[str, Any]], backend: Any, *, near_zero: float = NEAR_ZERO) -> ScanReport:
    values = reference_values(model, backend, samples)
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    const_values: dict[str, np.ndarray] = {}
    for n in g.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value" and a.HasField("t"):
                    const_values[n.output[0]] = numpy_helper.to_array(a.t)

    def val(name: str, i: int) -> Any:
        if name in values[i]:
            return values[i][name]
        if name in const_values:
            return const_values[name]
        if name in inits:
            return numpy_helper.to_array(inits[name])
        return None

    findings: list[Finding] = []
    first_nan: Finding | None = None
    tensors = 0
    for k, node in enumerate(g.node):
        label = node_label(node, k)
        for i in range(len(values)):
            if first_nan is not None:
                break
            ins = [val(x, i) if x else None for x in node.input]
            if any(_float(x) is not None and not np.all(np.isfinite(x)) for x in ins):
                continue
            for o in node.output:
                out = _float(values[i].get(o))
                if out is not None and not np.all(np.isfinite(out)):
                    ranges = {x: value_range(v) for x, v in zip(node.input, ins) if x}
                    cause = _cause(node, [v for v in ins if v is not None], out)
                    shown = "; ".join(f"{x} {_fmt_range(r)}" for x, r in ranges.items())
                    first_nan = Finding("nan-inf", label, node.op_type, o,
                                        f"{label} ({node.op_type}): first NaN/Inf, in '{o}' ({cause}); inputs: {shown}",
                                        {"cause": cause, "sample": i, "inputs": ranges, "output": value_range(out)})
                    break
        if node.op_type == "Constant":
            continue
        for o in node.output:
            if not o:
                continue
            tensors += 1
            found = _range_findings(label, node.op_type, o, [s.get(o) for s in values])
            for f in found:
                if f.kind == "fp16-overflow":
                    # the layer that makes the overflow (its activation inputs are in range; weights are
                    # reported on their own), as opposed to the layers that carry it on
                    peaks = [float(np.max(np.abs(a[np.isfinite(a)]), initial=0.0))
                             for i in range(len(values)) for a in [_float(values[i].get(x)) for x in node.input if x and x not in inits and x not in const_values]
                             if a is not None]
                    f.details["starts_here"] = all(p <= FP16_MAX for p in peaks)
                    if f.details["starts_here"]:
                        f.message += "; its activation inputs are within range: the overflow starts here"
            findings.extend(found)
        if node.op_type in ("ScatterND", "ScatterElements") and len(node.input) >= 2:
            reduction = next((a.s.decode() for a in node.attribute if a.name == "reduction"), "none")
            if reduction == "none":
                for i in range(len(values)):
                    data, idx = val(node.input[0], i), val(node.input[1], i)
                    if not isinstance(data, np.ndarray) or idx is None:
                        continue
                    dups, writes = _dup_positions(node, data, idx)
                    if dups:
                        findings.append(Finding("scatter-duplicates", label, node.op_type, node.input[1],
                                                f"{label} ({node.op_type}): indices '{node.input[1]}' write {dups} position(s) more than once "
                                                f"(of {writes} writes) with reduction='none': the result depends on write order, "
                                                "nondeterministic on GPUs", {"duplicates": dups, "writes": writes, "sample": i}))
                        break
        if node.op_type in ("Div", "Reciprocal"):
            den_name = node.input[1] if node.op_type == "Div" else node.input[0]
            dens = [_float(val(den_name, i)) for i in range(len(values))]
            mags = [np.abs(d[np.isfinite(d)]) for d in dens if d is not None]
            mags = [m for m in mags if m.size]
            if mags:
                low = min(float(m.min()) for m in mags)
                count = sum(int(np.count_nonzero(m < near_zero)) for m in mags)
                if low < near_zero:
                    findings.append(Finding("near-zero-division", label, node.op_type, den_name,
                                            f"{label} ({node.op_type}): divides by '{den_name}', whose smallest magnitude is {low:.3g} "
                                            f"({count} value(s) below {near_zero:g})", {"min_abs": low, "count": count}))
    constants = 0
    for owner, op, tensor, arr in _iter_constants(g):
        constants += 1
        findings.extend(_range_findings(owner, op, tensor, [arr]))
    if first_nan is not None:
        findings.insert(0, first_nan)
    notes = []
    if any(a.HasField("g") or len(a.graphs) for n in g.node for a in n.attribute):
        notes.append("tensors inside If/Loop/Scan bodies were not inspected at run time (their constants were)")
    return ScanReport(findings, tensors, constants, len(values), notes)
