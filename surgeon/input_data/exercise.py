"""Samples that exercise the model: when the default samples' reference is NaN, constant or
blind to the inputs (:mod:`surgeon.evidence`), other ways to draw them are tried.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import onnx

from surgeon.errors import BackendError, InputDataError
from surgeon.input_data.specs import image_layout, input_specs, is_float_dtype, is_integer_dtype


@dataclass(frozen=True)
class Variant:
    """Another way to draw samples, tried when the default ones give a degenerate reference."""

    label: str
    ranges: dict[str, tuple[float, float]]
    images: bool = False  # image-like inputs as images at a realistic size


def variants(model: onnx.ModelProto, given: Mapping[str, tuple[float, float]] | None = None) -> list[Variant]:
    """The alternatives to the default samples, cheapest guess first.

    Why these: a reference that is NaN, constant or blind on random inputs usually
    means the inputs are out of the model's domain: a ``log``/``sqrt`` of negative
    features (floats in [0, 1]), saturated activations (small floats), flags and ids
    that must be 0/1, or a detector that sees nothing in noise (images). Inputs named
    in ``given`` (``--val-range``) keep the user's range.
    """
    given = dict(given or {})
    specs = [s for s in input_specs(model) if s.is_tensor and s.name not in given]
    floats = [s.name for s in specs if is_float_dtype(s.dtype)]
    ints = [s.name for s in specs if is_integer_dtype(s.dtype)]
    out = []
    if any(image_layout(s) for s in specs):
        out.append(Variant("image-like inputs as images at a realistic size", {}, images=True))
    if floats:
        out.append(Variant("float inputs in [0, 1]", {n: (0.0, 1.0) for n in floats}))
    if ints:
        out.append(Variant("integer inputs in [0, 1]", {n: (0.0, 1.0) for n in ints}))
    if floats:
        out.append(Variant("float inputs in [-0.1, 0.1]", {n: (-0.1, 0.1) for n in floats}))
        out.append(Variant("float inputs in [-10, 10]", {n: (-10.0, 10.0) for n in floats}))
    return out


@dataclass
class Exercised:
    """Samples and their reference outputs, and whether those are evidence (:mod:`surgeon.evidence`)."""

    samples: list[dict[str, Any]]
    references: list[dict[str, Any]]
    evidence: Any  # surgeon.evidence.Evidence
    variant: str | None = None  # the variant that made the reference informative (None: the default samples)
    tried: list[str] | None = None  # variants tried in vain
    first_summary: str = ""  # what was wrong with the default samples' reference

    def note(self) -> str | None:
        """What the report says about how the samples were chosen, or None for the default ones."""
        if self.variant is not None:
            return f"samples: {self.variant} (with the default samples {self.first_summary})"
        return None


def exercise(
    model: onnx.ModelProto,
    samples: list[dict[str, Any]],
    references: list[dict[str, Any]],
    *,
    make: Callable[[Variant], list[dict[str, Any]]],
    run: Callable[[dict[str, Any]], dict[str, Any]],
    judge: Callable[[list[dict[str, Any]], list[dict[str, Any]]], Any],
    given: Mapping[str, tuple[float, float]] | None = None,
) -> Exercised:
    """The default samples when their reference is evidence, else the first variant whose reference is.

    ``make(variant)`` draws samples (the same way the caller drew the default ones),
    ``run(feeds)`` runs the reference, ``judge(references, samples)`` returns an
    :class:`surgeon.evidence.Evidence`. Nothing is tried when the default samples are
    conclusive, so a model that is exercised costs nothing more. A variant the model
    cannot run on is skipped.
    """
    first = judge(references, samples)
    if first.conclusive:
        return Exercised(samples, references, first)
    tried = []
    for v in variants(model, given):
        tried.append(v.label)
        try:
            cand = make(v)
            if not cand:
                continue
            refs = [run(f) for f in cand]
        except (BackendError, InputDataError):
            continue
        found = judge(refs, cand)
        if found.conclusive:
            return Exercised(cand, refs, found, v.label, tried[:-1], first.summary())
    return Exercised(samples, references, first, None, tried, first.summary())
