"""What a model takes: one :class:`InputSpec` per input, the symbols of its dynamic dims, and
checks of what a user pins (``--input-shapes``) or names (``--val-range``) against them.

Dynamic dimensions are resolved per *symbol*: dims that share a ``dim_param`` get the
same size; each unnamed dim (``?``, ``-1``, empty) is its own symbol.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import onnx
from onnx import helper

from surgeon.errors import InputDataError

Dim = int | str  # a static size, or a symbol key for a dynamic dim

SEQUENCE_LENGTH = 3  # elements in a generated sequence
DEFAULT_ELEMENT_SHAPE = (3,)  # a sequence element whose shape the model leaves open

# Element types numpy lacks; onnx maps them to ml_dtypes types of these names.
ML_FLOATS = frozenset({"bfloat16", "float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz",
                       "float8_e8m0fnu", "float4_e2m1fn", "float6_e2m3fn", "float6_e3m2fn"})
ML_INTS = frozenset({"int4", "uint4", "int2", "uint2"})

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
    return d.kind in "iu" or d.name in ML_INTS


def is_float_dtype(dtype: Any) -> bool:
    d = np.dtype(dtype)
    return d.kind == "f" or d.name in ML_FLOATS


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


def tensor_specs(spec: InputSpec) -> list[InputSpec]:
    """The tensor specs inside a spec (itself, a sequence's element, an optional's value)."""
    if spec.kind == "tensor":
        return [spec]
    return tensor_specs(spec.elem) if spec.elem is not None and spec.kind in ("sequence", "optional") else []


def _pin_target(spec: InputSpec) -> InputSpec | None:
    """The tensor spec ``--input-shapes NAME:...`` sets: the tensor, a sequence's element, an optional's value."""
    leaves = tensor_specs(spec)
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
        for leaf in tensor_specs(s):
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


def check_value_ranges(model: onnx.ModelProto, value_ranges: Mapping[str, tuple[float, float]] | None) -> None:
    """``--val-range`` must name inputs of the model (an InputDataError otherwise)."""
    checked_ranges(input_specs(model), value_ranges)


def checked_ranges(specs: list[InputSpec], value_ranges: Mapping[str, tuple[float, float]] | None) -> dict[str, tuple[float, float]]:
    """``--val-range`` entries checked against the inputs; a bare ``[lo,hi]`` (key '') applies to every input."""
    ranges = dict(value_ranges or {})
    unknown = [n for n in ranges if n and n not in {s.name for s in specs}]
    if unknown:
        raise InputDataError(f"{{0}} names '{unknown[0]}', which is not an input of the model", "value_ranges")
    if "" in ranges:
        default = ranges.pop("")
        ranges = {s.name: ranges.get(s.name, default) for s in specs}
    return ranges
