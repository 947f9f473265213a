"""``eliminate-neutral-ops``: remove nodes whose output provably equals one of their inputs.

Exporters leave many of these: ``x + 0`` and ``x * 1`` where a bias or scale is zero or
one, ``And(x, true)`` / ``Or(x, false)`` and ``Where`` on an all-true or all-false
constant condition in attention-mask code (random-init and pruned models, deduplicated initializers), ``Dropout`` in inference,
``Cast`` to the type a tensor already has or a lossless ``Cast`` round trip, a ``Transpose`` with the identity permutation,
``Concat``/``Sum``/``Max`` of a single input, a ``Reshape``/``Expand``/``Slice``/``Tile``/
``Pad`` that keeps everything. Each is a node TensorRT and ONNX Runtime must still
schedule, and a layer a debug report has to name.

"Provably" is the rule: the value must be an exact identity (``x + 0``, ``x * 1``, ``x - 0``,
``x / 1``, ``x ** 1`` are exact in IEEE arithmetic; only the sign of a zero can change
in ``-0 + 0``), and broadcasting must not change the shape: the constant has no more
dims than ``x`` and each of its dims is 1 or equal to ``x``'s static dim. Only constants
are read (initializers and ``Constant`` nodes, never an initializer a user may override).
A refusal that is close to a rewrite (an all-zero bias that would broadcast ``x`` to a
larger shape, a Dropout in training mode, a used Dropout mask) is reported as a note.

The node is bypassed (:func:`surgeon.graph_ops.bypass`): readers of its output read its
input. When the output is a graph output, the input's producer writes the output name
instead, so graph outputs keep their names and order; where that is impossible (the
output copies a graph input or a constant) the node stays. Bodies of If/Loop/Scan are
handled like the main graph. Each rule is a pattern on the rewrite engine whose check
returns the input the node equals, or the note; the engine does the bypass.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from surgeon import graph_ops as K
from surgeon import graph as G
from surgeon.pipeline.registry import register
from surgeon.rewrite import Match, RulePass, Node, Rule, RuleContext, fail, ok

logger = logging.getLogger(__name__)

# op -> (neutral constant, operand positions the constant may take)
_BINARY = {"Add": (0, (0, 1)), "Sub": (0, (1,)), "Mul": (1, (0, 1)), "Div": (1, (1,)), "Pow": (1, (1,)),
           "And": (True, (0, 1)), "Or": (False, (0, 1)), "Xor": (False, (0, 1))}
_VARIADIC = ("Sum", "Mean", "Max", "Min", "Concat")
_INT64_BIG = 2**31 - 1  # slice ends at or past this are "to the end" sentinels in practice


def _rule_binary(node: gs.Node) -> tuple[str, gs.Tensor] | str | None:
    """``x (+|-|*|/|**) neutral``: (rule, x) to bypass, a refusal note, or None (no match)."""
    neutral, positions = _BINARY[node.op]
    if len(node.inputs) != 2:
        return None
    for pos in positions:
        c = K.constant(node.inputs[pos], K.SMALL)
        if c is None or c.size == 0 or not np.all(c == neutral):
            continue
        x = node.inputs[1 - pos]
        if isinstance(x, gs.Constant):
            return None  # constant folding's job
        if node.op == "Pow" and x.dtype is not None and node.outputs[0].dtype not in (None, x.dtype):
            return None
        if not K.broadcast_keeps_shape(K.shape_of(x), c.shape):
            return (f"{node.op} {node.name} by neutral {neutral} kept: broadcasting with shape "
                    f"{list(c.shape)} may change the shape of {x.name} ({K.shape_of(x)})")
        return f"{node.op.lower()}-neutral", x
    return None


def _rule_where(node: gs.Node) -> tuple[str, gs.Tensor] | str | None:
    """``Where(c, a, b)`` with a constant ``c`` that is all true (→ ``a``) or all false (→ ``b``).

    The exporters' mask code leaves these once shapes are folded (``torch.where`` on a
    condition computed from constants). The output is the broadcast of all three
    inputs, so the chosen branch is the output only when neither ``c`` nor the other
    branch can broadcast it to a larger shape: ``c`` is checked by its constant shape,
    the other branch by its shape when that is static.
    """
    if len(node.inputs) != 3:
        return None
    c = K.constant(node.inputs[0], K.SMALL)
    if c is None or c.size == 0 or c.dtype != np.bool_ or not (np.all(c) or not np.any(c)):
        return None
    chosen, other = (node.inputs[1], node.inputs[2]) if np.all(c) else (node.inputs[2], node.inputs[1])
    if isinstance(chosen, gs.Constant):
        return None  # constant folding's job
    shape = K.shape_of(chosen)
    other_value = K.constant(other, K.SMALL)
    other_shape = tuple(other_value.shape) if other_value is not None else K.shape_of(other)
    static_other = other_shape is not None and all(isinstance(d, (int, np.integer)) for d in other_shape)
    if not (K.broadcast_keeps_shape(shape, c.shape) and static_other and K.broadcast_keeps_shape(shape, tuple(other_shape))):
        return (f"Where {node.name} on a constant condition kept: broadcasting with the condition "
                f"{list(c.shape)} or the other branch ({other_shape}) may change the shape of {chosen.name} ({shape})")
    return ("where-constant-condition", chosen)


def _rule_dropout(node: gs.Node, opset: int) -> tuple[str, gs.Tensor] | str | None:
    if opset < 7 and not node.attrs.get("is_test", 0):
        return f"Dropout {node.name} kept: is_test=0 (training mode) at opset {opset}"
    training = K.present(node, 2)
    if training is not None:
        value = K.constant(training, K.SMALL)
        if value is None or bool(np.asarray(value).ravel()[0]):
            return f"Dropout {node.name} kept: training_mode is not a constant false"
    return "dropout-inference", node.inputs[0]


def _np_dtype(onnx_type: int):
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(onnx_type))
    except (KeyError, TypeError, ValueError):
        return None


def _same_dtype(a, b) -> bool:
    try:
        return a is not None and b is not None and np.dtype(a) == np.dtype(b)
    except TypeError:
        return False


def _rule_cast(node: gs.Node) -> tuple[str, gs.Tensor] | str | None:
    x = node.inputs[0]
    if isinstance(x, gs.Constant):
        return None
    if node.op == "Cast":
        target = _np_dtype(node.attrs.get("to", 0))
    else:  # CastLike
        like = node.inputs[1] if len(node.inputs) > 1 else None
        target = like.dtype if like is not None else None
    if _same_dtype(x.dtype, target):
        return "cast-same-type", x
    return _rule_cast_round_trip(node, target)


def _exactly_representable(src: np.dtype, dst: np.dtype) -> bool:
    """Whether every value of ``src`` converts to ``dst`` and back unchanged. Pure.

    bool goes anywhere; an integer fits a wider integer of a range that contains it, and a
    float whose significand holds all its bits (float16: 11 bits, float32: 24, float64: 53);
    a float fits a wider float. Nothing narrows, and no float fits an integer.
    """
    if src == np.bool_:
        return True
    if src.kind in "iu" and dst.kind in "iu":
        a, b = np.iinfo(src), np.iinfo(dst)
        return b.min <= a.min and a.max <= b.max
    if src.kind in "iu" and dst.kind == "f":
        bits = {2: 11, 4: 24, 8: 53}.get(dst.itemsize, 0)
        info = np.iinfo(src)
        return max(info.max, -info.min) <= 2**bits
    if src.kind == "f" and dst.kind == "f":
        return dst.itemsize > src.itemsize
    return False


def _rule_cast_round_trip(node: gs.Node, target) -> tuple[str, gs.Tensor] | None:
    """``Cast(Cast(x, T1), T0)`` with ``x`` of type T0 is ``x`` when T0 → T1 loses nothing.

    Exporters leave these around integer masks and indices (int64 → int32 → int64 for an
    engine that wanted int32, bool → float → bool). A narrowing first step (float → int,
    int64 → int32, float32 → float16) is not a round trip and is never touched.
    """
    inner = K.producer(node.inputs[0])
    if inner is None or inner.op != "Cast" or not K.is_default_domain(inner) or node.op != "Cast":
        return None
    x = inner.inputs[0]
    middle = _np_dtype(inner.attrs.get("to", 0))
    if isinstance(x, gs.Constant) or not _same_dtype(x.dtype, target) or middle is None:
        return None
    try:
        exact = _exactly_representable(np.dtype(x.dtype), middle)
    except (TypeError, ValueError):
        return None
    if not exact:
        return f"Cast {inner.name} -> Cast {node.name} kept: {np.dtype(x.dtype)} -> {middle} can change values"
    return "cast-round-trip", x


def _rule_transpose(node: gs.Node) -> tuple[str, gs.Tensor] | None:
    x = node.inputs[0]
    perm = node.attrs.get("perm")
    rank = None if K.shape_of(x) is None else len(K.shape_of(x))
    if perm is None:
        identity = rank is not None and rank <= 1
    else:
        identity = list(perm) == list(range(len(perm)))
    return ("transpose-identity", x) if identity and not isinstance(x, gs.Constant) else None


def _reshape_keeps(x_shape: list | None, target: np.ndarray, allowzero: int) -> bool:
    """Whether ``Reshape(x, target)`` has ``x``'s shape: same rank, every entry a copy of
    ``x``'s dim (0 without allowzero, or the equal static value), at most one ``-1``
    (then it is the one dim left, so it equals ``x``'s dim there too)."""
    if x_shape is None or target.ndim != 1 or len(target) != len(x_shape):
        return False
    free = 0
    for xd, t in zip(x_shape, (int(v) for v in target)):
        if t == 0 and not allowzero:
            continue
        if t == -1:
            free += 1
            continue
        if not (isinstance(xd, (int, np.integer)) and int(xd) == t):
            return False
    return free <= 1


def _rule_shape_ops(node: gs.Node, opset: int) -> tuple[str, gs.Tensor] | None:
    """Reshape/Expand/Tile/Slice/Pad that keep the whole tensor."""
    x = node.inputs[0]
    if isinstance(x, gs.Constant):
        return None
    shape = K.shape_of(x)
    op = node.op
    if op == "Reshape" and len(node.inputs) >= 2:
        target = K.constant(node.inputs[1], K.SMALL)
        if target is not None and _reshape_keeps(shape, target.astype(np.int64), node.attrs.get("allowzero", 0)):
            return "reshape-same-shape", x
    elif op == "Expand" and len(node.inputs) == 2:
        target = K.constant(node.inputs[1], K.SMALL)
        if target is not None and target.ndim == 1 and all(int(v) >= 1 for v in target) \
                and K.broadcast_keeps_shape(shape, tuple(int(v) for v in target)):
            return "expand-same-shape", x
    elif op == "Tile" and len(node.inputs) == 2:
        reps = K.constant(node.inputs[1], K.SMALL)
        if reps is not None and reps.size > 0 and np.all(reps == 1):
            return "tile-ones", x
    elif op == "Pad":
        pads = node.attrs.get("pads") if opset < 11 else K.constant(K.present(node, 1), K.SMALL)
        if pads is not None and np.asarray(pads).size > 0 and np.all(np.asarray(pads) == 0):
            return "pad-zero", x
    elif op == "Slice" and opset >= 10:
        return ("slice-whole", x) if _slice_keeps(node, shape) else None
    return None


def _slice_keeps(node: gs.Node, shape: list | None) -> bool:
    if shape is None:
        return False
    params = []
    for i in range(1, 5):
        t = K.present(node, i)
        if t is None:
            params.append(None)
            continue
        v = K.constant(t, K.SMALL)
        if v is None:
            return False
        params.append([int(a) for a in np.asarray(v).ravel()])
    starts, ends, axes, steps = params
    if starts is None or ends is None:
        return False
    axes = axes if axes is not None else list(range(len(starts)))
    steps = steps if steps is not None else [1] * len(starts)
    if not (len(starts) == len(ends) == len(axes) == len(steps)):
        return False
    for s, e, a, st in zip(starts, ends, axes, steps):
        if st != 1 or not -len(shape) <= a < len(shape):
            return False
        dim = shape[a]
        static = isinstance(dim, (int, np.integer))
        if not (s == 0 or (static and s <= -int(dim))):
            return False
        if not (e >= _INT64_BIG or (static and e >= int(dim))):
            return False
    return True


def _rule_single(node: gs.Node) -> tuple[str, gs.Tensor] | None:
    """One input in, the same out: Concat/Sum/Mean/Max/Min of one input, Split into one."""
    if node.op in _VARIADIC and len(node.inputs) == 1 and not isinstance(node.inputs[0], gs.Constant):
        return f"{node.op.lower()}-single-input", node.inputs[0]
    if node.op == "Split" and len(node.outputs) == 1 and not isinstance(node.inputs[0], gs.Constant):
        return "split-single-output", node.inputs[0]
    return None


def _match(node: gs.Node, opset: int) -> tuple[str, gs.Tensor] | str | None:
    """The rule that makes ``node`` neutral and the input it equals, a note, or None. Pure."""
    op = node.op
    if not node.inputs or not node.outputs:
        return None
    if op in _BINARY:
        return _rule_binary(node)
    if op == "Dropout":
        return _rule_dropout(node, opset)
    if op == "Where":
        return _rule_where(node)
    if op in ("Cast", "CastLike"):
        return _rule_cast(node)
    if op == "Transpose":
        return _rule_transpose(node)
    if op in ("Reshape", "Expand", "Tile", "Pad", "Slice"):
        return _rule_shape_ops(node, opset)
    if op in _VARIADIC or op == "Split":
        return _rule_single(node)
    return None


_OPS = frozenset(_BINARY) | frozenset(_VARIADIC) | {"Dropout", "Where", "Cast", "CastLike", "Transpose", "Reshape",
                                                     "Expand", "Tile", "Pad", "Slice", "Split"}


class Neutral(Rule):
    """One rule name of this pass: ``find`` (the functions above) says whether a node of ``ops`` is neutral."""

    def __init__(self, name: str, ops: tuple[str, ...]):
        self.name = name
        self.pattern = Node(ops, bind="node", more=True)

    def check(self, m: Match, ctx: RuleContext):
        node = m["node"]
        found = _match(node, ctx.opset) if node.inputs and node.outputs else None
        if isinstance(found, str):
            return fail(found)
        if found is None or found[0] != self.name:
            return fail("")  # another rule's case, or no case at all: nothing to say
        x, y = found[1], node.outputs[0]
        extra = [o for o in node.outputs[1:] if not m.scope.unread(o)]
        if extra:
            return fail(f"{node.op} {node.name} kept: its output {extra[0].name} is read")
        reason = m.scope.bypass_refusal(x, y)
        if reason:
            return fail(f"{node.op} {node.name} kept ({self.name}): {reason}")
        return ok(x=x)

    def rewrite(self, m: Match, b) -> list[gs.Tensor]:
        return [m["x"]]  # an existing tensor: the engine bypasses the node (surgeon.graph_ops.bypass)

    def note(self, node, reason: str) -> str:
        return reason


RULES = (
    [Neutral(f"{op.lower()}-neutral", (op,)) for op in _BINARY]
    + [Neutral("where-constant-condition", ("Where",)), Neutral("dropout-inference", ("Dropout",)),
       Neutral("cast-same-type", ("Cast", "CastLike")), Neutral("cast-round-trip", ("Cast",)),
       Neutral("transpose-identity", ("Transpose",)), Neutral("reshape-same-shape", ("Reshape",)),
       Neutral("expand-same-shape", ("Expand",)), Neutral("tile-ones", ("Tile",)), Neutral("pad-zero", ("Pad",)),
       Neutral("slice-whole", ("Slice",)), Neutral("split-single-output", ("Split",))]
    + [Neutral(f"{op.lower()}-single-input", (op,)) for op in _VARIADIC]
)


@register
class EliminateNeutralOps(RulePass):
    """Bypass nodes whose output provably equals an input (see the module docstring for the rules)."""

    name = "eliminate-neutral-ops"
    summary = "Remove nodes that provably return an input: x+0, x*1, Dropout at inference, Cast to its own type, ..."
    default_order = 60

    rules, needs_types, sweeps = tuple(RULES), True, 1

    def applies(self, model: G.Model) -> bool:
        return any(n.op in _OPS and K.is_default_domain(n) for n in G.walk_nodes(model.graph))
