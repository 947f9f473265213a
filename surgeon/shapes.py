"""Writing pinned input shapes into a model (``surgeon fix --fix-shapes``)."""

from __future__ import annotations

from typing import Mapping

import onnx_graphsurgeon as gs

from surgeon import input_data
from surgeon.graph import Model, iter_graphs


def pin_input_shapes(model: Model, shapes: Mapping[str, tuple[int, ...]]) -> None:
    """Give the named inputs static shapes, in place.

    Symbols the pinned dims named are replaced in every other shape too (intermediates,
    outputs), so nothing downstream keeps a stale symbolic dim.
    """
    input_data.check_pins(input_data.input_specs(model.export().skeleton), shapes)
    symbols: dict[str, int] = {}
    for tensor in model.graph.inputs:
        if tensor.name not in shapes:
            continue
        for d, v in zip(tensor.shape or (), shapes[tensor.name]):
            if isinstance(d, str) and d:
                symbols[d] = int(v)
        tensor.shape = [int(v) for v in shapes[tensor.name]]
    pinned = {t.name for t in model.graph.inputs if t.name in shapes}
    for g in iter_graphs(model.graph):
        for t in g.tensors().values():
            if isinstance(t, gs.Variable) and t.name not in pinned and t.shape is not None:
                t.shape = [symbols.get(d, d) if isinstance(d, str) else d for d in t.shape]
