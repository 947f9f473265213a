"""FP16 emulation on a CPU: where a TensorRT FP16 engine overflows, so does this backend.

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
- what must stay float32 stays float32: constant and shape computations (everything
  computed only from constants and Shape/Size, which TensorRT folds at build time),
  Resize ``roi``/``scales``, Range, Cast targets (tensor types never change, so a Cast
  to float32 still yields float32), quantization and random ops, control flow bodies,
  and non-standard domains; ``keep`` (``--fp16-keep``) keeps chosen op types or nodes in
  float32, like TensorRT's per-layer precision.

The model's interface (names, types) is unchanged: inputs and outputs stay float32.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from surgeon import model as model_io
from surgeon.backends import Backend
from surgeon.backends.onnxrt import OnnxRuntimeBackend, OrtSession
from surgeon.errors import UsageError

log = logging.getLogger(__name__)

FP16_MAX = 65504.0
FP16_MIN_SUBNORMAL = 2.0**-24

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
}
_KEEP_PREFIXES = ("Sequence", "Optional", "SplitToSequence", "ConcatFromSequence")
# Inputs that must stay float32 even when the node is converted (by the ONNX spec or meaning).
_EXEMPT_INPUTS: dict[str, frozenset[int]] = {"Resize": frozenset({1, 2}), "Upsample": frozenset({1})}
_SHAPE_SOURCES = frozenset({"Shape", "Size"})


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


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor of the main graph that inference can tell."""
    inferred = model
    if not model_io.needs_external_data(model):
        try:
            inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
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
        if n.op_type == "Constant" and n.domain in ("", "ai.onnx"):
            for a in n.attribute:
                if a.name == "value":
                    types[n.output[0]] = a.t.data_type
                elif a.name in ("value_float", "value_floats"):
                    types[n.output[0]] = TensorProto.FLOAT
        elif n.op_type == "Cast" and n.domain in ("", "ai.onnx"):
            for a in n.attribute:
                if a.name == "to":
                    types[n.output[0]] = a.i
    return types


def _node_label(node: onnx.NodeProto, index: int) -> str:
    return node.name or f"{node.op_type}#{index}"


def _keep_reason(node: onnx.NodeProto, keep: set[str], static: set[str]) -> str | None:
    if node.op_type in keep or (node.name and node.name in keep):
        return "kept in float32 on request (--fp16-keep)"
    if node.domain not in ("", "ai.onnx"):
        return f"op of domain '{node.domain}'"
    if node.op_type in _KEEP_OPS:
        return _KEEP_OPS[node.op_type]
    if node.op_type.startswith(_KEEP_PREFIXES):
        return "sequence/optional op"
    if all((not i) or i in static for i in node.input):
        return "constant or shape computation (folded in float32 at build time)"
    return None


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


def _constant_array(node: onnx.NodeProto) -> np.ndarray | None:
    for a in node.attribute:
        if a.name == "value" and a.t.data_type == TensorProto.FLOAT:
            return numpy_helper.to_array(a.t)
        if a.name == "value_float":
            return np.array(a.f, dtype=np.float32)
        if a.name == "value_floats":
            return np.array(list(a.floats), dtype=np.float32)
    return None


def emulate(model: onnx.ModelProto, keep: Iterable[str] = ()) -> tuple[onnx.ModelProto, Fp16Plan]:
    """A copy of ``model`` that computes like an FP16 engine with float32 I/O, and the plan."""
    keep = {k for k in keep if k}
    out = model_io.copy(model)
    g = out.graph
    plan = Fp16Plan()
    types = _elem_types(out)
    all_names = {n for node in g.node for n in (*node.input, *node.output, node.name)}
    all_names |= {vi.name for vi in g.input} | {t.name for t in g.initializer}
    known = {n.op_type for n in g.node} | {n.name for n in g.node if n.name}
    plan.unmatched_keep = sorted(k for k in keep if k not in known)

    def fresh(base: str) -> str:
        name, i = base, 0
        while name in all_names:
            i += 1
            name = f"{base}_{i}"
        all_names.add(name)
        return name

    graph_inputs = {vi.name for vi in g.input}
    inits = {t.name: t for t in g.initializer if t.name not in graph_inputs}
    constants = {n.output[0]: n for n in g.node if n.op_type == "Constant" and n.domain in ("", "ai.onnx") and n.output}
    static: set[str] = set(inits)
    is_float = lambda name: types.get(name) == TensorProto.FLOAT  # noqa: E731

    # Decide, in topological order, which nodes compute in FP16.
    decisions: list[str | None] = []
    for idx, node in enumerate(g.node):
        if node.op_type in _SHAPE_SOURCES and node.domain in ("", "ai.onnx"):
            static.update(o for o in node.output if o)
        reason = _keep_reason(node, keep, static)
        if all((not i) or i in static for i in node.input) and not node.op_type.startswith("Random") \
                and node.op_type not in ("Multinomial", "If", "Loop", "Scan"):
            static.update(o for o in node.output if o)
        has_float = any(is_float(t) for t in (*node.input, *node.output) if t)
        if not has_float or (node.op_type in _SHAPE_SOURCES and node.domain in ("", "ai.onnx")):
            decisions.append("no float32 tensors")
            continue
        decisions.append(reason)
        if reason is None:
            plan.converted.append(_node_label(node, idx))
        elif not reason.startswith("constant or shape"):
            plan.kept.append({"node": _node_label(node, idx), "op": node.op_type, "reason": reason})

    rounded: dict[str, str] = {}  # float32 tensor -> name of its FP16-rounded copy
    produced_rounded: set[str] = set()
    new_nodes: list[onnx.NodeProto] = []
    new_inits: list[onnx.TensorProto] = []

    def cast_pair(src: str, dst: str) -> None:
        mid = fresh(f"{dst}__fp16")
        new_nodes.append(helper.make_node("Cast", [src], [mid], to=TensorProto.FLOAT16, name=fresh(f"{mid}__cast")))
        new_nodes.append(helper.make_node("Cast", [mid], [dst], to=TensorProto.FLOAT, name=fresh(f"{dst}__cast")))
        plan.rounded_tensors += 1

    def rounded_copy(name: str) -> str:
        if name in rounded:
            return rounded[name]
        arr = None
        if name in inits and inits[name].data_type == TensorProto.FLOAT:
            arr = numpy_helper.to_array(inits[name])
        elif name in constants:
            arr = _constant_array(constants[name])
        dst = fresh(f"{name}__fp16r")
        if arr is not None:
            conv, clamped, raised = _to_fp16_weights(arr)
            new_inits.append(numpy_helper.from_array(conv, dst))
            if clamped:
                plan.weights.append(f"weight '{name}': {clamped} values beyond +/-65504 clamped (as TensorRT does)")
            if raised:
                plan.weights.append(f"weight '{name}': {raised} values below the smallest float16 subnormal raised to it")
        else:
            cast_pair(name, dst)
        rounded[name] = dst
        return dst

    for node, decision in zip(list(g.node), decisions):
        if decision is not None:
            new_nodes.append(node)
            continue
        exempt = _EXEMPT_INPUTS.get(node.op_type, frozenset())
        for i, name in enumerate(node.input):
            if name and i not in exempt and is_float(name) and name not in produced_rounded:
                node.input[i] = rounded_copy(name)
        outs = list(node.output)
        renames = {}
        for j, name in enumerate(outs):
            if not name:
                continue
            if name not in types:
                plan.untyped.append(name)
            elif is_float(name):
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

    def __init__(self, keep: Sequence[str] = (), optimization: str = "all", threads: int = 0, strict: bool = True):
        self.keep = [k for k in keep if k]
        self.strict = strict
        self._ort = OnnxRuntimeBackend(optimization=optimization, threads=threads, name="fp16")
        self.fuses = self._ort.fuses

    def convert(self, model: onnx.ModelProto) -> tuple[onnx.ModelProto, Fp16Plan]:
        converted, plan = emulate(model, self.keep)
        if self.strict and plan.unmatched_keep:
            raise UsageError(f"--fp16-keep '{plan.unmatched_keep[0]}' names no op type or node of the model")
        return converted, plan

    def check(self, model: onnx.ModelProto) -> None:
        """Fail early (before inputs are written) when ``keep`` names nothing in the model."""
        known = {n.op_type for n in model.graph.node} | {n.name for n in model.graph.node if n.name}
        unknown = [k for k in self.keep if k not in known]
        if self.strict and unknown:
            raise UsageError(f"--fp16-keep '{unknown[0]}' names no op type or node of the model")

    def session(self, model: onnx.ModelProto) -> OrtSession:
        converted, plan = self.convert(model)
        log.info("fp16: %d nodes in FP16, %d kept in float32, %d tensors rounded",
                 len(plan.converted), len(plan.kept), plan.rounded_tensors)
        sess = self._ort.session(converted)
        sess.plan = plan  # type: ignore[attr-defined]  # what the conversion did, for reports
        return sess

    def describe(self) -> str:
        extra = f", kept in float32: {', '.join(self.keep)}" if self.keep else ""
        return f"fp16 (FP16 emulation on ONNX Runtime CPU{extra})"


def create(**options: Any) -> Fp16Backend:
    return Fp16Backend(**options)
