"""Masks: inputs whose values switch positions on and off (``1 - x``, ``x * -1e9``, a Where
condition, a bias added before a Softmax), and values the graph tests for (``Equal(x, c)``).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto

from surgeon.input_ranges.constraint import Constraint
from surgeon.input_ranges.uses import INT_TYPES, UseIndex, attr_value, label, scalar_constant

# Ops a mask's values pass through unchanged (as any dtype: a mask is often cast to float first).
_MASK_PASS = {"Identity": (0,), "Cast": (0,), "CastLike": (0,), "Unsqueeze": (0,), "Squeeze": (0,), "Reshape": (0,),
              "Flatten": (0,), "Expand": (0,), "Tile": (0,), "Transpose": (0,), "Slice": (0,), "Gather": (0,),
              "Concat": None}
_BIG = 1e4  # |c| of a constant that turns a 0/1 mask into "off" (-1e4, -1e9, finfo.min = -3.4e38)
_BOOL = TensorProto.BOOL


def _float_constant(g: UseIndex, name: str) -> float | None:
    value = g.constants.get(name)
    if value is None or value.size == 0 or value.dtype.kind not in "fiu":
        return None
    flat = value.reshape(-1).astype(np.float64)
    return float(flat[0]) if (flat == flat[0]).all() else None


def _feeds_softmax(g: UseIndex, name: str, hops: int = 2) -> bool:
    for node, _ in g.consumers.get(name, []):
        if node.op_type in ("Softmax", "LogSoftmax"):
            return True
        if hops and node.op_type in ("Add", "Reshape", "Cast", "Where") and node.output:
            if _feeds_softmax(g, node.output[0], hops - 1):
                return True
    return False


def _mask_role(g: UseIndex, node: onnx.NodeProto, idx: int, was_integer: bool) -> str | None:
    """How ``node`` uses the value at input ``idx`` as a 0/1 mask, or None."""
    op = node.op_type
    other = node.input[1 - idx] if op in ("Add", "Sub", "Mul", "Equal", "Greater", "Less") and len(node.input) == 2 else ""
    c = _float_constant(g, other) if other else None
    if op == "Sub" and idx == 1 and c == 1:
        return f"used as 1 - x by {label(node)}"
    if op == "Mul" and c is not None and abs(c) >= _BIG:
        return f"multiplied by {c:.3g} in {label(node)}"
    if op == "Mul" and c is None and was_integer:
        return f"multiplies activations in {label(node)}"
    if op == "Where" and idx == 0:
        return f"the condition of {label(node)}"
    if op in ("Not", "And", "Or", "Xor"):
        return f"a boolean operand of {label(node)}"
    if op in ("Equal", "Greater", "Less") and c in (0, 1):
        return f"compared with {c:g} in {label(node)}"
    if op == "Add" and c is None and node.output and _feeds_softmax(g, node.output[0]):
        return f"added to attention scores in {label(node)}"
    return None


def mask_constraint(g: UseIndex, name: str, integer: bool) -> Constraint | None:
    """A mask constraint when the input's values reach a mask use (``1 - x``, ``x * -big``, a
    Where condition, a bool cast, a bias added before a Softmax), through shape ops and casts.

    ``integer``: the input is an integer or boolean tensor; only such an input (cast to
    float) multiplying activations is taken for a mask, a float input doing so is data."""
    seen: set[str] = set()
    stack = [(name, integer, 0)]
    while stack:
        current, integer, depth = stack.pop()
        if current in seen or depth > 12:
            continue
        seen.add(current)
        for node, idx in g.consumers.get(current, []):
            op = node.op_type
            if node.domain not in ("", "ai.onnx"):
                continue
            if op == "Cast" and attr_value(node, "to", 0) == _BOOL:
                return Constraint(0, 1, why=(f"cast to bool by {label(node)}",), mask=True)
            why = _mask_role(g, node, idx, integer)
            if why:
                return Constraint(0, 1, why=(why,), mask=True)
            passes = _MASK_PASS.get(op, ())
            if passes is None or idx in (passes or ()):
                still_int = integer and not (op == "Cast" and attr_value(node, "to", 0) not in INT_TYPES | {_BOOL})
                for out in node.output[:1]:
                    if out:
                        stack.append((out, still_int, depth + 1))
    return None


def tested_value(g: UseIndex, node: onnx.NodeProto, idx: int) -> Constraint | None:
    """``Equal(x, c)`` with a constant integer ``c``: the graph branches on x being c (a sample
    rate, a mode flag), so samples should take that value."""
    if len(node.input) != 2:
        return None
    c = scalar_constant(g, node.input[1 - idx])
    if c is None:
        return None
    return Constraint(why=(f"tested for {c} by {label(node)}",), choices=(c,))
