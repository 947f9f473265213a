"""``drop-default-inputs``: leave out optional inputs that are computed to equal their default.

The case that costs nodes: PyTorch exports ``nn.GRU``/``nn.LSTM`` called without an
initial state as ``Shape → Slice → Concat → ConstantOfShape(0)`` feeding ``initial_h``
(and ``initial_c``), so that the zeros get the runtime batch size. ONNX's RNN, GRU and
LSTM already start from zeros when the input is absent (the spec: "If not specified -
assumed to be 0"), so the input can be dropped and the chain that computed it goes away.

Matched: an ``initial_h``/``initial_c`` (and LSTM's peephole ``P``, also 0 by default) that
is a constant of zeros or a ``ConstantOfShape`` whose value is zero (or unset, which is
zero). A non-zero fill, or a state that is a graph input or any other computation, stays.
The producers left without readers are removed; a producer something else still reads
is kept.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_graphsurgeon as gs

from passes import _rewire as R
from surgeon.pipeline.base import GraphPass, PassContext, PassLog
from surgeon.pipeline.registry import register

logger = logging.getLogger(__name__)

# op -> optional input index -> input name in the spec; each defaults to zeros
_ZERO_DEFAULTS = {
    "RNN": {5: "initial_h"},
    "GRU": {5: "initial_h"},
    "LSTM": {5: "initial_h", 6: "initial_c", 7: "P"},
}


def _is_zero(t: gs.Tensor) -> bool | None:
    """True: provably all zeros; False: provably not; None: not a constant we can read. Pure."""
    value = R.constant_value(t)
    if value is not None:
        return bool(value.size) and bool(np.all(value == 0))
    node = R.producer(t)
    if node is None or node.op != "ConstantOfShape" or not R.is_standard(node):
        return None
    fill = node.attrs.get("value")
    if fill is None:
        return True  # the spec's default fill is a float 0
    return bool(np.all(np.asarray(fill.values) == 0))


def drop(graph: gs.Graph, ctx: PassContext, log: PassLog) -> bool:
    candidates = [n for n in graph.nodes if n.op in _ZERO_DEFAULTS and R.is_standard(n)]
    if not candidates:
        return False
    scope = R.Scope(graph)
    changed = False
    for node in candidates:
        for index, what in sorted(_ZERO_DEFAULTS[node.op].items(), reverse=True):
            t = R.present(node, index)
            if t is None:
                continue
            zero = _is_zero(t)
            if zero is False:
                continue
            if zero is None:
                if R.producer(t) is not None:
                    log.note(f"{node.op} {node.name}: {what} is computed by {R.producer(t).op}, not a known zero; kept")
                continue
            if not ctx.permit("zero-initial-state", node):
                continue
            if index == len(node.inputs) - 1:
                node.inputs.pop()
                while node.inputs and isinstance(node.inputs[-1], gs.Variable) and not node.inputs[-1].name:
                    node.inputs.pop()  # trailing empty optional inputs say nothing
            else:
                node.inputs[index] = gs.Variable.empty()
            R.drop_if_dead(scope, t)
            log.count("zero-initial-state")
            changed = True
    scope.finish()
    return changed


@register
class DropDefaultInputs(GraphPass):
    name = "drop-default-inputs"
    summary = "Leave out optional inputs computed to equal their default (zero initial states of RNN/GRU/LSTM)."
    default_order = 62
    candidate_ops = frozenset(_ZERO_DEFAULTS)

    def run_on_graph(self, graph: gs.Graph, ctx: PassContext, log: PassLog) -> bool:
        return drop(graph, ctx, log)
