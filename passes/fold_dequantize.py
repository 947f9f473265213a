"""``fold-dequantize``: int8/uint8 weights dequantized by hand become one ``DequantizeLinear``.

Weight-only quantized exports (MiniLM-int8-like encoders, tinyocr-like recognisers) store
a weight as int8 and write its dequantization with plain ops::

    w_f = Mul(Cast(w_q, to=FLOAT), scale)                 # symmetric
    w_f = Mul(Sub(Cast(w_q, to=FLOAT), zero_point), scale)  # asymmetric

That is ``DequantizeLinear(w_q, scale, zero_point)``, one node instead of two or three,
and the form engines understand: TensorRT builds weight-only quantized layers from it,
where its parser refuses a Cast from INT8 (``surgeon trt-check`` shows both). The int8
storage stays; nothing is folded into float weights (``fold-constants`` would, so this
pass runs before it).

Only where it is the same function, so ``check`` refuses with a note otherwise:

* ``w_q`` is a constant int8 or uint8 (never an overridable initializer); the Cast goes to
  float32 (float16 needs opset 19, where DequantizeLinear may output it);
* ``scale`` is a constant of that float type. Per-tensor (one value) from opset 10;
  per-axis from opset 13, and then its shape must really be per-axis: broadcast against
  ``w_q`` it has one axis equal to ``w_q``'s dim there and 1 everywhere else, and no more
  dims than ``w_q`` (a larger rank would broadcast the weight up);
* ``zero_point`` (the Sub's other operand) is a constant of integral values inside the
  range of ``w_q``'s type, per-tensor or along the same axis; it becomes a ``w_q``-typed
  constant. ``(x − zp)·s`` is exact in float32 for 8-bit values, so the result is the same
  bit for bit.
* the Cast and Sub outputs are read by the pattern alone (the engine checks that).
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from surgeon import graph_ops as K
from surgeon.pipeline.registry import register
from surgeon.rewrite import Match, RulePass, Node, Rule, RuleContext, fail, ok

PASS_NAME = "fold-dequantize"
_FLOAT, _FLOAT16 = 1, 10  # onnx TensorProto codes
_INT8S = (np.dtype(np.int8), np.dtype(np.uint8))


def per_axis(shape: tuple[int, ...], w_shape: tuple[int, ...]) -> int | None | str:
    """The axis a scale of ``shape`` varies along over a weight of ``w_shape``; None: per-tensor; str: neither."""
    if len(shape) > len(w_shape):
        return f"its shape {list(shape)} has more dims than the weight {list(w_shape)}"
    full = (1,) * (len(w_shape) - len(shape)) + tuple(shape)
    varying = [i for i, d in enumerate(full) if d != 1]
    if not varying:
        return None
    if len(varying) > 1 or full[varying[0]] != w_shape[varying[0]]:
        return f"its shape {list(shape)} is not per-tensor or per-axis over the weight {list(w_shape)}"
    return varying[0]


class _FoldDequantize(Rule):
    """Shared check and rewrite; the subclasses are the two patterns."""

    def match(self, node: gs.Node, scope: K.Scope) -> Match | None:
        """Only a constant int8/uint8 weight cast to a float type: anything else is no dequantization."""
        m = super().match(node, scope)
        if m is None or int(m["cast"].attrs.get("to", 0)) not in (_FLOAT, _FLOAT16):
            return None
        w = K.constant(m["w"])
        return m if w is not None and w.dtype in _INT8S else None

    def check(self, m: Match, ctx: RuleContext):
        w, cast = K.constant(m["w"]), m["cast"]
        what = f"Cast {cast.name} -> Mul {m['mul'].name} not folded into DequantizeLinear"
        to = int(cast.attrs.get("to", 0))
        if to == _FLOAT16 and ctx.opset < 19:
            return fail(f"{what}: it casts to type {to}; DequantizeLinear gives float32 (float16 from opset 19)")
        if ctx.opset < 10:
            return fail(f"{what}: opset {ctx.opset} has no DequantizeLinear (needs 10)")
        out = np.float32 if to == _FLOAT else np.float16
        scale = K.constant(m["scale"], K.SMALL)
        if scale is None or scale.dtype != out:
            return fail(f"{what}: the scale '{m['scale'].name}' is not a constant of the cast's type")
        axis = per_axis(scale.shape, w.shape)
        if isinstance(axis, str):
            return fail(f"{what}: the scale {axis}")
        if axis is not None and ctx.opset < 13:
            return fail(f"{what}: a per-axis scale needs opset 13 (the model has {ctx.opset})")
        zp = None
        if "zero" in m.roles:
            found = self._zero_point(m, w, axis)
            if isinstance(found, str):
                return fail(f"{what}: {found}")
            zp = found
        if axis is not None and scale.size != w.shape[axis]:
            return fail(f"{what}: the scale has {scale.size} values for {w.shape[axis]} channels")
        return ok(axis=axis, scale_value=scale.reshape(-1) if axis is not None else scale.reshape(()), zp_value=zp)

    @staticmethod
    def _zero_point(m: Match, w: np.ndarray, axis: int | None) -> np.ndarray | str:
        zp = K.constant(m["zero"], K.SMALL)
        if zp is None or zp.dtype.kind not in "fiu":
            return f"the zero point '{m['zero'].name}' is not a numeric constant"
        zp_axis = per_axis(zp.shape, w.shape)
        if isinstance(zp_axis, str) or (zp_axis is not None and zp_axis != axis):
            return f"the zero point of shape {list(zp.shape)} does not vary along the scale's axis"
        info = np.iinfo(w.dtype)
        if not np.all(np.isfinite(zp)) or np.any(zp != np.round(zp)) or zp.min() < info.min or zp.max() > info.max:
            return f"the zero point is not made of {w.dtype} values"
        flat = zp.astype(np.float64).reshape(-1)
        if axis is not None:
            flat = np.broadcast_to(flat, (w.shape[axis],)) if flat.size == 1 else flat
            return flat.astype(w.dtype)
        return flat.reshape(()).astype(w.dtype)

    def rewrite(self, m: Match, b) -> list[gs.Tensor]:
        inputs = [m["w"], b.named(f"{m['w'].name}_scale", m["scale_value"])]
        if m["zp_value"] is not None:
            inputs.append(b.named(f"{m['w'].name}_zero_point", m["zp_value"]))
        attrs = {} if m["axis"] is None else {"axis": int(m["axis"])}
        return [b.op("DequantizeLinear", inputs, attrs, name=m["mul"].name or None)]

    def note(self, node, reason: str) -> str:
        return reason


class CastMul(_FoldDequantize):
    name = "cast-mul"
    pattern = Node("Mul", Node("Cast", "w", bind="cast"), "scale", bind="mul")


class CastSubMul(_FoldDequantize):
    name = "cast-sub-mul"
    pattern = Node("Mul", Node("Sub", Node("Cast", "w", bind="cast"), "zero", bind="sub"), "scale", bind="mul")


RULES = [CastSubMul(), CastMul()]


@register
class FoldDequantize(RulePass):
    name = PASS_NAME
    summary = "Turn int8/uint8 weights dequantized as Cast -> (Sub) -> Mul into one DequantizeLinear (keeps int8 storage)."
    default_order = 25  # before fold-constants, which would fold the Cast -> Mul into float weights
    rules, sweeps = tuple(RULES), 1
