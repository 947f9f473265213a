"""Write a real mixed-precision ONNX model: FP16/BF16 everywhere except FP32 islands.

Why our own converter and not onnxconverter-common's ``convert_float_to_float16``: on our
fixtures it wrote models the checker rejects (the same Cast name twice, float32
Constants feeding float16 nodes), and it decides per op type, not per node. Here the
decision of which node may compute in reduced precision, and which of its inputs and
outputs then change type, is :func:`surgeon.backends.fp16.classify`'s, the same one the
FP16 emulation uses; so the model written computes what the search measured.

Rules:
- a node in reduced precision has its float32 inputs and outputs (those whose ONNX type
  constraint allows the reduced type) in FP16/BF16; every other node stays float32;
- weights read only in reduced precision are converted in place (clamped like TensorRT
  clamps them); a weight also read by a float32 node keeps its float32 original and gets
  one converted copy;
- a Cast is inserted only where a tensor crosses an island border, one per tensor and
  target type, placed right after the tensor's producer; a border Cast that only feeds
  another Cast is merged into it, and a Cast that became an identity is removed;
- graph inputs and outputs stay float32 with ``keep_io_types``; otherwise an input read
  only in reduced precision, and an output produced in it, take the reduced type (an
  input an FP32 island reads stays float32, so the interface adds no overflow);
- control-flow bodies stay float32: outer-scope tensors they read are cast back to float32
  in the outer graph and the bodies read the cast (their own nodes are not converted;
  the report says so).
Every new node and tensor gets a name unused anywhere in the model, subgraphs included.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from surgeon import graph_ops as K
from surgeon import model as model_io
from surgeon.backends.fp16 import PRECISIONS, Classification, constant_array, low_weights

log = logging.getLogger(__name__)

_ANY_TYPE_READERS = frozenset({"Shape", "Size"})  # read a tensor's shape, whatever its type
# Data movement: on float16 values it gives the float16 values of its float32 result.
_DATA_MOVEMENT = frozenset({"Identity", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Expand", "Tile",
                            "Concat", "Slice", "Gather", "Split"})


@dataclass
class Conversion:
    model: onnx.ModelProto
    low_nodes: list[str] = field(default_factory=list)
    fp32_nodes: list[str] = field(default_factory=list)  # float compute nodes left in float32 (islands)
    casts: int = 0  # Casts inserted at island borders (after merging)
    merged_casts: int = 0
    weights_converted: int = 0
    weights_duplicated: list[str] = field(default_factory=list)
    clamped: list[str] = field(default_factory=list)
    io_types: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"low_nodes": len(self.low_nodes), "fp32_nodes": self.fp32_nodes, "casts": self.casts,
                "merged_casts": self.merged_casts, "weights_converted": self.weights_converted,
                "weights_duplicated": self.weights_duplicated, "clamped": self.clamped, "io_types": self.io_types,
                "notes": self.notes}


def _subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    return list(K.proto_subgraphs(node))


def _defined(graph: onnx.GraphProto) -> set[str]:
    names = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    names |= {t.values.name for t in graph.sparse_initializer}
    names |= {o for n in graph.node for o in n.output if o}
    return names


def _rename_free(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Make ``graph`` (and graphs nested in it) read ``new`` where it read the outer ``old``."""
    if old in _defined(graph):
        return
    for n in graph.node:
        for i, name in enumerate(n.input):
            if name == old:
                n.input[i] = new
        for sub in _subgraphs(n):
            _rename_free(sub, old, new)
    for o in graph.output:
        if o.name == old:
            o.name = new


def all_names(model: onnx.ModelProto) -> set[str]:
    names: set[str] = set()

    def walk(g: onnx.GraphProto) -> None:
        names.update(vi.name for vi in (*g.input, *g.output, *g.value_info))
        names.update(t.name for t in g.initializer)
        for n in g.node:
            names.add(n.name)
            names.update(n.input)
            names.update(n.output)
            for sub in _subgraphs(n):
                walk(sub)

    walk(model.graph)
    names.discard("")
    return names


class _Names:
    """Fresh names, unique across the whole model (subgraphs included)."""

    def __init__(self, taken: set[str]):
        self.taken = set(taken)

    def __call__(self, base: str) -> str:
        return K.unique_name(base, self.taken)


def convert(model: onnx.ModelProto, cls: Classification, keep_nodes: set[str] | frozenset[str], *,
            keep_io_types: bool = False) -> Conversion:
    """The mixed-precision model for ``keep_nodes`` (labels of float compute nodes kept in float32).

    ``cls`` must be :func:`~surgeon.backends.fp16.classify`'s result for ``model``; the
    input model is not modified.
    """
    precision = cls.precision
    low = PRECISIONS[precision]
    out = model_io.copy(model)
    g = out.graph
    nodes = list(g.node)
    fresh = _Names(all_names(out))
    result = Conversion(out)
    types = dict(cls.types)  # tensor -> element type in the *new* model (updated below)
    orig_types = cls.types
    is_f32 = lambda name: orig_types.get(name) == TensorProto.FLOAT  # noqa: E731

    low_mode = [c.fixed is None and c.label not in keep_nodes for c in cls.nodes]
    for c, is_low in zip(cls.nodes, low_mode):
        if is_low:
            result.low_nodes.append(c.label)
        elif c.fixed is None:
            result.fp32_nodes.append(c.label)

    graph_inputs = [vi.name for vi in g.input]
    graph_outputs = [vo.name for vo in g.output]
    init_by_name = {t.name: t for t in g.initializer if t.name not in set(graph_inputs)}
    const_by_out = {n.output[0]: n for n in nodes if n.op_type == "Constant" and K.is_default_domain(n)
                    and n.output and is_f32(n.output[0])}
    weights = {n for n in init_by_name if is_f32(n)} | set(const_by_out)
    producer: dict[str, tuple[int, int]] = {}
    for idx, n in enumerate(nodes):
        for j, o in enumerate(n.output):
            if o:
                producer[o] = (idx, j)
    refs: dict[str, list[int]] = {}  # outer names read inside control-flow bodies
    for idx, n in enumerate(nodes):
        for sub in _subgraphs(n):
            for name in K.proto_outer_reads(sub):
                refs.setdefault(name, []).append(idx)

    low_in = [set(c.low_inputs) for c in cls.nodes]
    low_out = [set(c.low_outputs) for c in cls.nodes]

    def wanted(idx: int, i: int) -> int | None:
        """Type node ``idx`` reads its input ``i`` in (None: any)."""
        n = nodes[idx]
        if n.op_type in _ANY_TYPE_READERS and K.is_default_domain(n):
            return None
        return low if low_mode[idx] and i in low_in[idx] else TensorProto.FLOAT

    readers: dict[str, list[tuple[int, int]]] = {}
    for idx, n in enumerate(nodes):
        for i, name in enumerate(n.input):
            if name:
                readers.setdefault(name, []).append((idx, i))

    # Weights reach their readers through Identity/Reshape/Transpose... chains (exporters
    # alias shared weights with Identity): such a constant chain read only in reduced
    # precision moves the weight in reduced precision too, instead of a Cast after it.
    weight_like = {n for n in init_by_name if is_f32(n)} | set(const_by_out)
    for idx, n in enumerate(nodes):
        c = cls.nodes[idx]
        if c.silent and c.fixed and n.op_type in _DATA_MOVEMENT and K.is_default_domain(n) and \
                any(i in weight_like for i in n.input if i and is_f32(i)) and \
                all(i in weight_like for i in n.input if i and is_f32(i)):
            weight_like.update(o for o in n.output if o and is_f32(o))
    for idx in range(len(nodes) - 1, -1, -1):
        n, c = nodes[idx], cls.nodes[idx]
        outs = [o for o in n.output if o and is_f32(o)]
        if not (c.silent and c.fixed and outs and all(o in weight_like for o in outs)):
            continue
        users = [wanted(r, i) for o in outs for r, i in readers.get(o, [])]
        if users and low in users and all(u in (low, None) for u in users) and \
                not any(o in graph_outputs or o in refs for o in outs):
            low_mode[idx] = True
            low_in[idx] = {i for i, name in enumerate(n.input) if name and is_f32(name)}
            low_out[idx] = {j for j, name in enumerate(n.output) if name and is_f32(name)}

    # 1. Types of produced tensors; Cast nodes in reduced precision cast to it.
    for idx, n in enumerate(nodes):
        if not low_mode[idx]:
            continue
        for j in low_out[idx]:
            types[n.output[j]] = low
        if n.op_type == "Cast" and 0 in low_out[idx]:
            for a in n.attribute:
                if a.name == "to":
                    a.i = low

    # 2. Graph inputs.
    for name in graph_inputs:
        if not is_f32(name) or keep_io_types or name in graph_outputs or name in refs:
            continue
        wants = [wanted(idx, i) for idx, i in readers.get(name, [])]
        if wants and all(w in (low, None) for w in wants) and low in wants:
            types[name] = low

    # 3. Weights: converted in place when only reduced-precision readers read them.
    weight_copy: dict[str, str] = {}
    for name in sorted(weights):
        wants = [wanted(idx, i) for idx, i in readers.get(name, [])]
        need_low = low in wants
        need_f32 = TensorProto.FLOAT in wants or name in refs or name in graph_outputs
        if not need_low:
            continue
        arr = numpy_helper.to_array(init_by_name[name]) if name in init_by_name else constant_array(const_by_out[name])
        conv, clamped, _raised = low_weights(arr, precision)
        if clamped:
            result.clamped.append(f"{name}: {clamped} value(s) clamped to the {precision} range")
        result.weights_converted += 1
        if need_f32:
            copy_name = fresh(f"{name}__{precision}")
            g.initializer.append(numpy_helper.from_array(conv, copy_name))
            weight_copy[name] = copy_name
            types[copy_name] = low
            result.weights_duplicated.append(name)
        elif name in init_by_name:
            init_by_name[name].CopyFrom(numpy_helper.from_array(conv, name))
            types[name] = low
        else:
            node = const_by_out[name]
            del node.attribute[:]
            node.attribute.append(helper.make_attribute("value", numpy_helper.from_array(conv, name)))
            types[name] = low

    # 4. Graph outputs produced in reduced precision, when the interface is kept.
    final_casts: dict[int, list[onnx.NodeProto]] = {}
    inner_names: list[str] = []
    for name in graph_outputs:
        if not (keep_io_types and is_f32(name) and types.get(name) == low and name in producer):
            continue
        idx, j = producer[name]
        inner = fresh(f"{name}__{precision}")
        inner_names.append(inner)
        nodes[idx].output[j] = inner
        types[inner] = low
        for ridx, i in readers.get(name, []):
            nodes[ridx].input[i] = inner
        readers[inner] = readers.pop(name, [])
        if name in refs:
            for ridx in refs[name]:
                for sub in _subgraphs(nodes[ridx]):
                    _rename_free(sub, name, inner)
            refs[inner] = refs.pop(name)
        cast = helper.make_node("Cast", [inner], [name], to=TensorProto.FLOAT, name=fresh(f"{name}__cast_fp32"))
        final_casts.setdefault(idx, []).append(cast)
        types[name] = TensorProto.FLOAT
        producer[inner] = (idx, j)

    # 5. Border Casts: one per (tensor, type), right after the producer; only for tensors
    # that were float32 (a tensor the model already had in float16 is left as it is).
    f32_tensors = {name for name, t in orig_types.items() if t == TensorProto.FLOAT} | set(inner_names)
    cast_of: dict[tuple[str, int], str] = {}
    after: dict[int, list[onnx.NodeProto]] = {}  # producer index (-1: graph inputs / weights) -> casts
    suffix = {low: precision, TensorProto.FLOAT: "fp32"}

    def border(name: str, to: int) -> str:
        key = (name, to)
        if key not in cast_of:
            dst = fresh(f"{name}__to_{suffix[to]}")
            cast_of[key] = dst
            types[dst] = to
            where = producer[name][0] if name in producer else -1
            after.setdefault(where, []).append(
                helper.make_node("Cast", [name], [dst], to=to, name=fresh(f"{name}__cast_{suffix[to]}")))
        return cast_of[key]

    for idx, n in enumerate(nodes):
        for i, name in enumerate(n.input):
            if not name or name not in f32_tensors:
                continue
            if name in weight_copy and wanted(idx, i) == low:
                n.input[i] = weight_copy[name]
                continue
            want, have = wanted(idx, i), types.get(name)
            if want is None or have is None or have == want or have not in (low, TensorProto.FLOAT):
                continue
            n.input[i] = border(name, want)
    for name, idxs in list(refs.items()):
        if types.get(name) == low:
            dst = border(name, TensorProto.FLOAT)
            for idx in idxs:
                for sub in _subgraphs(nodes[idx]):
                    _rename_free(sub, name, dst)

    ordered = list(after.get(-1, []))
    for idx, n in enumerate(nodes):
        ordered.append(n)
        ordered.extend(final_casts.get(idx, []))
        ordered.extend(after.get(idx, []))
    original_names = {n.name for n in nodes}
    del g.node[:]
    g.node.extend(ordered)

    result.merged_casts = _merge_casts(g, types, set(graph_outputs), low)
    result.casts = sum(1 for n in g.node if n.op_type == "Cast" and n.name not in original_names)

    # 6. Declared types.
    for vi in (*g.input, *g.output, *g.value_info):
        if vi.type.WhichOneof("value") == "tensor_type" and vi.name in types and vi.type.tensor_type.elem_type:
            vi.type.tensor_type.elem_type = types[vi.name]
    alive = {o for n in g.node for o in n.output} | {i.name for i in g.input} | {t.name for t in g.initializer}
    keep_vi = [vi for vi in g.value_info if vi.name in alive]
    del g.value_info[:]
    g.value_info.extend(keep_vi)
    for vi in (*g.input, *g.output):
        if vi.type.WhichOneof("value") == "tensor_type":
            result.io_types[vi.name] = helper.tensor_dtype_to_string(vi.type.tensor_type.elem_type).replace("TensorProto.", "")
    if any(_subgraphs(n) for n in g.node):
        result.notes.append("If/Loop/Scan bodies stay float32; outer tensors they read are cast to float32 at the border")
    return result


def _merge_casts(g: onnx.GraphProto, types: dict[str, int], outputs: set[str], low: int) -> int:
    """Remove identity Casts and merge an exact widening Cast into the Casts it alone feeds.

    Widening (float16/bfloat16 -> float32) is exact, so Cast(Cast(x, float32), T) equals
    Cast(x, T) for every T. Returns how many Casts were removed.
    """
    removed = 0
    widening_src = {TensorProto.FLOAT16, TensorProto.BFLOAT16}
    changed = True
    while changed:
        changed = False
        readers: dict[str, list[onnx.NodeProto]] = {}
        sub_read: set[str] = set()
        for n in g.node:
            for i in n.input:
                readers.setdefault(i, []).append(n)
            for sub in _subgraphs(n):
                sub_read |= K.proto_outer_reads(sub)
        for n in list(g.node):
            if n.op_type != "Cast" or not K.is_default_domain(n):
                continue
            src, dst = n.input[0], n.output[0]
            to = next(a.i for a in n.attribute if a.name == "to")
            if dst in outputs or dst in sub_read:
                continue
            if to == low and types.get(src) == to:  # an identity the conversion made
                for r in readers.get(dst, []):
                    for k, name in enumerate(r.input):
                        if name == dst:
                            r.input[k] = src
                g.node.remove(n)
                removed += 1
                changed = True
                break
            users = readers.get(dst, [])
            if to == TensorProto.FLOAT and types.get(src) in widening_src and users and \
                    all(u.op_type == "Cast" and K.is_default_domain(u) for u in users):
                for u in users:
                    u.input[0] = src
                g.node.remove(n)
                removed += 1
                changed = True
                break
    return removed


def feeds_for(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Sample feeds cast to the converted model's input types (float32 data to float16/bfloat16)."""
    out = {}
    for vi in model.graph.input:
        if vi.name not in feeds:
            continue
        value = feeds[vi.name]
        elem = vi.type.tensor_type.elem_type if vi.type.WhichOneof("value") == "tensor_type" else 0
        if isinstance(value, np.ndarray) and elem in (TensorProto.FLOAT16, TensorProto.BFLOAT16) and value.dtype == np.float32:
            value = value.astype(helper.tensor_dtype_to_np_dtype(elem))
        out[vi.name] = value
    return out
