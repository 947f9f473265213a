"""Where to look first: ``scan``'s range analysis as the prior, measured error growth as the order.

The search is only as cheap as its first guess is good. Two cheap measurements give it:

- the **prior**, from :func:`surgeon.debug.scan.scan_model` on the FP32 model: every tensor
  beyond float16's ±65504 (its producer and every node that reads it: an FP32 producer
  feeding an FP16 reader still overflows at the border) and every weight beyond it. These
  nodes must be in FP32 for the model to have a chance; the search tests them first.
- the **ranking** of every other float compute node, from one run of the full-FP16
  emulation with every tensor marked as an output against the FP32 values: how much
  relative error each node *adds* (its output's error minus its inputs'), with
  underflow findings and the reductions that are classically fragile (Softmax,
  LayerNorm / ReduceMean variance, Pow, Exp) first. Prefix bisection walks this order.

Neither decides anything: the oracle does. They only order the questions.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper

from surgeon import model as model_io
from surgeon.backends.fp16 import FP16_MAX, Classification, emulate

log = logging.getLogger(__name__)

HAZARD_OPS = frozenset({"Softmax", "LogSoftmax", "LayerNormalization", "ReduceMean", "ReduceSum", "ReduceSumSquare",
                        "ReduceL2", "ReduceLogSumExp", "Pow", "Exp", "GroupNormalization", "InstanceNormalization",
                        "Sqrt", "Reciprocal", "Div", "CumSum"})


@dataclass
class Analysis:
    prior: dict[str, str] = field(default_factory=dict)  # node -> why it is in the prior
    ranking: list[str] = field(default_factory=list)  # every candidate, most suspicious first
    why: dict[str, list[str]] = field(default_factory=dict)  # node -> facts for the report
    growth: dict[str, float] = field(default_factory=dict)  # node -> relative error it adds in full FP16
    max_abs: dict[str, float] = field(default_factory=dict)  # tensor -> FP32 max |value| over the samples
    findings: int = 0
    notes: list[str] = field(default_factory=list)
    ort_runs: int = 0  # ONNX Runtime runs the analysis took (scan's, and the two marked runs)

    def to_dict(self) -> dict:
        return {"prior": self.prior, "scan_findings": self.findings, "notes": self.notes,
                "ranking_head": self.ranking[:20]}


def _with_outputs(model: onnx.ModelProto, names: Sequence[str], types: Mapping[str, int]) -> onnx.ModelProto:
    out = model_io.copy(model)
    have = {o.name for o in out.graph.output}
    for name in names:
        if name not in have:
            out.graph.output.append(helper.make_tensor_value_info(name, types.get(name, TensorProto.FLOAT), None))
            have.add(name)
    return out


def _rel_err(ref: Any, test: Any) -> float:
    if not (isinstance(ref, np.ndarray) and isinstance(test, np.ndarray)) or ref.shape != test.shape or not ref.size:
        return 0.0
    r, t = ref.astype(np.float64), test.astype(np.float64)
    if np.any(np.isfinite(r) & ~np.isfinite(t)):
        return float("inf")
    fin = np.isfinite(r)
    if not fin.any():
        return 0.0
    scale = float(np.abs(r[fin]).max())
    return float(np.abs(t[fin] - r[fin]).max()) / max(scale, 1e-30)


def analyse(model: onnx.ModelProto, cls: Classification, samples: Sequence[Mapping[str, Any]], *,
            always_keep: frozenset[str] = frozenset()) -> Analysis:
    """The prior and the ranking over ``cls.candidates`` (labels are node names; see the module docstring)."""
    from surgeon import backends
    from surgeon.debug.scan import scan_model

    result = Analysis()
    g = model.graph
    nodes = list(g.node)
    labels = [c.label for c in cls.nodes]
    candidates = [c for c in cls.candidates if c not in always_keep]
    cand_set = set(candidates)
    readers: dict[str, list[str]] = {}
    producer: dict[str, str] = {}
    for label, n in zip(labels, nodes):
        for i in n.input:
            if i:
                readers.setdefault(i, []).append(label)
        for o in n.output:
            if o:
                producer[o] = label

    def add(node: str, why: str) -> None:
        if node in cand_set:
            result.prior.setdefault(node, why)
            result.why.setdefault(node, []).append(why)

    # 1. scan's range analysis (an FP16 analysis: bfloat16 has float32's range, so not for bf16).
    findings = []
    if cls.precision == "fp16":
        try:
            report = scan_model(model, samples, backends.create("onnxrt"))
            findings = list(report.findings)
            result.ort_runs += len(samples)
        except Exception as exc:  # the prior is a help: the measurements below still give one
            log.info("scan failed (%s)", exc)
            result.notes.append(f"scan's range analysis failed ({exc}); the prior comes from the measured runs only")
    result.findings = len(findings)
    for f in findings:
        kind = getattr(f, "kind", "")
        tensor = getattr(f, "tensor", "")
        peak = (getattr(f, "details", {}) or {}).get("max_abs")
        value = f"{peak:.4g}" if isinstance(peak, (int, float)) else "beyond 65504"
        weight = getattr(f, "op_type", "") in ("initializer", "Constant")
        if weight and kind in ("fp16-overflow", "fp16-clamped"):
            for r in readers.get(tensor, []):
                add(r, f"reads weight '{tensor}' with values up to {value} (clamped to 65504 in FP16)")
        elif not weight and kind in ("fp16-overflow", "fp16-saturated"):
            src = producer.get(tensor, getattr(f, "node", ""))
            add(src, f"overflow: output '{tensor}' reaches {value} (float16 max 65504)")
            for r in readers.get(tensor, []):
                add(r, f"overflow: reads '{tensor}', which reaches {value}")
        elif kind in ("fp16-underflow", "fp16-subnormal"):
            src = producer.get(tensor, "")
            if src in cand_set:
                msg = getattr(f, "message", "").split(": ", 1)[-1]
                result.why.setdefault(src, []).append(f"underflow: {msg}")

    # 2. Error growth along the full-FP16 emulation, one run with every float tensor marked.
    float_tensors = [o for n in nodes for o in n.output if o and cls.types.get(o) == TensorProto.FLOAT]
    growth: dict[str, float] = {}
    err: dict[str, float] = {}
    try:
        # One sample at a time: every tensor of two runs is held at once, never of all samples.
        from surgeon.backends.onnxrt import OnnxRuntimeBackend

        emulated, _ = emulate(model, keep_nodes=always_keep, precision=cls.precision, classification=cls)
        ort = OnnxRuntimeBackend(optimization="disable")
        ref_sess = ort.session(_with_outputs(model, float_tensors, cls.types))
        low_sess = ort.session(_with_outputs(emulated, float_tensors, cls.types))
        for s in samples:
            ref_vals, low_vals = ref_sess.run(s), low_sess.run(s)
            result.ort_runs += 2
            for t in float_tensors:
                err[t] = max(err.get(t, 0.0), _rel_err(ref_vals.get(t), low_vals.get(t)))
                v = ref_vals.get(t)
                if isinstance(v, np.ndarray) and v.size:
                    peak = float(np.max(np.abs(v[np.isfinite(v)]), initial=0.0))
                    result.max_abs[t] = max(result.max_abs.get(t, 0.0), peak)
            del ref_vals, low_vals
    except Exception as exc:
        log.info("marked runs failed (%s); ranking by graph order", exc)
        result.notes.append(f"error growth could not be measured ({exc}); the ranking follows graph order")
        err = {}
    if err:
        static = cls.static
        for label, n in zip(labels, nodes):
            if label not in cand_set:
                continue
            outs = [err.get(o, 0.0) for o in n.output if o in err]
            ins = [err.get(i, 0.0) for i in n.input if i in err and i not in static]
            out_e, in_e = max(outs, default=0.0), max(ins, default=0.0)
            growth[label] = float("inf") if (np.isinf(out_e) and not np.isinf(in_e)) else max(out_e - in_e, 0.0)
            # The measured runs give the same prior as scan where scan gave none (or changed):
            # a tensor beyond float16's range, or one that turns non-finite right here.
            over = [o for o in n.output if cls.precision == "fp16" and result.max_abs.get(o, 0.0) > FP16_MAX]
            starts = [o for o in n.output if np.isinf(err.get(o, 0.0))] if np.isinf(growth[label]) else []
            for o in dict.fromkeys(over + starts):
                what = (f"reaches {result.max_abs[o]:.4g} (float16 max 65504)" if o in over
                        else f"becomes non-finite in {cls.precision.upper()} while its inputs are finite")
                add(label, f"overflow: output '{o}' {what}")
                for r in readers.get(o, []):
                    add(r, f"overflow: reads '{o}', which {what.split(' (')[0]}")
    result.growth = growth

    # 3. Ranking: the prior, then the fragile ops and underflows, then everything by error growth.
    def key(label: str) -> float:  # ties keep graph order (sorted is stable)
        return -growth.get(label, 0.0)

    op_of = {c.label: c.op_type for c in cls.nodes}
    prior = [c for c in candidates if c in result.prior]
    fragile = [c for c in candidates if c not in result.prior and (op_of[c] in HAZARD_OPS or any(
        w.startswith("underflow") for w in result.why.get(c, [])))]
    rest = [c for c in candidates if c not in result.prior and c not in set(fragile)]
    result.ranking = prior + sorted(fragile, key=key) + sorted(rest, key=key)
    for c in candidates:
        if op_of[c] in HAZARD_OPS:
            result.why.setdefault(c, []).append(f"{op_of[c]} is fragile in reduced precision (reduction, exponent or division)")
    return result
