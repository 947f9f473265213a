"""Dims fixed by weights: dynamic input dims whose size a node's weight decides (an LSTM's W,
a Conv's input channels, a MatMul against a weight, a Reshape to a constant shape).
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from surgeon.input_ranges.shapes import skeleton
from surgeon.input_ranges.uses import attr_value, label

log = logging.getLogger(__name__)


def _symbolic_skeleton(model: onnx.ModelProto, symbols_of: Mapping[str, tuple]) -> onnx.ModelProto:
    """The weightless skeleton with every input dim named by its symbol (``x:1`` for unnamed dims)."""
    m = skeleton(model, {})
    for vi in m.graph.input:
        dims = symbols_of.get(vi.name)
        if dims is None or not vi.type.HasField("tensor_type"):
            continue
        for d, sym in zip(vi.type.tensor_type.shape.dim, dims):
            if isinstance(sym, str):
                d.ClearField("dim_value")
                d.dim_param = sym
    return m


def _inferred_dims(model: onnx.ModelProto) -> dict[str, tuple[int | str | None, ...]]:
    out: dict[str, tuple[int | str | None, ...]] = {}
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception as exc:  # noqa: BLE001 - inference refusing the model only means no fixed dims
        log.debug("shape inference failed: %s", exc)
        return out
    for vi in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        tt = vi.type.tensor_type
        if vi.type.HasField("tensor_type") and tt.HasField("shape"):
            out[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim)
    for t in inferred.graph.initializer:
        out[t.name] = tuple(int(d) for d in t.dims)
    return out


def fixed_dims(model: onnx.ModelProto, symbols_of: Mapping[str, tuple]) -> dict[str, tuple[int, str]]:
    """Dynamic input dims whose size the weights fix: symbol -> (size, why).

    ``symbols_of``: input name -> its dims (ints, or symbol keys for dynamic dims), as
    :func:`surgeon.input_data.input_specs` gives them. Symbolic shape inference carries
    the symbols to the nodes that read them; a dim is fixed where a node's weight says
    what it must be: an LSTM/GRU/RNN's input size (W), a Conv's input channels, the
    inner dim of a MatMul/Gemm against a weight, a normalization's channels, an
    elementwise op against a constant of that size, and the one unknown of a Reshape to
    a constant shape (an exporter's baked size). Main graph only; the first fix of a
    symbol wins (a second, different one is a model that runs at no size).
    """
    symbols = {d for dims in symbols_of.values() for d in dims if isinstance(d, str)}
    if not symbols:
        return {}
    dims = _inferred_dims(_symbolic_skeleton(model, symbols_of))
    weights = _weights(model)
    found: dict[str, tuple[int, str]] = {}

    def fix(sym: Any, size: int, why: str) -> None:
        if isinstance(sym, str) and sym in symbols and sym not in found and size > 0:
            found[sym] = (int(size), why)

    def shape(name: str) -> tuple | None:
        return dims.get(name) if name else None

    for node in model.graph.node:
        op, ins = node.op_type, list(node.input)
        if node.domain not in ("", "ai.onnx") or not ins:
            continue
        x = shape(ins[0])
        if op in ("LSTM", "GRU", "RNN") and x and len(ins) > 1 and (w := shape(ins[1])) and len(w) == 3 and len(x) == 3:
            if isinstance(w[2], int):
                fix(x[2], w[2], f"the input size of {label(node)} (its W is {list(w)})")
        elif op == "Conv" and x and len(ins) > 1 and (w := shape(ins[1])) and len(x) >= 2 and isinstance(w[1], int):
            fix(x[1], w[1] * int(attr_value(node, "group", 1)), f"the input channels of {label(node)} (weight {list(w)})")
        elif op == "ConvTranspose" and x and len(ins) > 1 and (w := shape(ins[1])) and len(x) >= 2 and isinstance(w[0], int):
            fix(x[1], w[0], f"the input channels of {label(node)} (weight {list(w)})")
        elif op == "MatMul" and len(ins) == 2:
            a, b = x, shape(ins[1])
            if a and b and ins[1] in weights and isinstance(b[-2 if len(b) >= 2 else 0], int):
                fix(a[-1], b[-2 if len(b) >= 2 else 0], f"the inner dim of {label(node)} (weight {list(b)})")
            if a and b and ins[0] in weights and len(b) >= 2 and isinstance(a[-1], int):
                fix(b[-2], a[-1], f"the inner dim of {label(node)} (weight {list(a)})")
        elif op == "Gemm" and len(ins) >= 2 and x and len(x) == 2 and (b := shape(ins[1])) and len(b) == 2 \
                and ins[1] in weights:
            k = b[1] if attr_value(node, "transB", 0) else b[0]
            if isinstance(k, int):
                fix(x[0] if attr_value(node, "transA", 0) else x[1], k, f"the inner dim of {label(node)} (weight {list(b)})")
        elif op in ("BatchNormalization", "InstanceNormalization") and x and len(x) >= 2 and len(ins) > 1 \
                and (sc := shape(ins[1])) and len(sc) == 1 and isinstance(sc[0], int):
            fix(x[1], sc[0], f"the channels of {label(node)} (scale {list(sc)})")
        elif op == "LayerNormalization" and x and len(ins) > 1 and (sc := shape(ins[1])):
            for sym, size in zip(reversed(x), reversed(sc)):
                if isinstance(size, int) and size > 1:
                    fix(sym, size, f"the normalized dims of {label(node)} (scale {list(sc)})")
        elif op in ("Add", "Sub", "Mul", "Div") and len(ins) == 2:
            for i in (0, 1):
                mine, other = shape(ins[i]), shape(ins[1 - i])
                if mine and other and ins[1 - i] in weights:
                    for sym, size in zip(reversed(mine), reversed(other)):
                        if isinstance(size, int) and size > 1:
                            fix(sym, size, f"broadcast against the constant '{ins[1 - i]}' {list(other)} in {label(node)}")
        elif op == "Reshape" and x and len(ins) == 2:
            _reshape_fix(node, x, _target(model, ins[1]), fix)
    return found


def _weights(model: onnx.ModelProto) -> set[str]:
    names = {t.name for t in model.graph.initializer}
    names.update(o for n in model.graph.node if n.op_type == "Constant" for o in n.output)
    return names


def _target(model: onnx.ModelProto, name: str) -> list[int] | None:
    for t in model.graph.initializer:
        if t.name == name and t.data_type == TensorProto.INT64 and t.data_location != TensorProto.EXTERNAL:
            return [int(v) for v in numpy_helper.to_array(t).reshape(-1)]
    for n in model.graph.node:
        if n.op_type == "Constant" and n.output and n.output[0] == name:
            for a in n.attribute:
                if a.name == "value" and a.HasField("t"):
                    return [int(v) for v in numpy_helper.to_array(a.t).reshape(-1)]
    return None


def _reshape_fix(node: onnx.NodeProto, x: tuple, target: list[int] | None, fix) -> None:
    """A Reshape to a constant shape without -1 fixes the element count: one unknown dim of x follows."""
    if target is None or -1 in target:
        return
    allowzero = int(attr_value(node, "allowzero", 0))
    out_dims = []
    for i, t in enumerate(target):
        if t == 0 and not allowzero:
            if i >= len(x):
                return
            out_dims.append(x[i])
        else:
            out_dims.append(t)
    unknown_in = [d for d in x if not isinstance(d, int)]
    unknown_out = [d for d in out_dims if not isinstance(d, int)]
    for d in unknown_out:  # a dim copied through 0 cancels on both sides
        if d in unknown_in:
            unknown_in.remove(d)
        else:
            return
    if len(unknown_in) != 1:
        return
    total = int(np.prod([d for d in out_dims if isinstance(d, int)], dtype=np.int64))
    known = int(np.prod([d for d in x if isinstance(d, int)], dtype=np.int64))
    if known and total % known == 0:
        fix(unknown_in[0], total // known, f"the element count of {label(node)}'s constant target {target}")
