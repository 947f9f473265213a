"""The decomposed LayerNorm (as older exporters write it) fused into LayerNormalization.

Pattern, over one axis::

    mean = ReduceMean(x)          d = Sub(x, mean)        v = ReduceMean(Pow(d, 2))
    y = Add(Mul(Div(d, Sqrt(Add(v, eps))), gamma), beta)

The match is structural (op types and how the tensors connect, Mul/Add operands in
either order); ``check`` decides the semantics and says why it refuses: no
LayerNormalization before opset 17, both reductions over the *last* axis only (the
axes attribute before opset 18, the axes input from 18), keepdims, exponent 2, a
scalar epsilon, and a gamma/beta that broadcast only over that axis. The rewrite is a
single LayerNormalization(axis=-1).
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from surgeon.rewrite import Match, Rule, RuleContext, Scope
from surgeon.rewrite.rule import node_domain


def _producer(scope: Scope, t: gs.Tensor, op: str) -> gs.Node | None:
    node = scope.producer(t)
    return node if node is not None and node.op == op and not node_domain(node) else None


def _split(scope: Scope, node: gs.Node, op: str) -> tuple[gs.Node, gs.Tensor] | None:
    """For a binary commutative ``node``: (the input's producer of type ``op``, the other input)."""
    if len(node.inputs) != 2:
        return None
    for i in (0, 1):
        p = _producer(scope, node.inputs[i], op)
        if p is not None:
            return p, node.inputs[1 - i]
    return None


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


class FuseLayerNorm(Rule):
    name = "fuse-layer-norm"
    requires = tuple(frozenset({("", op)}) for op in ("ReduceMean", "Sub", "Pow", "Add", "Sqrt", "Div", "Mul"))

    def match(self, node: gs.Node, scope: Scope) -> Match | None:
        if node.op != "Add" or node_domain(node):
            return None
        found = _split(scope, node, "Mul")
        if not found:
            return None
        mul, beta = found
        found = _split(scope, mul, "Div")
        if not found:
            return None
        div, gamma = found
        if len(div.inputs) != 2:
            return None
        sub, sqrt = _producer(scope, div.inputs[0], "Sub"), _producer(scope, div.inputs[1], "Sqrt")
        if sub is None or sqrt is None:
            return None
        add_eps = _producer(scope, sqrt.inputs[0], "Add")
        found = _split(scope, add_eps, "ReduceMean") if add_eps is not None else None
        if not found:
            return None
        var, eps = found
        pow_ = _producer(scope, var.inputs[0], "Pow")
        if pow_ is None or pow_.inputs[0] is not sub.outputs[0]:
            return None
        x, mean_t = sub.inputs
        mean = _producer(scope, mean_t, "ReduceMean")
        if mean is None or mean.inputs[0] is not x:
            return None
        nodes = [mean, sub, pow_, var, add_eps, sqrt, div, mul, node]
        roles = {"x": x, "gamma": gamma, "beta": beta, "eps": eps, "exponent": pow_.inputs[1],
                 "reductions": (mean, var)}
        return Match.of(self.name, scope, nodes, roles)

    def check(self, m: Match, ctx: RuleContext) -> str | None:
        if ctx.opset < 17:
            return f"opset {ctx.opset} has no LayerNormalization (needs 17 or later)"
        x = m.roles["x"]
        rank = ctx.rank(x)
        for r in m.roles["reductions"]:
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
        exponent = ctx.constant(m.roles["exponent"])
        if exponent is None or exponent.size != 1 or float(exponent.reshape(-1)[0]) != 2.0:
            return "the Pow exponent is not the constant 2"
        eps = ctx.constant(m.roles["eps"])
        if eps is None or eps.size != 1:
            return "epsilon is not a scalar constant"
        dtype = ctx.dtype(x)
        if dtype is None or dtype not in (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)):
            return f"the element type of '{x.name}' is {'unknown' if dtype is None else dtype}, not float"
        last = ctx.shape(x)[-1] if rank else None
        for role in ("gamma", "beta"):
            t = m.roles[role]
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
        x = m.roles["x"]
        last = b.ctx.shape(x)[-1]
        params = []
        for role in ("gamma", "beta"):
            t = m.roles[role]
            if isinstance(t, gs.Constant) and (t.values.ndim != 1 or (isinstance(last, int) and t.values.size != last)):
                values = np.asarray(t.values).reshape(-1)
                if isinstance(last, int) and values.size == 1:
                    values = np.full(last, values[0], dtype=values.dtype)
                t = b.const(values, name=role)
            params.append(t)
        eps = float(b.ctx.constant(m.roles["eps"]).reshape(-1)[0])
        return [b.op("LayerNormalization", [x, *params], {"axis": -1, "epsilon": eps})]


RULES = [FuseLayerNorm()]
