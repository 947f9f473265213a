"""``surgeon scan``: one reference run and one FP16-emulated run, every intermediate inspected.

Why: most "TensorRT gives garbage" reports are not engine bugs but numerics the model
already has, hidden until a lower-precision engine exposes them: a 0/0 or a log of zero
producing NaN, activations beyond float16's ±65504, values that flush to zero,
ScatterND/ScatterElements writing the same position twice (the order is undefined, so
GPUs give nondeterministic results), divisions by values near zero.

Why two runs, and the emulation's rules rather than our own: a scan that judges float16
by its own rules disagrees with ``compare --test fp16`` and with TensorRT. A −1e9
attention mask is not an "Inf" in FP16: TensorRT (and ``surgeon.backends.fp16``) clamps
weights to ±65504, and the Softmax after it computes the same probabilities. A weight
below the smallest subnormal is not "0" either: TensorRT raises it to 2**-24. So the
FP16 part of the scan runs the emulation itself (every op in float32, outputs rounded
through float16, weights converted by ``fp16._to_fp16_weights``), with every tensor
marked, and reads the verdicts off the two runs.

Findings are ranked by consequence and carry a ``severity``:

- ``will``: goes wrong on these inputs. A NaN/Inf the reference itself produces; an
  activation that actually overflows in the FP16 run (the first node whose finite, in-range
  inputs give Inf); a converted weight (clamped or raised) whose conversion alone moves
  the outputs beyond tolerance; scatter writes that put different values on one position.
  These, and only these, make the exit status 1.
- ``could``: a hazard that does no harm on these inputs: a clamped constant whose
  conversion leaves the outputs within tolerance, a value saturated from a clamped
  constant (a −1e9 mask rounded to −Inf before a Softmax), activations close to ±65504,
  values that flush to 0 or become subnormal, divisions by values near zero.

Values beyond float16's range are followed past where they start: every node whose own
float32 value exceeds ±65504 is named, grouped into chains (who starts it, who continues
it, who reads it), and the set of nodes to keep in float32 is checked with the emulation
itself; a chain the outputs absorb (a −1e9 mask before a Softmax) is listed as harmless.
A chain's findings take its severity: needed → will, harmless → could.

Each finding says what was checked (``consequence``): which outputs an overflow reaches
in the FP16 run, whether a converted weight changes the outputs (checked by running the
reference with that weight converted), or that the FP16 run's outputs match the
reference, which clears every "could" at once. Repeated findings (same severity, kind and
op pattern) are grouped with counts, so a detector with 130 identical Conv weights reads
as one line.

Only the main graph's tensors are run-time inspected (bodies of If/Loop/Scan cannot be
marked as outputs); the emulation keeps those bodies in float32, so their constants are
not FP16 findings either.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from surgeon import graph_ops as K
from surgeon import comparison
from surgeon import model as model_io
from surgeon.backends import fp16 as fp16_rules
from surgeon.debug.bisect import extract
from surgeon.debug.bisect.reduce import node_label, reference_values
from surgeon.errors import BackendError

log = logging.getLogger(__name__)

FP16_MAX = fp16_rules.FP16_MAX
FP16_MIN_SUBNORMAL = fp16_rules.FP16_MIN_SUBNORMAL
FP16_MIN_NORMAL = 2.0**-14
NEAR_MAX = 0.5  # an activation within this fraction of ±65504 is "close to the edge"
UNDERFLOW_FRACTION = 0.01  # report flush/subnormal when at least this share of the nonzero values is hit
NEAR_ZERO = 1e-6
WEIGHT_CHECKS = 16  # most weights checked one by one when converting them all changes the outputs

WILL, COULD = "will", "could"

# consequence effects, most serious first (the ranking order)
_EFFECT_RANK = {"nonfinite-outputs": 0, "outputs-differ": 1, "unchecked": 2, "absorbed": 3, "none": 4}


@dataclass
class Finding:
    # nan-inf | fp16-overflow | fp16-saturated | fp16-clamped | fp16-raised | fp16-near-max | fp16-underflow |
    # fp16-subnormal | scatter-duplicates | near-zero-division
    kind: str
    severity: str  # will | could
    node: str  # node name (or initializer name) first, always
    op_type: str
    tensor: str
    message: str
    pattern: str = ""  # grouping key beside kind: the op (and role) that repeats
    consequence: str = ""
    effect: str = "unchecked"  # key of _EFFECT_RANK
    magnitude: float = 0.0  # for ranking within a group
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"node": self.node, "op_type": self.op_type, "severity": self.severity, "kind": self.kind,
                "tensor": self.tensor, "message": self.message, "consequence": self.consequence,
                "effect": self.effect, "pattern": self.pattern, **self.details}


@dataclass
class Group:
    """Findings of one severity, kind and op pattern."""

    severity: str
    kind: str
    pattern: str
    findings: list[Finding]

    @property
    def count(self) -> int:
        return len(self.findings)

    @property
    def worst(self) -> Finding:
        return self.findings[0]

    def where(self, limit: int = 3) -> str:
        if self.count == 1:
            return self.worst.node
        names = ", ".join(f.node for f in self.findings[:limit])
        return f"{self.count}× {self.pattern}: {names}" + (", …" if self.count > limit else "")

    def consequence(self) -> str:
        effects = {f.effect for f in self.findings}
        if len(effects) == 1 or self.count == 1:
            return self.worst.consequence
        counts = {e: sum(f.effect == e for f in self.findings) for e in sorted(effects, key=_EFFECT_RANK.get)}
        return f"{self.worst.consequence}; " + ", ".join(f"{n} {e}" for e, n in counts.items())

    def to_dict(self) -> dict:
        return {"severity": self.severity, "kind": self.kind, "pattern": self.pattern, "count": self.count,
                "nodes": [f.node for f in self.findings], "worst": self.worst.message,
                "consequence": self.consequence()}


@dataclass
class Chain:
    """Connected nodes whose own float32 values are beyond float16's range, and who reads them.

    ``nodes``: in graph order, each ``{"node", "op_type", "tensor", "role", "max_abs"}`` with
    role ``starts`` (its inputs are within range), ``continues`` (fed by the chain) or
    ``reads`` (its own value is within range, but in FP16 it would read ±Inf; already-float32
    nodes say ``reads (float32)``). ``pin``: the nodes to keep in float32 so the chain's
    values are never float16 (the converted ones among them). ``harmless``: the FP16 run's
    outputs match without pinning it (None: not checked); ``why`` says how that was found.
    """

    nodes: list[dict]
    pin: list[str]
    harmless: bool | None = None
    why: str = ""

    @property
    def starts(self) -> list[str]:
        return [n["node"] for n in self.nodes if n["role"] == "starts"]

    def path(self) -> str:
        """``exp → add_one (→ log)``: the beyond-range nodes, then who reads them; a chain with
        several starts as ``24 starts (a, b, …) … 49 nodes … last``."""
        over = [n["node"] for n in self.nodes if n["role"] in ("starts", "continues")]
        readers = [n["node"] for n in self.nodes if n["role"].startswith("reads")]
        starts = self.starts
        if len(starts) > 1:
            text = (f"{len(starts)} starts ({', '.join(starts[:3])}{', …' if len(starts) > 3 else ''}), "
                    f"{len(over)} nodes beyond range, last {over[-1]}")
        else:
            text = " → ".join(over[:6]) + (f" → … ({len(over) - 6} more)" if len(over) > 6 else "")
        if readers:
            text += " (→ " + ", ".join(readers[:4]) + (", …" if len(readers) > 4 else "") + ")"
        return text

    def to_dict(self) -> dict:
        return {"starts": self.starts, "path": self.path(), "nodes": self.nodes, "pin": self.pin,
                "harmless": self.harmless, "why": self.why}


@dataclass
class ScanReport:
    findings: list[Finding]  # ranked: will first, then by consequence and magnitude
    tensors: int
    constants: int
    samples: int
    notes: list[str] = field(default_factory=list)
    fp16: dict = field(default_factory=dict)  # the emulated run: outputs vs reference, plan summary
    chains: list[Chain] = field(default_factory=list)  # values beyond float16's range, grouped
    pin: list[str] = field(default_factory=list)  # nodes to keep in float32: every chain that is not harmless
    pin_check: dict = field(default_factory=dict)  # the FP16 run with ``pin`` kept: does it match?

    @property
    def clean(self) -> bool:
        return not self.findings

    @property
    def will(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == WILL]

    @property
    def groups(self) -> list[Group]:
        out: dict[tuple[str, str, str], Group] = {}
        for f in self.findings:  # already ranked, so each group's first finding is its worst
            key = (f.severity, f.kind, f.pattern)
            if key not in out:
                out[key] = Group(f.severity, f.kind, f.pattern, [])
            out[key].findings.append(f)
        return list(out.values())

    def to_dict(self) -> dict:
        return {"clean": self.clean, "will": len(self.will), "could": len(self.findings) - len(self.will),
                "groups": [g.to_dict() for g in self.groups], "findings": [f.to_dict() for f in self.findings],
                "fp16": self.fp16, "tensors_inspected": self.tensors, "constants_inspected": self.constants,
                "samples": self.samples, "notes": self.notes, "fp16_range": {
                    "chains": [c.to_dict() for c in self.chains], "pin": self.pin, "pin_check": self.pin_check}}


def _float(a: Any) -> np.ndarray | None:
    if isinstance(a, np.ndarray) and a.dtype.kind == "f" and a.size:
        return a
    return None


def _max_abs(a: np.ndarray | None) -> float:
    if a is None:
        return 0.0
    fin = a[np.isfinite(a)]
    return float(np.max(np.abs(fin))) if fin.size else 0.0


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


def _is_float(a: Any) -> bool:
    return isinstance(a, np.ndarray) and a.dtype.kind == "f"


class _Graph:
    """What the scan needs to know about the main graph, indexed once."""

    def __init__(self, model: onnx.ModelProto):
        g = model.graph
        self.nodes = list(g.node)
        self.labels = [node_label(n, i) for i, n in enumerate(self.nodes)]
        graph_inputs = {i.name for i in g.input}
        self.inits = {t.name: t for t in g.initializer if t.name not in graph_inputs}
        self.constants = {n.output[0]: i for i, n in enumerate(self.nodes)
                          if n.op_type == "Constant" and K.is_default_domain(n) and n.output}
        self.consumers: dict[str, list[int]] = {}
        for i, n in enumerate(self.nodes):
            for x in extract.node_reads(n):
                self.consumers.setdefault(x, []).append(i)
        self.outputs = [o.name for o in g.output]

    def is_static(self, name: str) -> bool:
        return name in self.inits or name in self.constants

    def static_value(self, name: str) -> np.ndarray | None:
        """An initializer's or Constant's value, any dtype (None when numpy cannot hold it)."""
        try:
            if name in self.inits:
                return numpy_helper.to_array(self.inits[name])
            if name in self.constants:
                attr = next((a for a in self.nodes[self.constants[name]].attribute if a.name == "value"), None)
                return numpy_helper.to_array(attr.t) if attr is not None else self.weight(name)
        except Exception:  # a dtype numpy cannot hold (e.g. float8): nothing to inspect
            return None
        return None

    def weight(self, name: str) -> np.ndarray | None:
        """The float32 value of an initializer or Constant (the emulation converts only float32 weights)."""
        if name in self.inits:
            t = self.inits[name]
            return numpy_helper.to_array(t) if t.data_type == TensorProto.FLOAT else None
        if name in self.constants:
            return fp16_rules._constant_array(self.nodes[self.constants[name]])
        return None

    def reachable_outputs(self, start: int) -> set[str]:
        """Graph outputs downstream of node ``start`` (its own included)."""
        outs = set(self.outputs)
        seen, stack, found = {start}, [start], set()
        while stack:
            i = stack.pop()
            for o in self.nodes[i].output:
                if o in outs:
                    found.add(o)
                for j in self.consumers.get(o, []):
                    if j not in seen:
                        seen.add(j)
                        stack.append(j)
        return found


def _converted_weight_inputs(node: onnx.NodeProto, graph: _Graph) -> list[str]:
    """The float32 weights a converted node reads in FP16 (what ``fp16.emulate`` rounds via
    ``_to_fp16_weights``): every input but the ones the ONNX spec keeps in float32.
    (A helper the emulation could expose; written here because fp16.py is not ours to edit.)"""
    exempt = fp16_rules._EXEMPT_INPUTS.get(node.op_type, frozenset())
    return [x for i, x in enumerate(node.input) if x and i not in exempt and graph.is_static(x)]


def _emulated_values(model: onnx.ModelProto, samples: Sequence[Mapping[str, Any]], keep: Sequence[str],
                     types: Mapping[str, onnx.TypeProto]) -> tuple[list[dict[str, Any]], Any]:
    """Every main-graph tensor's value in the FP16 emulation, per sample, and the emulation's plan."""
    backend = fp16_rules.Fp16Backend(keep=keep)
    marked = extract.with_outputs(model, extract.all_tensor_names(model), types)
    sess = backend.session(marked)
    out = []
    for s in samples:
        values = dict(s)
        values.update(sess.run(s))
        out.append(values)
    return out, sess.plan


def _outputs_diff(ref: Sequence[Mapping[str, Any]], test: Sequence[Mapping[str, Any]], names: Sequence[str],
                  atol: Any, rtol: Any) -> dict[str, dict]:
    """Per graph output: passed, worst error, whether the test side has NaN/Inf the reference lacks."""
    out: dict[str, dict] = {}
    for r, t in zip(ref, test):
        want = {n: r[n] for n in names if n in r and _is_float(r[n])}
        for d in comparison.diff_outputs(want, t, atol=atol, rtol=rtol, nan_equal=True):
            acc = out.setdefault(d.name, {"passed": True, "max_abs": 0.0, "nonfinite": 0, "reason": ""})
            acc["passed"] = acc["passed"] and d.passed
            acc["max_abs"] = max(acc["max_abs"], d.max_abs)
            acc["nonfinite"] += d.nan_mismatches + d.inf_mismatches
            if not d.passed and not acc["reason"]:
                acc["reason"] = d.reason
    return out


def _effect_on(outputs: set[str], diff: Mapping[str, dict]) -> tuple[str, str]:
    """(effect, text) of a hazard whose influence reaches ``outputs`` in the FP16 run."""
    bad = sorted(o for o in outputs if o in diff and not diff[o]["passed"])
    nonfinite = [o for o in bad if diff[o]["nonfinite"]]
    if nonfinite:
        return "nonfinite-outputs", f"reaches output(s) {', '.join(nonfinite)} as NaN/Inf in the FP16 run"
    if bad:
        return "outputs-differ", f"output(s) {', '.join(bad)} differ beyond tolerance in the FP16 run"
    if outputs:
        return "absorbed", "absorbed: the outputs it reaches match in the FP16 run"
    return "absorbed", "reaches no output"


def scan_model(model: onnx.ModelProto, samples: Sequence[Mapping[str, Any]], backend: Any, *, near_zero: float = NEAR_ZERO,
               fp16: bool = True, fp16_keep: Sequence[str] = (), atol: Any = None, rtol: Any = None) -> ScanReport:
    """Scan ``model`` on ``samples``: the reference run on ``backend``, and (``fp16``) the FP16 emulation.

    ``atol``/``rtol``: the tolerance for "changes the outputs" (default: float16's).
    """
    d_atol, d_rtol = comparison.DEFAULT_TOLERANCES["float16"]
    atol = d_atol if atol is None else atol
    rtol = d_rtol if rtol is None else rtol
    ref = reference_values(model, backend, samples)
    graph = _Graph(model)
    findings: list[Finding] = []
    notes: list[str] = []
    tensors = _reference_findings(model, graph, ref, near_zero, findings)
    fp16_summary: dict = {}
    constants = 0
    if fp16:
        types = extract.types_from_values(ref, extract.inferred_types(model))
        try:
            emu, plan = _emulated_values(model, samples, fp16_keep, types)
        except BackendError as exc:
            notes.append(f"the FP16 emulation could not run the model ({exc}); no FP16 findings")
            emu, plan = None, None
        if emu is not None:
            out_diff = _outputs_diff(ref, emu, graph.outputs, atol, rtol)
            fp16_summary = {"outputs_match": all(d["passed"] for d in out_diff.values()), "outputs": out_diff,
                            "converted": len(plan.converted), "kept": plan.kept, "tolerance": {"atol": atol, "rtol": rtol}}
            converted = set(plan.converted)
            _activation_findings(graph, ref, emu, converted, out_diff, findings)
            constants = _weight_findings(model, graph, converted, ref, samples, backend, atol, rtol, findings, notes)
            _settle_could(findings, fp16_summary["outputs_match"])
            chains = _range_chains(graph, ref, converted)
            pin, pin_check = _check_chains(model, graph, chains, ref, samples, fp16_keep, fp16_summary["outputs_match"],
                                           atol, rtol)
            _chain_findings(graph, chains, ref, findings)
    else:
        notes.append("FP16 checks skipped (--no-fp16)")
    if any(a.HasField("g") or len(a.graphs) for n in model.graph.node for a in n.attribute):
        notes.append("tensors inside If/Loop/Scan bodies were not inspected at run time, and the FP16 emulation "
                     "keeps those bodies (and their constants) in float32")
    report = ScanReport(_rank(findings), tensors, constants, len(ref), notes, fp16_summary)
    if fp16 and fp16_summary:
        report.chains, report.pin, report.pin_check = chains, pin, pin_check
    return report


def _reference_findings(model: onnx.ModelProto, graph: _Graph, values: list[dict], near_zero: float,
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
            if any(_float(x) is not None and not np.all(np.isfinite(x)) for x in ins):
                continue
            for o in node.output:
                out = _float(values[i].get(o))
                if out is not None and not np.all(np.isfinite(out)):
                    ranges = {x: value_range(v) for x, v in zip(node.input, ins) if x}
                    cause = _cause(node, [v for v in ins if v is not None], out)
                    shown = "; ".join(f"{x} {_fmt_range(r)}" for x, r in ranges.items())
                    reached = sorted(o2 for o2 in graph.reachable_outputs(k)
                                     if any(_float(s.get(o2)) is not None and not np.all(np.isfinite(s[o2])) for s in values))
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
            dens = [_float(val(den_name, i)) for i in range(len(values))]
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


def _activation_findings(graph: _Graph, ref: list[dict], emu: list[dict], converted: set[str],
                         out_diff: Mapping[str, dict], findings: list[Finding]) -> None:
    """Overflow, saturation, near-max and underflow of the tensors the FP16 run rounds."""
    for k, node in enumerate(graph.nodes):
        label = graph.labels[k]
        if label not in converted or node.op_type == "Constant":
            continue
        float_ins = [x for x in node.input if x and not graph.is_static(x)]
        for o in node.output:
            if not o or not all(_is_float(s.get(o)) for s in ref):
                continue
            r_all = [s[o] for s in ref]
            e_all = [s.get(o) for s in emu]
            if not all(isinstance(e, np.ndarray) and e.shape == r.shape for e, r in zip(e_all, r_all)):
                continue
            new_bad = [np.isfinite(r) & ~np.isfinite(e) for r, e in zip(r_all, e_all)]
            count = sum(int(b.sum()) for b in new_bad)
            peak_ref = max(_max_abs(r) for r in r_all)
            if count:
                # only where the overflow starts: the node's inputs are finite in the FP16 run
                if any(_float(s.get(x)) is not None and not np.all(np.isfinite(s[x])) for s in emu for x in float_ins):
                    continue
                carried = _carried_from_clamps(node, graph, ref, emu)
                effect, text = _effect_on(graph.reachable_outputs(k), out_diff)
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
                findings.append(Finding(
                    "fp16-underflow", COULD, label, node.op_type, o,
                    f"{label} ({node.op_type}): {flushed} of {nonzero} nonzero values of '{o}' become 0 in FP16 (below "
                    f"{FP16_MIN_SUBNORMAL / 2:.3g}, half the smallest subnormal); max |value| {peak_ref:.4g}",
                    pattern=node.op_type, magnitude=flushed / nonzero,
                    details={"flushed": flushed, "subnormal": subnormal, "nonzero": nonzero, "max_abs": peak_ref}))
            elif subnormal / nonzero >= UNDERFLOW_FRACTION:
                findings.append(Finding(
                    "fp16-subnormal", COULD, label, node.op_type, o,
                    f"{label} ({node.op_type}): {subnormal} of {nonzero} nonzero values of '{o}' are float16 subnormals "
                    f"(below {FP16_MIN_NORMAL:.3g}: kept, with fewer significant bits); max |value| {peak_ref:.4g}",
                    pattern=node.op_type, magnitude=subnormal / nonzero,
                    details={"subnormal": subnormal, "nonzero": nonzero, "max_abs": peak_ref}))


def _carried_from_clamps(node: onnx.NodeProto, graph: _Graph, ref: list[dict], emu: list[dict]) -> list[tuple[str, float]]:
    """Inputs of ``node`` beyond ±65504 in float32 that the FP16 run holds within range: weights it
    clamps, or activations computed from them (a mask times −1e9). (name, float32 max |value|)."""
    out = []
    for x in node.input:
        if not x:
            continue
        if graph.is_static(x):
            w = graph.weight(x)
            peak = _max_abs(w) if w is not None else 0.0
            if peak > FP16_MAX:
                out.append((x, peak))
            continue
        peak = max(_max_abs(_float(s.get(x))) for s in ref)
        if peak > FP16_MAX and max(_max_abs(_float(s.get(x))) for s in emu) <= FP16_MAX:
            out.append((x, peak))
    return out


def _weight_findings(model: onnx.ModelProto, graph: _Graph, converted: set[str], ref: list[dict],
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
        peak = _max_abs(arr)
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


def _weight_probe(model: onnx.ModelProto, graph: _Graph, names: set[str]) -> onnx.ModelProto:
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


def _check_weights(model: onnx.ModelProto, graph: _Graph, found: list[tuple[Finding, str, np.ndarray]], ref: list[dict],
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
        diff = _outputs_diff(ref, runs, graph.outputs, atol, rtol)
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


def _range_chains(graph: _Graph, ref: list[dict], converted: set[str]) -> list[Chain]:
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
            if o and all(_is_float(v.get(o)) for v in ref):
                peak = max(_max_abs(v[o]) for v in ref)
                if peak > FP16_MAX:
                    over[o] = (k, peak)
    if not over:
        return []
    over_nodes = sorted({k for k, _ in over.values()})
    parent = {k: k for k in over_nodes}

    def find(k: int) -> int:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    fed_by: dict[int, set[int]] = {k: set() for k in over_nodes}
    for k in over_nodes:
        for x in extract.node_reads(graph.nodes[k]):
            if x in over:
                j = over[x][0]
                fed_by[k].add(j)
                parent[find(k)] = find(j)
    readers: dict[int, set[int]] = {}
    for x, (j, _) in over.items():
        for r in graph.consumers.get(x, []):
            if r not in parent:
                readers.setdefault(r, set()).add(find(j))
    groups: dict[int, list[int]] = {}
    for k in over_nodes:
        groups.setdefault(find(k), []).append(k)
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
                tensor = next(x for x in extract.node_reads(node) if x in over and find(over[x][0]) == root)
                role = "reads" if label in converted else "reads (float32)"
                peak = max(_max_abs(_float(v.get(o))) for v in ref for o in node.output if o)
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


def _check_chains(model: onnx.ModelProto, graph: _Graph, chains: list[Chain], ref: list[dict],
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
        return all(d["passed"] for d in _outputs_diff(ref, outs, graph.outputs, atol, rtol).values())

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


def _chain_findings(graph: _Graph, chains: list[Chain], ref: list[dict], findings: list[Finding]) -> None:
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


def _settle_could(findings: list[Finding], outputs_match: bool) -> None:
    """Activation-level "could" findings are cleared at once when the FP16 run matches the reference."""
    for f in findings:
        if f.kind in ("fp16-near-max", "fp16-underflow", "fp16-subnormal", "near-zero-division") and f.effect == "unchecked":
            if outputs_match:
                f.effect, f.consequence = "none", "none: the FP16 run's outputs match the reference"
            else:
                f.consequence = "not attributed: the FP16 run's outputs differ (see `surgeon bisect --test fp16`)"


def _rank(findings: list[Finding]) -> list[Finding]:
    """Will before could; then the kind's worst consequence, then magnitude (groups keep this order)."""
    best: dict[tuple[str, str, str], tuple] = {}
    for f in findings:
        key = (f.severity, f.kind, f.pattern)
        mine = (_EFFECT_RANK.get(f.effect, 2), -f.magnitude)
        best[key] = min(best.get(key, mine), mine)
    return sorted(findings, key=lambda f: (f.severity != WILL, best[(f.severity, f.kind, f.pattern)],
                                           (f.kind, f.pattern), _EFFECT_RANK.get(f.effect, 2), -f.magnitude))
