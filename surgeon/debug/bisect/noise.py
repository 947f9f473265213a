"""Marking noise: how far a backend's outputs move when tensors are marked as outputs.

Why bisect measures it before trusting a marked tensor: marking a tensor as a graph output
is not free on a real backend. TensorRT and the GPU providers cannot fuse across a marked
tensor; ONNX Runtime's CPU provider decides per node whether a float16 node runs in
float16 or is moved to float32 (``InsertCastTransformer``: an isolated float16 node between
nodes that need casts is run in float32, *unless it produces a graph output*), so marking
an intermediate of a float16 model rounds values that were not rounded before. On such a
model every marked tensor can match the reference while the unmarked outputs differ, and a
bisect over marked tensors finds nothing (issue 18: 461 marked tensors matching, then
"unlocalized").

What is measured, on the same samples (pure comparisons here; the runs are the oracle's):

- ``marking``, per side: the outputs of the unmarked model against the outputs of the
  model with tensors marked as the search would mark them (every tensor on a backend that
  does not fuse, else one block of tensors spread over the graph);
- ``repeat``, on the test side: two identical unmarked runs (a nondeterministic backend).

Each row is per graph output: the worst absolute change and the change in multiples of
the tolerance the verdicts use. Marking is trusted when no row moves more than
:data:`TRUST` of the tolerance (and nothing turns non-finite); otherwise bisect uses cuts
that compare only unmarked outputs (suffix models fed reference values across the cut).
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from surgeon import comparison as compare

TRUST = 0.25  # marking may move an output by at most this share of its tolerance
MARKING, REPEAT = "marking", "repeat"
TEST, REFERENCE = "test", "reference"


def tol_ratio(ref: Any, test: Any, atol: float, rtol: float) -> float:
    """The worst ``|test - ref| / (atol + rtol*|ref|)`` over finite elements: how many
    tolerances off a tensor is, comparable across tensors of any scale (> 1: outside)."""
    if not isinstance(ref, np.ndarray) or not isinstance(test, np.ndarray) or ref.shape != test.shape or not ref.size:
        return 0.0
    if ref.dtype.kind not in "fc" or test.dtype.kind not in "fc":
        return 0.0
    r, t = ref.astype(np.float64), test.astype(np.float64)
    both = np.isfinite(r) & np.isfinite(t)
    if not both.any():
        return 0.0
    bound = atol + rtol * np.abs(r[both])
    err = np.abs(t[both] - r[both])
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(bound > 0, err / np.where(bound > 0, bound, 1.0), np.where(err > 0, np.inf, 0.0))
    return float(ratio.max())


def shift_rows(side: str, kind: str, before: Sequence[Mapping[str, Any]], after: Sequence[Mapping[str, Any]],
               names: Iterable[str], *, atol: Any = None, rtol: Any = None) -> list[dict]:
    """One row per output in ``names``: how far ``after`` is from ``before``, worst over samples.

    NaN at the same place on both sides is no change (``nan_equal``): noise is movement.
    """
    names = list(names)
    rows: dict[str, dict] = {}
    for a, b in zip(before, after):
        want = {n: a[n] for n in names if n in a}
        got = {n: b[n] for n in names if n in b}
        for d in compare.diff_outputs(want, got, atol=atol, rtol=rtol, nan_equal=True, detail=False):
            row = rows.setdefault(d.name, {"side": side, "kind": kind, "tensor": d.name, "max_abs": 0.0,
                                           "tol_ratio": 0.0, "changed": 0, "elements": 0, "nonfinite": 0,
                                           "atol": d.atol, "rtol": d.rtol})
            changed = _changed(want[d.name], got.get(d.name), d)
            row["max_abs"] = max(row["max_abs"], float(d.max_abs) if np.isfinite(d.max_abs) else 0.0)
            row["tol_ratio"] = max(row["tol_ratio"], tol_ratio(want[d.name], got.get(d.name), d.atol, d.rtol))
            row["changed"] += changed
            row["elements"] += d.elements
            row["nonfinite"] += d.nan_mismatches + d.inf_mismatches
    return list(rows.values())


def _changed(a: Any, b: Any, d: compare.OutputDiff) -> int:
    """Elements that differ at all (exactly; NaN equal to NaN)."""
    if not isinstance(a, np.ndarray) or not isinstance(b, np.ndarray):
        return 0 if d.passed and not d.max_abs else 1  # a sequence or map output: the diff's verdict
    if a.shape != b.shape:
        return max(a.size, b.size, 1)
    if a.dtype.kind in "fc" and b.dtype.kind in "fc":
        same = (a == b) | (np.isnan(a) & np.isnan(b))
        return int(a.size - np.count_nonzero(same))
    return int(np.count_nonzero(a != b))


def noisy(rows: Sequence[Mapping[str, Any]]) -> bool:
    """Whether marking (or repeating) moves some output too far for marked tensors to be trusted."""
    return any(r["tol_ratio"] > TRUST or r["nonfinite"] for r in rows)


def worst(rows: Sequence[Mapping[str, Any]], side: str | None = None, kind: str | None = None) -> dict | None:
    chosen = [r for r in rows if (side is None or r["side"] == side) and (kind is None or r["kind"] == kind)]
    return max(chosen, key=lambda r: (r["nonfinite"], r["tol_ratio"], r["max_abs"]), default=None)


def figure(rows: Sequence[Mapping[str, Any]], tensor: str) -> float:
    """The largest change of ``tensor`` over every side and kind measured (0: unmoved)."""
    return max((r["max_abs"] for r in rows if r["tensor"] == tensor), default=0.0)


def sentence(rows: Sequence[Mapping[str, Any]], marks: str) -> str:
    """One line for the report: what moved, where, how much."""
    parts = []
    for side, kind, what in ((TEST, MARKING, "the test side's outputs"), (REFERENCE, MARKING, "the reference's"),
                             (TEST, REPEAT, "two identical test runs")):
        w = worst(rows, side, kind)
        if w is None:
            continue
        if kind == REPEAT:
            parts.append(f"{what} differ by {w['max_abs']:.3g}" if w["changed"] else f"{what} agree bit for bit")
        elif not w["changed"]:
            parts.append(f"{what} do not move" if side == TEST else f"{what} do not")
        else:
            parts.append(f"{what} move by up to {w['max_abs']:.3g} ({w['tol_ratio']:.3g}x the tolerance, "
                         f"'{w['tensor']}')" + (f", {w['nonfinite']} element(s) turning non-finite" if w["nonfinite"] else ""))
    return f"with {marks} marked, " + "; ".join(parts)


def within(failure: Sequence[Mapping[str, Any]], rows: Sequence[Mapping[str, Any]]) -> dict | None:
    """When every failing output's error is no larger than how far that output moves by
    marking or repeating alone: the figures (largest error, largest noise on the same
    output); else None. A divergence of that size is how the backend computes, not
    necessarily a wrong node."""
    if not failure or not rows:
        return None
    worst_err, worst_noise, where = 0.0, 0.0, ""
    for d in failure:
        if d.get("nan_mismatches") or d.get("inf_mismatches"):
            return None
        err = float(d.get("max_abs") or 0.0)
        noise = figure(rows, d["tensor"])
        if err > noise:
            return None
        if err >= worst_err:
            worst_err, worst_noise, where = err, noise, d["tensor"]
    return {"error": worst_err, "noise": worst_noise, "tensor": where}


def spread(names: Sequence[str], k: int) -> list[str]:
    """``k`` names evenly spread over ``names`` (all of them when there are no more than ``k``)."""
    if len(names) <= k:
        return list(names)
    step = len(names) / k
    return [names[int(i * step)] for i in range(k)]
