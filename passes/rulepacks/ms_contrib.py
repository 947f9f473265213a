"""ONNX Runtime contrib ops (domain ``com.microsoft``) lowered to standard ONNX ops.

Only ops with an exact standard-op equivalent are lowered, at the model's own opset:
``Gelu``/``FastGelu`` become the standard ``Gelu`` from opset 20 (``approximate="tanh"``
for FastGelu, which *is* the tanh formula, not Erf) and their formulas before that;
``SkipLayerNormalization`` becomes ``LayerNormalization`` from opset 17 and the
ReduceMean formula before. Anything an op can do that standard ops cannot express
(ORT-internal statistics outputs, unknown activations) is refused with the reason, and
the op stays as it is.

Constants are made in the input's element type, so a rule refuses when that type is
unknown (the pass re-infers types after each sweep, so a producer lowered first helps).
"""

from __future__ import annotations

import math

import numpy as np
import onnx_graphsurgeon as gs

from surgeon.rewrite import Match, Node, Rule, RuleContext

MS = "com.microsoft"
FLOATS = (np.float16, np.float32, np.float64)


def _float_type(ctx: RuleContext, t: gs.Tensor) -> str | None:
    dtype = ctx.dtype(t)
    if dtype is None:
        return f"the element type of '{t.name}' is unknown"
    if dtype not in [np.dtype(f) for f in FLOATS]:
        return f"element type {dtype} of '{t.name}' is not float16/32/64"
    return None


def _present(node: gs.Node, i: int) -> gs.Tensor | None:
    if i < len(node.inputs) and node.inputs[i].name:
        return node.inputs[i]
    return None


def _erf_gelu(b, x: gs.Tensor, dtype) -> gs.Tensor:
    """0.5 * x * (1 + erf(x / sqrt(2)))."""
    if b.opset >= 20:
        return b.op("Gelu", [x])
    e = b.op("Erf", [b.op("Mul", [x, b.const(1 / math.sqrt(2), dtype, "inv_sqrt2")])])
    return b.op("Mul", [b.op("Mul", [x, b.const(0.5, dtype, "half")]), b.op("Add", [e, b.const(1.0, dtype, "one")])])


def _tanh_gelu(b, x: gs.Tensor, dtype) -> gs.Tensor:
    """0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3)))."""
    if b.opset >= 20:
        return b.op("Gelu", [x], {"approximate": "tanh"})
    cube = b.op("Mul", [b.op("Mul", [x, x]), x])
    inner = b.op("Add", [x, b.op("Mul", [cube, b.const(0.044715, dtype, "c")])])
    t = b.op("Tanh", [b.op("Mul", [inner, b.const(math.sqrt(2 / math.pi), dtype, "sqrt_2_over_pi")])])
    return b.op("Mul", [b.op("Mul", [x, b.const(0.5, dtype, "half")]), b.op("Add", [t, b.const(1.0, dtype, "one")])])


class _ContribRule(Rule):
    """One com.microsoft op → standard ops; its first input must be a known float type."""

    op: str = ""

    def __init__(self):
        self.pattern = Node(self.op, domain=MS, bind="node", more=True)

    def check(self, match: Match, ctx: RuleContext) -> str | None:
        return _float_type(ctx, match.root.inputs[0])


class Gelu(_ContribRule):
    name, op = "ms-gelu", "Gelu"

    def rewrite(self, m, b):
        x = m.root.inputs[0]
        return [_erf_gelu(b, x, b.ctx.dtype(x))]


class BiasGelu(_ContribRule):
    name, op = "ms-bias-gelu", "BiasGelu"

    def rewrite(self, m, b):
        x = m.root.inputs[0]
        return [_erf_gelu(b, b.op("Add", m.root.inputs[:2]), b.ctx.dtype(x))]


class FastGelu(_ContribRule):
    name, op = "ms-fast-gelu", "FastGelu"

    def rewrite(self, m, b):
        x, bias = m.root.inputs[0], _present(m.root, 1)
        return [_tanh_gelu(b, b.op("Add", [x, bias]) if bias is not None else x, b.ctx.dtype(x))]


class QuickGelu(_ContribRule):
    name, op = "ms-quick-gelu", "QuickGelu"

    def rewrite(self, m, b):
        x = m.root.inputs[0]
        alpha = float(m.root.attrs.get("alpha", 1.702))
        return [b.op("Mul", [x, b.op("Sigmoid", [b.op("Mul", [x, b.like(x, alpha, "alpha")])])])]


class BiasAdd(_ContribRule):
    name, op = "ms-bias-add", "BiasAdd"

    def rewrite(self, m, b):
        x, bias, skip = m.root.inputs[:3]
        return [b.op("Add", [b.op("Add", [x, bias]), skip])]


_ACTIVATIONS = {"Relu": 0, "Sigmoid": 0, "Tanh": 0, "LeakyRelu": 0, "HardSigmoid": 2, "Clip": 2}  # params needed
_CONV_ATTRS = ("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides")


class FusedConv(_ContribRule):
    """Conv (+ Z) followed by the activation named in the ``activation`` attribute."""

    name, op = "ms-fused-conv", "FusedConv"

    def check(self, m, ctx):
        act = m.root.attrs.get("activation", "")
        if isinstance(act, bytes):
            act = act.decode()
        params = list(m.root.attrs.get("activation_params", []))
        if act and act not in _ACTIVATIONS:
            return f"activation '{act}' has no standard-op lowering here"
        if act and len(params) < _ACTIVATIONS[act]:
            return f"activation '{act}' needs {_ACTIVATIONS[act]} activation_params, got {len(params)}"
        return super().check(m, ctx)

    def rewrite(self, m, b):
        node = m.root
        x, w, bias, z = node.inputs[0], node.inputs[1], _present(node, 2), _present(node, 3)
        attrs = {k: v for k, v in node.attrs.items() if k in _CONV_ATTRS}
        y = b.op("Conv", [x, w] + ([bias] if bias is not None else []), attrs)
        if z is not None:
            y = b.op("Add", [y, z])
        act = node.attrs.get("activation", "")
        act = act.decode() if isinstance(act, bytes) else act
        p = [float(v) for v in node.attrs.get("activation_params", [])]
        if not act:
            return [y]
        if act in ("Relu", "Sigmoid", "Tanh"):
            return [b.op(act, [y])]
        if act == "LeakyRelu":
            return [b.op("LeakyRelu", [y], {"alpha": p[0] if p else 0.01})]
        if act == "HardSigmoid":
            return [b.op("HardSigmoid", [y], {"alpha": p[0], "beta": p[1]})]
        if b.opset >= 11:  # Clip
            return [b.op("Clip", [y, b.like(x, p[0], "min"), b.like(x, p[1], "max")])]
        return [b.op("Clip", [y], {"min": p[0], "max": p[1]})]


def layer_norm(b, x: gs.Tensor, gamma: gs.Tensor, beta: gs.Tensor | None, epsilon: float, dtype) -> gs.Tensor:
    """LayerNormalization over the last axis; the ReduceMean formula before opset 17."""
    if b.opset >= 17:
        return b.op("LayerNormalization", [x, gamma] + ([beta] if beta is not None else []),
                    {"axis": -1, "epsilon": float(epsilon)})
    mean = b.op("ReduceMean", [x], {"axes": [-1], "keepdims": 1})
    d = b.op("Sub", [x, mean])
    var = b.op("ReduceMean", [b.op("Mul", [d, d])], {"axes": [-1], "keepdims": 1})
    std = b.op("Sqrt", [b.op("Add", [var, b.const(epsilon, dtype, "epsilon")])])
    y = b.op("Mul", [b.op("Div", [d, std]), gamma])
    return b.op("Add", [y, beta]) if beta is not None else y


def skip_norm_outputs_problem(m) -> str | None:
    """Skip(Simplified)LayerNormalization: outputs 1 and 2 (mean, inv_std_var) have no standard equivalent."""
    for t in m.outputs:
        idx = next(i for i, o in enumerate(m.root.outputs) if o is t)
        if idx in (1, 2):
            return f"uses output {idx} ({'mean' if idx == 1 else 'inv_std_var'}), which standard ops do not produce"
    return None


class SkipLayerNormalization(_ContribRule):
    """LayerNorm(input + skip + bias) * gamma + beta; output 3 is the sum itself."""

    name, op = "ms-skip-layer-norm", "SkipLayerNormalization"

    def outputs_problem(self, m):
        return skip_norm_outputs_problem(m)

    def rewrite(self, m, b):
        node = m.root
        x, skip, gamma = node.inputs[:3]
        beta, bias = _present(node, 3), _present(node, 4)
        s = b.op("Add", [x, skip])
        if bias is not None:
            s = b.op("Add", [s, bias])
        y = layer_norm(b, s, gamma, beta, float(node.attrs.get("epsilon", 1e-12)), b.ctx.dtype(x))
        out = []
        for t in m.outputs:
            idx = next(i for i, o in enumerate(node.outputs) if o is t)
            out.append(y if idx == 0 else s)
        return out


RULES = [Gelu(), BiasGelu(), FastGelu(), QuickGelu(), BiasAdd(), FusedConv(), SkipLayerNormalization()]
