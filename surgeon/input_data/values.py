"""Seeded values of every kind ONNX Runtime takes, at given sizes.

Tensors of every element type (bfloat16, float8, int4/uint4 as ``ml_dtypes`` arrays,
strings as object arrays), sequences of tensors (Python lists), optionals (the value, or
``None`` when absent) and maps (dicts). The ONNX Runtime backend turns what numpy cannot
carry into OrtValues. Integer inputs with an inferred :class:`surgeon.input_ranges.Constraint`
get values the graph can run on; image-like inputs may get image-like content.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from surgeon import input_ranges
from surgeon.errors import InputDataError
from surgeon.input_data.specs import (
    ML_INTS, SEQUENCE_LENGTH, InputSpec, concrete_shape, image_layout, is_float_dtype, is_integer_dtype,
)

DEFAULT_FLOAT_RANGE = (-1.0, 1.0)
DEFAULT_INT_RANGE = (1, 4)  # inclusive; small positive ints are valid indices, counts and trip counts
_WORDS = ("alpha", "beta", "gamma", "delta", "a", "b", "c")


def random_array(
    dtype: np.dtype, shape: tuple[int, ...], rng: np.random.Generator, value_range: tuple[float, float] | None = None
) -> np.ndarray:
    """Seeded values of any ONNX element type; bfloat16/float8/int4 come as ml_dtypes arrays."""
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    if is_integer_dtype(dtype):
        info = _iinfo(dtype)
        lo, hi = value_range if value_range is not None else DEFAULT_INT_RANGE
        if value_range is None and dtype.name in ML_INTS:
            lo, hi = int(info.min), int(info.max)  # int4/int2: the whole (small) range
        lo, hi = max(int(np.ceil(lo)), int(info.min)), min(int(np.floor(hi)), int(info.max))
        if lo > hi:
            lo = hi = min(max(0, int(info.min)), int(info.max))
        return rng.integers(lo, hi, size=shape, endpoint=True).astype(dtype)
    if is_float_dtype(dtype):
        lo, hi = value_range if value_range is not None else DEFAULT_FLOAT_RANGE
        if dtype.name == "float8_e8m0fnu" and value_range is None:
            lo, hi = 0.25, 4.0  # powers of two only: no zero, no negatives
        return rng.uniform(lo, hi, size=shape).astype(dtype)
    if dtype.kind == "c":
        lo, hi = value_range if value_range is not None else DEFAULT_FLOAT_RANGE
        return (rng.uniform(lo, hi, size=shape) + 1j * rng.uniform(lo, hi, size=shape)).astype(dtype)
    if dtype.kind in ("U", "S", "O"):
        return np.array(rng.choice(_WORDS, size=shape), dtype=object).reshape(shape)
    raise InputDataError(f"cannot generate data of type {dtype}")


def _iinfo(dtype: np.dtype):
    if dtype.name in ML_INTS:
        import ml_dtypes

        return ml_dtypes.iinfo(dtype)
    return np.iinfo(dtype)


def constrained_array(dtype: np.dtype, shape: tuple[int, ...], rng: np.random.Generator,
                      c: input_ranges.Constraint) -> np.ndarray:
    """Integers that satisfy an inferred constraint (nonnegative ones where the range allows:
    real index data is nonnegative, and negative indices are the rarer path)."""
    dtype = np.dtype(dtype)
    if c.exact is not None:
        return np.array(c.exact, dtype=np.float64 if is_float_dtype(dtype) else np.int64).reshape(shape).astype(dtype)
    if c.mask:
        return mask_array(dtype, shape, rng)
    if c.choices and (is_integer_dtype(dtype) or is_float_dtype(dtype)):
        return rng.choice(np.array(c.choices, dtype=np.int64), size=shape).astype(dtype)
    if is_float_dtype(dtype):
        lo = -1.0 if c.lo is None else float(c.lo)
        hi = lo + 2.0 if c.hi is None else float(c.hi)
        return rng.uniform(lo, hi, size=shape).astype(dtype)
    if dtype == np.bool_:
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    info = _iinfo(dtype)
    lo = int(info.min) if c.lo is None else max(c.lo, int(info.min))
    hi = int(info.max) if c.hi is None else min(c.hi, int(info.max))
    if hi >= 0 and lo < 0:
        lo = 0
    if c.lo is None or c.hi is None:  # one-sided: stay small
        lo, hi = (lo, lo + 3) if c.hi is None else (hi - 3, hi)
    n = int(np.prod(shape)) if shape else 1
    if c.distinct:
        values = np.sort(rng.choice(np.arange(lo, hi + 1), size=n, replace=False))
        return values.reshape(shape).astype(dtype)
    return rng.integers(lo, hi, size=shape, endpoint=True).astype(dtype)


def mask_array(dtype: np.dtype, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """A 0/1 mask as tokenizers write one: per row (the last axis), ones then zeros.

    Every row keeps at least half its positions on (a row of zeros is all padding, which
    a model with ``-inf`` masks turns into NaN), and the sample holds both values (one
    row is one position short) so that the masked path is exercised.
    """
    if not shape:
        return np.array(1).astype(dtype)
    t = shape[-1]
    rows = int(np.prod(shape[:-1], dtype=np.int64))
    if t == 0 or rows == 0:
        return np.zeros(shape, dtype=dtype)
    lengths = rng.integers(max(1, (t + 1) // 2), t, size=rows, endpoint=True)
    if t >= 2 and (lengths == t).all():
        lengths[-1] = t - 1
    return (np.arange(t)[None, :] < lengths[:, None]).reshape(shape).astype(dtype)


def image_array(dtype: np.dtype, shape: tuple[int, ...], rng: np.random.Generator, channels_last: bool = False,
                value_range: tuple[float, float] | None = None) -> np.ndarray:
    """An image-like tensor: a light page with a few blocks of colour and lines of dark "words".

    Why not noise: detectors and segmenters answer uniform noise with a constant "nothing
    here" (PP-OCRv4's text detector gives at most 1e-6 everywhere), so a comparison on
    noise cannot see a wrong rewrite in them; on this page it finds text. Flat regions,
    edges and strokes make classifiers respond differently from noise too. Values span
    ``value_range`` (default: the float range of generated inputs).
    """
    lo, hi = value_range if value_range is not None else DEFAULT_FLOAT_RANGE
    n, c, h, w = (shape[0], shape[3], shape[1], shape[2]) if channels_last else shape
    out = np.empty((n, c, h, w), dtype=np.float64)
    yy, xx = np.mgrid[0:h, 0:w]
    for b in range(n):
        gy, gx = rng.uniform(-0.15, 0.15, size=2)
        img = np.repeat((0.85 + gy * yy / max(h, 1) + gx * xx / max(w, 1))[None], c, axis=0)
        for _ in range(int(rng.integers(1, 4))):  # blocks of colour: a photo, a logo
            y0, x0 = int(rng.integers(0, max(h, 1))), int(rng.integers(0, max(w, 1)))
            img[:, y0:y0 + int(rng.integers(h // 8 + 1, h // 3 + 2)), x0:x0 + int(rng.integers(w // 8 + 1, w // 3 + 2))] = \
                rng.uniform(0, 1, size=(c, 1, 1))
        y = int(rng.integers(2, 8))
        while y < h - 4:  # lines of text
            height = int(rng.integers(4, 10))
            x, end = int(rng.integers(2, max(3, w // 6))), int(rng.integers(w // 2, w)) if w > 2 else w
            while x < end:
                width = int(rng.integers(4, 28))
                img[:, y:y + height, x:min(x + width, end)] = rng.uniform(0.0, 0.2)
                x += width + int(rng.integers(3, 8))
            y += height + int(rng.integers(6, 24))
        img += rng.normal(0, 0.02, size=img.shape)
        out[b] = np.clip(img, 0, 1)
    out = lo + (hi - lo) * out
    if channels_last:
        out = out.transpose(0, 2, 3, 1)
    return out.astype(dtype)


def random_value(spec: InputSpec, sizes: Mapping[str, int], pins: Mapping[str, tuple[int, ...]], rng: np.random.Generator,
                 value_range: tuple[float, float] | None = None, constraint: input_ranges.Constraint | None = None,
                 pin_name: str | None = None, image: bool = False) -> Any:
    """A seeded value for any input kind: array, list (sequence), value or None (optional), dict (map).

    ``image``: an image-like tensor input gets :func:`image_array` content instead of noise.
    """
    pin_name = pin_name or spec.name
    if spec.kind == "tensor":
        if spec.dtype is None:
            raise InputDataError(f"input '{spec.name}' has an element type numpy cannot hold")
        shape = concrete_shape(spec, sizes, pins, pin_name)
        layout = image_layout(spec) if image else None
        if layout is not None and (constraint is None or constraint.problem or not constraint.mask):
            return image_array(spec.dtype, shape, rng, layout == "nhwc", value_range)
        if constraint is not None and not constraint.problem and value_range is None:
            return constrained_array(spec.dtype, shape, rng, constraint)
        return random_array(spec.dtype, shape, rng, value_range)
    if spec.kind == "sequence" and spec.elem is not None:
        return [random_value(spec.elem, sizes, pins, rng, value_range, pin_name=pin_name) for _ in range(SEQUENCE_LENGTH)]
    if spec.kind == "optional" and spec.elem is not None:
        return random_value(spec.elem, sizes, pins, rng, value_range, constraint, pin_name=pin_name)
    if spec.kind == "map" and spec.elem is not None:
        keys = list(_WORDS[:3]) if spec.key_dtype is not None and spec.key_dtype.kind in "OUS" else [0, 1, 2]
        values = [random_value(spec.elem, sizes, pins, rng, value_range, pin_name=pin_name) for _ in keys]
        return {k: (v.item() if isinstance(v, np.ndarray) and v.ndim == 0 else v) for k, v in zip(keys, values)}
    raise InputDataError(f"input '{spec.name}' is of a kind ({spec.kind}) no sample can be made for; give --load-inputs")


def make_feeds(
    specs: list[InputSpec],
    sizes: Mapping[str, int],
    pins: Mapping[str, tuple[int, ...]],
    rng: np.random.Generator,
    value_ranges: Mapping[str, tuple[float, float]] | None = None,
    constraints: Mapping[str, input_ranges.Constraint] | None = None,
    images: bool = False,
) -> dict[str, Any]:
    feeds = {}
    for spec in specs:
        feeds[spec.name] = random_value(spec, sizes, pins, rng, (value_ranges or {}).get(spec.name),
                                        (constraints or {}).get(spec.name), image=images)
    return feeds


def _describe_value(v: Any) -> str:
    if v is None:
        return "absent"
    if isinstance(v, (list, tuple)):
        inner = _describe_value(v[0]) if v else ""
        return f"seq({len(v)}{' x ' + inner if inner else ''})"
    if isinstance(v, Mapping):
        return f"map({len(v)})"
    return str(list(np.shape(v)))


def describe_feeds(feeds: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}{_describe_value(v)}" if isinstance(v, np.ndarray) else f"{k} {_describe_value(v)}"
                     for k, v in feeds.items())
