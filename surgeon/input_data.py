"""Input data for running models: shapes, seeded random feeds, dynamic-dim sizes.

Verification and every debug tool feed models through here, so a given seed gives the
same data everywhere. Dynamic dimensions are resolved per *symbol*: dims that share a
``dim_param`` get the same size; each unnamed dim (``?``, ``-1``, empty) is its own
symbol.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np
import onnx
from onnx import helper

from surgeon.errors import InputDataError

Dim = int | str  # a static size, or a symbol key for a dynamic dim

DEFAULT_FLOAT_RANGE = (-1.0, 1.0)
DEFAULT_INT_RANGE = (1, 4)  # inclusive; small positive ints are valid indices, counts and trip counts

# Scales tried for dynamic dims, in order. Each attempt gives every dynamic symbol two
# different sizes, and different symbols different sizes, so a pass that bakes in or
# mixes up a dimension is caught. Scale 32 comes first: image models downsample by 32,
# and at tiny sizes every feature map is 1x1, where a baked-in H/32 would go unnoticed.
# 256 covers audio-length dims (STFT windows); 1 covers models that need tiny sizes.
_SIZE_LADDER = (32, 8, 256, 1)
_BATCH_SIZES = (2, 3)


@dataclass(frozen=True)
class InputSpec:
    name: str
    dtype: np.dtype | None  # None for non-tensor inputs (sequences, maps, optionals)
    shape: tuple[Dim, ...] | None  # None when the rank is unknown

    @property
    def is_tensor(self) -> bool:
        return self.dtype is not None


def input_specs(model: onnx.ModelProto) -> list[InputSpec]:
    """Inputs a caller must feed: graph inputs that are not also initializers."""
    inits = {t.name for t in model.graph.initializer}
    specs = []
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        specs.append(_spec_from_value_info(vi))
    return specs


def _spec_from_value_info(vi: onnx.ValueInfoProto) -> InputSpec:
    t = vi.type
    if t.WhichOneof("value") != "tensor_type":
        return InputSpec(vi.name, None, None)
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(t.tensor_type.elem_type))
    if not t.tensor_type.HasField("shape"):
        return InputSpec(vi.name, dtype, None)
    dims: list[Dim] = []
    for axis, d in enumerate(t.tensor_type.shape.dim):
        if d.HasField("dim_value") and d.dim_value >= 0:
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param") and d.dim_param not in ("", "?", "-1"):
            dims.append(d.dim_param)
        else:
            dims.append(f"{vi.name}:{axis}")  # unnamed: its own symbol
    return InputSpec(vi.name, dtype, tuple(dims))


_SHAPE_RE = re.compile(r"^(?P<name>.+):(?P<dims>\[[^\]]*\]|\d+(?:x\d+)*|)$")


def parse_shape_args(items: list[str] | None) -> dict[str, tuple[int, ...]]:
    """Parse ``NAME:1x3x224x224`` or ``NAME:[1,3,224,224]`` (scalar: ``NAME:[]``).

    Input names may themselves contain ':'; the shape is taken after the last one.
    Anything else is an error; nothing is guessed.
    """
    out: dict[str, tuple[int, ...]] = {}
    for item in items or []:
        m = _SHAPE_RE.match(item.strip())
        if not m or not m.group("name"):
            raise InputDataError(
                f"cannot parse input shape '{item}': expected NAME:1x3x224x224 or NAME:[1,3,224,224]"
            )
        text = m.group("dims")
        if text.startswith("["):
            inner = text[1:-1].strip()
            parts = [p.strip() for p in inner.split(",")] if inner else []
        else:
            parts = text.split("x") if text else []
        try:
            dims = tuple(int(p) for p in parts)
        except ValueError:
            raise InputDataError(f"cannot parse input shape '{item}': dimensions must be whole numbers") from None
        if any(d < 0 for d in dims):
            raise InputDataError(f"input shape '{item}' has a negative dimension")
        out[m.group("name")] = dims
    return out


def check_pins(specs: list[InputSpec], pins: Mapping[str, tuple[int, ...]]) -> None:
    """Pinned shapes must name real inputs, have the right rank and agree with static dims."""
    by_name = {s.name: s for s in specs}
    for name, dims in pins.items():
        if name not in by_name:
            raise InputDataError(f"--input-shapes names '{name}', which is not an input of the model; inputs: {', '.join(by_name)}")
        spec = by_name[name]
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
        for d in s.shape or ():
            if isinstance(d, str):
                seen.setdefault(d)
    return list(seen)


def pinned_sizes(specs: list[InputSpec], pins: Mapping[str, tuple[int, ...]]) -> dict[str, int]:
    """Symbol sizes implied by pinned shapes (a symbol pinned twice must agree)."""
    sizes: dict[str, int] = {}
    for s in specs:
        if s.name not in pins or s.shape is None:
            continue
        for d, v in zip(s.shape, pins[s.name]):
            if isinstance(d, str):
                if d in sizes and sizes[d] != v:
                    raise InputDataError(f"dimension '{d}' is pinned to both {sizes[d]} and {v}")
                sizes[d] = v
    return sizes


def concrete_shape(spec: InputSpec, sizes: Mapping[str, int], pins: Mapping[str, tuple[int, ...]]) -> tuple[int, ...]:
    if spec.name in pins:
        return tuple(pins[spec.name])
    if spec.shape is None:
        raise InputDataError(f"input '{spec.name}' has no shape in the model; give it with --input-shapes")
    return tuple(d if isinstance(d, int) else sizes[d] for d in spec.shape)


def random_array(
    dtype: np.dtype, shape: tuple[int, ...], rng: np.random.Generator, value_range: tuple[float, float] | None = None
) -> np.ndarray:
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    if np.issubdtype(dtype, np.integer):
        lo, hi = value_range if value_range is not None else DEFAULT_INT_RANGE
        info = np.iinfo(dtype)
        lo, hi = max(int(lo), info.min), min(int(hi), info.max)
        return rng.integers(lo, hi, size=shape, endpoint=True).astype(dtype)
    if np.issubdtype(dtype, np.floating) or dtype.kind == "V" or "bfloat16" in str(dtype):
        lo, hi = value_range if value_range is not None else DEFAULT_FLOAT_RANGE
        return rng.uniform(lo, hi, size=shape).astype(dtype)
    if dtype.kind in ("U", "S", "O"):
        return np.array(rng.choice(["a", "b", "c"], size=shape), dtype=object)
    raise InputDataError(f"cannot generate data of type {dtype}")


def make_feeds(
    specs: list[InputSpec],
    sizes: Mapping[str, int],
    pins: Mapping[str, tuple[int, ...]],
    rng: np.random.Generator,
    value_ranges: Mapping[str, tuple[float, float]] | None = None,
) -> dict[str, np.ndarray]:
    feeds = {}
    for spec in specs:
        if not spec.is_tensor:
            raise InputDataError(f"input '{spec.name}' is not a tensor; load its data from a file instead")
        shape = concrete_shape(spec, sizes, pins)
        feeds[spec.name] = random_array(spec.dtype, shape, rng, (value_ranges or {}).get(spec.name))
    return feeds


def _batch_symbols(specs: list[InputSpec]) -> set[str]:
    return {s.shape[0] for s in specs if s.shape and isinstance(s.shape[0], str)}


def size_attempts(specs: list[InputSpec], pins: Mapping[str, tuple[int, ...]]) -> list[list[dict[str, int]]]:
    """Candidate size assignments: each attempt is two assignments (sample A, sample B)."""
    fixed = pinned_sizes(specs, pins)
    free = [s for s in symbols(specs) if s not in fixed]
    batch = _batch_symbols(specs)
    attempts = []
    for scale in _SIZE_LADDER:
        pair = []
        for sample in (0, 1):
            sizes = dict(fixed)
            k = 0
            for sym in free:
                if sym in batch:
                    sizes[sym] = _BATCH_SIZES[sample]
                else:
                    sizes[sym] = scale * (2 + k + sample)
                    k += 1
            pair.append(sizes)
        attempts.append(pair)
        if not any(s not in batch for s in free):
            break  # only batch dims: larger scales would try the same sizes again
    return attempts


def verification_samples(
    model: onnx.ModelProto,
    pins: Mapping[str, tuple[int, ...]] | None,
    seed: int,
    runs: Callable[[dict[str, np.ndarray]], bool],
) -> tuple[list[dict[str, Any]], str | None]:
    """Seeded feeds at two sizes for every dynamic dim, the first sizes the model runs at.

    ``runs(feeds)`` tells whether the model accepts a feed. Returns the samples and a
    note when fewer than two sizes could be exercised.
    """
    pins = dict(pins or {})
    specs = input_specs(model)
    check_pins(specs, pins)
    rng = np.random.default_rng(seed)
    if not symbols(specs) or all(s in pinned_sizes(specs, pins) for s in symbols(specs)):
        feeds = make_feeds(specs, {}, pins, rng) if not symbols(specs) else make_feeds(specs, pinned_sizes(specs, pins), pins, rng)
        return [feeds], None
    tried = []
    for pair in size_attempts(specs, pins):
        feeds = [make_feeds(specs, sizes, pins, np.random.default_rng(seed + i)) for i, sizes in enumerate(pair)]
        ok = [runs(f) for f in feeds]
        if all(ok):
            return feeds, None
        tried.append(pair)
    # fall back to the first single assignment that runs
    for pair in tried:
        f = make_feeds(specs, pair[0], pins, np.random.default_rng(seed))
        if runs(f):
            return [f], "only one size of the dynamic dimensions could be run; give --input-shapes or --load-inputs"
    return [], "no generated input sizes run on the model; give --input-shapes or --load-inputs"


def describe_feeds(feeds: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}{list(np.shape(v))}" for k, v in feeds.items())


def parse_value_ranges(items: list[str] | None) -> dict[str, tuple[float, float]]:
    """``NAME:[lo,hi]`` → {NAME: (lo, hi)}; a bare ``[lo,hi]`` applies to every input (key '')."""
    out: dict[str, tuple[float, float]] = {}
    for item in items or []:
        name, sep, rng = item.rpartition(":") if not item.startswith("[") else ("", "", item)
        rng = rng.strip()
        try:
            if not (rng.startswith("[") and rng.endswith("]")):
                raise ValueError
            lo_s, hi_s = rng[1:-1].split(",")
            lo, hi = float(lo_s), float(hi_s)
        except ValueError:
            raise InputDataError(f"cannot parse value range '{item}': expected NAME:[LOW,HIGH]") from None
        if lo > hi:
            raise InputDataError(f"value range '{item}' has LOW above HIGH")
        out[name] = (lo, hi)
    return out


def make_samples(
    model: onnx.ModelProto,
    *,
    input_shapes: Mapping[str, tuple[int, ...]] | None = None,
    value_ranges: Mapping[str, tuple[float, float]] | None = None,
    iterations: int = 1,
    seed: int = 0,
    runs: Callable[[dict[str, np.ndarray]], bool] | None = None,
) -> list[dict[str, np.ndarray]]:
    """Seeded input samples for compare/bisect/isolate (the same seed gives the same data).

    Dynamic dims not pinned get the first generated sizes the model accepts (``runs``
    probes that; without it the smallest sizes are used). Sample *i* uses seed + i.
    """
    pins = dict(input_shapes or {})
    specs = input_specs(model)
    check_pins(specs, pins)
    ranges = dict(value_ranges or {})
    unknown = [n for n in ranges if n and n not in {s.name for s in specs}]
    if unknown:
        raise InputDataError(f"--val-range names '{unknown[0]}', which is not an input of the model")
    if "" in ranges:
        default = ranges.pop("")
        ranges = {s.name: ranges.get(s.name, default) for s in specs}
    sizes = pinned_sizes(specs, pins)
    if any(s not in sizes for s in symbols(specs)):
        candidates = [pair[0] for pair in size_attempts(specs, pins)]
        chosen = candidates[0]
        if runs is not None:
            for cand in candidates:
                if runs(make_feeds(specs, cand, pins, np.random.default_rng(seed), ranges)):
                    chosen = cand
                    break
        sizes = chosen
    return [make_feeds(specs, sizes, pins, np.random.default_rng(seed + i), ranges) for i in range(max(1, iterations))]
