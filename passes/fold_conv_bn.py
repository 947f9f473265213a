"""Pass ``fold-conv-bn``: fold inference BatchNormalization and per-channel Mul/Add into weights.

An exporter that leaves ``Conv → BatchNormalization`` unfused makes every engine do two
passes over the activation where one would do, and makes FP16 engines round twice.
Inference BN is a per-channel affine map ``y = s·x + t`` (``s = γ/√(var+ε)``,
``t = β − s·mean``), so it can be moved into the weights of the layer before it:

* ``Conv`` (weight ``[Cout, Cin/g, k…]``): scale axis 0, bias ``s·b + t``;
* ``ConvTranspose`` (weight ``[Cin, Cout/g, k…]``): output channel ``o = gi·Cout/g + j`` lives
  on axis 1 *inside group block gi*, so the weight is viewed as ``[g, Cin/g, Cout/g, k…]``;
* ``Gemm`` with a constant ``B`` (rows or columns depending on ``transB``; ``C`` and
  ``beta`` are folded into a new ``C`` and ``beta`` becomes 1);
* ``MatMul`` with a constant 2-D weight and a rank-2 input (BN's channel axis 1 is then the
  last axis): columns are scaled, and the shift becomes one ``Add`` (a MatMul has no bias).

A constant per-channel ``Mul`` or ``Add`` after a ``Conv``/``ConvTranspose`` is the same
affine map (``s = c, t = 0`` or ``s = 1, t = c``) and folds the same way. A BN that has
no foldable layer before it but feeds exactly one *unpadded* ``Conv`` is folded into that
Conv's input side instead (rule ``bn-conv``); with padding this is wrong at the border (the
zeros the Conv pads with would not be normalised), so it is refused and noted.

Arithmetic is in float64 and cast back to the weight's dtype (FP16 weights included), so
the fold adds one rounding, not several.

Refusals leave the graph unchanged at that place and are written to the report as notes
("BatchNormalization bn3 not folded: training_mode=1"): training-mode BN (``training_mode=1``,
``is_test=0``, more than one output), per-activation BN (``spatial=0``), parameters that
are not constants, a layer output that something else also reads (another node, a graph
output, a subgraph through outer scope), a weight that comes through ``DequantizeLinear``
(the Q/DQ pair is TensorRT's explicit-quantization contract and stays intact), and BN
before a padded Conv. Constants may be initializers or outputs of ``Constant`` nodes
(paddle2onnx models use the latter); ``Constant`` nodes left without readers are removed.

Shared weights are **cloned**: the folded layer always gets new initializers named after
the old ones, so another node reading the same weight keeps the original values. The
report notes each clone of a shared weight (it costs memory once per sharing layer).

Each rule is pattern → check → rewrite: ``_check_*`` are pure and return a refusal reason
or None; ``_rewrite_*`` recompute what they need and edit the graph; nothing is kept on the
pass object between them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np
import onnx_graphsurgeon as gs

from surgeon import graph as G
from surgeon import weights as W
from surgeon.pipeline.base import Pass, PassContext, PassLog
from surgeon.pipeline.registry import register

log = logging.getLogger(__name__)

PASS_NAME = "fold-conv-bn"

_PRODUCERS = {"Conv": "conv", "ConvTranspose": "convtranspose", "Gemm": "gemm", "MatMul": "matmul"}
_CONSUMERS = {"BatchNormalization": "bn", "Mul": "mul", "Add": "add"}
_POINTWISE_PRODUCERS = ("Conv", "ConvTranspose")  # Mul/Add folding: channel axis 1 of a conv output
_FLOAT_KINDS = (np.float16, np.float32, np.float64)


# --- reading constants ------------------------------------------------------------------

def _is_default_domain(node: gs.Node) -> bool:
    return node.domain in (None, "", "ai.onnx")


def _producer(tensor: gs.Tensor) -> gs.Node | None:
    return tensor.inputs[0] if len(tensor.inputs) == 1 else None


def constant_value(tensor: gs.Tensor | None) -> np.ndarray | None:
    """The value of an initializer or of a ``Constant`` node's output; None otherwise."""
    if tensor is None or G.is_overridable(tensor):
        return None  # an overridable initializer is a default the user may replace
    if isinstance(tensor, gs.Constant):
        return np.asarray(tensor.values)
    node = _producer(tensor)
    if node is None or node.op != "Constant" or not _is_default_domain(node):
        return None
    attrs = node.attrs
    if isinstance(attrs.get("value"), gs.Constant):
        return np.asarray(attrs["value"].values)
    if "value_float" in attrs:
        return np.asarray(attrs["value_float"], dtype=np.float32)
    if "value_floats" in attrs:
        return np.asarray(attrs["value_floats"], dtype=np.float32)
    return None


def _source(tensor: gs.Tensor) -> str:
    """Why ``tensor`` is not a constant, in words for a refusal note."""
    if G.is_overridable(tensor):
        return "is an initializer listed as a graph input (a default the user may override)"
    node = _producer(tensor)
    if node is None:
        return "is a graph input"
    if node.op == "DequantizeLinear":
        return f"comes through DequantizeLinear {node.name} (Q/DQ is kept for explicit quantization)"
    return f"is computed by {node.op} {node.name}"


def _is_float(array: np.ndarray) -> bool:
    return array.dtype.type in _FLOAT_KINDS


def _present(node: gs.Node, index: int) -> gs.Tensor | None:
    """Optional input ``index`` of ``node`` (None when absent or given as the empty name)."""
    if len(node.inputs) <= index:
        return None
    tensor = node.inputs[index]
    if isinstance(tensor, gs.Variable) and not tensor.name:
        return None
    return tensor


# --- what the consumer does: a per-channel affine map -------------------------------------

def _bn_refusal(bn: gs.Node) -> str | None:
    """Why ``bn`` is not an inference-mode, per-channel BatchNormalization (pure)."""
    if int(bn.attrs.get("training_mode", 0)) == 1:
        return "training_mode=1"
    if "is_test" in bn.attrs and int(bn.attrs["is_test"]) == 0:
        return "is_test=0 (training)"
    if int(bn.attrs.get("spatial", 1)) == 0:
        return "spatial=0 (per-activation statistics)"
    extra = [t.name for t in bn.outputs[1:] if t.name]
    if extra:
        return f"it has {1 + len(extra)} outputs (training mode: running statistics are outputs)"
    if len(bn.inputs) != 5:
        return f"it has {len(bn.inputs)} inputs, expected 5"
    values = []
    for role, tensor in zip(("scale", "bias", "mean", "var"), bn.inputs[1:]):
        value = constant_value(tensor)
        if value is None:
            return f"its {role} '{tensor.name}' {_source(tensor)}"
        if not _is_float(value):
            return f"its {role} '{tensor.name}' has dtype {value.dtype}"
        values.append(value)
    shapes = {v.shape for v in values}
    if len(shapes) != 1 or len(values[0].shape) != 1:
        return f"scale/bias/mean/var shapes {[list(v.shape) for v in values]} are not one [C] vector each"
    var = values[3].astype(np.float64) + float(bn.attrs.get("epsilon", 1e-5))
    if not np.all(var > 0):
        return "var + epsilon is not positive for every channel"
    return None


def _bn_affine(bn: gs.Node) -> tuple[np.ndarray, np.ndarray]:
    """(s, t) in float64 for a BN that passed :func:`_bn_refusal`."""
    gamma, beta, mean, var = (constant_value(t).astype(np.float64) for t in bn.inputs[1:5])
    eps = float(bn.attrs.get("epsilon", 1e-5))
    scale = gamma / np.sqrt(var + eps)
    return scale, beta - scale * mean


def _pointwise_constant(node: gs.Node, x: gs.Tensor) -> gs.Tensor | None:
    """The other operand of a Mul/Add reading ``x`` if it is a constant; else None."""
    if len(node.inputs) != 2:
        return None
    a, b = node.inputs
    if a is x and b is not x:
        other = b
    elif b is x and a is not x:
        other = a
    else:
        return None
    return other if constant_value(other) is not None else None


def _channel_vector(value: np.ndarray, rank: int, channels: int) -> np.ndarray | str:
    """``value`` as a float64 [channels] vector if it broadcasts per channel (axis 1) over a rank-``rank`` output."""
    if value.ndim > rank:
        return f"the constant of shape {list(value.shape)} would raise the output rank above {rank}"
    shape = (1,) * (rank - value.ndim) + tuple(value.shape)
    if any(d != 1 for axis, d in enumerate(shape) if axis != 1) or shape[1] not in (1, channels):
        return f"the constant of shape {list(value.shape)} is not per-channel for {channels} channels"
    if not _is_float(value):
        return f"the constant has dtype {value.dtype}"
    return np.broadcast_to(value.astype(np.float64).reshape(-1), (channels,)).copy()


def _affine(consumer: gs.Node, x: gs.Tensor, rank: int, channels: int) -> tuple[np.ndarray, np.ndarray] | str:
    """The consumer as (s, t) float64 [channels] vectors, or why it is not one (pure)."""
    if consumer.op == "BatchNormalization":
        reason = _bn_refusal(consumer)
        if reason:
            return reason
        scale, shift = _bn_affine(consumer)
        if scale.shape[0] != channels:
            return f"it normalises {scale.shape[0]} channels but the layer has {channels}"
        return scale, shift
    const = _pointwise_constant(consumer, x)
    if const is None:
        return "its other operand is not a constant"
    vector = _channel_vector(constant_value(const), rank, channels)
    if isinstance(vector, str):
        return vector
    if consumer.op == "Mul":
        return vector, np.zeros(channels)
    return np.ones(channels), vector


# --- what the producer holds: weights and bias ----------------------------------------------

@dataclass(frozen=True)
class _Layer:
    """A producer's constant parameters, read without changing anything."""

    weight: gs.Tensor
    w: np.ndarray
    bias: gs.Tensor | None
    b: np.ndarray | None
    channels: int  # output channels (the axis the affine map acts on)
    rank: int | None  # output rank when known from the weight (conv kinds)
    group: int


def _read_layer(node: gs.Node) -> _Layer | str:
    """The producer's weight/bias as arrays, or why they cannot be folded into (pure)."""
    weight = node.inputs[1] if len(node.inputs) > 1 else None
    w = constant_value(weight)
    if w is None:
        return f"its weight '{weight.name if weight is not None else ''}' {_source(weight) if weight is not None else 'is missing'}"
    if not _is_float(w):
        return f"its weight '{weight.name}' has dtype {w.dtype}"
    bias = _present(node, 2)
    b = None
    if bias is not None:
        b = constant_value(bias)
        if b is None:
            return f"its bias '{bias.name}' {_source(bias)}"
    group = int(node.attrs.get("group", 1))
    if node.op == "Conv":
        if w.ndim < 3:
            return f"its weight has rank {w.ndim}"
        return _Layer(weight, w, bias, b, w.shape[0], w.ndim, group)
    if node.op == "ConvTranspose":
        if w.ndim < 3 or group < 1 or w.shape[0] % group:
            return f"its weight shape {list(w.shape)} does not fit group={group}"
        return _Layer(weight, w, bias, b, w.shape[1] * group, w.ndim, group)
    if w.ndim != 2:
        return f"its weight has rank {w.ndim}, expected 2"
    if node.op == "Gemm":
        channels = w.shape[0] if int(node.attrs.get("transB", 0)) else w.shape[1]
        return _Layer(weight, w, bias, b, channels, 2, 1)
    # MatMul: BN normalises axis 1, which is the weight's output axis only for a rank-2 input.
    shape = node.inputs[0].shape
    if shape is None or len(shape) != 2:
        return "its input rank is not known to be 2 (BatchNormalization's channel axis 1 would not be the MatMul's output axis)"
    return _Layer(weight, w, None, None, w.shape[1], 2, 1)


def _scale_weight(op: str, layer: _Layer, scale: np.ndarray, attrs: dict) -> np.ndarray:
    """Weight with output channel ``c`` multiplied by ``scale[c]`` (float64)."""
    w = layer.w.astype(np.float64)
    if op == "Conv":
        return w * scale.reshape((-1,) + (1,) * (w.ndim - 1))
    if op == "ConvTranspose":
        g = layer.group
        blocks = w.reshape((g, w.shape[0] // g) + w.shape[1:])
        return (blocks * scale.reshape((g, 1, w.shape[1]) + (1,) * (w.ndim - 2))).reshape(w.shape)
    if op == "Gemm" and int(attrs.get("transB", 0)):
        return w * scale[:, None]
    return w * scale[None, :]  # Gemm without transB, MatMul: [K, N]


def _held(layer: _Layer) -> "np.ndarray | W.Derived":
    """The producer's weight as the model holds it (a mapped array or a recipe), not a copy."""
    values = getattr(layer.weight, "_values", None)
    held = values.array if isinstance(values, W.WeightValues) else values
    if isinstance(held, (np.ndarray, W.Derived)) and tuple(held.shape) == layer.w.shape and held.dtype == layer.w.dtype:
        return held
    return layer.w


def _folded_weight(op: str, layer: _Layer, scale: np.ndarray, attrs: dict) -> W.Derived:
    """:func:`_scale_weight` as a recipe over the held weight, evaluated a block of rows at a time
    when the model is written (so the folded weight and its source are never both resident).

    Rows are output channels for Conv and Gemm with ``transB`` (the scale is cut with them);
    for MatMul/Gemm ``[K, N]`` and ungrouped ConvTranspose the scale runs along axis 1 of
    every row; a grouped ConvTranspose is computed in one piece.
    """
    source = _held(layer)
    by_row = op == "Conv" or (op == "Gemm" and int(attrs.get("transB", 0)))

    def rows(a: int, b: int) -> np.ndarray:
        block = replace(layer, w=np.asarray(source[a:b]))
        return _scale_weight(op, block, scale[a:b] if by_row else scale, attrs).astype(layer.w.dtype)

    return W.derive(layer.w.shape, layer.w.dtype, rows, [source], f"{op} weight folded with the affine map after it",
                    whole=op == "ConvTranspose" and layer.group > 1)


# --- checks (pure) -------------------------------------------------------------------------

def _output_refusal(producer: gs.Node, consumer: gs.Node, graph_outputs: set[str], outer: set[str]) -> str | None:
    """Why the producer's output cannot disappear into the consumer."""
    out = producer.outputs[0]
    readers = [n for n in out.outputs if n is not consumer]
    if out.name in graph_outputs:
        return f"the {producer.op} output '{out.name}' is a graph output"
    if readers:
        return f"the {producer.op} output '{out.name}' is also read by {len(readers)} other node(s)"
    if out.name in outer:
        return f"the {producer.op} output '{out.name}' is read by a subgraph"
    return None


def _check_backward(producer: gs.Node, consumer: gs.Node, graph_outputs: set[str], outer: set[str]) -> str | None:
    """Can ``consumer`` (BN/Mul/Add) be folded into ``producer``? None or the reason why not."""
    reason = _output_refusal(producer, consumer, graph_outputs, outer)
    if reason:
        return reason
    layer = _read_layer(producer)
    if isinstance(layer, str):
        return layer
    affine = _affine(consumer, producer.outputs[0], layer.rank, layer.channels)
    if isinstance(affine, str):
        return affine
    if layer.b is not None and producer.op != "Gemm" and layer.b.shape != (layer.channels,):
        return f"its bias has shape {list(layer.b.shape)}, expected [{layer.channels}]"
    if producer.op == "Gemm" and layer.b is not None:
        try:
            np.broadcast_shapes(layer.b.shape, (layer.channels,))
        except ValueError:
            return f"its C of shape {list(layer.b.shape)} does not broadcast to [{layer.channels}]"
    return None


def _check_forward(bn: gs.Node, conv: gs.Node, graph_outputs: set[str], outer: set[str]) -> str | None:
    """Can ``bn`` be folded into the Conv that reads it? (BN before a padded conv is refused.)"""
    reason = _output_refusal(bn, conv, graph_outputs, outer)
    if reason:
        return reason
    if len(conv.inputs) < 2 or conv.inputs[0] is not bn.outputs[0] or conv.inputs[1] is bn.outputs[0]:
        return f"Conv {conv.name} does not read it as its data input only"
    auto_pad = conv.attrs.get("auto_pad", "NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    pads = list(conv.attrs.get("pads", []))
    if auto_pad not in ("NOTSET", "VALID") or any(int(p) != 0 for p in pads):
        padding = f"auto_pad={auto_pad}" if auto_pad not in ("NOTSET", "VALID") else f"pads={pads}"
        return (f"the following Conv {conv.name} pads its input ({padding}); folding would leave the "
                "padded border un-normalised")
    layer = _read_layer(conv)
    if isinstance(layer, str):
        return f"Conv {conv.name}: {layer}"
    scale, _ = _bn_affine(bn)
    if scale.shape[0] != layer.w.shape[1] * layer.group:
        return f"it normalises {scale.shape[0]} channels but Conv {conv.name} reads {layer.w.shape[1] * layer.group}"
    if layer.b is not None and layer.b.shape != (layer.channels,):
        return f"Conv {conv.name} bias has shape {list(layer.b.shape)}"
    return None


# --- rewrites ----------------------------------------------------------------------------

def _fresh(names: set[str], base: str) -> str:
    name, i = base, 1
    while name in names:
        name, i = f"{base}_{i}", i + 1
    names.add(name)
    return name


def _set_input(node: gs.Node, index: int, tensor: gs.Tensor) -> None:
    while len(node.inputs) < index:
        node.inputs.append(gs.Variable.empty())
    if len(node.inputs) == index:
        node.inputs.append(tensor)
    else:
        node.inputs[index] = tensor


def _clone_note(node: gs.Node, tensor: gs.Tensor, log: PassLog) -> None:
    others = [n for n in tensor.outputs if n is not node]
    if others:
        log.note(f"{node.op} {node.name}: weight '{tensor.name}' is shared with {len(others)} other node(s); "
                 "folded into a private copy")


def _stamp(node: gs.Node, rule: str, sources: list[str]) -> None:
    earlier = G.meta(node).get(G.PROVENANCE_FROM, "")
    merged = [s for s in earlier.split(",") if s] + [s for s in sources if s]
    G.stamp(node, PASS_NAME, rule, list(dict.fromkeys(merged)))


def _detach(graph: gs.Graph, node: gs.Node, local: dict[int, gs.Node]) -> list[gs.Tensor]:
    """Disconnect ``node`` and drop it from ``local`` (``graph.nodes`` is filtered once at the end,
    which keeps a pass over a large graph linear); return its former inputs."""
    inputs = list(node.inputs)
    node.inputs.clear()
    node.outputs.clear()
    local.pop(id(node), None)
    return inputs


def _drop_dead_constants(graph: gs.Graph, tensors: list[gs.Tensor], graph_outputs: set[str],
                         outer: set[str], local: dict[int, gs.Node]) -> None:
    """Remove ``Constant`` nodes of this graph whose output nobody reads any more."""
    for tensor in tensors:
        node = _producer(tensor) if isinstance(tensor, gs.Variable) else None
        if (node is None or node.op != "Constant" or id(node) not in local or tensor.outputs
                or tensor.name in graph_outputs or tensor.name in outer):
            continue
        _detach(graph, node, local)


def _rewrite_backward(graph: gs.Graph, rule: str, producer: gs.Node, consumer: gs.Node, names: set[str],
                      log: PassLog, graph_outputs: set[str], outer: set[str], local: dict[int, gs.Node]) -> None:
    """Fold the consumer's affine map into ``producer``; the producer takes over the consumer's output."""
    layer = _read_layer(producer)
    scale, shift = _affine(consumer, producer.outputs[0], layer.rank, layer.channels)
    dtype = layer.w.dtype
    old = [layer.weight] + ([layer.bias] if layer.bias is not None else [])
    _clone_note(producer, layer.weight, log)
    new_w = gs.Constant(_fresh(names, f"{layer.weight.name}_folded"),
                        W.held(_folded_weight(producer.op, layer, scale, producer.attrs)))
    producer.inputs[1] = new_w

    out = consumer.outputs[0]
    dead = _detach(graph, consumer, local)
    add_node = None
    if producer.op == "MatMul":
        if np.any(shift != 0):
            bias = gs.Constant(_fresh(names, f"{consumer.name or out.name}_shift"), shift.astype(dtype))
            add_node = gs.Node("Add", _fresh(names, f"{consumer.name or out.name}_bias"),
                               inputs=[producer.outputs[0], bias], outputs=[out])
            index = next(i for i, n in enumerate(graph.nodes) if n is producer) + 1
            graph.nodes.insert(index, add_node)
            local[id(add_node)] = add_node
            _stamp(add_node, rule, [producer.name, consumer.name])
    else:
        if producer.op == "Gemm":
            beta = float(producer.attrs.get("beta", 1.0))
            c = layer.b.astype(np.float64) * beta if layer.b is not None else np.zeros(1)
            new_b = scale * c + shift
            producer.attrs["beta"] = 1.0
        else:
            b = layer.b.astype(np.float64) if layer.b is not None else np.zeros(layer.channels)
            new_b = scale * b + shift
        bias_name = layer.bias.name if layer.bias is not None else f"{producer.name or layer.weight.name}_bias"
        _set_input(producer, 2, gs.Constant(_fresh(names, f"{bias_name}_folded"), new_b.astype(dtype)))
    if add_node is None:
        producer.outputs[0] = out
    _stamp(producer, rule, [producer.name, consumer.name])
    _drop_dead_constants(graph, old + dead, graph_outputs, outer, local)


def _rewrite_forward(graph: gs.Graph, bn: gs.Node, conv: gs.Node, names: set[str], log: PassLog,
                     graph_outputs: set[str], outer: set[str], local: dict[int, gs.Node]) -> None:
    """Fold ``bn`` into the unpadded Conv after it: scale input channels, move the shift into the bias."""
    layer = _read_layer(conv)
    scale, shift = _bn_affine(bn)
    g = layer.group
    dtype = layer.w.dtype
    view = (g, 1, layer.w.shape[1]) + (1,) * (layer.w.ndim - 2)

    def scaled_inputs(w: np.ndarray) -> np.ndarray:
        """Whole groups of rows of the weight with their input channels scaled."""
        w = np.asarray(w, dtype=np.float64)
        blocks = w.reshape((g, w.shape[0] // g) + w.shape[1:])  # [g, Cout/g, Cin/g, k...]
        return (blocks * scale.reshape(view)).reshape(w.shape).astype(dtype)

    w = layer.w.astype(np.float64)
    blocks = w.reshape((g, w.shape[0] // g) + w.shape[1:])
    added = (blocks * shift.reshape(view)).sum(axis=tuple(range(2, blocks.ndim))).reshape(-1)
    del w, blocks
    b = layer.b.astype(np.float64) if layer.b is not None else np.zeros(layer.channels)
    old = [layer.weight] + ([layer.bias] if layer.bias is not None else [])
    _clone_note(conv, layer.weight, log)
    source = _held(layer)
    new_w = W.derive(layer.w.shape, dtype, lambda a, c: scaled_inputs(source[a:c]), [source],
                     "Conv weight folded with the BatchNormalization before it", whole=g > 1)  # rows: whole groups
    conv.inputs[1] = gs.Constant(_fresh(names, f"{layer.weight.name}_folded"), W.held(new_w))
    bias_name = layer.bias.name if layer.bias is not None else f"{conv.name or layer.weight.name}_bias"
    _set_input(conv, 2, gs.Constant(_fresh(names, f"{bias_name}_folded"), (b + added).astype(dtype)))
    conv.inputs[0] = bn.inputs[0]
    dead = _detach(graph, bn, local)
    _stamp(conv, "bn-conv", [bn.name, conv.name])
    _drop_dead_constants(graph, old + dead, graph_outputs, outer, local)


# --- driver ------------------------------------------------------------------------------

def _label(node: gs.Node) -> str:
    return node.name or (node.outputs[0].name if node.outputs else node.op)


def _fold_graph(graph: gs.Graph, ctx: PassContext, log: PassLog, names: set[str]) -> bool:
    """Apply every rule once over ``graph`` (not its bodies), in topological order."""
    graph_outputs = {t.name for t in graph.outputs}
    outer = G.body_reads(graph)
    local = {id(n): n for n in graph.nodes}
    changed = False
    for node in list(graph.nodes):
        if id(node) not in local or node.op not in _CONSUMERS or not _is_default_domain(node) or not node.inputs:
            continue
        is_bn = node.op == "BatchNormalization"
        if is_bn:
            reason = _bn_refusal(node)
            if reason:
                log.note(f"BatchNormalization {_label(node)} not folded: {reason}")
                continue
        reasons = []
        candidates = [node.inputs[0]] if is_bn else [t for t in node.inputs if _pointwise_constant(node, t) is not None]
        producer = next((_producer(t) for t in candidates if _producer(t) is not None and id(_producer(t)) in local
                         and _producer(t).op in _PRODUCERS and _is_default_domain(_producer(t))), None)
        if producer is not None and not is_bn and producer.op not in _POINTWISE_PRODUCERS:
            producer = None
        if producer is not None:
            rule = f"{_PRODUCERS[producer.op]}-{_CONSUMERS[node.op]}"
            reason = _check_backward(producer, node, graph_outputs, outer)
            if reason is None:
                if ctx.permit(rule, _label(node)):
                    _rewrite_backward(graph, rule, producer, node, names, log, graph_outputs, outer, local)
                    log.count(rule)
                    changed = True
                continue
            if not is_bn:
                log.note(f"{node.op} {_label(node)} not folded into {producer.op} {_label(producer)}: {reason}")
                continue
            reasons.append(f"into {producer.op} {_label(producer)}: {reason}")
        elif not is_bn:
            continue
        else:
            reasons.append("its input is not produced by a Conv/ConvTranspose/Gemm/MatMul in the same graph")
        readers = node.outputs[0].outputs
        if len(readers) == 1 and readers[0].op == "Conv" and id(readers[0]) in local:
            conv = readers[0]
            reason = _check_forward(node, conv, graph_outputs, outer)
            if reason is None:
                if ctx.permit("bn-conv", _label(node)):
                    _rewrite_forward(graph, node, conv, names, log, graph_outputs, outer, local)
                    log.count("bn-conv")
                    changed = True
                continue
            reasons.append(f"into the following Conv: {reason}")
        log.note(f"BatchNormalization {_label(node)} not folded: {'; '.join(reasons)}")
    if changed:
        graph.nodes = [n for n in graph.nodes if id(n) in local]
    return changed


def _has_candidates(model: G.Model) -> bool:
    """Whether any rule could apply or refuse: a BatchNormalization, or a Mul/Add beside a Conv."""
    ops = {n.op for n in G.walk_nodes(model.graph) if n.domain in ("", "ai.onnx", None)}
    return "BatchNormalization" in ops or bool(ops & {"Mul", "Add"} and ops & set(_POINTWISE_PRODUCERS))


@register
class FoldConvBN(Pass):
    """Fold inference BatchNormalization and per-channel Mul/Add into Conv/ConvTranspose/Gemm/MatMul weights."""

    name = PASS_NAME
    summary = "Fold inference BatchNormalization and per-channel Mul/Add into the weights of the Conv/Gemm/MatMul before it."
    default_order = 50

    def run(self, model: G.Model, ctx: PassContext, log: PassLog) -> bool:
        if not _has_candidates(model):
            return False
        names = G.all_names(model.graph)  # new tensor names must be unique across every scope
        changed = False
        for sub in list(G.iter_graphs(model.graph)):
            changed |= _fold_graph(sub, ctx, log, names)
        return changed
