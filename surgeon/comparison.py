"""Elementwise comparison of two runs' outputs.

The rule, stated once and used everywhere (verification, compare, bisect):
an element matches when ``|test - ref| <= atol + rtol * |ref|``; NaN matches NaN and
+/-Inf matches the same Inf only when ``nan_equal`` is set (the default for
verification, since a pass must not change where NaNs appear). Integer and boolean
outputs must be equal. Tolerances default per dtype and are always reported.

bfloat16 and float8 outputs (ml_dtypes arrays) are compared by value, through float64;
int4/uint4 must be equal. Sequences are compared element by element (each element with
its own dtype's tolerance), maps key by key, and an absent optional (None) matches only
an absent one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

# (atol, rtol) per dtype when the user gives none. float32 allows for reassociation
# (folding Conv+BN changes rounding by a few ulps of the weights' magnitude).
DEFAULT_TOLERANCES: dict[str, tuple[float, float]] = {
    "float64": (1e-7, 1e-6),
    "float32": (1e-4, 1e-3),
    "float16": (1e-2, 1e-2),
    "bfloat16": (5e-2, 5e-2),
    # float8: one unit in the last place (rtol 2^-mantissa bits) above the smallest subnormal
    # (atol), since reassociating the float32 math before a cast to float8 may round one step.
    "float8_e4m3fn": (2.0 ** -9, 2.0 ** -3),
    "float8_e4m3fnuz": (2.0 ** -10, 2.0 ** -3),
    "float8_e5m2": (2.0 ** -16, 2.0 ** -2),
    "float8_e5m2fnuz": (2.0 ** -17, 2.0 ** -2),
}
EXACT = (0.0, 0.0)


@dataclass(frozen=True)
class Tolerance:
    atol: float
    rtol: float

    def __post_init__(self):
        if self.atol < 0 or self.rtol < 0:
            raise ValueError("tolerances must be non-negative")


def tolerance_for(dtype: Any, atol: float | None = None, rtol: float | None = None) -> Tolerance:
    name = str(np.dtype(dtype)) if not isinstance(dtype, str) else dtype
    d_atol, d_rtol = DEFAULT_TOLERANCES.get(name, EXACT)
    return Tolerance(d_atol if atol is None else atol, d_rtol if rtol is None else rtol)


@dataclass
class OutputDiff:
    """How one output of the test run differs from the reference run."""

    name: str
    passed: bool
    reason: str = ""
    ref_shape: list[int] | None = None
    test_shape: list[int] | None = None
    dtype: str = ""
    atol: float = 0.0
    rtol: float = 0.0
    max_abs: float = 0.0
    max_rel: float = 0.0
    mean_abs: float = 0.0
    median_abs: float = 0.0
    p99_abs: float = 0.0
    mean_rel: float = 0.0
    median_rel: float = 0.0
    p99_rel: float = 0.0
    elements: int = 0
    mismatches: int = 0
    nan_mismatches: int = 0
    inf_mismatches: int = 0
    ref_nonfinite: int = 0  # NaN/Inf in the reference where the test is finite (the reference is the odd one)
    test_nonfinite: int = 0  # NaN/Inf in the test where the reference is finite
    both_nan: int = 0  # NaN in both at one position, counted as a mismatch (nan_equal off)
    first_mismatches: list[list[int]] = field(default_factory=list)
    worst_index: list[int] | None = None
    worst_ref: float | None = None
    worst_test: float | None = None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _is_float(dtype: np.dtype) -> bool:
    return dtype.kind in "fc" or dtype.name in DEFAULT_TOLERANCES


def _finite_stats(values: np.ndarray, detail: bool = True) -> tuple[float, float, float, float]:
    """max, mean, median, p99 (``detail=False``: the max only; the sorts dominate on large outputs)."""
    if values.size == 0:
        return 0.0, 0.0, 0.0, 0.0
    v = values.astype(np.float64, copy=False)
    if not detail:
        return float(v.max()), 0.0, 0.0, 0.0
    return float(v.max()), float(v.mean()), float(np.median(v)), float(np.percentile(v, 99))


SIDES = ("the reference", "the test")  # how a reason names the two runs


def diff_arrays(name: str, ref: Any, test: Any, tol: Tolerance, *, nan_equal: bool = True, max_positions: int = 5,
                detail: bool = True, sides: tuple[str, str] = SIDES) -> OutputDiff:
    """One tensor output against the reference. ``sides`` names the two runs in the reason
    (``("the reference (fp32)", "the test (fp16)")``), so that a NaN is blamed on the run that has it."""
    ref = np.asarray(ref)
    test = np.asarray(test)
    d = OutputDiff(name, True, ref_shape=list(ref.shape), test_shape=list(test.shape), dtype=str(ref.dtype),
                   atol=tol.atol, rtol=tol.rtol, elements=int(ref.size))
    if ref.shape != test.shape:
        if ref.size == 0 and test.size == 0:
            # Two empty tensors hold the same (no) values. ONNX Runtime shapes the empty scan
            # output of a zero-trip Loop from the body's inferred shape, so a rewrite that only
            # sharpens inference changes it ([0] -> [0, 2, 4]); that is not a wrong output.
            d.reason = f"both empty (shapes {list(ref.shape)} and {list(test.shape)}): no values to compare"
            return d
        d.passed, d.reason = False, f"shape {list(test.shape)} differs from the reference {list(ref.shape)}"
        return d
    if ref.dtype != test.dtype and not (_is_float(ref.dtype) and _is_float(test.dtype)):
        d.passed, d.reason = False, f"dtype {test.dtype} differs from the reference {ref.dtype}"
        return d
    if ref.dtype.kind in "OUS":
        bad = ref != test
        d.mismatches = int(np.count_nonzero(bad))
        d.passed = d.mismatches == 0
        if not d.passed:
            d.reason = f"{d.mismatches} of {ref.size} elements differ"
            d.first_mismatches = [list(map(int, i)) for i in np.argwhere(bad)[:max_positions]]
        return d
    if not detail and ref.dtype.kind == "f" and test.dtype == ref.dtype and _all_close(d, ref, test, tol):
        return d
    r = ref.astype(np.float64)
    t = test.astype(np.float64)
    r_nan, t_nan = np.isnan(r), np.isnan(t)
    r_inf, t_inf = np.isinf(r), np.isinf(t)
    both_finite = ~(r_nan | t_nan | r_inf | t_inf)
    with np.errstate(invalid="ignore", over="ignore"):
        abs_err = np.abs(t - r)
        rel_err = abs_err / np.maximum(np.abs(r), np.finfo(np.float64).tiny)
    ok = np.zeros(r.shape, dtype=bool)
    ok[both_finite] = abs_err[both_finite] <= tol.atol + tol.rtol * np.abs(r[both_finite])
    same_nan = r_nan & t_nan
    same_inf = r_inf & t_inf & (np.sign(r) == np.sign(t))
    if nan_equal:
        ok |= same_nan | same_inf
    else:
        ok |= same_inf
    d.nan_mismatches = int(np.count_nonzero((r_nan ^ t_nan) | (same_nan & ~ok)))
    d.inf_mismatches = int(np.count_nonzero((r_inf | t_inf) & ~(r_nan | t_nan) & ~ok))
    r_odd, t_odd = ~np.isfinite(r), ~np.isfinite(t)
    d.ref_nonfinite = int(np.count_nonzero(r_odd & ~t_odd))
    d.test_nonfinite = int(np.count_nonzero(t_odd & ~r_odd))
    d.both_nan = int(np.count_nonzero(same_nan & ~ok))
    # Relative error is summarised where |ref| > atol: below that the rule is dominated by
    # atol, and dividing by values near zero reports meaningless 1e300s.
    rel_mask = both_finite & (np.abs(r) > tol.atol)
    fin_abs, fin_rel = abs_err[both_finite], rel_err[rel_mask]
    d.max_abs, d.mean_abs, d.median_abs, d.p99_abs = _finite_stats(fin_abs, detail)
    d.max_rel, d.mean_rel, d.median_rel, d.p99_rel = _finite_stats(fin_rel, detail)
    bad = ~ok
    d.mismatches = int(np.count_nonzero(bad))
    d.passed = d.mismatches == 0
    if r.size and both_finite.any():
        masked = np.where(both_finite, abs_err, -1.0)
        worst = np.unravel_index(int(np.argmax(masked)), r.shape)
        d.worst_index = [int(i) for i in worst]
        d.worst_ref, d.worst_test = float(r[worst]), float(t[worst])
    if not d.passed:
        d.first_mismatches = [list(map(int, i)) for i in np.argwhere(bad)[:max_positions]]
        d.reason = _mismatch_reason(d, r, t, bad, both_finite, tol, sides)
    return d



def _nonfinite_word(values: np.ndarray) -> str:
    nan, inf = bool(np.isnan(values).any()), bool(np.isinf(values).any())
    return "NaN or Inf" if nan and inf else ("NaN" if nan else "Inf")


def _mismatch_reason(d: OutputDiff, r: np.ndarray, t: np.ndarray, bad: np.ndarray, both_finite: np.ndarray,
                     tol: Tolerance, sides: tuple[str, str]) -> str:
    """Which side is wrong where: finite elements out of tolerance, then NaN/Inf by the run that has them."""
    ref_side, test_side = sides
    parts = []
    finite_bad = int(np.count_nonzero(bad & both_finite))
    n_finite = int(np.count_nonzero(both_finite))
    if finite_bad:
        parts.append(f"{finite_bad} of {n_finite} finite elements outside atol={tol.atol:g} rtol={tol.rtol:g}")
    if d.ref_nonfinite:
        where = ~np.isfinite(r) & np.isfinite(t)
        parts.append(f"{ref_side} is {_nonfinite_word(r[where])} at {d.ref_nonfinite} of {r.size} positions where "
                     f"{test_side} is finite")
    if d.test_nonfinite:
        where = ~np.isfinite(t) & np.isfinite(r)
        parts.append(f"{test_side} is {_nonfinite_word(t[where])} at {d.test_nonfinite} of {r.size} positions where "
                     f"{ref_side} is finite")
    if d.both_nan:
        parts.append(f"both are NaN at {d.both_nan} of {r.size} positions (NaN matches NaN only with --nan-equal)")
    opposite = int(np.count_nonzero(bad & np.isinf(r) & np.isinf(t)))
    if opposite:
        parts.append(f"{opposite} positions are Inf of opposite signs")
    if n_finite:
        parts.append(f"max abs error {d.max_abs:.3g}, max rel error {d.max_rel:.3g}")
    else:
        parts.append("no position is finite in both")
    return "; ".join(parts)


def _all_close(d: OutputDiff, ref: np.ndarray, test: np.ndarray, tol: Tolerance) -> bool:
    """The common case of verification, in the arrays' own precision: every element finite and within tolerance.

    Fills ``d``'s maxima and returns True; False means "look closer" (a NaN, an Inf or a
    real mismatch), and the exact float64 path decides.
    """
    if ref.dtype.itemsize < 4:
        ref, test = ref.astype(np.float32), test.astype(np.float32)
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.abs(test - ref)
        mag = np.abs(ref)
        if not bool(np.all(err <= tol.atol + tol.rtol * mag)):
            return False
        d.max_abs = float(err.max()) if err.size else 0.0
        rel = mag > tol.atol
        d.max_rel = float((err[rel] / mag[rel]).max()) if rel.any() else 0.0
    return True


def diff_values(name: str, ref: Any, test: Any, tol: Tolerance | None, *, nan_equal: bool = True, detail: bool = True,
                atol: float | None = None, rtol: float | None = None, sides: tuple[str, str] = SIDES) -> OutputDiff:
    """Compare tensors elementwise, sequences/maps structurally (ZipMap outputs), optionals by presence.

    ``tol`` applies to every tensor inside; None: each tensor's dtype default, with
    ``atol``/``rtol`` overriding where given.
    """
    if ref is None or test is None:
        if ref is None and test is None:
            return OutputDiff(name, True)  # both optionals absent
        which = "the reference" if ref is None else "the test run"
        return OutputDiff(name, False, reason=f"the optional is absent in {which} and present in the other")
    if isinstance(ref, Mapping) or isinstance(test, Mapping):
        if not (isinstance(ref, Mapping) and isinstance(test, Mapping)) or set(ref) != set(test):
            return OutputDiff(name, False, reason="map keys differ")
        worst = OutputDiff(name, True)
        for key in ref:
            sub = diff_values(f"{name}[{key!r}]", ref[key], test[key], tol, nan_equal=nan_equal, detail=detail,
                              atol=atol, rtol=rtol, sides=sides)
            worst = _merge(worst, sub, name)
        return worst
    if isinstance(ref, (list, tuple)) or isinstance(test, (list, tuple)):
        if not (isinstance(ref, (list, tuple)) and isinstance(test, (list, tuple))):
            return OutputDiff(name, False, reason="a sequence against a tensor")
        if len(ref) != len(test):
            return OutputDiff(name, False, reason=f"sequence length {len(test)} differs from the reference {len(ref)}")
        worst = OutputDiff(name, True, elements=0)
        for i, (a, b) in enumerate(zip(ref, test)):
            worst = _merge(worst, diff_values(f"{name}[{i}]", a, b, tol, nan_equal=nan_equal, detail=detail,
                                              atol=atol, rtol=rtol, sides=sides), name)
        return worst
    if isinstance(ref, np.ndarray) or isinstance(test, np.ndarray) or np.isscalar(ref):
        if tol is None:
            tol = tolerance_for(np.asarray(ref).dtype, atol, rtol)
        return diff_arrays(name, ref, test, tol, nan_equal=nan_equal, detail=detail, sides=sides)
    same = ref == test
    return OutputDiff(name, bool(same), reason="" if same else "values differ")


def _merge(acc: OutputDiff, sub: OutputDiff, name: str) -> OutputDiff:
    sub_reason = f"{sub.name}: {sub.reason}" if sub.reason and sub.name != name else sub.reason
    out = OutputDiff(name, acc.passed and sub.passed, reason=acc.reason or sub_reason,
                     dtype=sub.dtype or acc.dtype, atol=sub.atol, rtol=sub.rtol)
    out.max_abs = max(acc.max_abs, sub.max_abs)
    out.max_rel = max(acc.max_rel, sub.max_rel)
    out.elements = acc.elements + sub.elements
    out.mismatches = acc.mismatches + sub.mismatches
    out.nan_mismatches = acc.nan_mismatches + sub.nan_mismatches
    out.inf_mismatches = acc.inf_mismatches + sub.inf_mismatches
    out.ref_nonfinite = acc.ref_nonfinite + sub.ref_nonfinite
    out.test_nonfinite = acc.test_nonfinite + sub.test_nonfinite
    out.both_nan = acc.both_nan + sub.both_nan
    return out


def diff_outputs(
    ref: Mapping[str, Any],
    test: Mapping[str, Any],
    *,
    atol: float | Mapping[str, float] | None = None,
    rtol: float | Mapping[str, float] | None = None,
    nan_equal: bool = True,
    detail: bool = True,
) -> list[OutputDiff]:
    """Diff every reference output; per-output tolerances by name, else global, else per dtype.

    ``detail=False`` leaves out the mean, median and p99 (verification needs the verdict
    and the maxima; sorting a 15-million-element output costs seconds).
    """
    diffs = []
    for name, r in ref.items():
        if name not in test:
            diffs.append(OutputDiff(name, False, reason="missing from the test run"))
            continue
        a = atol.get(name) if isinstance(atol, Mapping) else atol
        rt = rtol.get(name) if isinstance(rtol, Mapping) else rtol
        tol = tolerance_for(r.dtype, a, rt) if isinstance(r, np.ndarray) else None  # None: per element of a sequence
        diffs.append(diff_values(name, r, test[name], tol, nan_equal=nan_equal, detail=detail, atol=a, rtol=rt))
    return diffs


def samples_match(
    refs: Sequence[Mapping[str, Any]],
    tests: Sequence[Mapping[str, Any]],
    *,
    atol: float | Mapping[str, float] | None = None,
    rtol: float | Mapping[str, float] | None = None,
    nan_equal: bool = True,
) -> bool:
    """Whether every output of every sample (``tests[i]`` against ``refs[i]``) is within tolerance:
    the verdict of an oracle that compares a candidate's runs with the reference's."""
    return all(d.passed for ref, test in zip(refs, tests)
               for d in diff_outputs(ref, test, atol=atol, rtol=rtol, nan_equal=nan_equal))
