"""``drop-default-inputs``: leave out optional inputs that are computed to equal their default.

The case that costs nodes: PyTorch exports ``nn.GRU``/``nn.LSTM`` called without an
initial state as ``Shape → Slice → Concat → ConstantOfShape(0)`` feeding ``initial_h``
(and ``initial_c``), so that the zeros get the runtime batch size. ONNX's RNN, GRU and
LSTM already start from zeros when the input is absent (the spec: "If not specified -
assumed to be 0"), so the input can be dropped and the chain that computed it goes away.

Matched: an ``initial_h``/``initial_c`` (and LSTM's peephole ``P``, also 0 by default) whose
value is provably all zeros: a constant of zeros, a ``ConstantOfShape`` whose value is
zero (or unset, which is zero), or such a zero tensor passed through ops that keep every
element zero whatever their other inputs (``Slice``, ``Expand``, ``Unsqueeze``,
``Squeeze``, ``Reshape``, ``Flatten``, ``Transpose``, ``Tile``, ``Identity``, ``Cast``, and
``Concat`` of zeros). PyTorch's multi-layer export makes one ``ConstantOfShape(0)`` of
``[layers*directions, batch, hidden]`` and slices each layer's state out of it.

Why the shape of that zero tensor needs no proof beyond what is static: RNN/GRU/LSTM do
not broadcast their initial states, and ONNX Runtime rejects a state whose shape is not
``[num_directions, batch, hidden_size]`` (``[num_directions, 3*hidden_size]`` for ``P``).
Wherever the original model runs, its zero state had that shape and so equals the
default. A shape that is statically known and contradicts it (a wrong rank, direction
count or hidden size, or a batch size different from ``X``'s static one) is refused with
a note: such a model cannot run as it is, and dropping the input would hide that.

A non-zero fill, or a state that is a graph input or any other computation, stays.
The producers left without readers are removed (by the rewrite engine, through
:func:`surgeon.graph_ops.drop_if_dead`); a producer something else still reads is kept.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_graphsurgeon as gs

from surgeon import graph_ops as K
from surgeon.pipeline.registry import register
from surgeon.rewrite import Match, RulePass, Node, Rule, RuleContext, fail, ok

logger = logging.getLogger(__name__)

# op -> optional input index -> input name in the spec; each defaults to zeros
_ZERO_DEFAULTS = {
    "RNN": {5: "initial_h"},
    "GRU": {5: "initial_h"},
    "LSTM": {5: "initial_h", 6: "initial_c", 7: "P"},
}


# Ops whose output is all zeros when their data input (index 0) is: they only move,
# repeat, drop or re-type elements. Their other inputs (shapes, axes, bounds) do not matter.
_KEEP_ZERO = frozenset({"Slice", "Expand", "Unsqueeze", "Squeeze", "Reshape", "Flatten", "Transpose",
                        "Tile", "Identity", "Cast"})
_MAX_DEPTH = 32  # exporters put a few ops between the zeros and the state; deeper is not this pattern


def _is_zero(t: gs.Tensor, depth: int = 0) -> bool | None:
    """True: provably all zeros; False: provably not; None: not a value we can read. Pure."""
    value = K.constant(t, K.SMALL)
    if value is not None:
        return bool(value.size) and bool(np.all(value == 0))
    node = K.producer(t)
    if node is None or not K.is_default_domain(node) or depth > _MAX_DEPTH:
        return None
    if node.op == "ConstantOfShape":
        fill = node.attrs.get("value")
        if fill is None:
            return True  # the spec's default fill is a float 0
        return bool(np.all(np.asarray(fill.values) == 0))
    if node.op in _KEEP_ZERO and node.inputs:
        return _is_zero(node.inputs[0], depth + 1)
    if node.op == "Concat" and node.inputs:
        parts = [_is_zero(i, depth + 1) for i in node.inputs]
        if any(p is False for p in parts):
            return False
        return None if any(p is None for p in parts) else True
    return None


def _static_dims(t: gs.Tensor) -> list | None:
    """Dims of ``t`` (int where static, None where not), None when the rank is unknown. Pure."""
    shape = K.shape_of(t)
    if shape is None:
        node = K.producer(t)
        if node is not None and node.op == "ConstantOfShape" and K.is_default_domain(node) and node.inputs:
            dims = K.constant(node.inputs[0], K.SMALL)
            return None if dims is None else [int(d) for d in np.asarray(dims).reshape(-1)]
        return None
    return [int(d) if isinstance(d, (int, np.integer)) and int(d) >= 0 else None for d in shape]


def _expected_dims(node: gs.Node, what: str) -> list:
    """The state shape the op requires (None where it depends on the input's batch size). Pure."""
    direction = node.attrs.get("direction", "forward")
    if isinstance(direction, bytes):
        direction = direction.decode()
    directions = 2 if direction == "bidirectional" else 1
    hidden = node.attrs.get("hidden_size")
    hidden = int(hidden) if hidden is not None else None
    if what == "P":
        return [directions, None if hidden is None else 3 * hidden]
    x_dims = _static_dims(node.inputs[0]) if node.inputs else None
    batch_axis = 0 if int(node.attrs.get("layout", 0)) == 1 else 1
    batch = x_dims[batch_axis] if x_dims is not None and len(x_dims) == 3 else None
    if int(node.attrs.get("layout", 0)) == 1:
        return [batch, directions, hidden]
    return [directions, batch, hidden]


def _shape_conflict(node: gs.Node, what: str, t: gs.Tensor) -> str | None:
    """Why the zero tensor's static shape cannot be the state the op uses; None: no conflict. Pure."""
    have = _static_dims(t)
    if have is None:
        return None
    want = _expected_dims(node, what)
    if len(have) != len(want) or any(h is not None and w is not None and h != w for h, w in zip(have, want)):
        shown = lambda dims: "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"
        return (f"{node.op} {node.name}: {what} is zeros of shape {shown(have)} where the op needs "
                f"{shown(want)}; the model cannot run as it is, kept")
    return None


class ZeroState(Rule):
    """Leave out optional input ``index`` (``what`` in the spec) of RNN/GRU/LSTM when it is provably zeros."""

    name = "zero-initial-state"

    def __init__(self, index: int, what: str):
        self.index, self.what = index, what
        self.pattern = Node(tuple(op for op, slots in _ZERO_DEFAULTS.items() if index in slots), bind="node", more=True)

    def check(self, m: Match, ctx: RuleContext):
        node = m["node"]
        t = K.present(node, self.index)
        zero = None if t is None else _is_zero(t)
        if t is None or zero is False:
            return fail("")
        if zero is None:
            src = K.producer(t)
            return fail(f"{node.op} {node.name}: {self.what} is computed by {src.op}, not a known zero; kept"
                        if src is not None else "")
        conflict = _shape_conflict(node, self.what, t)
        return fail(conflict) if conflict else ok()

    def rewrite(self, m: Match, b) -> list[gs.Tensor]:
        inputs = list(m["node"].inputs)
        inputs[self.index] = None
        while inputs and (inputs[-1] is None or (isinstance(inputs[-1], gs.Variable) and not inputs[-1].name)):
            inputs.pop()  # trailing empty optional inputs say nothing
        new = b.copy_of(m["node"], inputs, outputs=len(m["node"].outputs))
        new = new if isinstance(new, list) else [new]
        return [new[i] for i, o in enumerate(m["node"].outputs) if any(o is t for t in m.outputs)]

    def note(self, node, reason: str) -> str:
        return reason


RULES = [ZeroState(7, "P"), ZeroState(6, "initial_c"), ZeroState(5, "initial_h")]


@register
class DropDefaultInputs(RulePass):
    name = "drop-default-inputs"
    summary = "Leave out optional inputs computed to equal their default (zero initial states of RNN/GRU/LSTM)."
    default_order = 62
    rules = tuple(RULES)  # several sweeps: each replaces the node, one state at a time
