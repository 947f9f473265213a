"""The decomposed LayerNorm (as older exporters write it) fused into LayerNormalization.

Pattern, over one axis::

    mean = ReduceMean(x)          d = Sub(x, mean)        v = ReduceMean(Pow(d, 2))
    y = Add(Mul(Div(d, Sqrt(Add(v, eps))), gamma), beta)

The match is structural, a DAG pattern (op types and how the tensors connect, Mul/Add
operands in either order; ``x`` and the centred value are each one tensor read twice);
``check`` decides the semantics and says why it refuses: no LayerNormalization before opset 17, both reductions over the *last* axis only (the
axes attribute before opset 18, the axes input from 18), keepdims, exponent 2, a
scalar epsilon, and a gamma/beta that broadcast only over that axis. The rewrite is a
single LayerNormalization(axis=-1).
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from surgeon.rewrite import Match, Node, Opt, Rule, RuleContext


def _axes(node: gs.Node, ctx: RuleContext) -> tuple[list[int] | None, str | None]:
    """A ReduceMean's axes (attribute before opset 18, second input from 18)."""
    if "axes" in node.attrs:
        return [int(a) for a in node.attrs["axes"]], None
    if len(node.inputs) > 1 and node.inputs[1].name:
        value = ctx.constant(node.inputs[1])
        if value is None:
            return None, f"{node.name}: the axes input is not a constant"
        return [int(a) for a in np.asarray(value).reshape(-1)], None
    return None, f"{node.name} reduces over all axes"


_MEAN = Node("ReduceMean", "x", Opt("mean_axes"), bind="mean")
_CENTERED = Node("Sub", "x", _MEAN, bind="sub")
_VAR = Node("ReduceMean", Node("Pow", _CENTERED, "exponent", bind="pow"), Opt("var_axes"), bind="var")
_STD = Node("Sqrt", Node("Add", _VAR, "eps", bind="add_eps"), bind="sqrt")
PATTERN = Node("Add", Node("Mul", Node("Div", _CENTERED, _STD, bind="div"), "gamma", bind="mul"), "beta", bind="add")


class FuseLayerNorm(Rule):
    name = "fuse-layer-norm"
    pattern = PATTERN

    def check(self, m: Match, ctx: RuleContext) -> str | None:
        if ctx.opset < 17:
            return f"opset {ctx.opset} has no LayerNormalization (needs 17 or later)"
        x = m["x"]
        rank = ctx.rank(x)
        for r in (m["mean"], m["var"]):
            axes, problem = _axes(r, ctx)
            if problem:
                return problem
            if len(axes) != 1:
                return f"{r.name} reduces over axes {axes}; only a single last axis is fused"
            if int(r.attrs.get("keepdims", 1)) != 1:
                return f"{r.name} has keepdims=0"
            axis = axes[0]
            if axis != -1:
                if rank is None:
                    return f"{r.name} reduces over axis {axis} and the rank of '{x.name}' is unknown"
                if axis != rank - 1:
                    return f"{r.name} reduces over axis {axis}, not the last axis of a rank-{rank} input"
        exponent = ctx.constant(m["exponent"])
        if exponent is None or exponent.size != 1 or float(exponent.reshape(-1)[0]) != 2.0:
            return "the Pow exponent is not the constant 2"
        eps = ctx.constant(m["eps"])
        if eps is None or eps.size != 1:
            return "epsilon is not a scalar constant"
        dtype = ctx.dtype(x)
        if dtype is None or dtype not in (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)):
            return f"the element type of '{x.name}' is {'unknown' if dtype is None else dtype}, not float"
        last = ctx.shape(x)[-1] if rank else None
        for role in ("gamma", "beta"):
            t = m[role]
            shape = ctx.shape(t)
            if shape is None:
                return f"the shape of {role} '{t.name}' is unknown"
            if any(d != 1 for d in shape[:-1]) or len(shape) == 0:
                return f"{role} '{t.name}' has shape {list(shape)}; it must vary over the last axis only"
            if len(shape) > (rank or 0) and rank is not None:
                return f"{role} '{t.name}' has more dims than the input"
            if isinstance(last, int) and isinstance(shape[-1], int) and shape[-1] not in (1, last):
                return f"{role} '{t.name}' has {shape[-1]} values for a last axis of {last}"
            if not isinstance(t, gs.Constant) and len(shape) != 1:
                return f"{role} '{t.name}' is not a 1-D tensor"
            if ctx.dtype(t) != dtype:
                return f"{role} '{t.name}' has element type {ctx.dtype(t)}, the input {dtype}"
        return None

    def rewrite(self, m: Match, b) -> list[gs.Tensor]:
        x = m["x"]
        last = b.ctx.shape(x)[-1]
        params = []
        for role in ("gamma", "beta"):
            t = m[role]
            if isinstance(t, gs.Constant) and (t.values.ndim != 1 or (isinstance(last, int) and t.values.size != last)):
                values = np.asarray(t.values).reshape(-1)
                if isinstance(last, int) and values.size == 1:
                    values = np.full(last, values[0], dtype=values.dtype)
                t = b.const(values, name=role)
            params.append(t)
        eps = float(b.ctx.constant(m["eps"]).reshape(-1)[0])
        return [b.op("LayerNormalization", [x, *params], {"axis": -1, "epsilon": eps})]


RULES = [FuseLayerNorm()]
