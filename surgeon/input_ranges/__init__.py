"""Valid values for integer inputs, inferred from how the graph uses them.

Why: random integers break models whose integer inputs are indices, axes, counts or
shapes (token ids into an embedding table, a Slice's axes, a Reshape target, a TopK
``k``); the model then fails on every generated sample and nothing can be verified
numerically. The graph says what is valid: a Gather's indices must lie within the
data's size on its axis, axes within the rank, a shape must fit the data.

For every integer graph input this module follows its value forward through ops that
pass values on unchanged or shifted (Cast, Identity, Unsqueeze/Squeeze/Reshape/Flatten,
Concat, Gather/Slice of it, Neg, Add/Sub/Mul with a constant), collects each *use* that
constrains it, and intersects them into one :class:`Constraint`: an inclusive range, a
set of distinct values in a range (axes), or one exact value (shapes). A use whose
demand cannot be met or worked out is recorded as a ``problem`` with the reason, so
that the report can say why no valid sample could be made.

Sizes of intermediate tensors come from onnx shape inference on a weightless skeleton
of the model with the inputs pinned to the sample's concrete shapes, run only when a
use needs one.

One module per job: :mod:`.constraint` (what a value may be, and how constraints combine),
:mod:`.uses` (the use index, following values forward), :mod:`.roles` (what each op demands
of the value it reads), :mod:`.shapes` (sizes of intermediate tensors), :mod:`.masks` (0/1
masks and tested values), :mod:`.fixed_dims` (dynamic dims the weights fix).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Mapping

import onnx
from onnx import TensorProto

from surgeon.input_ranges.constraint import Constraint, intersect, through
from surgeon.input_ranges.fixed_dims import fixed_dims
from surgeon.input_ranges.masks import mask_constraint, tested_value
from surgeon.input_ranges.roles import Use, role
from surgeon.input_ranges.shapes import sequence_length_of, shape_oracle
from surgeon.input_ranges.uses import INT_TYPES, UseIndex, build_index, uses_of

__all__ = ["Constraint", "constrained_input_names", "fixed_dims", "index_model", "infer_constraints",
           "int_input_names"]


def int_input_names(model: onnx.ModelProto) -> list[str]:
    return _input_names(model, INT_TYPES)


def constrained_input_names(model: onnx.ModelProto) -> list[str]:
    """Inputs whose values some use may constrain: integers, and the few float or boolean
    inputs that act as counts, thresholds or switches (a OneHot depth, an IoU threshold,
    Dropout's training_mode)."""
    return _input_names(model, INT_TYPES | _FLOAT_TYPES | {TensorProto.BOOL})


_FLOAT_TYPES = frozenset({TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16})


def _input_names(model: onnx.ModelProto, types: frozenset[int]) -> list[str]:
    inits = {t.name for t in model.graph.initializer}
    return [vi.name for vi in model.graph.input if vi.name not in inits and vi.type.HasField("tensor_type")
            and vi.type.tensor_type.elem_type in types]


def index_model(model: onnx.ModelProto) -> UseIndex:
    """The use index of a model, to pass to several :func:`infer_constraints` calls (one per sample size)."""
    return build_index(model)


def infer_constraints(
    model: onnx.ModelProto,
    shapes: Mapping[str, tuple[int, ...]],
    sequence_lengths: Mapping[str, int] | None = None,
    names: list[str] | None = None,
    index: UseIndex | None = None,
) -> dict[str, Constraint]:
    """A Constraint for every integer input some use constrains (others are absent: any value works).

    ``shapes``: the concrete shape of every tensor input in the sample being made.
    ``sequence_lengths``: the length of every sequence input in it.
    """
    names = constrained_input_names(model) if names is None else names
    if not names:
        return {}
    g = index if index is not None else build_index(model)
    shape_of = shape_oracle(model, g, shapes)
    seq_len = sequence_length_of(g, dict(sequence_lengths or {}))
    out: dict[str, Constraint] = {}
    integer = set(_input_names(model, INT_TYPES | {TensorProto.BOOL}))
    for name in names:
        acc: Constraint | None = mask_constraint(g, name, name in integer)
        for node, idx, path in uses_of(g, name):
            use = Use(node, idx, shape_of, tuple(shapes.get(name, ())), seq_len)
            c = role(use) if node.op_type != "Equal" else tested_value(g, node, idx)
            if c is None:
                continue
            c = through(c, path)
            if not path.sure or id(node) in g.conditional:
                c = replace(c, valid_lo=None, valid_hi=None)  # a guide for generation, not a rule for users' data
            acc = c if acc is None else intersect(acc, c)
        if acc is not None:
            out[name] = acc
    return out
