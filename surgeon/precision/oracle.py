"""The compare oracle of the island search: a set of FP32 nodes -> does the model meet the tolerance?

A verdict comes from the FP16 emulation (:mod:`surgeon.backends.fp16`: every op in float32,
every reduced-precision tensor rounded, as an engine stores it) run on every input sample
and judged against the FP32 model's outputs with :mod:`surgeon.comparison`'s rule. Why the
emulation and not ONNX Runtime on a float16 model: ORT's CPU provider computes float16
arithmetic in float32 islands it inserts itself and skips the rounding between them, so
it passes models an FP16 engine breaks (onnxconverter-common's auto-mixed-precision
searches that way). The final model is still run on ORT's float16 execution as a check.

Verdicts are cached per set; every real evaluation is one oracle call (one session, one
run per sample) and is counted, with the ONNX Runtime runs it took.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import onnx

from surgeon.backends.fp16 import Classification, emulate
from surgeon.comparison import DEFAULT_TOLERANCES, Tolerance, diff_values
from surgeon.errors import BackendError, UsageError

log = logging.getLogger(__name__)

_PRECISION_DTYPE = {"fp16": "float16", "bf16": "bfloat16"}


class BudgetExhausted(Exception):
    """The search asked for more oracle calls than it was allowed."""


def resolve_tolerances(outputs: Mapping[str, Any], atol: Any, rtol: Any, precision: str) -> dict[str, Tolerance]:
    """One (atol, rtol) per output: named for it, else the global value, else the defaults of
    the reduced precision (float16: 1e-2/1e-2, bfloat16: 5e-2/5e-2); integer outputs exact."""
    names = list(outputs)
    for flag, given in (("--atol", atol), ("--rtol", rtol)):
        if isinstance(given, Mapping):
            unknown = [n for n in given if n not in names]
            if unknown:
                raise UsageError(f"{flag} names '{unknown[0]}', which is not an output of the model; outputs: {', '.join(names)}")
    default = DEFAULT_TOLERANCES[_PRECISION_DTYPE[precision]]
    out = {}
    for name, value in outputs.items():
        if isinstance(value, np.ndarray) and value.dtype.kind in "biuOUS":
            out[name] = Tolerance(0.0, 0.0)
            continue
        pair = []
        for given, fallback in ((atol, default[0]), (rtol, default[1])):
            if isinstance(given, Mapping):
                v = given.get(name)
            else:
                v = given
            pair.append(fallback if v is None else float(v))
        out[name] = Tolerance(*pair)
    return out


@dataclass
class OutputError:
    """One output's error over all samples (the worst sample)."""

    name: str
    passed: bool
    max_abs: float = 0.0
    max_rel: float = 0.0
    usage: float = 0.0  # max |test-ref| / (atol + rtol*|ref|): above 1 fails
    mismatches: int = 0
    elements: int = 0
    nonfinite: int = 0  # NaN/Inf in this run where the FP32 reference is finite
    ref_nonfinite: int = 0  # NaN/Inf in the FP32 reference where this run is finite (the reference's fault)
    reason: str = ""

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    def short(self) -> str:
        if self.reason and not self.elements:
            return self.reason
        text = f"max abs {self.max_abs:.3g}" + (f", {self.usage:.2g}x tol" if np.isfinite(self.usage) else "")
        if self.mismatches:
            text += f", {self.mismatches}/{self.elements} off"
        if self.nonfinite:
            text += f", {self.nonfinite} NaN/Inf where the FP32 reference is finite"
        if self.ref_nonfinite:
            text += f"; the FP32 reference is NaN/Inf at {self.ref_nonfinite} position(s) where this run is finite"
        return text


@dataclass
class Judgement:
    passed: bool
    outputs: list[OutputError] = field(default_factory=list)
    error: str | None = None  # the run itself failed

    def worst(self) -> OutputError | None:
        if not self.outputs:
            return None
        return max(self.outputs, key=lambda o: (not o.passed, o.usage))

    def to_dict(self) -> dict:
        return {"passed": self.passed, "error": self.error, "outputs": [o.to_dict() for o in self.outputs]}


def _usage(ref: np.ndarray, test: np.ndarray, tol: Tolerance) -> tuple[float, int]:
    """max |test-ref| / allowed over the positions finite in both, and the NaN/Inf this run adds.

    A NaN/Inf only the reference has is not this run's error (see :func:`judge`)."""
    r, t = ref.astype(np.float64), test.astype(np.float64)
    fin = np.isfinite(r) & np.isfinite(t)
    bad = int(np.count_nonzero(np.isfinite(r) & ~np.isfinite(t)))
    if not fin.any():
        return (float("inf") if bad else 0.0), bad
    allowed = tol.atol + tol.rtol * np.abs(r[fin])
    err = np.abs(t[fin] - r[fin])
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(allowed > 0, err / np.where(allowed > 0, allowed, 1.0), np.where(err > 0, np.inf, 0.0))
    usage = float(ratio.max()) if ratio.size else 0.0
    return (float("inf") if bad else usage), bad


def judge(reference: Sequence[Mapping[str, Any]], runs: Sequence[Mapping[str, Any]], tolerances: Mapping[str, Tolerance]) -> Judgement:
    """Every output over every sample, with the comparison rule (NaN matches NaN at the same place).

    Where the FP32 reference is NaN/Inf and the reduced-precision run is finite, the
    reference is what is wrong: such positions are counted (``ref_nonfinite``) and
    reported, not failed. (A reference NaN on every sample is refused before any search:
    see :mod:`surgeon.evidence`.)"""
    outs = []
    for name, tol in tolerances.items():
        worst: OutputError | None = None
        for ref, run in zip(reference, runs):
            if name not in run:
                worst = OutputError(name, False, reason="missing from the run")
                break
            r, t = ref[name], run[name]
            if isinstance(t, np.ndarray) and isinstance(r, np.ndarray) and t.dtype != r.dtype and r.dtype.kind == "f" and t.dtype.kind == "f":
                t = t.astype(r.dtype)
            d = diff_values(name, r, t, tol, nan_equal=True, sides=("the FP32 reference", "this run"))
            own = d.mismatches - d.ref_nonfinite  # the reference's own NaN/Inf are not this run's errors
            passed = d.passed or (d.ref_nonfinite > 0 and own == 0)
            e = OutputError(name, passed, d.max_abs, d.max_rel, 0.0, own, d.elements, ref_nonfinite=d.ref_nonfinite,
                            reason="" if passed else d.reason)
            if isinstance(r, np.ndarray) and isinstance(t, np.ndarray) and r.dtype.kind == "f" and r.shape == t.shape:
                e.usage, e.nonfinite = _usage(r, t, tol)
            elif not d.passed:
                e.usage = float("inf")
            if worst is None or (not e.passed, e.usage) > (not worst.passed, worst.usage):
                worst = e
        outs.append(worst or OutputError(name, True))
    return Judgement(all(o.passed for o in outs), outs)


@dataclass
class Call:
    number: int
    phase: str
    kept: int
    passed: bool
    seconds: float


class CachedOracle:
    """Caching, counting and the call budget, around ``evaluate(kept) -> Judgement``.

    The search talks to this interface only, so it can be tested with a fake oracle (a
    predicate over node sets) where no model runs."""

    def __init__(self, *, max_calls: int | None = None, progress: Callable[[str], None] | None = None):
        self.max_calls = max_calls
        self.progress = progress
        self.cache: dict[frozenset[str], Judgement] = {}
        self.calls: list[Call] = []
        self.cache_hits = 0
        self.ort_runs = 0

    def evaluate(self, kept: frozenset[str]) -> Judgement:
        raise NotImplementedError

    def __call__(self, kept: Any, phase: str = "search", *, fresh: bool = False) -> Judgement:
        key = frozenset(kept)
        if not fresh and key in self.cache:
            self.cache_hits += 1
            return self.cache[key]
        if not fresh and self.max_calls is not None and len(self.calls) >= self.max_calls:
            raise BudgetExhausted(f"{self.max_calls} oracle calls")
        start = time.perf_counter()
        verdict = self.evaluate(key)
        self.calls.append(Call(len(self.calls) + 1, phase, len(key), verdict.passed, time.perf_counter() - start))
        if not fresh:
            self.cache[key] = verdict
        if self.progress:
            self.progress(f"oracle call {len(self.calls)} ({phase}): {len(key)} node(s) in FP32 -> "
                          f"{'meets' if verdict.passed else 'misses'} the tolerance")
        return verdict


class EmulationOracle(CachedOracle):
    """``oracle(kept)``: keep these float compute nodes (labels) in FP32, everything else in
    reduced precision; run the emulation on every sample; judge against the FP32 outputs."""

    def __init__(self, model: onnx.ModelProto, cls: Classification, samples: Sequence[Mapping[str, Any]],
                 reference: Sequence[Mapping[str, Any]], tolerances: Mapping[str, Tolerance], *,
                 always_keep: frozenset[str] = frozenset(), optimization: str = "all", max_calls: int | None = None,
                 progress: Callable[[str], None] | None = None):
        from surgeon.backends.onnxrt import OnnxRuntimeBackend

        super().__init__(max_calls=max_calls, progress=progress)
        self.model, self.cls, self.samples, self.reference = model, cls, list(samples), list(reference)
        self.tolerances = dict(tolerances)
        self.always_keep = frozenset(always_keep)
        self.backend = OnnxRuntimeBackend(optimization=optimization, name="fp16")

    def evaluate(self, kept: frozenset[str]) -> Judgement:
        """One real evaluation (not cached, not counted against the budget)."""
        emulated, _plan = emulate(self.model, keep_nodes=kept | self.always_keep, precision=self.cls.precision,
                                  classification=self.cls)
        try:
            session = self.backend.session(emulated)
            runs = []
            for s in self.samples:
                self.ort_runs += 1
                runs.append(session.run(s))
        except BackendError as exc:
            return Judgement(False, [], error=str(exc))
        return judge(self.reference, runs, self.tolerances)
