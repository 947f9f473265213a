"""Input data for running models: specs, seeded samples of every ONNX type, fit checks.

Verification and every debug tool feed models through here, so a given seed gives the
same data everywhere.

- Every input type ONNX Runtime takes gets samples: tensors of every element type
  (bfloat16, float8, int4/uint4 as ``ml_dtypes`` arrays, strings as object arrays),
  sequences of tensors (Python lists), optionals (the value, or ``None`` when absent) and
  maps (dicts). The ONNX Runtime backend turns what numpy cannot carry into OrtValues.
- Integer inputs get values the graph can run on: :mod:`surgeon.input_ranges` infers
  them from how the graph uses each input (indices, axes, shapes, counts), and says why
  when it cannot.
- Dynamic dimensions are resolved per *symbol*: dims that share a ``dim_param`` get the
  same size; each unnamed dim (``?``, ``-1``, empty) is its own symbol.
- :func:`check_feeds` checks loaded samples against the model (names, kinds, dtypes,
  ranks, static dims, integer ranges, and optionally one run), so that a file that does
  not fit is a usage error naming the input, not a silent unverified result.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import onnx
from onnx import helper

from surgeon import input_ranges
from surgeon.errors import BackendError, InputDataError

log = logging.getLogger(__name__)

Dim = int | str  # a static size, or a symbol key for a dynamic dim

DEFAULT_FLOAT_RANGE = (-1.0, 1.0)
DEFAULT_INT_RANGE = (1, 4)  # inclusive; small positive ints are valid indices, counts and trip counts
SEQUENCE_LENGTH = 3  # elements in a generated sequence
DEFAULT_ELEMENT_SHAPE = (3,)  # a sequence element whose shape the model leaves open

# Scales tried for dynamic dims, in order. Each attempt gives every dynamic symbol two
# different sizes, and different symbols different sizes, so a pass that bakes in or
# mixes up a dimension is caught. Scale 32 comes first: image models downsample by 32,
# and at tiny sizes every feature map is 1x1, where a baked-in H/32 would go unnoticed.
# 256 covers audio-length dims (STFT windows); 1 covers models that need tiny sizes; 128
# (a 256-sample window, silero's 8 kHz chunk) only where nothing before it ran.
_SIZE_LADDER = (32, 8, 256, 1, 128)
# Dims only integer inputs carry (token ids, attention masks, positions) start small: a
# sequence of 8 tokens exercises the same graph as 64, and a language model's cost, its
# vocabulary projection above all, grows with every token of every verification run.
_TOKEN_LADDER = (4, 32, 8, 1, 16)
_BATCH_SIZES = (2, 3)

# Element types numpy lacks; onnx maps them to ml_dtypes types of these names.
_ML_FLOATS = frozenset({"bfloat16", "float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz",
                        "float8_e8m0fnu", "float4_e2m1fn", "float6_e2m3fn", "float6_e3m2fn"})
_ML_INTS = frozenset({"int4", "uint4", "int2", "uint2"})
_WORDS = ("alpha", "beta", "gamma", "delta", "a", "b", "c")

KINDS = ("tensor", "sequence", "optional", "map")


@dataclass(frozen=True)
class InputSpec:
    """One model input. Tensors: ``dtype`` and ``shape``. Sequences and optionals: ``elem``
    (the element's spec); maps: ``key_dtype`` and ``elem`` (the value's spec)."""

    name: str
    dtype: np.dtype | None  # tensors only; None for sequences, optionals, maps
    shape: tuple[Dim, ...] | None  # None when the rank is unknown
    kind: str = "tensor"
    elem: "InputSpec | None" = None
    key_dtype: np.dtype | None = None

    @property
    def is_tensor(self) -> bool:
        return self.kind == "tensor" and self.dtype is not None

    def describe(self) -> str:
        if self.kind == "tensor":
            shape = "?" if self.shape is None else "[" + ",".join(str(d) if isinstance(d, int) else "?" for d in self.shape) + "]"
            return f"{dtype_name(self.dtype)}{shape}"
        if self.kind == "map":
            return f"map({dtype_name(self.key_dtype)}, {self.elem.describe() if self.elem else '?'})"
        return f"{self.kind}({self.elem.describe() if self.elem else '?'})"


def dtype_name(dtype: Any) -> str:
    if dtype is None:
        return "?"
    d = np.dtype(dtype)
    return "string" if d.kind in "OUS" else d.name


def is_integer_dtype(dtype: Any) -> bool:
    d = np.dtype(dtype)
    return d.kind in "iu" or d.name in _ML_INTS


def is_float_dtype(dtype: Any) -> bool:
    d = np.dtype(dtype)
    return d.kind == "f" or d.name in _ML_FLOATS


def input_specs(model: onnx.ModelProto) -> list[InputSpec]:
    """Inputs a caller must feed: graph inputs that are not also initializers."""
    inits = {t.name for t in model.graph.initializer}
    return [spec_from_type(vi.name, vi.type) for vi in model.graph.input if vi.name not in inits]


def spec_from_type(name: str, t: onnx.TypeProto) -> InputSpec:
    kind = t.WhichOneof("value")
    if kind == "tensor_type":
        elem = t.tensor_type.elem_type
        try:
            dtype = np.dtype(helper.tensor_dtype_to_np_dtype(elem)) if elem else None
        except (KeyError, ValueError, TypeError):
            dtype = None
        if not t.tensor_type.HasField("shape"):
            return InputSpec(name, dtype, None)
        dims: list[Dim] = []
        for axis, d in enumerate(t.tensor_type.shape.dim):
            if d.HasField("dim_value") and d.dim_value >= 0:
                dims.append(int(d.dim_value))
            elif d.HasField("dim_param") and d.dim_param not in ("", "?", "-1"):
                dims.append(d.dim_param)
            else:
                dims.append(f"{name}:{axis}")  # unnamed: its own symbol
        return InputSpec(name, dtype, tuple(dims))
    if kind == "sequence_type":
        return InputSpec(name, None, None, "sequence", spec_from_type(f"{name}[]", t.sequence_type.elem_type))
    if kind == "optional_type":
        return InputSpec(name, None, None, "optional", spec_from_type(name, t.optional_type.elem_type))
    if kind == "map_type":
        key = np.dtype(helper.tensor_dtype_to_np_dtype(t.map_type.key_type))
        return InputSpec(name, None, None, "map", spec_from_type(f"{name}{{}}", t.map_type.value_type), key)
    return InputSpec(name, None, None, kind or "unknown")


def _tensor_specs(spec: InputSpec) -> list[InputSpec]:
    """The tensor specs inside a spec (itself, a sequence's element, an optional's value)."""
    if spec.kind == "tensor":
        return [spec]
    return _tensor_specs(spec.elem) if spec.elem is not None and spec.kind in ("sequence", "optional") else []


def _pin_target(spec: InputSpec) -> InputSpec | None:
    """The tensor spec ``--input-shapes NAME:...`` sets: the tensor, a sequence's element, an optional's value."""
    leaves = _tensor_specs(spec)
    return leaves[0] if leaves else None


def check_pins(specs: list[InputSpec], pins: Mapping[str, tuple[int, ...]]) -> None:
    """Pinned shapes must name real inputs, have the right rank and agree with static dims.

    For a sequence the pinned shape is its elements' shape; for an optional, its value's.
    """
    by_name = {s.name: s for s in specs}
    for name, dims in pins.items():
        if name not in by_name:
            raise InputDataError(f"{{0}} names '{name}', which is not an input of the model; inputs: {', '.join(by_name)}",
                                 "input_shapes")
        spec = _pin_target(by_name[name])
        if spec is None:
            raise InputDataError(f"input '{name}' is a {by_name[name].kind}: it has no shape to give")
        if spec.shape is None:
            continue
        if len(dims) != len(spec.shape):
            raise InputDataError(f"input '{name}' has rank {len(spec.shape)}, but the shape given has {len(dims)} dims")
        for axis, (want, have) in enumerate(zip(spec.shape, dims)):
            if isinstance(want, int) and want != have:
                raise InputDataError(f"input '{name}' has static size {want} on axis {axis}, but {have} was given")


def symbols(specs: list[InputSpec]) -> list[str]:
    seen: dict[str, None] = {}
    for s in specs:
        for leaf in _tensor_specs(s):
            for d in leaf.shape or ():
                if isinstance(d, str):
                    seen.setdefault(d)
    return list(seen)


def pinned_sizes(specs: list[InputSpec], pins: Mapping[str, tuple[int, ...]]) -> dict[str, int]:
    """Symbol sizes implied by pinned shapes (a symbol pinned twice must agree)."""
    sizes: dict[str, int] = {}
    for s in specs:
        leaf = _pin_target(s)
        if s.name not in pins or leaf is None or leaf.shape is None:
            continue
        for d, v in zip(leaf.shape, pins[s.name]):
            if isinstance(d, str):
                if d in sizes and sizes[d] != v:
                    raise InputDataError(f"dimension '{d}' is pinned to both {sizes[d]} and {v}")
                sizes[d] = v
    return sizes


def concrete_shape(spec: InputSpec, sizes: Mapping[str, int], pins: Mapping[str, tuple[int, ...]],
                   pin_name: str | None = None) -> tuple[int, ...]:
    key = pin_name or spec.name
    if key in pins:
        return tuple(pins[key])
    if spec.shape is None:
        if spec.name.endswith("[]"):
            return DEFAULT_ELEMENT_SHAPE  # a sequence element the model leaves open
        raise InputDataError(f"input '{spec.name}' has no shape in the model; give it with {{0}}", "input_shapes")
    return tuple(d if isinstance(d, int) else sizes[d] for d in spec.shape)


# --- generation -------------------------------------------------------------------------------------------


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
        if value_range is None and dtype.name in _ML_INTS:
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
    if dtype.name in _ML_INTS:
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


def image_layout(spec: InputSpec) -> str | None:
    """``"nchw"`` or ``"nhwc"`` for a float input shaped like a batch of images (1 to 4 channels), else None."""
    if not spec.is_tensor or spec.shape is None or len(spec.shape) != 4 or not is_float_dtype(spec.dtype):
        return None
    n, a, b, c = spec.shape
    if isinstance(a, int) and 1 <= a <= 4 and not (isinstance(b, int) and b <= 4):
        return "nchw"
    if isinstance(c, int) and 1 <= c <= 4 and not (isinstance(a, int) and a <= 4):
        return "nhwc"
    return None


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


@dataclass(frozen=True)
class _Plan:
    """Everything needed to make samples at one assignment of sizes."""

    sizes: dict[str, int]
    constraints: dict[str, input_ranges.Constraint]

    def problems(self) -> list[str]:
        return [f"input '{n}': {c.problem}" for n, c in self.constraints.items() if c.problem]


def _plan(model: onnx.ModelProto, specs: list[InputSpec], sizes: Mapping[str, int], pins: Mapping[str, tuple[int, ...]],
          ranges: Mapping[str, tuple[float, float]], index: Any = None) -> _Plan:
    names = [n for n in input_ranges.constrained_input_names(model) if n not in ranges]
    constraints: dict[str, input_ranges.Constraint] = {}
    if names:
        shapes, lengths = {}, {}
        for s in specs:
            try:
                if s.kind == "tensor" and s.dtype is not None:
                    shapes[s.name] = concrete_shape(s, sizes, pins)
                elif s.kind == "sequence" or (s.kind == "optional" and s.elem is not None and s.elem.kind == "sequence"):
                    lengths[s.name] = SEQUENCE_LENGTH
            except InputDataError:
                continue  # reported when the feed is made
        constraints = input_ranges.infer_constraints(model, shapes, lengths, names, index)
    return _Plan(dict(sizes), constraints)


def _feeds(specs: list[InputSpec], plan: _Plan, pins: Mapping[str, tuple[int, ...]], seed: int,
           ranges: Mapping[str, tuple[float, float]], images: bool = False) -> dict[str, Any]:
    return make_feeds(specs, plan.sizes, pins, np.random.default_rng(seed), ranges, plan.constraints, images)


def _absent_variant(specs: list[InputSpec], feeds: Mapping[str, Any]) -> dict[str, Any] | None:
    """The same feed with every optional input absent (None), or None without optionals."""
    optional = [s.name for s in specs if s.kind == "optional"]
    if not optional:
        return None
    return {k: (None if k in optional else v) for k, v in feeds.items()}


def _override_variant(model: onnx.ModelProto, feeds: Mapping[str, Any], seed: int) -> dict[str, Any] | None:
    """``feeds`` plus other values for the overridable defaults (IR >= 4 initializers listed as inputs).

    A pass that read such a default as a constant computes something else once it is
    fed: this sample shows it. Floats get the default plus a random 0.25 to 1 (arrays, 0-d
    included), integers the default's entries reversed (a reshape target stays a valid
    one), booleans their negation. Only defaults held in the skeleton (not weight stubs)
    are fed; None when there are none.
    """
    if model.ir_version < 4:
        return None
    listed = {vi.name for vi in model.graph.input}
    rng = np.random.default_rng(seed + 7919)
    extra: dict[str, Any] = {}
    for t in model.graph.initializer:
        if t.name not in listed or t.data_location == onnx.TensorProto.EXTERNAL:
            continue
        try:
            value = onnx.numpy_helper.to_array(t)
        except (ValueError, TypeError):
            continue
        if value.dtype == np.bool_:
            extra[t.name] = np.logical_not(value)
        elif value.dtype.kind in "iu":
            extra[t.name] = value.reshape(-1)[::-1].reshape(value.shape).copy()
        elif value.dtype.kind == "f":
            # shifted up, so a default that must stay positive (an epsilon, a variance) still is
            extra[t.name] = np.asarray(value + rng.uniform(0.25, 1, value.shape), dtype=value.dtype)
    return {**feeds, **extra} if extra else None


def _batch_symbols(specs: list[InputSpec]) -> set[str]:
    out = set()
    for s in specs:
        for leaf in _tensor_specs(s):
            if leaf.shape and isinstance(leaf.shape[0], str):
                out.add(leaf.shape[0])
    return out


def _token_symbols(specs: list[InputSpec]) -> set[str]:
    """Dynamic dims that appear on integer or boolean tensor inputs only."""
    seen: dict[str, bool] = {}
    for s in specs:
        if not s.is_tensor or s.shape is None:
            continue
        integer = s.dtype.kind in "biu"
        for d in s.shape:
            if isinstance(d, str):
                seen[d] = seen.get(d, True) and integer
    return {d for d, only_integer in seen.items() if only_integer}


def size_attempts(specs: list[InputSpec], pins: Mapping[str, tuple[int, ...]],
                  fixed: Mapping[str, int] | None = None) -> list[list[dict[str, int]]]:
    """Candidate size assignments: each attempt is two assignments (sample A, sample B).

    ``fixed``: sizes the graph itself fixes (:func:`graph_sizes`); pinned shapes win over them.
    """
    fixed = {**dict(fixed or {}), **pinned_sizes(specs, pins)}
    free = [s for s in symbols(specs) if s not in fixed]
    batch = _batch_symbols(specs)
    tokens = _token_symbols(specs)
    attempts = []
    for scale, token_scale in zip(_SIZE_LADDER, _TOKEN_LADDER):
        pair = []
        for sample in (0, 1):
            sizes = dict(fixed)
            k = 0
            for sym in free:
                if sym in batch:
                    sizes[sym] = _BATCH_SIZES[sample]
                else:
                    sizes[sym] = (token_scale if sym in tokens else scale) * (2 + k + sample)
                    k += 1
            pair.append(sizes)
        attempts.append(pair)
        if not any(s not in batch for s in free):
            break  # only batch dims: larger scales would try the same sizes again
    return attempts


def _no_sample_note(problems: list[str], what: str) -> str:
    if problems:
        return f"{what}: no valid sample could be made ({'; '.join(dict.fromkeys(problems))}); give --load-inputs"
    return f"{what}; give --input-shapes or --load-inputs"


class runs_on:  # noqa: N801 - used as a function: runs = runs_on(session)
    """``runs(feeds)`` for the sample makers: whether ``session`` runs a feed.

    A BackendError is the answer "no" (the probe tries sizes until one runs); any other
    exception is a bug and propagates. ``runs.outputs(feeds)`` runs it for its outputs:
    :func:`make_samples` uses that to check the samples are evidence (:func:`exercise`).
    """

    def __init__(self, session: Any):
        self.session = session

    def __call__(self, feeds: dict[str, Any]) -> bool:
        try:
            self.session.run(feeds)
            return True
        except BackendError:
            return False

    def outputs(self, feeds: dict[str, Any]) -> dict[str, Any]:
        return self.session.run(feeds)


def graph_sizes(model: onnx.ModelProto, specs: list[InputSpec] | None = None) -> dict[str, tuple[int, str]]:
    """Dynamic dims whose size the graph fixes (an LSTM's W, a Conv's in-channels, a MatMul
    against a weight, a Reshape to a constant shape): symbol -> (size, why).

    Generated sizes for these dims would only make samples the model cannot run on.
    """
    specs = input_specs(model) if specs is None else specs
    shapes = {s.name: s.shape for s in specs if s.kind == "tensor" and s.shape is not None}
    if not any(isinstance(d, str) for dims in shapes.values() for d in dims):
        return {}
    return input_ranges.fixed_dims(model, shapes)


def fixed_sizes(model: onnx.ModelProto) -> dict[str, int]:
    """symbol -> size for the dims the graph fixes (:func:`graph_sizes` without the reasons),
    for :func:`size_attempts`' ``fixed``."""
    return {sym: size for sym, (size, _why) in graph_sizes(model).items()}


def verification_samples(
    model: onnx.ModelProto,
    pins: Mapping[str, tuple[int, ...]] | None,
    seed: int,
    runs: Callable[[dict[str, Any]], bool],
    value_ranges: Mapping[str, tuple[float, float]] | None = None,
    *,
    images: bool = False,
    realistic: bool = True,
) -> tuple[list[dict[str, Any]], str | None]:
    """Seeded feeds at two sizes for every dynamic dim, the first sizes the model runs at.

    ``runs(feeds)`` tells whether the model accepts a feed. Returns the samples and a
    note when fewer than two sizes could be exercised, or, with no samples, why none
    could be made (per input, when an integer input has no value the graph accepts).
    Dims the weights fix take that size. When the model has optional inputs and also
    runs with them absent, a sample with every optional absent is added; when it has
    image-like inputs with dynamic height and width, the second sample is at a realistic
    size (224, else 256 or 320, batch 1) with image-like content (see :func:`realistic_plan`).
    ``value_ranges`` (``--val-range``) overrides the values of the inputs it names;
    ``images`` fills image-like inputs with :func:`image_array` content in every sample;
    ``realistic=False`` leaves the realistic-size sample out (an engine profile's range).
    """
    pins = dict(pins or {})
    specs = input_specs(model)
    check_pins(specs, pins)
    try:
        ranges = _ranges(specs, value_ranges)
        return _verification_samples(model, specs, pins, seed, runs, ranges, images, realistic)
    except InputDataError as exc:  # a model we cannot feed is verified structurally, not refused
        return [], str(exc)


def check_value_ranges(model: onnx.ModelProto, value_ranges: Mapping[str, tuple[float, float]] | None) -> None:
    """``--val-range`` must name inputs of the model (an InputDataError otherwise)."""
    _ranges(input_specs(model), value_ranges)


def _ranges(specs: list[InputSpec], value_ranges: Mapping[str, tuple[float, float]] | None) -> dict[str, tuple[float, float]]:
    """``--val-range`` entries checked against the inputs; a bare ``[lo,hi]`` (key '') applies to every input."""
    ranges = dict(value_ranges or {})
    unknown = [n for n in ranges if n and n not in {s.name for s in specs}]
    if unknown:
        raise InputDataError(f"{{0}} names '{unknown[0]}', which is not an input of the model", "value_ranges")
    if "" in ranges:
        default = ranges.pop("")
        ranges = {s.name: ranges.get(s.name, default) for s in specs}
    return ranges


def _verification_samples(model, specs, pins, seed, runs, ranges, images=False, realistic=True):
    graph = {sym: size for sym, (size, _why) in graph_sizes(model, specs).items()}
    fixed = {**graph, **pinned_sizes(specs, pins)}
    index = input_ranges.index_model(model)

    def finish(samples: list[dict[str, Any]], note: str | None, sizes: Mapping[str, int]):
        """The optional-absent and realistic-size samples. With two sizes, the realistic sample
        takes the second one's place (its sizes differ from the first's all the same, at less
        cost than a third sample: 224x224 at batch 1 is fewer pixels than 96x128 at batch 3)."""
        pair = len(samples) == 2
        plan = realistic_plan(model, specs, sizes, pins, ranges, index, fixed, runs, seed + 1) if realistic else None
        if plan is not None and plan.sizes != dict(sizes):
            big = _feeds(specs, plan, pins, seed + 1, ranges, images=True)
            samples = [samples[0], big] if pair else samples + [big]
        absent = _absent_variant(specs, samples[0])
        if absent is not None and runs(absent):
            samples = samples + [absent]
        overridden = _override_variant(model, samples[-1], seed)
        if overridden is not None and runs(overridden):
            samples = samples + [overridden]
        return samples, note

    if all(s in fixed for s in symbols(specs)):
        plan = _plan(model, specs, fixed, pins, ranges, index)
        feeds = _feeds(specs, plan, pins, seed, ranges, images)
        if plan.problems() and not runs(feeds):
            return [], _no_sample_note(plan.problems(), "the model does not run on generated inputs")
        # Without known problems the verifier's own reference run reports why a feed fails.
        return finish([feeds], None, plan.sizes)
    problems: list[str] = []
    tried = []
    for pair in size_attempts(specs, pins, graph):
        plans = [_plan(model, specs, sizes, pins, ranges, index) for sizes in pair]
        feeds = [_feeds(specs, p, pins, seed + i, ranges, images) for i, p in enumerate(plans)]
        if all(runs(f) for f in feeds):
            return finish(feeds, None, plans[1].sizes)
        problems.extend(plans[0].problems())
        tried.append(plans[0])
    for plan in tried:  # fall back to the first single assignment that runs
        f = _feeds(specs, plan, pins, seed, ranges, images)
        if runs(f):
            return finish([f], "only one size of the dynamic dimensions could be run; give --input-shapes or --load-inputs",
                          plan.sizes)
    tied = _tied_state_dims(specs, fixed)
    if tied:  # recurrent states: [layers, batch, hidden] whose batch is a dim of its own
        attempts = [[{**sizes, **{d: sizes[b] for d, b in tied.items()}} for sizes in pair]
                    for pair in size_attempts(specs, pins, graph)]
        for pair in attempts:
            plans = [_plan(model, specs, sizes, pins, ranges, index) for sizes in pair]
            feeds = [_feeds(specs, p, pins, seed + i, ranges, images) for i, p in enumerate(plans)]
            if all(runs(f) for f in feeds):
                return finish(feeds, None, plans[1].sizes)
        for pair in attempts:
            plan = _plan(model, specs, pair[0], pins, ranges, index)
            f = _feeds(specs, plan, pins, seed, ranges, images)
            if runs(f):
                return finish([f], "only one size of the dynamic dimensions could be run; give --input-shapes or "
                              "--load-inputs", plan.sizes)
    return [], _no_sample_note(problems, "no generated input sizes run on the model")


def _tied_state_dims(specs: list[InputSpec], fixed: Mapping[str, int]) -> dict[str, str]:
    """Dims to try equal to the batch when nothing else runs: an input whose one dynamic dim is
    not its first (a recurrent state ``[layers, batch, hidden]``, silero's ``state[2, ?, 128]``)
    whose batch is a symbol of its own, tied to the one batch symbol of the other inputs."""
    batch = {s.shape[0] for s in specs if s.is_tensor and s.shape and isinstance(s.shape[0], str)} - set(fixed)
    if len(batch) != 1:
        return {}
    (b,) = batch
    tied = {}
    for s in specs:
        if not s.is_tensor or not s.shape:
            continue
        dynamic = [d for d in s.shape if isinstance(d, str) and d not in fixed]
        if len(dynamic) == 1 and s.shape[0] != dynamic[0] and dynamic[0] != b:
            tied[dynamic[0]] = b
    return tied


# Realistic image sizes, tried in order: 224 (ImageNet classifiers; a multiple of 32, every
# usual stride), then 256 (a multiple of 64) and 320 (of 64 and 160: detectors' smaller sizes).
REALISTIC_IMAGE_SIZES = (224, 256, 320)


def realistic_plan(model: onnx.ModelProto, specs: list[InputSpec], sizes: Mapping[str, int],
                   pins: Mapping[str, tuple[int, ...]], ranges: Mapping[str, tuple[float, float]], index: Any,
                   fixed: Mapping[str, int], runs: Callable[[dict[str, Any]], bool] | None, seed: int) -> "_Plan | None":
    """``sizes`` with image-like inputs at a realistic size and batch 1, or None.

    Why: small samples (64x96) keep verification cheap, but some models only do their
    real work at the sizes users run: a text detector's deepest features are 2x3 there,
    and every output of it is "nothing here". None when no input is image-like or when
    no realistic size runs (``runs`` probes; without it, 224 is taken). When height and
    width are static or pinned, the plan keeps ``sizes`` (they are the sizes users run).
    """
    spatial: set[str] = set()
    batch: set[str] = set()
    images = False
    for s in specs:
        layout = image_layout(s)
        if layout is None:
            continue
        images = True
        hw = s.shape[2:4] if layout == "nchw" else s.shape[1:3]
        spatial.update(d for d in hw if isinstance(d, str) and d not in fixed)
        if isinstance(s.shape[0], str) and s.shape[0] not in fixed:
            batch.add(s.shape[0])
    if not images:
        return None
    if not spatial:
        return _plan(model, specs, sizes, pins, ranges, index)
    for size in REALISTIC_IMAGE_SIZES:
        cand = dict(sizes)
        cand.update({d: size for d in spatial})
        cand.update({d: 1 for d in batch})
        plan = _plan(model, specs, cand, pins, ranges, index)
        if runs is None or runs(_feeds(specs, plan, pins, seed, ranges, images=True)):
            return plan
    return None


def input_problems(model: onnx.ModelProto, input_shapes: Mapping[str, tuple[int, ...]] | None = None) -> list[str]:
    """Why generated samples may not run: per integer input, the use no valid value could be made for.

    Computed at the first generated sizes; an empty list means every constrained input got a valid value.
    """
    pins = dict(input_shapes or {})
    specs = input_specs(model)
    try:
        graph = {sym: size for sym, (size, _why) in graph_sizes(model, specs).items()}
        sizes = {**graph, **pinned_sizes(specs, pins)}
        if any(s not in sizes for s in symbols(specs)):
            sizes = size_attempts(specs, pins, graph)[0][0]
        return _plan(model, specs, sizes, pins, {}).problems()
    except InputDataError as exc:
        return [str(exc)]


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


def make_samples(
    model: onnx.ModelProto,
    *,
    input_shapes: Mapping[str, tuple[int, ...]] | None = None,
    value_ranges: Mapping[str, tuple[float, float]] | None = None,
    iterations: int = 1,
    seed: int = 0,
    runs: Callable[[dict[str, Any]], bool] | None = None,
    realistic: bool = False,
) -> list[dict[str, Any]]:
    """Seeded input samples for compare/bisect/isolate (the same seed gives the same data).

    Dynamic dims not pinned get the first generated sizes the model accepts (``runs``
    probes that; without it the smallest sizes are used); dims the weights fix get that
    size. Sample *i* uses seed + i. Integer inputs without a ``value_ranges`` entry get
    values inferred from their uses (indices, masks, shapes). ``realistic``: image-like
    inputs at a realistic size with image-like content (:func:`realistic_plan`), where
    one runs.
    """
    pins = dict(input_shapes or {})
    specs = input_specs(model)
    check_pins(specs, pins)
    ranges = _ranges(specs, value_ranges)
    graph = {sym: size for sym, (size, _why) in graph_sizes(model, specs).items()}
    sizes = {**graph, **pinned_sizes(specs, pins)}
    index = input_ranges.index_model(model)
    if any(s not in sizes for s in symbols(specs)):
        candidates = [pair[0] for pair in size_attempts(specs, pins, graph)]
        plan = _plan(model, specs, candidates[0], pins, ranges, index)
        if runs is not None:
            for cand in candidates:
                p = _plan(model, specs, cand, pins, ranges, index)
                if runs(_feeds(specs, p, pins, seed, ranges)):
                    plan = p
                    break
    else:
        plan = _plan(model, specs, sizes, pins, ranges, index)
    images = False
    if realistic:
        better = realistic_plan(model, specs, plan.sizes, pins, ranges, index, sizes, runs, seed)
        if better is not None:
            plan, images = better, True
    samples = [_feeds(specs, plan, pins, seed + i, ranges, images=images) for i in range(max(1, iterations))]
    outputs = getattr(runs, "outputs", None)
    if outputs is None or realistic:
        return samples
    try:
        references = [outputs(f) for f in samples]
    except BackendError:
        return samples  # the caller's own reference run reports why
    from surgeon import evidence

    dependent = evidence.input_dependent_outputs(model)
    found = exercise(model, samples, references,
                     make=lambda v: make_samples(model, input_shapes=pins, value_ranges={**v.ranges, **ranges},
                                                 iterations=iterations, seed=seed, realistic=v.images,
                                                 runs=lambda f: runs(f)),  # a plain probe: no second exercise
                     run=outputs, judge=lambda refs, feeds: evidence.assess(refs, feeds, dependent=dependent),
                     given=ranges)
    if found.variant is not None:
        log.info("generated samples: %s", found.note())
    return found.samples


# --- samples that exercise the model ---------------------------------------------------------------------


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


# --- loaded samples: do they fit the model? ---------------------------------------------------------------


def _fit_tensor(spec: InputSpec, value: Any, label: str, what: str) -> np.ndarray:
    if value is None or isinstance(value, (list, tuple, Mapping)):
        given = "absent (null)" if value is None else ("a sequence" if isinstance(value, (list, tuple)) else "a map")
        raise InputDataError(f"{label} is {given}, but {what} expects a tensor {spec.describe()}")
    arr = value if isinstance(value, np.ndarray) else np.asarray(value)
    want = spec.dtype
    if want is not None and arr.dtype != want:
        if arr.dtype.kind == "V" and want.itemsize == arr.dtype.itemsize and want.name in (_ML_FLOATS | _ML_INTS):
            arr = arr.view(want)  # np.save writes ml_dtypes arrays as raw bytes: the model says what they are
        elif want.kind == "O" and arr.dtype.kind in "US":
            arr = arr.astype(object)
        else:
            hint = (f" (numpy has no {want.name}: write it with ml_dtypes, e.g. x.astype(ml_dtypes.{want.name}))"
                    if want.name in (_ML_FLOATS | _ML_INTS) else "")
            raise InputDataError(f"{label} is {dtype_name(arr.dtype)}, but {what} expects {dtype_name(want)}{hint}")
    if spec.shape is not None:
        if arr.ndim != len(spec.shape):
            raise InputDataError(f"{label} has rank {arr.ndim} (shape {list(arr.shape)}), but {what} expects rank "
                                 f"{len(spec.shape)} ({spec.describe()})")
        for axis, (dim, have) in enumerate(zip(spec.shape, arr.shape)):
            if isinstance(dim, int) and dim != have:
                raise InputDataError(f"{label} has size {have} on axis {axis} (shape {list(arr.shape)}), but {what} "
                                     f"expects {dim} ({spec.describe()})")
    return arr


def _fit(spec: InputSpec, value: Any, label: str, what: str) -> Any:
    if spec.kind == "tensor":
        return _fit_tensor(spec, value, label, what)
    if spec.kind == "sequence":
        if not isinstance(value, (list, tuple)):
            given = "absent (null)" if value is None else f"a tensor {list(np.shape(value))}"
            raise InputDataError(f"{label} is {given}, but {what} expects a {spec.describe()}")
        return [_fit(spec.elem, v, f"{label}[{j}]", what) for j, v in enumerate(value)] if spec.elem else list(value)
    if spec.kind == "optional":
        return None if value is None else (_fit(spec.elem, value, label, what) if spec.elem else value)
    if spec.kind == "map":
        if not isinstance(value, Mapping):
            raise InputDataError(f"{label} is not a map, but {what} expects a {spec.describe()}")
        return dict(value)
    return value


def _check_ranges(model: onnx.ModelProto, specs: list[InputSpec], sample: Mapping[str, Any], label: str, what: str) -> None:
    """Integer inputs whose values the graph cannot accept (token ids beyond the embedding table)."""
    names = [n for n in input_ranges.int_input_names(model) if isinstance(sample.get(n), np.ndarray) and sample[n].size]
    if not names:
        return
    shapes = {s.name: tuple(np.shape(sample[s.name])) for s in specs if isinstance(sample.get(s.name), np.ndarray)}
    lengths = {s.name: len(sample[s.name]) for s in specs if isinstance(sample.get(s.name), (list, tuple))}
    for name, c in input_ranges.infer_constraints(model, shapes, lengths, names).items():
        if c.problem or (c.valid_lo is None and c.valid_hi is None):
            continue
        values = np.asarray(sample[name]).astype(np.int64)
        lo, hi = int(values.min()), int(values.max())
        if (c.valid_lo is not None and lo < c.valid_lo) or (c.valid_hi is not None and hi > c.valid_hi):
            bounds = f"[{'-inf' if c.valid_lo is None else c.valid_lo}, {'inf' if c.valid_hi is None else c.valid_hi}]"
            raise InputDataError(f"input '{name}'{label} holds values in [{lo}, {hi}], but {what} needs values in "
                                 f"{bounds}: {'; '.join(c.why)}")


def check_feeds(
    model: onnx.ModelProto,
    samples: Sequence[Mapping[str, Any]],
    what: str = "the model",
    *,
    run: bool = False,
    session: Any = None,
) -> list[dict[str, Any]]:
    """Check loaded samples against ``model``; return them in the form the backends take.

    Every problem is an :class:`InputDataError` whose one line names the input, what the
    model expects and what was given: an input that is missing or not the model's, a
    tensor where a sequence is expected (or the reverse), a dtype, rank or static size
    that differs, integer values outside what the graph accepts (inferred from its uses:
    a Gather's data size, a rank for axes). With ``run`` (or a ``session`` of any
    backend), each sample is also run once, and a sample the model cannot run on is an
    error too. Raw-byte arrays (how ``np.save`` writes bfloat16/float8/int4) are read as
    the model's element type; an optional input left out of a sample is fed as absent.
    """
    specs = input_specs(model)
    by_name = {s.name: s for s in specs}
    inits = {t.name: t for t in model.graph.initializer}
    overridable = {vi.name for vi in model.graph.input if vi.name in inits}
    out: list[dict[str, Any]] = []
    several = len(samples) > 1
    for i, sample in enumerate(samples):
        where = f" of sample {i}" if several else ""
        extra = [n for n in sample if n not in by_name and n not in overridable]
        missing = [n for n in by_name if n not in sample and by_name[n].kind != "optional"]
        if extra:
            hint = f"; no data was given for '{missing[0]}'" if missing else ""
            raise InputDataError(f"the input data{where} names '{extra[0]}', which is not an input of {what}; "
                                 f"its inputs are: {', '.join(by_name) or '(none)'}{hint}")
        if missing:
            raise InputDataError(f"the input data{where} has no data for input '{missing[0]}' "
                                 f"({by_name[missing[0]].describe()}) of {what}; it has: {', '.join(sample) or '(nothing)'}")
        fitted: dict[str, Any] = {}
        for name, spec in by_name.items():
            fitted[name] = _fit(spec, sample.get(name), f"input '{name}'{where}", what)
        for name in sample:
            if name in overridable:
                t = inits[name]
                want = spec_from_type(name, onnx.helper.make_tensor_type_proto(t.data_type, list(t.dims)))
                fitted[name] = _fit(want, sample[name], f"input '{name}'{where}", what)
        _check_ranges(model, specs, fitted, where, what)
        out.append(fitted)
    if run or session is not None:
        _run_each(model, out, what, session)
    return out


def _run_each(model: onnx.ModelProto, samples: list[dict[str, Any]], what: str, session: Any) -> None:
    if session is None:
        from surgeon import backends

        try:
            session = backends.create("onnxrt").session(model)
        except BackendError:
            return  # the model cannot be loaded here at all: only the structural checks apply
    for i, feeds in enumerate(samples):
        try:
            session.run(feeds)
        except BackendError as exc:
            where = f"sample {i} of the input data" if len(samples) > 1 else "the input data"
            raise InputDataError(f"{what} cannot run on {where} ({describe_feeds(feeds)}): {exc}") from exc
