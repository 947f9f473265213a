"""Writing pinned input shapes into a model (``surgeon fix --fix-shapes``)."""

from __future__ import annotations

from typing import Mapping

import onnx

from surgeon import model as model_io
from surgeon import input_data


def pin_input_shapes(model: onnx.ModelProto, shapes: Mapping[str, tuple[int, ...]]) -> onnx.ModelProto:
    """Return a copy whose named inputs have the given static shapes.

    Inferred shapes of intermediates and outputs are cleared where they used the pinned
    symbols, so shape inference recomputes them rather than trusting stale dims.
    """
    input_data.check_pins(input_data.input_specs(model), shapes)
    out = model_io.copy(model)
    symbols: dict[str, int] = {}
    for vi in out.graph.input:
        if vi.name not in shapes:
            continue
        dims = vi.type.tensor_type.shape.dim
        for d, v in zip(dims, shapes[vi.name]):
            if d.HasField("dim_param") and d.dim_param:
                symbols[d.dim_param] = v
            d.Clear()
            d.dim_value = v
    for vi in list(out.graph.value_info) + list(out.graph.output):
        if vi.type.WhichOneof("value") != "tensor_type":
            continue
        for d in vi.type.tensor_type.shape.dim:
            if d.HasField("dim_param") and d.dim_param in symbols:
                v = symbols[d.dim_param]
                d.Clear()
                d.dim_value = v
    return out
