"""FP16 (and BF16) emulation on a CPU: where a TensorRT FP16 engine overflows, so does this backend.

How it works, and why not a float16-typed graph: ONNX Runtime's CPU provider has float16
kernels only for data movement (Reshape, Gather, Concat, ...), not for arithmetic. A model
converted to float16 types runs its arithmetic in float32 islands that ONNX Runtime
inserts itself, and it drops the float16 rounding between neighbouring islands: we
measured ``Softplus -> x300 -> x300 -> Softplus`` not overflowing. onnxconverter-common's
``convert_float_to_float16`` (checked, version installed here) also emits invalid models
(the same Cast output name twice, blocked Resize and Range nodes sharing cast names,
float32 Constants feeding float16 nodes), so we do the conversion ourselves:

- every float32 tensor a converted node produces is rounded through float16 right after
  it (``Cast`` to float16 and back), so values above 65504 become Inf and tiny ones
  flush, as in an engine that stores activations in FP16; the arithmetic inside one op is
  float32, as TensorRT's FP16 kernels accumulate in float32;
- float32 tensors a converted node reads from elsewhere (graph inputs, nodes kept in
  float32) are rounded where they are read; weights (initializers, Constant) are
  converted like TensorRT converts weights: clamped to +/-65504, tiny values raised to
  the smallest subnormal, then rounded;
- what must stay float32 stays float32 (:func:`classify` says which and why): constant
  and shape computations (everything computed only from constants and Shape/Size, which
  TensorRT folds at build time), Resize ``roi``/``scales``, Range, Cast targets (tensor
  types never change, so a Cast to float32 still yields float32), random ops, control
  flow bodies, non-standard domains, inputs and outputs whose ONNX type constraint has
  no float16 (LayerNormalization's Mean/InvStdDev), and quantization islands: scale
  computations and the dequantization of integer results (``MatMulInteger -> Cast ->
  Mul(scale)``: the int32 accumulator exceeds 65504 and the product of two scales is
  below float16's normal range, so rounding either gives Inf x 0 = NaN, which no engine
  computes); ``keep`` (``--fp16-keep``) keeps chosen op types or nodes in float32, like
  TensorRT's per-layer precision.

``precision="bf16"`` rounds through bfloat16 instead (same range as float32, 8 bits of
mantissa). The mixed-precision converter (:mod:`surgeon.precision.convert`) uses the same
:func:`classify`, so the model it writes computes what this emulation computed.

The model's interface (names, types) is unchanged: inputs and outputs stay float32.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from surgeon import graph_ops as K
from surgeon import model as model_io
from surgeon.backends import Backend
from surgeon.backends.onnxrt import OnnxRuntimeBackend, OrtSession
from surgeon.errors import UsageError
from surgeon.graph_ops import infer_shapes

log = logging.getLogger(__name__)

FP16_MAX = 65504.0
FP16_MIN_SUBNORMAL = 2.0**-24
BF16_MAX = 3.3895313892515355e38

PRECISIONS = {"fp16": TensorProto.FLOAT16, "bf16": TensorProto.BFLOAT16}
_TYPE_STR = {"fp16": "tensor(float16)", "bf16": "tensor(bfloat16)"}

# Ops that stay float32 whatever their inputs, with the reason shown in the plan.
_KEEP_OPS: dict[str, str] = {
    "Range": "its length depends on exact float32 start/limit/delta",
    "NonMaxSuppression": "box selection thresholds must stay float32",
    "RoiAlign": "region coordinates must stay float32",
    "QuantizeLinear": "quantization scales are float32",
    "DequantizeLinear": "quantization scales are float32",
    "DynamicQuantizeLinear": "quantization scales are float32",
    "RandomNormal": "random op", "RandomUniform": "random op", "RandomNormalLike": "random op",
    "RandomUniformLike": "random op", "Multinomial": "random op",
    "If": "control flow: its bodies stay float32", "Loop": "control flow: its body stays float32",
    "Scan": "control flow: its body stays float32",
    "ConstantOfShape": "its output type is set by an attribute",
    "EyeLike": "its output type is set by an attribute",
}
_KEEP_PREFIXES = ("Sequence", "Optional", "SplitToSequence", "ConcatFromSequence")
# Inputs that must stay float32 even when the node is converted (by the ONNX spec or meaning).
_EXEMPT_INPUTS: dict[str, frozenset[int]] = {"Resize": frozenset({1, 2}), "Upsample": frozenset({1})}
_SHAPE_SOURCES = frozenset({"Shape", "Size"})
_NOT_STATIC = frozenset({"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
                         "If", "Loop", "Scan"})

# Quantization: integer results, and the float32 scales that turn them back into values.
_QUANT_INT_OUTPUTS = {"DynamicQuantizeLinear": (0, 2), "QuantizeLinear": (0,), "MatMulInteger": (0,),
                      "ConvInteger": (0,), "QLinearMatMul": (0,), "QLinearConv": (0,)}
_QUANT_SCALE_OUTPUTS = {"DynamicQuantizeLinear": (1,)}
_INTEGER_TYPES = frozenset({TensorProto.INT8, TensorProto.UINT8, TensorProto.INT16, TensorProto.UINT16,
                            TensorProto.INT32, TensorProto.UINT32, TensorProto.INT64, TensorProto.UINT64,
                            TensorProto.INT4, TensorProto.UINT4})
QUANT_SCALE_REASON = "quantization scale computation (scales stay float32)"
DEQUANT_REASON = "dequantizes an integer result (stays float32: the integer exceeds the reduced range, the scale underflows)"


@dataclass(frozen=True)
class NodeClass:
    """One main-graph node: whether it may compute in reduced precision, and which of its
    float32 inputs/outputs would then be in reduced precision."""

    index: int
    label: str  # node name, or op#index for unnamed nodes
    op_type: str
    fixed: str | None  # why it stays float32 whatever is chosen; None: a float compute node
    low_inputs: frozenset[int] = frozenset()
    low_outputs: frozenset[int] = frozenset()
    silent: bool = False  # fixed for a reason not worth reporting (no float tensors, shape math)


@dataclass
class Classification:
    """Which main-graph nodes may compute in reduced precision; shared by the emulation,
    the converter and the island search so that the three agree."""

    precision: str
    nodes: list[NodeClass]
    types: dict[str, int]
    static: frozenset[str]

    @property
    def candidates(self) -> list[str]:
        return [c.label for c in self.nodes if c.fixed is None]


@dataclass
class Fp16Plan:
    """What the conversion did: for the report and for tests."""

    converted: list[str] = field(default_factory=list)  # node names (or op#index)
    kept: list[dict[str, str]] = field(default_factory=list)  # {node, op, reason}
    rounded_tensors: int = 0
    weights: list[str] = field(default_factory=list)  # notes on clamped / flushed weights
    untyped: list[str] = field(default_factory=list)  # outputs whose type is unknown (left unrounded)
    unmatched_keep: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"converted": len(self.converted), "kept": self.kept, "rounded_tensors": self.rounded_tensors,
                "weights": self.weights, "untyped": self.untyped, "unmatched_keep": self.unmatched_keep}


def elem_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor of the main graph that inference can tell."""
    inferred = model
    if not model_io.needs_external_data(model):
        try:
            inferred = infer_shapes(model_io.shape_only_copy(model))
        except Exception as exc:  # inference is a help, not a requirement
            log.info("shape inference failed (%s); using declared types only", exc)
    g = inferred.graph
    types: dict[str, int] = {}
    for vi in [*g.input, *g.value_info, *g.output]:
        if vi.type.WhichOneof("value") == "tensor_type" and vi.type.tensor_type.elem_type:
            types[vi.name] = vi.type.tensor_type.elem_type
    for t in g.initializer:
        types[t.name] = t.data_type
    for n in g.node:
        if n.op_type == "Constant" and K.is_default_domain(n):
            for a in n.attribute:
                if a.name == "value":
                    types[n.output[0]] = a.t.data_type
                elif a.name in ("value_float", "value_floats"):
                    types[n.output[0]] = TensorProto.FLOAT
        elif n.op_type == "Cast" and K.is_default_domain(n):
            for a in n.attribute:
                if a.name == "to":
                    types[n.output[0]] = a.i
    return types


def node_label(node: onnx.NodeProto, index: int) -> str:
    return node.name or f"{node.op_type}#{index}"


def opset_version(model: onnx.ModelProto, domain: str = "") -> int:
    for imp in model.opset_import:
        if imp.domain in (domain, "ai.onnx" if domain == "" else domain):
            return imp.version
    return 1


def _schema(op_type: str, version: int, cache: dict) -> Any:
    key = (op_type, version)
    if key not in cache:
        try:
            cache[key] = onnx.defs.get_schema(op_type, version, "")
        except Exception:  # an op this onnx does not know: decided by the caller
            cache[key] = None
    return cache[key]


def _formal(formals: Sequence[Any], index: int) -> Any:
    return formals[min(index, len(formals) - 1)]


def _allowed(formals: Sequence[Any], index: int, schema: Any) -> set[str] | None:
    """Type strings the formal parameter at ``index`` accepts (None: unknown)."""
    if not formals:
        return None
    formal = formals[min(index, len(formals) - 1)]
    if index >= len(formals) and formal.option != onnx.defs.OpSchema.FormalParameterOption.Variadic:
        return None
    for c in schema.type_constraints:
        if c.type_param_str == formal.type_str:
            return set(c.allowed_type_strs)
    return {formal.type_str}


def classify(model: onnx.ModelProto, precision: str = "fp16", types: dict[str, int] | None = None) -> Classification:
    """Decide, in topological order, which main-graph nodes may compute in reduced precision.

    ``types`` (from :func:`elem_types`) can be passed in to skip shape inference on
    repeated calls (the island search asks this once per model, not once per oracle call).
    """
    if precision not in PRECISIONS:
        raise UsageError(f"unknown precision '{precision}'; use fp16 or bf16")
    g = model.graph
    types = elem_types(model) if types is None else types
    low_str = _TYPE_STR[precision]
    version = opset_version(model)
    schemas: dict = {}
    graph_inputs = {vi.name for vi in g.input}
    static: set[str] = {t.name for t in g.initializer if t.name not in graph_inputs}
    quant_int: set[str] = set()
    quant_scale: set[str] = set()
    dequant: set[str] = set()
    is_float = lambda name: types.get(name) == TensorProto.FLOAT  # noqa: E731
    out: list[NodeClass] = []
    for idx, node in enumerate(g.node):
        label = node_label(node, idx)
        std = K.is_default_domain(node)
        ins = [i for i in node.input if i]
        all_static = all(i in static for i in ins)
        if std and node.op_type in _SHAPE_SOURCES:
            static.update(o for o in node.output if o)
        elif all_static and node.op_type not in _NOT_STATIC:
            static.update(o for o in node.output if o)
        if std and node.op_type in _QUANT_INT_OUTPUTS:
            quant_int.update(node.output[j] for j in _QUANT_INT_OUTPUTS[node.op_type] if j < len(node.output))
            quant_scale.update(node.output[j] for j in _QUANT_SCALE_OUTPUTS.get(node.op_type, ()) if j < len(node.output))
        dynamic = [i for i in ins if i not in static]

        def fixed(reason: str, silent: bool = False) -> None:
            out.append(NodeClass(idx, label, node.op_type, reason, silent=silent))

        has_float = any(is_float(t) for t in (*node.input, *node.output) if t)
        if not has_float or (std and node.op_type in _SHAPE_SOURCES):
            if dynamic and any(i in quant_int for i in dynamic) and all(types.get(o) in _INTEGER_TYPES for o in node.output if o):
                quant_int.update(o for o in node.output if o)
            fixed("no float32 tensors", silent=True)
            continue
        if not std:
            fixed(f"op of domain '{node.domain}'")
            continue
        if node.op_type in _KEEP_OPS:
            fixed(_KEEP_OPS[node.op_type])
            continue
        if node.op_type.startswith(_KEEP_PREFIXES):
            fixed("sequence/optional op")
            continue
        if all_static:
            fixed("constant or shape computation (folded in float32 at build time)", silent=True)
            continue
        # Quantization islands (see the module docstring).
        if node.op_type == "Cast" and dynamic and dynamic[0] in quant_int:
            dequant.update(o for o in node.output if o)
            fixed(DEQUANT_REASON)
            continue
        if dynamic and all(i in quant_scale or i in dequant for i in dynamic):
            if any(i in dequant for i in dynamic):
                fixed(DEQUANT_REASON)  # integer result x scale: a normal-range value comes out
            else:
                quant_scale.update(o for o in node.output if o and is_float(o))
                fixed(QUANT_SCALE_REASON)
            continue
        schema = _schema(node.op_type, version, schemas)
        if schema is None:
            fixed(f"op {node.op_type} is unknown to this onnx at opset {version}")
            continue
        exempt = _EXEMPT_INPUTS.get(node.op_type, frozenset())
        low_in, low_out = set(), set()
        for i, name in enumerate(node.input):
            if name and is_float(name) and i not in exempt:
                allowed = _allowed(schema.inputs, i, schema)
                if allowed is not None and low_str in allowed:
                    low_in.add(i)
        # An output follows the reduced type only when its type parameter is bound by a
        # converted input (LayerNormalization's Mean/InvStdDev follow stash_type instead),
        # or when it is a Cast's (whose target we change).
        bound = {_formal(schema.inputs, i).type_str for i in low_in}
        float_outs = [j for j, name in enumerate(node.output) if name and is_float(name)]
        for j in float_outs:
            allowed = _allowed(schema.outputs, j, schema)
            if allowed is not None and low_str in allowed and (_formal(schema.outputs, j).type_str in bound or node.op_type == "Cast"):
                low_out.add(j)
        if float_outs and not low_out:
            fixed(f"{node.op_type} (opset {version}) has no {precision} type in ONNX")
            continue
        if not low_in and not low_out:
            fixed(f"{node.op_type} (opset {version}) takes no {precision} input in ONNX")
            continue
        out.append(NodeClass(idx, label, node.op_type, None, frozenset(low_in), frozenset(low_out)))
    return Classification(precision, out, types, frozenset(static))


def _to_fp16_weights(arr: np.ndarray) -> tuple[np.ndarray, int, int]:
    """TensorRT's weight conversion: clamp to the float16 range, raise tiny values to the
    smallest subnormal, round. Returns (float32 array of float16 values, #clamped, #raised)."""
    a = np.asarray(arr, dtype=np.float32)
    finite = np.isfinite(a)
    big = finite & (np.abs(a) > FP16_MAX)
    tiny = (a != 0) & (np.abs(a) < FP16_MIN_SUBNORMAL)
    out = np.where(big, np.sign(a) * FP16_MAX, a)
    out = np.where(tiny, np.sign(a) * FP16_MIN_SUBNORMAL, out)
    return out.astype(np.float16).astype(np.float32), int(big.sum()), int(tiny.sum())


def low_weights(arr: np.ndarray, precision: str) -> tuple[np.ndarray, int, int]:
    """Weights in the reduced precision: (array of that dtype, #clamped, #raised)."""
    if precision == "fp16":
        values, big, tiny = _to_fp16_weights(arr)
        return values.astype(np.float16), big, tiny
    import ml_dtypes  # a dependency of onnx itself

    a = np.asarray(arr, dtype=np.float32)
    big = np.isfinite(a) & (np.abs(a) > BF16_MAX)
    a = np.where(big, np.sign(a) * BF16_MAX, a)
    return a.astype(ml_dtypes.bfloat16), int(big.sum()), 0


def constant_array(node: onnx.NodeProto) -> np.ndarray | None:
    for a in node.attribute:
        if a.name == "value" and a.t.data_type == TensorProto.FLOAT:
            return numpy_helper.to_array(a.t)
        if a.name == "value_float":
            return np.array(a.f, dtype=np.float32)
        if a.name == "value_floats":
            return np.array(list(a.floats), dtype=np.float32)
    return None


_constant_array = constant_array  # the name surgeon.debug.scan (main) reads


def unmatched(model: onnx.ModelProto, keep: Iterable[str]) -> list[str]:
    known = {n.op_type for n in model.graph.node} | {n.name for n in model.graph.node if n.name}
    return sorted(k for k in keep if k and k not in known)


def emulate(model: onnx.ModelProto, keep: Iterable[str] = (), *, keep_nodes: Iterable[str] = (),
            precision: str = "fp16", classification: Classification | None = None) -> tuple[onnx.ModelProto, Fp16Plan]:
    """A copy of ``model`` that computes like an FP16 (or BF16) engine with float32 I/O, and the plan.

    ``keep``: op types or node names kept in float32 (``--fp16-keep``). ``keep_nodes``:
    node labels (name, or op#index) kept in float32, matched exactly: the island search's
    choices. ``classification`` from :func:`classify` on the same model saves its cost.
    """
    keep = {k for k in keep if k}
    keep_nodes = set(keep_nodes)
    out = model_io.copy(model)
    g = out.graph
    plan = Fp16Plan()
    cls = classification if classification is not None else classify(model, precision)
    types = cls.types
    low_type = PRECISIONS[precision]
    all_names = {n for node in g.node for n in (*node.input, *node.output, node.name)}
    all_names |= {vi.name for vi in g.input} | {t.name for t in g.initializer}
    plan.unmatched_keep = unmatched(model, keep)

    def fresh(base: str) -> str:
        return K.unique_name(base, all_names)

    graph_inputs = {vi.name for vi in g.input}
    inits = {t.name: t for t in g.initializer if t.name not in graph_inputs}
    constants = {n.output[0]: n for n in g.node if n.op_type == "Constant" and K.is_default_domain(n) and n.output}

    decisions: list[NodeClass | None] = []  # None: stays float32
    for node, c in zip(g.node, cls.nodes):
        if c.fixed is not None:
            decisions.append(None)
            if not c.silent:
                plan.kept.append({"node": c.label, "op": c.op_type, "reason": c.fixed})
        elif c.label in keep_nodes or node.op_type in keep or (node.name and node.name in keep):
            decisions.append(None)
            plan.kept.append({"node": c.label, "op": c.op_type, "reason": "kept in float32 on request"})
        else:
            decisions.append(c)
            plan.converted.append(c.label)

    rounded: dict[str, str] = {}  # float32 tensor -> name of its rounded copy
    produced_rounded: set[str] = set()
    new_nodes: list[onnx.NodeProto] = []
    new_inits: list[onnx.TensorProto] = []

    def cast_pair(src: str, dst: str) -> None:
        mid = fresh(f"{dst}__{precision}")
        new_nodes.append(helper.make_node("Cast", [src], [mid], to=low_type, name=fresh(f"{mid}__cast")))
        new_nodes.append(helper.make_node("Cast", [mid], [dst], to=TensorProto.FLOAT, name=fresh(f"{dst}__cast")))
        plan.rounded_tensors += 1

    def rounded_copy(name: str) -> str:
        if name in rounded:
            return rounded[name]
        arr = None
        if name in inits and inits[name].data_type == TensorProto.FLOAT:
            arr = numpy_helper.to_array(inits[name])
        elif name in constants:
            arr = constant_array(constants[name])
        dst = fresh(f"{name}__{precision}r")
        if arr is not None:
            conv, clamped, raised = low_weights(arr, precision)
            new_inits.append(numpy_helper.from_array(conv.astype(np.float32), dst))
            limit = "65504" if precision == "fp16" else "the bfloat16 maximum"
            if clamped:
                plan.weights.append(f"weight '{name}': {clamped} values beyond +/-{limit} clamped (as TensorRT does)")
            if raised:
                plan.weights.append(f"weight '{name}': {raised} values below the smallest float16 subnormal raised to it")
        else:
            cast_pair(name, dst)
        rounded[name] = dst
        return dst

    for node, decision in zip(list(g.node), decisions):
        if decision is None:
            new_nodes.append(node)
            continue
        for i in sorted(decision.low_inputs):
            name = node.input[i]
            if name not in produced_rounded:
                node.input[i] = rounded_copy(name)
        renames = {}
        for j, name in enumerate(node.output):
            if not name:
                continue
            if name not in types:
                plan.untyped.append(name)
            elif j in decision.low_outputs:
                raw = fresh(f"{name}__fp32")
                node.output[j] = raw
                renames[name] = raw
        new_nodes.append(node)
        for name, raw in renames.items():
            cast_pair(raw, name)
            produced_rounded.add(name)

    del g.node[:]
    g.node.extend(new_nodes)
    g.initializer.extend(new_inits)
    return out, plan


class Fp16Backend(Backend):
    """ONNX Runtime (CPU) on the FP16-emulating copy of the model."""

    name = "fp16"

    def __init__(self, keep: Sequence[str] = (), optimization: str = "all", threads: int = 0, strict: bool = True,
                 precision: str = "fp16"):
        if precision not in PRECISIONS:
            raise UsageError(f"unknown precision '{precision}'; use fp16 or bf16")
        self.keep = [k for k in keep if k]
        self.strict = strict
        self.precision = precision
        self._ort = OnnxRuntimeBackend(optimization=optimization, threads=threads, name="fp16")
        self.fuses = self._ort.fuses

    def convert(self, model: onnx.ModelProto) -> tuple[onnx.ModelProto, Fp16Plan]:
        converted, plan = emulate(model, self.keep, precision=self.precision)
        if self.strict and plan.unmatched_keep:
            raise UsageError(f"--fp16-keep '{plan.unmatched_keep[0]}' names no op type or node of the model")
        return converted, plan

    def check(self, model: onnx.ModelProto) -> None:
        """Fail early (before inputs are written) when ``keep`` names nothing in the model."""
        unknown = unmatched(model, self.keep)
        if self.strict and unknown:
            raise UsageError(f"--fp16-keep '{unknown[0]}' names no op type or node of the model")

    def session(self, model: onnx.ModelProto) -> OrtSession:
        converted, plan = self.convert(model)
        log.info("fp16: %d nodes in %s, %d kept in float32, %d tensors rounded",
                 len(plan.converted), self.precision.upper(), len(plan.kept), plan.rounded_tensors)
        sess = self._ort.session(converted)
        sess.plan = plan  # type: ignore[attr-defined]  # what the conversion did, for reports
        return sess

    def describe(self) -> str:
        extra = f", kept in float32: {', '.join(self.keep)}" if self.keep else ""
        what = "FP16" if self.precision == "fp16" else "BF16"
        return f"fp16 ({what} emulation on ONNX Runtime CPU{extra})"


def create(**options: Any) -> Fp16Backend:
    return Fp16Backend(**options)
