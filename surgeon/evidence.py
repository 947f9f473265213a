"""Whether a reference run is evidence: a comparison against a degenerate reference proves nothing.

Why: verification and every debug verdict compare a test run with a reference run on
some samples. When the reference is NaN everywhere, NaN matches NaN and any change
"passes"; when it is constant, or the same for samples whose inputs differ, a wrong
rewrite upstream leaves no trace in it either. (A T5 encoder whose ``(1 - mask) * -3.4e38``
turned every output NaN on masks drawn from 1..4 let a Tanh→Sigmoid rule through as
"verified: numeric".) This module says, per output, whether the reference outputs over a
set of samples can tell a right model from a wrong one, and why not:

- ``nonfinite``: every element of every sample is NaN or ±Inf;
- ``constant``: every finite element of every sample is the same value, within the
  comparison's own tolerance (a saturated sigmoid at 1e-8 is constant for atol 1e-4);
- ``blind``: samples whose inputs differ give the same output.

An output that no graph input reaches is exempt: it is a constant of the model, and a
comparison checks it value for value. Outputs that are not tensors (sequences, maps)
are not assessed.

:class:`Evidence` turns the per-output findings into one verdict. A NaN/Inf output is
never evidence, whatever the others say (a wrong change to it cannot be seen); constant
or blind outputs are weak, and the reference as a whole is no evidence when every
assessed output is weak. The same function serves the fix pipeline's verifier, compare,
doctor and fp16, so no command calls a comparison of a degenerate reference a match.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import onnx

from surgeon.comparison import tolerance_for
from surgeon.graph_ops import proto_subgraphs

NONFINITE, CONSTANT, BLIND = "nonfinite", "constant", "blind"


@dataclass(frozen=True)
class Weakness:
    """Why one output of the reference says nothing (or little) about a test run."""

    output: str
    kind: str  # NONFINITE, CONSTANT or BLIND
    what: str  # "NaN", "Inf", "NaN or Inf", "constant (0)", "the same for every sample"

    def phrase(self) -> str:
        """``is NaN on every sample``: what to say after the output's name."""
        return f"is {self.what}" if self.kind == BLIND else f"is {self.what} on every sample"

    def to_dict(self) -> dict:
        return {"output": self.output, "kind": self.kind, "what": self.what}


@dataclass(frozen=True)
class Evidence:
    """The verdict over all outputs: ``conclusive`` when the reference can show a difference."""

    assessed: tuple[str, ...]  # outputs that were looked at (input-dependent tensors)
    weak: tuple[Weakness, ...] = ()

    @property
    def nonfinite(self) -> tuple[Weakness, ...]:
        return tuple(w for w in self.weak if w.kind == NONFINITE)

    @property
    def conclusive(self) -> bool:
        """No output is NaN/Inf everywhere, and not every assessed output is weak."""
        if self.nonfinite:
            return False
        return not self.assessed or len(self.weak) < len(self.assessed)

    def weakness(self, output: str) -> Weakness | None:
        return next((w for w in self.weak if w.output == output), None)

    def summary(self) -> str:
        """One clause naming what is wrong with the reference, for "not verified: ..." lines.

        ``the reference is NaN on every sample`` when every output fails the same way,
        else the failing outputs by name.
        """
        if not self.weak:
            return "the reference is informative"
        blocking = self.nonfinite or self.weak
        if len(blocking) == len(self.assessed) and len({(w.kind, w.what) for w in blocking}) == 1:
            return f"the reference {blocking[0].phrase()}"
        parts = [f"output '{w.output}' {w.phrase()}" for w in blocking[:3]]
        more = f" (and {len(blocking) - 3} more)" if len(blocking) > 3 else ""
        return "the reference's " + "; ".join(parts) + more

    def notes(self) -> list[str]:
        """For a conclusive reference with some weak outputs: what a comparison cannot show there."""
        return [f"the reference's output '{w.output}' {w.phrase()}: a change that reaches only it is not shown"
                for w in self.weak]

    def to_dict(self) -> dict:
        return {"conclusive": self.conclusive, "assessed": list(self.assessed), "weak": [w.to_dict() for w in self.weak]}


def _tensor(value: Any) -> np.ndarray | None:
    return value if isinstance(value, np.ndarray) else None


def _numeric(arr: np.ndarray) -> np.ndarray | None:
    """float64 view of a numeric array (bfloat16/float8 too), or None for strings."""
    if arr.dtype.kind in "OUSV":
        return None
    try:
        return arr.astype(np.float64)
    except (TypeError, ValueError):
        return None


def _nonfinite_word(values: list[np.ndarray]) -> str:
    nan = any(np.isnan(v).any() for v in values)
    inf = any(np.isinf(v).any() for v in values)
    return "NaN or Inf" if nan and inf else ("NaN" if nan else "Inf")


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def _same(a: np.ndarray, b: np.ndarray, atol: float, rtol: float) -> bool:
    if a.shape != b.shape:
        return False
    with np.errstate(invalid="ignore"):
        close = np.abs(a - b) <= atol + rtol * np.abs(a)
    both_nan = np.isnan(a) & np.isnan(b)
    same_inf = np.isinf(a) & (a == b)
    return bool(np.all(close | both_nan | same_inf))


def _inputs_differ(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    for name in set(a) | set(b):
        x, y = a.get(name), b.get(name)
        if isinstance(x, np.ndarray) and isinstance(y, np.ndarray):
            if x.shape != y.shape or x.dtype != y.dtype or not np.array_equal(x, y):
                return True
        elif type(x) is not type(y) or (x is None) != (y is None):
            return True
        elif isinstance(x, (list, tuple)) and (len(x) != len(y) or any(
                not (isinstance(p, np.ndarray) and isinstance(q, np.ndarray) and np.array_equal(p, q)) for p, q in zip(x, y))):
            return True
    return False


def assess_output(name: str, values: Sequence[Any], samples: Sequence[Mapping[str, Any]] | None = None, *,
                  atol: float | None = None, rtol: float | None = None) -> Weakness | None:
    """The weakness of one output's reference values over the samples (one value per sample), or None."""
    arrays = [_tensor(v) for v in values]
    if not arrays or any(a is None for a in arrays):
        return None  # sequences, maps, absent optionals: not assessed
    numeric = [_numeric(a) for a in arrays]
    if any(v is None for v in numeric):
        flat = [a.reshape(-1) for a in arrays]  # strings: constant when every element is equal
        joined = np.concatenate(flat) if flat else np.array([])
        if joined.size >= 2 and np.all(joined == joined[0]):
            return Weakness(name, CONSTANT, f"constant ({joined[0]!r})")
        return None
    total = sum(v.size for v in numeric)
    if total == 0:
        return None  # empty outputs carry a shape only
    finite = [v[np.isfinite(v)] for v in numeric]
    n_finite = sum(f.size for f in finite)
    if n_finite == 0:
        return Weakness(name, NONFINITE, _nonfinite_word(numeric))
    tol = tolerance_for(arrays[0].dtype, atol, rtol)
    lo = min(float(f.min()) for f in finite if f.size)
    hi = max(float(f.max()) for f in finite if f.size)
    if total >= 2 and hi - lo <= tol.atol + tol.rtol * max(abs(lo), abs(hi)):
        extra = f" where finite, {_nonfinite_word(numeric)} elsewhere" if n_finite < total else ""
        return Weakness(name, CONSTANT, f"constant ({_fmt(lo if lo == hi else (lo + hi) / 2)}){extra}")
    if samples is not None and len(samples) == len(numeric):
        pairs = [(i, j) for i in range(len(samples)) for j in range(i + 1, len(samples))
                 if _inputs_differ(samples[i], samples[j])]
        if pairs and all(_same(numeric[i], numeric[j], tol.atol, tol.rtol) for i, j in pairs):
            return Weakness(name, BLIND, "the same for samples whose inputs differ")
    return None


def assess(references: Sequence[Mapping[str, Any]], samples: Sequence[Mapping[str, Any]] | None = None, *,
           dependent: Iterable[str] | None = None, atol: float | Mapping[str, float] | None = None,
           rtol: float | Mapping[str, float] | None = None) -> Evidence:
    """Whether ``references`` (one output dict per sample) can show a difference; see the module docstring.

    ``dependent``: the outputs some graph input reaches (:func:`input_dependent_outputs`);
    None assesses every output. Tolerances as :func:`surgeon.comparison.diff_outputs` takes them.
    """
    if not references:
        return Evidence(())
    names = [n for n in references[0] if dependent is None or n in set(dependent)]
    assessed, weak = [], []
    for name in names:
        values = [r.get(name) for r in references]
        if any(not isinstance(v, np.ndarray) for v in values):
            continue
        a = atol.get(name) if isinstance(atol, Mapping) else atol
        r = rtol.get(name) if isinstance(rtol, Mapping) else rtol
        assessed.append(name)
        w = assess_output(name, values, samples, atol=a, rtol=r)
        if w is not None:
            weak.append(w)
    return Evidence(tuple(assessed), tuple(weak))


def input_dependent_outputs(model: onnx.ModelProto) -> set[str]:
    """Graph outputs that some graph input reaches (through subgraph bodies too).

    A node inside an If/Loop/Scan body that reads an outer value carries that dependence
    to the node that owns the body; a node with no inputs at all (Constant, a random op)
    depends on nothing, except random ops, which count as dependent (they vary by run).
    """
    inits = {t.name for t in model.graph.initializer}
    live = {vi.name for vi in model.graph.input if vi.name not in inits}

    def body_reads(node: onnx.NodeProto) -> set[str]:
        names: set[str] = set()
        for g in proto_subgraphs(node):
            for inner in g.node:
                names.update(i for i in inner.input if i)
                names.update(body_reads(inner))
        return names

    random_ops = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"}
    reads = [(node, [i for i in node.input if i] + sorted(body_reads(node))) for node in model.graph.node]
    grew = True
    while grew:  # one sweep in topological order; more only for a model whose nodes are not sorted
        grew = False
        for node, names in reads:
            if (node.op_type in random_ops or any(i in live for i in names)) and not all(o in live for o in node.output if o):
                live.update(o for o in node.output if o)
                grew = True
    return {o.name for o in model.graph.output if o.name in live}
