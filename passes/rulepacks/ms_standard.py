"""ONNX Runtime contrib ops (``com.microsoft``) that later became standard ONNX ops.

ONNX Runtime shipped these before the standard had them; exporters and ORT's own tools
still write them into models of older opsets. Each rule replaces one where the model's
opset has the standard op, and refuses with the opset it needs otherwise (``surgeon fix
--target-opset N`` raises the opset first, see ``passes/upgrade_opset.py``):

- ``GridSample`` → ``GridSample`` from opset 16 (same attributes; from opset 20 the modes
  are spelled ``linear``/``cubic`` instead of ``bilinear``/``bicubic``);
- ``Trilu`` → ``Trilu`` from 14; ``Range`` → ``Range`` from 11 (the contrib ``delta``
  defaults to 1, the standard one is required); ``ExpandDims`` with a constant axis →
  ``Unsqueeze``;
- ``QuantizeLinear``/``DequantizeLinear`` → the standard ones where the standard accepts
  the types: 8-bit per tensor from 10, per axis from 13, float16 scales from 19, 16-bit
  integers from 21 (4-bit and float8 types are left alone);
- ``SkipSimplifiedLayerNormalization`` → ``RMSNormalization`` of the sum from opset 23,
  its formula before;
- ``BiasSplitGelu`` → ``Add``, ``Split`` in halves, ``Gelu`` and ``Mul`` (ORT has no CPU
  kernel for it; the formula is its definition).

Only exact equivalents: anything an op does that the standard op cannot (statistics
outputs, element types the standard refuses at this opset) is refused with the reason.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from passes.rulepacks.ms_contrib import MS, _erf_gelu, _float_type, _present, skip_norm_outputs_problem
from surgeon.rewrite import Node, Rule, RuleContext

_INT8 = (np.dtype(np.int8), np.dtype(np.uint8))
_INT16 = (np.dtype(np.int16), np.dtype(np.uint16))


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _needs(op: str, since: int, ctx: RuleContext) -> str | None:
    if ctx.opset < since:
        return f"standard {op} exists from opset {since}; the model is at opset {ctx.opset} (try --target-opset {since})"
    return None


class _Standardized(Rule):
    """One com.microsoft op → the standard op of the same meaning."""

    op: str = ""

    def __init__(self):
        self.pattern = Node(self.op, domain=MS, bind="node", more=True)


class GridSample(_Standardized):
    name, op = "ms-grid-sample", "GridSample"
    _MODES = {"bilinear": "linear", "nearest": "nearest", "bicubic": "cubic"}  # contrib name -> opset 20 name
    _PADDING = ("zeros", "border", "reflection")

    def check(self, m, ctx):
        mode = _text(m.root.attrs.get("mode", "bilinear"))
        if mode not in self._MODES:
            return f"mode '{mode}' is not one of {', '.join(self._MODES)}"
        padding = _text(m.root.attrs.get("padding_mode", "zeros"))
        if padding not in self._PADDING:
            return f"padding_mode '{padding}' is not one of {', '.join(self._PADDING)}"
        return _needs("GridSample", 16, ctx) or _float_type(ctx, m.root.inputs[0])

    def rewrite(self, m, b):
        node = m.root
        mode = _text(node.attrs.get("mode", "bilinear"))
        attrs = {"align_corners": int(node.attrs.get("align_corners", 0)),
                 "mode": self._MODES[mode] if b.opset >= 20 else mode,
                 "padding_mode": _text(node.attrs.get("padding_mode", "zeros"))}
        return [b.op("GridSample", node.inputs[:2], attrs)]


class Trilu(_Standardized):
    name, op = "ms-trilu", "Trilu"

    def check(self, m, ctx):
        return _needs("Trilu", 14, ctx)

    def rewrite(self, m, b):
        k = _present(m.root, 1)
        return [b.op("Trilu", [m.root.inputs[0]] + ([k] if k is not None else []),
                     {"upper": int(m.root.attrs.get("upper", 1))})]


class Range(_Standardized):
    """Standard Range wants scalars and a delta; the contrib one takes [1]-shaped inputs and delta = 1."""

    name, op = "ms-range", "Range"

    def check(self, m, ctx):
        problem = _needs("Range", 11, ctx)
        if problem:
            return problem
        for t in [t for t in m.root.inputs[:3] if t.name]:
            shape = ctx.shape(t)
            if shape is None:
                return f"the rank of '{t.name}' is unknown (the standard Range takes scalars)"
            if len(shape) > 1 or (len(shape) == 1 and shape[0] != 1):
                return f"'{t.name}' has shape {list(shape)}, not a scalar or one element"
        if _present(m.root, 2) is None and ctx.dtype(m.root.inputs[0]) is None:
            return f"the element type of '{m.root.inputs[0].name}' is unknown (needed for delta = 1)"
        return None

    def rewrite(self, m, b):
        start, limit = m.root.inputs[:2]
        delta = _present(m.root, 2)
        if delta is None:
            delta = b.like(start, 1, "delta")
        args = []
        for t in (start, limit, delta):
            if b.ctx.rank(t) == 1:  # one element (check made sure): the standard op wants a scalar
                t = b.op("Reshape", [t, b.const(np.zeros((0,), np.int64), name="scalar_shape")])
            args.append(t)
        return [b.op("Range", args)]


class ExpandDims(_Standardized):
    name, op = "ms-expand-dims", "ExpandDims"

    def check(self, m, ctx):
        axis = ctx.constant(m.root.inputs[1]) if len(m.root.inputs) > 1 else None
        if axis is None or np.asarray(axis).size != 1:
            return "the axis is not a constant scalar"
        if int(np.asarray(axis).reshape(-1)[0]) < 0 and ctx.opset < 11:
            return f"a negative axis needs Unsqueeze of opset 11; the model is at opset {ctx.opset}"
        return None

    def rewrite(self, m, b):
        axis = int(np.asarray(b.ctx.constant(m.root.inputs[1])).reshape(-1)[0])
        x = m.root.inputs[0]
        if b.opset >= 13:
            return [b.op("Unsqueeze", [x, b.const(np.array([axis], np.int64), name="axes")])]
        return [b.op("Unsqueeze", [x], {"axes": [axis]})]


class _QDQ(_Standardized):
    """Shared type rules: what the standard Q/DQ of the model's opset accepts."""

    def _problem(self, ctx: RuleContext, integer: np.dtype | None, scale: gs.Tensor) -> str | None:
        if integer is None:
            return "the integer element type is unknown"
        scale_type = ctx.dtype(scale)
        if scale_type is None:
            return f"the element type of the scale '{scale.name}' is unknown"
        rank = ctx.rank(scale)
        if rank is None:
            return f"the rank of the scale '{scale.name}' is unknown"
        if rank > 1:
            return f"the scale '{scale.name}' has rank {rank} (blocked quantization has no contrib form)"
        if integer in _INT8 or (integer == np.dtype(np.int32) and self.op == "DequantizeLinear"):
            since, why = 10, f"{integer} per tensor"
        elif integer in _INT16:
            since, why = 21, f"{integer}"
        else:
            return f"element type {integer} is left to the contrib op"
        if rank == 1 and since < 13:
            since, why = 13, f"{integer} per axis"
        if scale_type == np.dtype(np.float16):
            if since < 19:
                since, why = 19, "float16 scales"
        elif scale_type != np.dtype(np.float32):
            return f"scale type {scale_type} is not float32/float16"
        if ctx.opset < since:
            return f"standard {self.op} takes {why} from opset {since}; the model is at opset {ctx.opset}"
        return None

    def rewrite(self, m, b):
        node = m.root
        zero = _present(node, 2)
        attrs = {"axis": int(node.attrs.get("axis", 1))} if b.opset >= 13 else {}
        return [b.op(self.op, node.inputs[:2] + ([zero] if zero is not None else []), attrs)]


class QuantizeLinear(_QDQ):
    name, op = "ms-quantize-linear", "QuantizeLinear"

    def check(self, m, ctx):
        zero = _present(m.root, 2)
        integer = ctx.dtype(zero) if zero is not None else np.dtype(np.uint8)  # both default to uint8
        x_type, scale_type = ctx.dtype(m.root.inputs[0]), ctx.dtype(m.root.inputs[1])
        if x_type is not None and scale_type is not None and x_type != scale_type:
            return f"input type {x_type} differs from the scale type {scale_type}"
        return self._problem(ctx, integer, m.root.inputs[1])


class DequantizeLinear(_QDQ):
    name, op = "ms-dequantize-linear", "DequantizeLinear"

    def check(self, m, ctx):
        return self._problem(ctx, ctx.dtype(m.root.inputs[0]), m.root.inputs[1])


def _reduce_mean_last(b, x: gs.Tensor) -> gs.Tensor:
    if b.opset >= 18:
        return b.op("ReduceMean", [x, b.const(np.array([-1], np.int64), name="axes")], {"keepdims": 1})
    return b.op("ReduceMean", [x], {"axes": [-1], "keepdims": 1})


def rms_norm(b, x: gs.Tensor, gamma: gs.Tensor, epsilon: float, dtype) -> gs.Tensor:
    """RMSNormalization over the last axis; x / sqrt(mean(x^2) + eps) * gamma before opset 23."""
    if b.opset >= 23:
        return b.op("RMSNormalization", [x, gamma], {"axis": -1, "epsilon": float(epsilon)})
    ms = _reduce_mean_last(b, b.op("Mul", [x, x]))
    rms = b.op("Sqrt", [b.op("Add", [ms, b.const(epsilon, dtype, "epsilon")])])
    return b.op("Mul", [b.op("Div", [x, rms]), gamma])


class SkipSimplifiedLayerNormalization(_Standardized):
    """RMSNorm(input + skip + bias) * gamma; output 3 is the sum itself."""

    name, op = "ms-skip-simplified-layer-norm", "SkipSimplifiedLayerNormalization"

    def outputs_problem(self, m):
        return skip_norm_outputs_problem(m)

    def check(self, m, ctx):
        return _float_type(ctx, m.root.inputs[0])

    def rewrite(self, m, b):
        node = m.root
        x, skip, gamma = node.inputs[:3]
        bias = _present(node, 3)
        s = b.op("Add", [x, skip])
        if bias is not None:
            s = b.op("Add", [s, bias])
        y = rms_norm(b, s, gamma, float(node.attrs.get("epsilon", 1e-12)), b.ctx.dtype(x))
        return [y if next(i for i, o in enumerate(node.outputs) if o is t) == 0 else s for t in m.outputs]


class BiasSplitGelu(_Standardized):
    """Y = left * Gelu(right), where (X + bias) is split in two halves along the last axis."""

    name, op = "ms-bias-split-gelu", "BiasSplitGelu"

    def check(self, m, ctx):
        problem = _float_type(ctx, m.root.inputs[0])
        if problem:
            return problem
        shape = ctx.shape(m.root.inputs[0])
        if ctx.opset < 18:  # Split before 18 needs the sizes
            if shape is None or not shape or not isinstance(shape[-1], int):
                return f"the last dim of '{m.root.inputs[0].name}' is not static (Split needs sizes before opset 18)"
        if shape and isinstance(shape[-1], int) and shape[-1] % 2:
            return f"the last dim {shape[-1]} is odd"
        return None

    def rewrite(self, m, b):
        x, bias = m.root.inputs[:2]
        s = b.op("Add", [x, bias])
        if b.opset >= 18:
            left, right = b.op("Split", [s], {"axis": -1, "num_outputs": 2}, outputs=2)
        else:
            half = b.ctx.shape(x)[-1] // 2
            if b.opset >= 13:
                left, right = b.op("Split", [s, b.const(np.array([half, half], np.int64), name="split")],
                                   {"axis": -1}, outputs=2)
            else:
                left, right = b.op("Split", [s], {"axis": -1, "split": [half, half]}, outputs=2)
        return [b.op("Mul", [left, _erf_gelu(b, right, b.ctx.dtype(x))])]


RULES = [GridSample(), Trilu(), Range(), ExpandDims(), QuantizeLinear(), DequantizeLinear(),
         SkipSimplifiedLayerNormalization(), BiasSplitGelu()]
