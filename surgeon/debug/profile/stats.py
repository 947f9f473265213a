"""Summaries of repeated timings, and whether a difference between two models is real.

Timings on a shared CPU drift and jump; a single mean says little. Every figure here is a
median (with p90 for the tail), and a comparison of two models comes with two measures
of how much of it could be noise:

- *run-to-run noise*: each model's runs are split into two interleaved halves (even and
  odd rounds) and the relative difference of the two halves' medians is taken, an A/A
  comparison that needs no second model; the larger of the two models' values is used;
- a *95% bootstrap interval* of median(B)/median(A), resampling whole rounds so that the
  pairing of A and B runs (they ran back to back in the same round) is kept.

A difference counts only when it is larger than the noise and its interval excludes 1.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0  # fixed: the same timings always give the same interval


@dataclass(frozen=True)
class Summary:
    """Median, p90, min and count of one series of timings (milliseconds)."""

    median_ms: float
    p90_ms: float
    min_ms: float
    runs: int

    def to_dict(self) -> dict:
        return asdict(self)


def summarize(values_ms: Sequence[float]) -> Summary:
    v = np.asarray(values_ms, dtype=np.float64)
    if v.size == 0:
        raise ValueError("no timings to summarize")
    return Summary(float(np.median(v)), float(np.percentile(v, 90)), float(v.min()), int(v.size))


def split_half_noise(values_ms: Sequence[float]) -> float | None:
    """Relative difference between the medians of the even- and odd-indexed runs (A/A)."""
    v = np.asarray(values_ms, dtype=np.float64)
    if v.size < 4:
        return None
    even, odd = float(np.median(v[0::2])), float(np.median(v[1::2]))
    base = float(np.median(v))
    return abs(even - odd) / base if base > 0 else None


@dataclass(frozen=True)
class Difference:
    """B against A: ratio of medians, its bootstrap interval, the noise, and the verdict."""

    ratio: float  # median(B) / median(A)
    ci_low: float
    ci_high: float
    noise: float | None  # relative run-to-run noise (A/A), the larger of the two models
    verdict: str  # "faster", "slower" or "within noise" (B relative to A)

    @property
    def change(self) -> float:
        return self.ratio - 1.0

    def to_dict(self) -> dict:
        return {**asdict(self), "change": self.change}


def compare(a_ms: Sequence[float], b_ms: Sequence[float]) -> Difference:
    """Compare paired runs of A and B (index i of both ran in the same round)."""
    a = np.asarray(a_ms, dtype=np.float64)
    b = np.asarray(b_ms, dtype=np.float64)
    if a.size == 0 or a.size != b.size:
        raise ValueError("paired timings of equal, non-zero length are needed")
    ratio = float(np.median(b) / np.median(a))
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    idx = rng.integers(0, a.size, size=(BOOTSTRAP_RESAMPLES, a.size))
    boot = np.median(b[idx], axis=1) / np.median(a[idx], axis=1)
    lo, hi = (float(x) for x in np.percentile(boot, [2.5, 97.5]))
    noises = [n for n in (split_half_noise(a), split_half_noise(b)) if n is not None]
    noise = max(noises) if noises else None
    outside_noise = noise is None or abs(ratio - 1.0) > noise
    if outside_noise and hi < 1.0:
        verdict = "faster"
    elif outside_noise and lo > 1.0:
        verdict = "slower"
    else:
        verdict = "within noise"
    return Difference(ratio, lo, hi, noise, verdict)
