"""Pass ``fold-conv-bn``: fold inference BatchNormalization and per-channel Mul/Add into weights.

An exporter that leaves ``Conv → BatchNormalization`` unfused makes every engine do two
passes over the activation where one would do, and makes FP16 engines round twice.
Inference BN is a per-channel affine map ``y = s·x + t`` (``s = γ/√(var+ε)``,
``t = β − s·mean``), so it can be moved into the weights of the layer before it
(:func:`fold`, the one place the arithmetic lives):

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
the fold adds one rounding, not several. A large folded weight is held as a recipe over the
weight it comes from (:mod:`surgeon.weights`), computed a block of rows at a time when the
model is written or run, so the folded weight and its source are never both resident.

The rules are patterns on the rewrite engine (one rule class, instantiated per layer and
affine op, as onnxscript's batch-norm fusion is a base and small pattern classes): ``check`` reads the constants and returns
the affine map it found, or the reason it refuses, which the report shows as a note
("BatchNormalization bn3 not folded: training_mode=1"): training-mode BN
(``training_mode=1``, ``is_test=0``, more than one output), per-activation BN
(``spatial=0``), parameters that are not constants (an overridable initializer included),
a layer output that something else also reads (another node, a graph output, a subgraph
through outer scope), a weight that comes through ``DequantizeLinear`` (the Q/DQ pair is
TensorRT's explicit-quantization contract and stays intact), and BN before a padded Conv.
Constants may be initializers or outputs of ``Constant`` nodes (paddle2onnx models use the
latter); ``Constant`` nodes left without readers are removed by the engine.

Shared weights are **cloned**: the folded layer always gets new initializers named after
the old ones, so another node reading the same weight keeps the original values. The
report notes each clone of a shared weight (it costs memory once per sharing layer).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from surgeon import graph_ops as K
from surgeon import weights as W
from surgeon.pipeline.registry import register
from surgeon.rewrite import Match, RulePass, Node, Opt, Rule, RuleContext, fail, ok

PASS_NAME = "fold-conv-bn"
_FLOAT_KINDS = (np.float16, np.float32, np.float64)


# --- the arithmetic ------------------------------------------------------------------------

def fold(kind: str, w: "np.ndarray | W.Derived", b: np.ndarray | None, scale: np.ndarray, shift: np.ndarray,
         group: int = 1) -> tuple["np.ndarray | W.Derived", np.ndarray]:
    """The weight and bias of a layer whose output channel ``c`` is then mapped to ``scale[c]·y + shift[c]``.

    ``kind``: ``conv`` (output channels on axis 0), ``convtranspose`` (axis 1 inside each
    of ``group`` blocks), ``gemm-t`` (``transB=1``: rows), ``gemm``/``matmul`` (columns), or
    ``bn-conv``, where the map comes *before* a Conv: its input channels are scaled and the
    shift, summed through the kernel, moves into the bias. ``b`` None is a zero bias (for
    ``matmul`` the returned bias is the shift, to be added by a separate node). Computed
    in float64, returned in ``w``'s dtype. A large weight comes back as a recipe
    (:func:`folded_weight`); the bias is computed now.
    """
    new_w = folded_weight(kind, w, scale, group)
    if kind == "bn-conv":
        added = _kernel_sums(w, shift, group)
        bias = (np.zeros(w.shape[0]) if b is None else b.astype(np.float64)) + added
        return new_w, bias.astype(w.dtype)
    if kind == "matmul":
        return new_w, shift.astype(w.dtype)
    bias = scale * (np.zeros(scale.shape[0]) if b is None else b.astype(np.float64)) + shift
    return new_w, bias.astype(w.dtype)


def scale_rows(kind: str, w: np.ndarray, scale: np.ndarray, group: int = 1) -> np.ndarray:
    """``w`` (whole, or a block of its rows with ``scale`` cut to match where it runs along
    rows) with its channels scaled: float64 arithmetic, one rounding to ``w``'s dtype.

    The product is computed by numpy in float64 and cast once on the way out (``out=``,
    ``casting="unsafe"``), the same values as ``(w.astype(float64) * s).astype(w.dtype)``
    without a float64 copy of the weight.
    """
    w = np.asarray(w)
    if kind == "conv" or kind == "gemm-t":
        view = scale.reshape((-1,) + (1,) * (w.ndim - 1))
    elif kind in ("gemm", "matmul"):
        view = scale[None, :]
    elif kind == "convtranspose":  # [Cin, Cout/g, k...]: output channel gi*Cout/g + j
        blocks = w.reshape((group, w.shape[0] // group) + w.shape[1:])
        out = np.empty(blocks.shape, w.dtype)
        np.multiply(blocks, scale.reshape((group, 1, w.shape[1]) + (1,) * (w.ndim - 2)), out=out, casting="unsafe")
        return out.reshape(w.shape)
    else:  # bn-conv: [Cout, Cin/g, k...], input channel gi*Cin/g + c
        blocks = w.reshape((group, w.shape[0] // group) + w.shape[1:])
        out = np.empty(blocks.shape, w.dtype)
        np.multiply(blocks, scale.reshape((group, 1, w.shape[1]) + (1,) * (w.ndim - 2)), out=out, casting="unsafe")
        return out.reshape(w.shape)
    out = np.empty(w.shape, w.dtype)
    np.multiply(w, view, out=out, casting="unsafe")
    return out


def folded_weight(kind: str, w: "np.ndarray | W.Derived", scale: np.ndarray, group: int = 1) -> W.Derived:
    """:func:`scale_rows` as a recipe over ``w`` (a mapped weight or another recipe), evaluated a
    block of rows at a time where rows are separable: output channels for ``conv`` and
    ``gemm-t`` (the scale is cut with them); for ``gemm``/``matmul``, ungrouped
    ``convtranspose`` and ungrouped ``bn-conv`` every row takes the whole scale. Grouped
    ``convtranspose``/``bn-conv`` are computed in one piece."""
    by_row = kind in ("conv", "gemm-t")

    def rows(a: int, b: int) -> np.ndarray:
        return scale_rows(kind, w[a:b], scale[a:b] if by_row else scale, group)

    whole = kind in ("convtranspose", "bn-conv") and group > 1
    return W.derive(w.shape, w.dtype, rows, [w], f"{kind} weight folded with a per-channel affine map", whole=whole)


def _kernel_sums(w: "np.ndarray | W.Derived", shift: np.ndarray, group: int) -> np.ndarray:
    """For ``bn-conv``: per output channel, the sum over its kernel of ``w · shift`` (the
    shift's contribution to the bias), in float64, a block of rows at a time."""
    cout, cin_g = w.shape[0], w.shape[1]
    per_group = shift.reshape(group, cin_g)
    out = np.empty(cout)
    step = max(1, W.CHUNK_BYTES // max(1, w.nbytes // max(1, cout)))
    for a in range(0, cout, step):
        block = np.asarray(w[a:a + step]).reshape(min(step, cout - a), cin_g, -1)
        shifts = per_group[np.arange(a, a + block.shape[0]) // (cout // group)]
        out[a:a + block.shape[0]] = np.einsum("rck,rc->r", block, shifts, dtype=np.float64)
    W.release(w)
    return out


# --- reading the consumer: a per-channel affine map ------------------------------------------

def _is_float(array: np.ndarray) -> bool:
    return array.dtype.type in _FLOAT_KINDS


def _bn_affine(bn: gs.Node) -> tuple[np.ndarray, np.ndarray] | str:
    """(s, t) in float64 for an inference-mode, per-channel BatchNormalization, or why it is not one."""
    if int(bn.attrs.get("training_mode", 0)) == 1:
        return "training_mode=1"
    if "is_test" in bn.attrs and int(bn.attrs["is_test"]) == 0:
        return "is_test=0 (training)"
    if int(bn.attrs.get("spatial", 1)) == 0:
        return "spatial=0 (per-activation statistics)"
    extra = [t.name for t in bn.outputs[1:] if t.name]
    if extra:
        return f"it has {1 + len(extra)} outputs (training mode: running statistics are outputs)"
    values = []
    for role, tensor in zip(("scale", "bias", "mean", "var"), bn.inputs[1:5]):
        value = K.constant(tensor)
        if value is None:
            return f"its {role} '{tensor.name}' {K.not_constant_reason(tensor)}"
        if not _is_float(value):
            return f"its {role} '{tensor.name}' has dtype {value.dtype}"
        values.append(value.astype(np.float64))
    if len({v.shape for v in values}) != 1 or values[0].ndim != 1:
        return f"scale/bias/mean/var shapes {[list(v.shape) for v in values]} are not one [C] vector each"
    gamma, beta, mean, var = values
    var = var + float(bn.attrs.get("epsilon", 1e-5))
    if not np.all(var > 0):
        return "var + epsilon is not positive for every channel"
    scale = gamma / np.sqrt(var)
    return scale, beta - scale * mean


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


# --- reading the layer: weight and bias --------------------------------------------------------

@dataclass(frozen=True)
class Layer:
    """A layer's constant parameters, read without changing anything."""

    kind: str  # see fold()
    w: "np.ndarray | W.Derived"  # a mapped weight, or a recipe another pass derived (never computed here)
    b: np.ndarray | None
    channels: int  # output channels (the axis the affine map acts on)
    rank: int  # output rank the map broadcasts over (conv kinds: the weight's)
    group: int


def _read_layer(node: gs.Node, w_t: gs.Tensor, b_t: gs.Tensor | None, ctx: RuleContext) -> Layer | str:
    """The layer's weight and bias as arrays, or why they cannot be folded into (pure)."""
    w = K.constant(w_t, held=True)  # a recipe stays one: the fold derives from it
    if w is None:
        return f"its weight '{w_t.name}' {K.not_constant_reason(w_t)}"
    if not _is_float(w):
        return f"its weight '{w_t.name}' has dtype {w.dtype}"
    b = None
    if b_t is not None:
        b = K.constant(b_t)
        if b is None:
            return f"its bias '{b_t.name}' {K.not_constant_reason(b_t)}"
    group = int(node.attrs.get("group", 1))
    if node.op == "Conv":
        if w.ndim < 3:
            return f"its weight has rank {w.ndim}"
        return Layer("conv", w, b, w.shape[0], w.ndim, group)
    if node.op == "ConvTranspose":
        if w.ndim < 3 or group < 1 or w.shape[0] % group:
            return f"its weight shape {list(w.shape)} does not fit group={group}"
        return Layer("convtranspose", w, b, w.shape[1] * group, w.ndim, group)
    if w.ndim != 2:
        return f"its weight has rank {w.ndim}, expected 2"
    if node.op == "Gemm":
        trans = int(node.attrs.get("transB", 0))
        return Layer("gemm-t" if trans else "gemm", w, b, w.shape[0] if trans else w.shape[1], 2, 1)
    if ctx.rank(node.inputs[0]) != 2:  # BN's channel axis 1 is the MatMul's output axis only then
        return "its input rank is not known to be 2 (BatchNormalization's channel axis 1 would not be the MatMul's output axis)"
    return Layer("matmul", w, None, w.shape[1], 2, 1)


# --- rules --------------------------------------------------------------------------------

def _label(node) -> str:
    return node.name or (node.outputs[0].name if node.outputs else node.op)


def _layer_pattern(op: str) -> Node:
    if op == "MatMul":
        return Node("MatMul", "x", "w", bind="layer")
    return Node(op, "x", "w", Opt("b"), bind="layer")


class FoldIntoLayer(Rule):
    """The ``layer_op`` before an ``affine_op`` (a BN, Mul or Add) absorbs it; named ``conv-bn`` and so on."""

    def __init__(self, layer_op: str, affine_op: str):
        affine = "bn" if affine_op == "BatchNormalization" else affine_op.lower()
        self.name = f"{layer_op.lower()}-{affine}"
        layer = _layer_pattern(layer_op)
        if affine_op == "BatchNormalization":
            self.pattern = Node("BatchNormalization", layer, "scale", "bias", "mean", "var", bind="affine")
        else:
            self.pattern = Node(affine_op, layer, "c", bind="affine")

    def outputs_problem(self, m: Match) -> str | None:
        layer, out = m["layer"], m["layer"].outputs[0]
        if m.scope.is_graph_output(out):
            return f"into {layer.op} {_label(layer)}: the {layer.op} output '{out.name}' is a graph output"
        readers = [n for n in out.outputs if n is not m["affine"] and m.scope.contains(n)]
        if readers:
            return f"into {layer.op} {_label(layer)}: the {layer.op} output '{out.name}' is also read by {len(readers)} other node(s)"
        if len(out.outputs) > 1 or out.name in m.scope.body_reads:
            return f"into {layer.op} {_label(layer)}: the {layer.op} output '{out.name}' is read by a subgraph"
        return super().outputs_problem(m)

    def affine(self, m: Match, layer: Layer) -> tuple[np.ndarray, np.ndarray] | str:
        node = m["affine"]
        if node.op == "BatchNormalization":
            found = _bn_affine(node)
            if isinstance(found, str) or found[0].shape[0] == layer.channels:
                return found
            return f"it normalises {found[0].shape[0]} channels but the layer has {layer.channels}"
        value = K.constant(m["c"])
        if value is None:
            return "its other operand is not a constant"
        vector = _channel_vector(value, layer.rank, layer.channels)
        if isinstance(vector, str):
            return vector
        return (vector, np.zeros(layer.channels)) if node.op == "Mul" else (np.ones(layer.channels), vector)

    def check(self, m: Match, ctx: RuleContext):
        node = m["layer"]
        if m["affine"].op == "BatchNormalization":
            problem = _bn_affine(m["affine"])
            if isinstance(problem, str):
                return fail(problem)
        layer = _read_layer(node, m["w"], m.roles.get("b"), ctx)
        if isinstance(layer, str):
            return fail(f"into {node.op} {_label(node)}: {layer}")
        affine = self.affine(m, layer)
        if isinstance(affine, str):
            return fail(f"into {node.op} {_label(node)}: {affine}")
        if layer.b is not None and layer.kind.startswith("gemm"):
            try:
                np.broadcast_shapes(layer.b.shape, (layer.channels,))
            except ValueError:
                return fail(f"into Gemm {_label(node)}: its C of shape {list(layer.b.shape)} "
                            f"does not broadcast to [{layer.channels}]")
        elif layer.b is not None and layer.b.shape != (layer.channels,):
            return fail(f"into {node.op} {_label(node)}: its bias has shape {list(layer.b.shape)}, "
                        f"expected [{layer.channels}]")
        return ok(read=layer, scale=affine[0], shift=affine[1])

    def rewrite(self, m: Match, b) -> list[gs.Tensor]:
        node, layer, w_t = m["layer"], m["read"], m["w"]
        _clone_note(b, node, w_t)
        bias = layer.b
        if layer.kind.startswith("gemm") and bias is not None:
            bias = bias.astype(np.float64) * float(node.attrs.get("beta", 1.0))
        new_w, new_b = fold(layer.kind, layer.w, bias, m["scale"], m["shift"], layer.group)
        w_c = b.named(f"{w_t.name}_folded", new_w)
        if layer.kind == "matmul":
            y = b.copy_of(node, [m["x"], w_c])
            if not np.any(m["shift"] != 0):
                return [y]
            return [b.op("Add", [y, b.named(f"{_label(m['affine'])}_shift", new_b)], name=f"{_label(m['affine'])}_bias")]
        b_name = m["b"].name if m["b"] is not None else f"{_label(node)}_bias"
        attrs = dict(node.attrs, beta=1.0) if layer.kind.startswith("gemm") else None
        return [b.copy_of(node, [m["x"], w_c, b.named(f"{b_name}_folded", new_b)], attrs)]

    def note(self, node, reason: str) -> str:
        return f"{node.op} {_label(node)} not folded: {reason}"


def _clone_note(b, node: gs.Node, weight: gs.Tensor) -> None:
    others = [n for n in weight.outputs if n is not node]
    if others:
        b.note(f"{node.op} {node.name}: weight '{weight.name}' is shared with {len(others)} other node(s); "
               "folded into a private copy")


class BNConv(Rule):
    """A BN no layer before it absorbs, folded into the unpadded Conv that alone reads it."""

    name = "bn-conv"
    pattern = Node("Conv", Node("BatchNormalization", "x", "scale", "bias", "mean", "var", bind="affine"),
                   "w", Opt("b"), bind="layer")

    def outputs_problem(self, m: Match) -> str | None:
        bn, out = m["affine"], m["affine"].outputs[0]
        if m.scope.is_graph_output(out) or len(out.outputs) > 1 or out.name in m.scope.body_reads:
            return f"BatchNormalization {_label(bn)} not folded into the following Conv: its output '{out.name}' is also read elsewhere"
        return super().outputs_problem(m)

    def check(self, m: Match, ctx: RuleContext):
        bn, conv = m["affine"], m["layer"]
        prefix = f"BatchNormalization {_label(bn)} not folded into the following Conv {_label(conv)}"
        if m["w"] is bn.outputs[0]:
            return fail(f"{prefix}: it reads it as its weight")
        auto_pad = conv.attrs.get("auto_pad", "NOTSET")
        auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
        pads = list(conv.attrs.get("pads", []))
        if auto_pad not in ("NOTSET", "VALID") or any(int(p) != 0 for p in pads):
            padding = f"auto_pad={auto_pad}" if auto_pad not in ("NOTSET", "VALID") else f"pads={pads}"
            return fail(f"{prefix}: the Conv pads its input ({padding}); folding would leave the padded border "
                        "un-normalised")
        affine = _bn_affine(bn)
        if isinstance(affine, str):
            return fail(f"{prefix}: {affine}")
        layer = _read_layer(conv, m["w"], m.roles.get("b"), ctx)
        if isinstance(layer, str):
            return fail(f"{prefix}: {layer}")
        if affine[0].shape[0] != layer.w.shape[1] * layer.group:
            return fail(f"{prefix}: it normalises {affine[0].shape[0]} channels but the Conv reads "
                        f"{layer.w.shape[1] * layer.group}")
        if layer.b is not None and layer.b.shape != (layer.channels,):
            return fail(f"{prefix}: the Conv bias has shape {list(layer.b.shape)}")
        return ok(read=layer, scale=affine[0], shift=affine[1])

    def rewrite(self, m: Match, b) -> list[gs.Tensor]:
        conv, layer = m["layer"], m["read"]
        _clone_note(b, conv, m["w"])
        new_w, new_b = fold("bn-conv", layer.w, layer.b, m["scale"], m["shift"], layer.group)
        b_name = m["b"].name if m["b"] is not None else f"{_label(conv)}_bias"
        return [b.copy_of(conv, [m["x"], b.named(f"{m['w'].name}_folded", new_w), b.named(f"{b_name}_folded", new_b)])]

    def note(self, node, reason: str) -> str:
        return reason


class UnfoldedBN(Rule):
    """Says why a BatchNormalization no other rule could reach stays (it never rewrites)."""

    name = "bn-near-miss"
    pattern = Node("BatchNormalization", "x", "_", "_", "_", "_", bind="affine", more=True)

    def match(self, node: gs.Node, scope: K.Scope) -> Match | None:
        found = super().match(node, scope)
        if found is None:
            return None
        src = scope.producer(node.inputs[0])
        if src is not None and src.op in ("Conv", "ConvTranspose", "Gemm", "MatMul") and K.is_default_domain(src):
            return None  # that rule's check speaks
        readers = node.outputs[0].outputs if node.outputs else []
        if len(readers) == 1 and readers[0].op == "Conv" and scope.contains(readers[0]):
            return None  # bn-conv's check speaks
        return found

    def check(self, m: Match, ctx: RuleContext):
        found = _bn_affine(m["affine"])
        if isinstance(found, str):
            return fail(found)
        return fail("its input is not produced by a Conv/ConvTranspose/Gemm/MatMul in the same graph, "
                    "and no single unpadded Conv reads it")

    def note(self, node, reason: str) -> str:
        return f"BatchNormalization {_label(node)} not folded: {reason}"


_PAIRS = [("Conv", "BatchNormalization"), ("ConvTranspose", "BatchNormalization"), ("Gemm", "BatchNormalization"),
          ("MatMul", "BatchNormalization"), ("Conv", "Mul"), ("Conv", "Add"), ("ConvTranspose", "Mul"),
          ("ConvTranspose", "Add")]
RULES = [FoldIntoLayer(layer, affine) for layer, affine in _PAIRS] + [BNConv(), UnfoldedBN()]


@register
class FoldConvBN(RulePass):
    """Fold inference BatchNormalization and per-channel Mul/Add into Conv/ConvTranspose/Gemm/MatMul weights."""

    name = PASS_NAME
    summary = "Fold inference BatchNormalization and per-channel Mul/Add into the weights of the Conv/Gemm/MatMul before it."
    default_order = 50
    rules = tuple(RULES)  # several sweeps: a BN a later rule folds forward leaves no stale note
