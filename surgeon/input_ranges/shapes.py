"""Shapes of intermediate tensors: onnx shape inference on a weightless skeleton of the model
with the inputs pinned to the sample's concrete shapes, run only when a use needs one.
"""

from __future__ import annotations

import logging
from typing import Callable, Mapping

import numpy as np
import onnx
from onnx import TensorProto

from surgeon.graph_ops import infer_shapes
from surgeon.input_ranges.uses import SKELETON_MAX_ELEMENTS, UseIndex, walk

log = logging.getLogger(__name__)

ShapeOf = Callable[[str], "tuple[int | None, ...] | None"]


def skeleton(model: onnx.ModelProto, shapes: Mapping[str, tuple[int, ...]]) -> onnx.ModelProto:
    """The model without its large initializers' data (they become typed inputs), inputs pinned."""
    m = onnx.ModelProto(ir_version=max(model.ir_version, 4), opset_import=model.opset_import)
    g = m.graph
    g.node.extend(model.graph.node)
    g.output.extend(model.graph.output)
    g.value_info.extend(model.graph.value_info)
    for f in model.functions:
        m.functions.add().CopyFrom(f)
    inits = {t.name for t in model.graph.initializer}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        new = g.input.add()
        new.CopyFrom(vi)
        if vi.name in shapes and vi.type.HasField("tensor_type"):
            new.type.tensor_type.ClearField("shape")
            for d in shapes[vi.name]:
                new.type.tensor_type.shape.dim.add().dim_value = int(d)
    for t in model.graph.initializer:
        n = int(np.prod(t.dims)) if t.dims else 1
        if n <= SKELETON_MAX_ELEMENTS and t.data_location != TensorProto.EXTERNAL:
            g.initializer.add().CopyFrom(t)
        else:
            g.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    return m


def shape_oracle(model: onnx.ModelProto, g: UseIndex, shapes: Mapping[str, tuple[int, ...]]) -> ShapeOf:
    """name -> concrete dims (None where unknown); shape inference runs on first need only."""
    inferred: dict[str, tuple[int | None, ...]] | None = None

    def infer() -> dict[str, tuple[int | None, ...]]:
        out: dict[str, tuple[int | None, ...]] = {}
        try:
            m = infer_shapes(skeleton(model, shapes))
        except Exception as exc:  # inference refusing the model only means fewer known sizes
            log.debug("shape inference failed: %s", exc)
            return out
        graphs = [m.graph] + [a.g for n, _ in walk(m.graph) for a in n.attribute if a.HasField("g")]
        for graph in graphs:
            for vi in list(graph.value_info) + list(graph.output) + list(graph.input):
                tt = vi.type.tensor_type
                if vi.type.HasField("tensor_type") and tt.HasField("shape"):
                    out.setdefault(vi.name, tuple(d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim))
        return out

    def shape_of(name: str) -> tuple[int | None, ...] | None:
        nonlocal inferred
        if name in shapes:
            return tuple(shapes[name])
        if name in g.dims:
            return g.dims[name]
        if inferred is None:
            inferred = infer()
        return inferred.get(name)

    return shape_of


def sequence_length_of(g: UseIndex, lengths: Mapping[str, int]) -> Callable[[str], int | None]:
    def seq_len(name: str) -> int | None:
        if name in lengths:
            return lengths[name]
        for node in g.nodes:
            if name in node.output and node.op_type == "SequenceConstruct":
                return len(node.input)
        return None

    return seq_len
