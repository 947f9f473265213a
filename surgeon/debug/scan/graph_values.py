"""What every part of the scan reads: the main graph indexed once (:class:`ScanGraph`), small
helpers over one run's values, and how a test run's outputs differ from the reference's.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from surgeon import comparison
from surgeon import graph_ops as K
from surgeon.backends import fp16 as fp16_rules
from surgeon.debug.bisect import extract
from surgeon.debug.bisect.reduce import node_label

FP16_MAX = fp16_rules.FP16_MAX
FP16_MIN_SUBNORMAL = fp16_rules.FP16_MIN_SUBNORMAL
FP16_MIN_NORMAL = 2.0**-14


def as_float(a: Any) -> np.ndarray | None:
    if isinstance(a, np.ndarray) and a.dtype.kind == "f" and a.size:
        return a
    return None


def max_abs(a: np.ndarray | None) -> float:
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


def fmt_range(r: Mapping[str, Any]) -> str:
    if r.get("min") is None:
        return "no finite values"
    text = f"[{r['min']:.3g}, {r['max']:.3g}]"
    extra = [f"{r[k]} {k}" for k in ("zeros", "nan", "inf") if r.get(k)]
    return text + (f" ({', '.join(extra)})" if extra else "")


def is_float(a: Any) -> bool:
    return isinstance(a, np.ndarray) and a.dtype.kind == "f"


class ScanGraph:
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


def outputs_diff(ref: Sequence[Mapping[str, Any]], test: Sequence[Mapping[str, Any]], names: Sequence[str],
                 atol: Any, rtol: Any) -> dict[str, dict]:
    """Per graph output: passed, worst error, whether the test side has NaN/Inf the reference lacks."""
    out: dict[str, dict] = {}
    for r, t in zip(ref, test):
        want = {n: r[n] for n in names if n in r and is_float(r[n])}
        for d in comparison.diff_outputs(want, t, atol=atol, rtol=rtol, nan_equal=True):
            acc = out.setdefault(d.name, {"passed": True, "max_abs": 0.0, "nonfinite": 0, "reason": ""})
            acc["passed"] = acc["passed"] and d.passed
            acc["max_abs"] = max(acc["max_abs"], d.max_abs)
            acc["nonfinite"] += d.nan_mismatches + d.inf_mismatches
            if not d.passed and not acc["reason"]:
                acc["reason"] = d.reason
    return out


def effect_on(outputs: set[str], diff: Mapping[str, dict]) -> tuple[str, str]:
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
