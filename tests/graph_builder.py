"""The builder under tests/graphgen.py: tensors with tracked shapes, and nodes in an opset's spelling."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

F32, F16, I64 = TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.INT64
NP = {F32: np.float32, F16: np.float16, I64: np.int64}
# the lowest IR version each opset needs (onnx.helper.VERSION_TABLE)
MIN_IR = {11: 6, 12: 7, 13: 7, 14: 7, 15: 8, 16: 8, 17: 8, 18: 8, 19: 9, 20: 9, 21: 10}
SYMBOL_SIZES = {"N": (1, 3), "H": (5, 8), "W": (4, 1)}  # W: a constant of 4 broadcasts to it or grows it


@dataclass
class T:
    name: str
    dtype: int
    shape: list  # ints, or a symbol ("N", "H", "W") for a dynamic dim

    @property
    def rank(self) -> int:
        return len(self.shape)

    def static(self, *axes: int) -> bool:
        return all(isinstance(self.shape[a], int) for a in (axes or range(self.rank)))


@dataclass
class Graph:
    model: onnx.ModelProto
    plan: tuple
    overrides: dict = field(default_factory=dict)  # initializer-backed input -> another valid value
    sizes: dict = field(default_factory=dict)  # symbol -> two runtime sizes


class Builder:
    def __init__(self, opset: int, ir: int, depth: int = 0):
        self.opset, self.ir, self.depth = opset, ir, depth
        self.may_add_inputs = depth == 0  # bodies have no graph inputs of their own here
        self.shared: dict = {}
        self.domains: set = set()
        self.nodes: list = []
        self.inits: list = []
        self.inputs: list = []
        self.outputs: list = []
        self.overrides: dict = {}
        self.n = 0
        self.rng = random.Random(0)

    def name(self, base: str) -> str:
        self.n += 1
        return f"{base}_{self.n}"

    def node(self, op: str, inputs: list, n_out: int = 1, **attrs) -> list[str]:
        outs = [self.name(op.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=self.name("n_" + op), **attrs))
        return outs

    def one(self, op: str, inputs: list, **attrs) -> str:
        return self.node(op, inputs, **attrs)[0]

    def const(self, value, dtype=None, as_node: bool | None = None) -> str:
        arr = np.asarray(value, dtype=dtype)
        if as_node is None:
            as_node = self.rng.random() < 0.3
        if as_node:
            if self.opset >= 12 and arr.ndim <= 1 and arr.dtype in (np.int64, np.float32) and self.rng.random() < 0.4:
                # the other spellings exporters use: value_int(s) / value_float(s)
                key = ("value_int" if arr.dtype == np.int64 else "value_float") + ("s" if arr.ndim else "")
                return self.one("Constant", [], **{key: arr.tolist()})
            return self.one("Constant", [], value=numpy_helper.from_array(arr))
        name = self.name("c")
        self.inits.append(numpy_helper.from_array(arr, name))
        return name

    def ints(self, values) -> str:
        return self.const(np.asarray(values, np.int64))

    def init_input(self, value, override) -> str:
        """An initializer listed as a graph input: a default the user may override."""
        arr = np.asarray(value)
        name = self.name("in_default")
        self.inits.append(numpy_helper.from_array(arr, name))
        self.inputs.append(helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(arr.dtype), arr.shape))
        self.overrides[name] = np.asarray(override, arr.dtype)
        return name

    # opset-dependent spellings -------------------------------------------------------
    def unsqueeze(self, x: str, axes: list[int]) -> str:
        if self.opset < 13:
            return self.one("Unsqueeze", [x], axes=axes)
        return self.one("Unsqueeze", [x, self.ints(axes)])

    def squeeze(self, x: str, axes: list[int]) -> str:
        if self.opset < 13:
            return self.one("Squeeze", [x], axes=axes)
        return self.one("Squeeze", [x, self.ints(axes)])

    def reduce(self, op: str, x: str, axes: list[int], keepdims: int = 1) -> str:
        takes_input = self.opset >= 18 or (op == "ReduceSum" and self.opset >= 13)
        if takes_input:
            return self.one(op, [x, self.ints(axes)], keepdims=keepdims)
        return self.one(op, [x], axes=axes, keepdims=keepdims)

    def dim(self, x: T, axis: int, as_1d: bool = True) -> str:
        """``Shape(x)[axis]`` the way exporters write it (Gather of a scalar index, or Shape(start, end))."""
        if as_1d and self.opset >= 15 and self.rng.random() < 0.3:
            return self.one("Shape", [x.name], start=axis, end=axis + 1)
        s = self.one("Shape", [x.name])
        if self.rng.random() < 0.2:  # int32 detour, as some exporters write it
            s = self.one("Cast", [self.one("Cast", [s], to=TensorProto.INT32)], to=I64)
        index = axis - x.rank if self.rng.random() < 0.3 else axis
        if as_1d and self.rng.random() < 0.3:
            return self.one("Gather", [s, self.const(np.array([index], np.int64))], axis=0)
        g = self.one("Gather", [s, self.const(np.int64(index))], axis=0)
        return self.unsqueeze(g, [-1 if self.rng.random() < 0.3 else 0]) if as_1d else g

    def output(self, t: T, declare_shape: bool = True) -> None:
        """A graph output; dims the builder does not know (or ``declare_shape=False``) get a fresh symbol."""
        if self.depth:
            return  # a body's side results stay internal (and dead)
        shape = [d if declare_shape and d in SYMBOL_SIZES or isinstance(d, int) else f"{t.name}_d{i}"
                 for i, d in enumerate(t.shape)]
        if not declare_shape:
            shape = [f"{t.name}_d{i}" for i in range(t.rank)]
        self.outputs.append(helper.make_tensor_value_info(t.name, t.dtype, shape))
