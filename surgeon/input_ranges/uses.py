"""The use index of a model: every node (bodies included), who reads each name, small
constants; and :func:`uses_of`, which follows an input's values forward through ops that
pass them on unchanged or shifted, to every node that reads them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterator

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from surgeon.input_ranges.constraint import Path

INT_TYPES = frozenset({TensorProto.INT8, TensorProto.INT16, TensorProto.INT32, TensorProto.INT64, TensorProto.UINT8,
                       TensorProto.UINT16, TensorProto.UINT32, TensorProto.UINT64, TensorProto.INT4, TensorProto.UINT4,
                       *(t for t in (getattr(TensorProto, "INT2", None), getattr(TensorProto, "UINT2", None)) if t)})
SKELETON_MAX_ELEMENTS = 1024  # larger initializers are data; shape inference needs only their type and dims


@dataclass
class UseIndex:
    """Every node (subgraphs included) and who reads each name."""

    nodes: list[onnx.NodeProto]
    consumers: dict[str, list[tuple[onnx.NodeProto, int]]]
    constants: dict[str, np.ndarray]  # small initializers and Constant outputs
    dims: dict[str, tuple[int | None, ...]]  # known static dims (initializers, Constants)
    loop_bodies: dict[int, onnx.GraphProto] = field(default_factory=dict)  # id(node) -> body (Loop/Scan)
    conditional: set[int] = field(default_factory=set)  # id(node) of nodes inside an If branch: may never run


def walk(graph: onnx.GraphProto, in_branch: bool = False) -> Iterator[tuple[onnx.NodeProto, bool]]:
    """Every node, subgraphs included, and whether it sits inside an If branch."""
    for node in graph.node:
        yield node, in_branch
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from walk(attr.g, in_branch or node.op_type == "If")
            for sub in attr.graphs:
                yield from walk(sub, in_branch or node.op_type == "If")


def build_index(model: onnx.ModelProto) -> UseIndex:
    nodes, consumers, constants, dims = [], {}, {}, {}
    bodies: dict[int, onnx.GraphProto] = {}

    def add_tensor(t: onnx.TensorProto) -> None:
        dims[t.name] = tuple(int(d) for d in t.dims)
        n = int(np.prod(t.dims)) if t.dims else 1
        if n <= SKELETON_MAX_ELEMENTS and t.data_location != TensorProto.EXTERNAL:
            try:
                constants[t.name] = numpy_helper.to_array(t)
            except Exception:  # an exotic type we need no values of
                pass

    for t in model.graph.initializer:
        add_tensor(t)
    conditional: set[int] = set()
    for node, in_branch in walk(model.graph):  # one walk: the node objects keyed here are the ones stored below
        if in_branch:
            conditional.add(id(node))
        for attr in node.attribute:
            if attr.HasField("g"):
                for t in attr.g.initializer:
                    add_tensor(t)
                if node.op_type in ("Loop", "Scan"):
                    bodies[id(node)] = attr.g
        nodes.append(node)
        for i, name in enumerate(node.input):
            if name:
                consumers.setdefault(name, []).append((node, i))
        if node.op_type == "Constant" and node.output:
            for attr in node.attribute:
                if attr.name == "value" and attr.HasField("t"):
                    t = onnx.TensorProto()
                    t.CopyFrom(attr.t)
                    t.name = node.output[0]
                    add_tensor(t)
                elif attr.name in ("value_int", "value_ints"):
                    value = np.array(attr.i if attr.name == "value_int" else list(attr.ints), dtype=np.int64)
                    constants[node.output[0]] = value
                    dims[node.output[0]] = value.shape
    return UseIndex(nodes, consumers, constants, dims, bodies, conditional)


def attr_value(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def label(node: onnx.NodeProto) -> str:
    return f"{node.op_type} '{node.name}'" if node.name else node.op_type


def scalar_constant(g: UseIndex, name: str) -> int | None:
    value = g.constants.get(name)
    if value is None or value.size == 0 or value.dtype.kind not in "iu":
        return None
    flat = value.reshape(-1)
    return int(flat[0]) if (flat == flat[0]).all() else None


# Ops whose output holds the input's values (order kept when exact_ok stays True).
_PASS_ORDERED = {"Identity": (0,), "Cast": (0,), "CastLike": (0,), "Unsqueeze": (0,), "Squeeze": (0,),
                 "Reshape": (0,), "Flatten": (0,)}
_PASS_MIXED = {"Concat": None, "Gather": (0,), "GatherElements": (0,), "GatherND": (0,), "Slice": (0,),
               "Expand": (0,), "Tile": (0,), "Transpose": (0,), "Max": None, "Min": None}
_PASS_PART = {"Gather", "GatherElements", "GatherND", "Slice", "Max", "Min"}  # not every value arrives unchanged
_INT_CAST_TARGETS = INT_TYPES


def uses_of(g: UseIndex, name: str) -> Iterator[tuple[onnx.NodeProto, int, Path]]:
    """Every (node, input index, path) where the input's values are read, followed through pass-on ops."""
    seen: set[str] = set()
    stack = [(name, Path())]
    while stack:
        current, path = stack.pop()
        if current in seen or len(path.via) > 12:
            continue
        seen.add(current)
        for node, idx in g.consumers.get(current, []):
            op = node.op_type
            yield node, idx, path
            nxt: Path | None = None
            if op in _PASS_ORDERED and idx in _PASS_ORDERED[op]:
                if op == "Cast" and attr_value(node, "to", 0) not in _INT_CAST_TARGETS:
                    continue  # a float copy of the value: its uses need no integer
                nxt = replace(path, via=path.via + (label(node),))
            elif op in _PASS_MIXED and (_PASS_MIXED[op] is None or idx in _PASS_MIXED[op]):
                nxt = replace(path, exact_ok=False, via=path.via + (label(node),), sure=path.sure and op not in _PASS_PART)
            elif op == "Neg":
                nxt = replace(path, scale=-path.scale, offset=-path.offset, via=path.via + (label(node),))
            elif op in ("Add", "Sub", "Mul") and len(node.input) == 2:
                c = scalar_constant(g, node.input[1 - idx])
                if c is None:
                    continue
                if op == "Add":
                    nxt = replace(path, offset=path.offset + c)
                elif op == "Sub" and idx == 0:
                    nxt = replace(path, offset=path.offset - c)
                elif op == "Sub":
                    nxt = replace(path, scale=-path.scale, offset=c - path.offset)
                elif c > 0:
                    nxt = replace(path, scale=path.scale * c, offset=path.offset * c)
                else:
                    continue
                nxt = replace(nxt, via=path.via + (label(node),))
            elif op in ("Loop", "Scan") and id(node) in g.loop_bodies and idx >= (2 if op == "Loop" else 0):
                body = g.loop_bodies[id(node)]
                # Loop: inputs (M, cond, v...) map to body inputs (iter, cond, v...); Scan: state vars in order.
                if idx < len(body.input):
                    stack.append((body.input[idx].name, replace(path, via=path.via + (label(node),))))
                continue
            if nxt is not None:
                for out in node.output[:1]:
                    if out:
                        stack.append((out, nxt))
