"""``fold-constants``: evaluate what does not depend on the inputs, and infer shapes.

Two well-kept folders exist and neither takes every model, so this pass chains them
(``bench/fold_backends.py`` measured it on the corpus: onnxsim is faster and folds more,
mostly Shape chains over static dims; onnx-graphsurgeon then folds a few more shape
expressions and turns Constant nodes into initializers):

1. onnxsim with its optimizer off (``perform_optimization=False``): only folding and
   shape inference; fusions such as Conv+BN belong to other passes. Skipped for models
   over the protobuf limit, which it cannot serialize.
2. onnx-graphsurgeon's ``fold_constants`` (``error_ok=False``) and ``cleanup``. It runs
   ONNX Runtime on the foldable part, so it fails on a custom op without a kernel whose
   inputs are all constant, and on bodies of If/Loop (it exports them at an IR version
   ONNX Runtime does not read yet).

A backend that fails is skipped with a note saying why; the model from the other one is
kept. When both fail, only onnx's shape inference runs. Neither backend folds a Shape of
a dynamic dim into a constant; the graph inputs and outputs are put back as they were
afterwards, so an output dim inference fixed stays as dynamic as the model declared it.

Option ``fold_backend`` (``ctx.options``): ``auto`` (default, both), ``onnxsim`` or
``graphsurgeon`` (one of them, still with the other as fallback).
"""

from __future__ import annotations

import contextlib
import logging

import onnx

from passes import _proto_scan as scan
from surgeon import graph as G
from surgeon import model as model_io
from surgeon.errors import UsageError
from surgeon.pipeline.base import Pass, PassContext, PassLog
from surgeon.pipeline.registry import register

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "onnxsim", "graphsurgeon")


def _first_line(exc: BaseException) -> str:
    """One short line; long library messages keep their start and their (telling) end."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else f"{text[:60]} ... {text[-120:]}"


@contextlib.contextmanager
def _quiet_graphsurgeon():
    """graphsurgeon prints its own warnings on stdout; this pass reports failures as notes."""
    from onnx_graphsurgeon.logger import G_LOGGER

    before = G_LOGGER.severity
    G_LOGGER.severity = G_LOGGER.ERROR
    try:
        yield
    finally:
        G_LOGGER.severity = before


def overridable_initializers(model: onnx.ModelProto) -> list[str]:
    """Initializers also listed as graph inputs: defaults a user may feed, so not constants.

    Before IR 4 every initializer *must* be listed as an input, so the listing says
    nothing, and ONNX Runtime treats them as constants (it does not even accept a feed
    for one): none is overridable there.
    """
    if model.ir_version < 4:
        return []
    inits = {t.name for t in model.graph.initializer}
    return [vi.name for vi in model.graph.input if vi.name in inits]


def fold_with_onnxsim(model: onnx.ModelProto) -> onnx.ModelProto:
    """onnxsim's folding and shape inference only (no optimizer fusions, no checks)."""
    if model_io.needs_external_data(model):
        raise ValueError("the model is over the 2 GB protobuf limit, which onnxsim cannot take in memory")
    import onnxsim

    overridable = bool(overridable_initializers(model))
    out, _ = onnxsim.simplify(model_io.copy(model), check_n=0, perform_optimization=False,
                              include_subgraph=True, certify=False,
                              initializers_as_constants=not overridable, mutable_initializer=overridable)
    return out


def fold_with_graphsurgeon(model: onnx.ModelProto) -> onnx.ModelProto:
    """onnx-graphsurgeon's folding (errors raised, not swallowed) and its cleanup."""
    if overridable_initializers(model):
        raise ValueError("graphsurgeon would fold initializers the model lists as inputs (overridable defaults)")
    graph = G.import_graph(model)
    for sub in G.iter_graphs(graph):
        # Bodies carry no IR version of their own; graphsurgeon would export them for
        # folding at onnx's newest, which ONNX Runtime may not read yet.
        sub.ir_version = sub.ir_version or model.ir_version
        sub.opset = sub.opset or graph.opset
    with _quiet_graphsurgeon():
        graph.fold_constants(error_ok=False, flatten_subgraphs=False)
        graph.cleanup()
    return G.export_model(graph, like=model)


# What graphsurgeon's fold changes besides nodes whose inputs are all constant: Constant
# nodes are lowered to tensors, Shape (-> Gather/Slice) of static dims is folded, and
# Cast(to float) -> arithmetic -> Cast(to int) shape math is elided.
_GRAPHSURGEON_ALWAYS = frozenset({"Constant", "Size"})
_GRAPHSURGEON_NO_FOLD = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"})
_CAST_ELISION_OPS = frozenset({"Add", "Sub", "Mul", "Div", "Max", "Min", "Equal", "Greater", "Less", "Concat"})


def graphsurgeon_has_work(model: onnx.ModelProto) -> bool:
    """Whether graphsurgeon's fold and cleanup could change ``model`` (True when unsure).

    After onnxsim, most models (and every model in a later round) have nothing left for
    graphsurgeon, whose import, fold and export cost more than onnxsim's own run. This
    mirrors what ``Graph.fold_constants(fold_shapes=True)`` and ``Graph.cleanup()`` look at.
    """
    return bool(model.functions) or _graph_has_work(model.graph, frozenset(), {}, {})


def _dims(vi: onnx.ValueInfoProto) -> list | None:
    t = vi.type
    if t.WhichOneof("value") != "tensor_type" or not t.tensor_type.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") and not d.HasField("dim_param") else None
            for d in t.tensor_type.shape.dim]


def _static(dims) -> bool:
    return all(isinstance(d, int) and d >= 0 for d in dims)


def _first(values) -> int | None:
    if values is None or values.size < 1:
        return None
    return int(values.reshape(-1)[0])


def _shape_folds(shape_node: onnx.NodeProto, consumers: list[onnx.NodeProto], shapes: list[list],
                 value, attr_ints) -> bool:
    """Whether graphsurgeon folds this Shape, or a Gather/Slice of it, from the known dims."""
    if any(_static(dims) for dims in shapes):
        return True
    for c in consumers:
        if not c.input or c.input[0] != shape_node.output[0]:
            continue
        try:
            if c.op_type == "Gather" and len(c.input) > 1:
                indices = value(c.input[1])
                if indices is None:
                    continue
                picks = [int(indices)] if indices.ndim == 0 else [int(i) for i in indices.reshape(-1)]
                if any(_static([dims[i] for i in picks]) for dims in shapes):
                    return True
            elif c.op_type == "Slice":
                if len(c.input) >= 3:
                    starts, ends = _first(value(c.input[1])), _first(value(c.input[2]))
                    axes = _first(value(c.input[3])) if len(c.input) > 3 and c.input[3] else 0
                    steps = _first(value(c.input[4])) if len(c.input) > 4 and c.input[4] else 1
                else:
                    starts, ends = attr_ints(c, "starts"), attr_ints(c, "ends")
                    axes, steps = attr_ints(c, "axes", 0), attr_ints(c, "steps", 1)
                if None in (starts, ends, axes, steps) or axes != 0:
                    continue
                if any(_static(dims[starts:ends:steps]) for dims in shapes):
                    return True
        except (IndexError, ValueError, TypeError):
            return True  # graphsurgeon would raise: let it, so the note says so
    return False


def _graph_has_work(graph: onnx.GraphProto, outer_constants: frozenset[str], outer_shapes: dict,
                    outer_inits: dict) -> bool:
    variables = {vi.name for vi in graph.input} | {o for n in graph.node for o in n.output}
    constants = (outer_constants - variables) | {t.name for t in graph.initializer}
    constants |= {t.values.name for t in graph.sparse_initializer}
    inits = {k: v for k, v in outer_inits.items() if k not in variables}
    inits.update({t.name: t for t in graph.initializer})
    shapes = {k: v for k, v in outer_shapes.items() if k not in variables}
    for vi in list(graph.value_info) + list(graph.input) + list(graph.output):
        dims = _dims(vi)
        if dims is not None:
            shapes.setdefault(vi.name, []).append(dims)
    for t in graph.initializer:
        shapes.setdefault(t.name, []).append(list(t.dims))
    consumers: dict[str, list[onnx.NodeProto]] = {}
    producers: dict[str, onnx.NodeProto] = {}
    for n in graph.node:
        for x in n.input:
            consumers.setdefault(x, []).append(n)
        for o in n.output:
            producers[o] = n

    def value(name: str):
        t = inits.get(name)
        if t is None:
            return None
        n = 1
        for d in t.dims:
            n *= d
        return onnx.numpy_helper.to_array(t) if n <= 64 else None

    def attr_ints(node: onnx.NodeProto, key: str, default: int | None = None) -> int | None:
        for a in node.attribute:
            if a.name == key:
                return int(a.ints[0]) if a.ints else None
        return default

    reads = scan.body_reads(graph)
    read_by_bodies = set().union(*reads) if reads else set()
    for node, body in zip(graph.node, reads):
        if node.op_type in _GRAPHSURGEON_ALWAYS:
            return True
        if node.op_type not in _GRAPHSURGEON_NO_FOLD and all(x in constants for x in node.input if x) \
                and body <= constants:
            return True  # every input is constant: graphsurgeon would evaluate it
        if node.op_type == "Shape":
            if node.output[0] in read_by_bodies or _shape_folds(
                    node, consumers.get(node.output[0], []), shapes.get(node.input[0], []), value, attr_ints):
                return True
        if node.op_type in _CAST_ELISION_OPS:
            casts_in = any(p.op_type == "Cast" and attr_ints_to(p) == onnx.TensorProto.FLOAT
                           for p in (producers.get(x) for x in node.input) if p is not None)
            if casts_in and any(c.op_type == "Cast" for o in node.output for c in consumers.get(o, [])):
                return True
    if scan.unused_initializers(graph, reads) or not scan.all_live(graph, reads):
        return True  # its cleanup would remove something
    constants = frozenset(constants)
    return any(_graph_has_work(sub, constants, shapes, inits) for node in graph.node for sub in scan.subgraphs(node))


def attr_ints_to(node: onnx.NodeProto) -> int | None:
    """A Cast node's ``to``."""
    for a in node.attribute:
        if a.name == "to":
            return int(a.i)
    return None


def infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """onnx's shape inference; through a file for models over the protobuf limit."""
    if model_io.needs_external_data(model):
        with model_io.materialized(model) as path:
            onnx.shape_inference.infer_shapes_path(str(path))
            return model_io.load(path, check=False)
    return onnx.shape_inference.infer_shapes(model)


def _restore_interface(out: onnx.ModelProto, like: onnx.ModelProto) -> None:
    """Put the declared graph inputs and outputs back (types, dims, order) - folding never changes them."""
    inits = {t.name for t in out.graph.initializer}
    like_inits = {t.name for t in like.graph.initializer}
    real = [vi for vi in like.graph.input if vi.name not in like_inits]
    del out.graph.input[:]
    out.graph.input.extend(real)
    G.keep_initializer_inputs(out, like)
    # An initializer the folder created for an input name would shadow the input.
    assert not ({vi.name for vi in real} & inits), "a folder turned a graph input into an initializer"
    del out.graph.output[:]
    out.graph.output.extend(like.graph.output)


def _attribute_key(attr: onnx.AttributeProto) -> bytes:
    """An attribute without what folders rename or infer (tensor names; bodies are walked apart)."""
    if attr.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
        return attr.name.encode()
    if attr.HasField("t") and attr.t.HasField("name"):  # an empty name set explicitly is no change either
        attr = onnx.AttributeProto.FromString(attr.SerializeToString())
        attr.t.ClearField("name")
    return attr.SerializeToString(deterministic=True)


def _carry_metadata(out: onnx.ModelProto, like: onnx.ModelProto) -> None:
    """Keep model and node metadata across a folder (onnxsim drops node metadata_props).

    A node is matched to the original node that wrote its first output; a node that
    changed op in folding (an Add turned into a Constant) is stamped as this pass's work.
    """
    del out.metadata_props[:]
    out.metadata_props.extend(like.metadata_props)
    original = {n.output[0]: n for n in G.iter_proto_nodes(like) if n.output}
    for node in G.iter_proto_nodes(out):
        src = original.get(node.output[0]) if node.output else None
        if src is not None and src.op_type == node.op_type and src.domain == node.domain:
            if not node.metadata_props:
                node.metadata_props.extend(src.metadata_props)
            continue
        props = {p.key: p.value for p in node.metadata_props}
        props.update({G.PROVENANCE_PASS: "fold-constants", G.PROVENANCE_RULE: "fold",
                      G.PROVENANCE_FROM: src.name if src is not None else ""})
        del node.metadata_props[:]
        for key, value in props.items():
            node.metadata_props.add(key=key, value=value)


def _structure(model: onnx.ModelProto) -> tuple:
    """What folding can change, without names of nodes and inferred value_info."""
    nodes = tuple(
        (n.op_type, n.domain, tuple(n.input), tuple(n.output), tuple(_attribute_key(a) for a in n.attribute))
        for n in G.iter_proto_nodes(model)
    )
    inits = tuple(sorted(t.name for t in model.graph.initializer))
    return nodes, inits


def _shaped(model: onnx.ModelProto) -> set[str]:
    """Value names with an inferred shape (main graph)."""
    return {vi.name for vi in model.graph.value_info
            if vi.type.WhichOneof("value") == "tensor_type" and vi.type.tensor_type.HasField("shape")}


def _record(before: onnx.ModelProto, after: onnx.ModelProto, log: PassLog) -> bool:
    """Count what changed; False when the fold changed nothing worth keeping."""
    ops_b, ops_a = G.op_histogram(before), G.op_histogram(after)
    constants = ops_b.get("Constant", 0) - ops_a.get("Constant", 0)
    others = (sum(ops_b.values()) - ops_b.get("Constant", 0)) - (sum(ops_a.values()) - ops_a.get("Constant", 0))
    new_shapes = len(_shaped(after) - _shaped(before))
    structural = _structure(before) != _structure(after)
    if others > 0:
        log.count("constant folded", others)
    elif others < 0:
        log.count("node added by folding", -others)
    if constants > 0:
        log.count("Constant node made initializer", constants)
    if new_shapes:
        log.count("shape inferred", new_shapes)
    if structural and others == 0 and constants == 0:
        log.count("input replaced by folded constant")
    return structural or new_shapes > 0


@register
class FoldConstants(Pass):
    name = "fold-constants"
    summary = "Fold what does not depend on the inputs (onnxsim, then onnx-graphsurgeon) and infer shapes."
    default_order = 30

    def run(self, model: onnx.ModelProto, ctx: PassContext, log: PassLog) -> onnx.ModelProto | None:
        choice = ctx.options.get("fold_backend", "auto") or "auto"
        if choice not in BACKENDS:
            raise UsageError(f"unknown fold backend '{choice}'; choose one of {', '.join(BACKENDS)}")
        chain = {"auto": ["onnxsim", "graphsurgeon"], "onnxsim": ["onnxsim"], "graphsurgeon": ["graphsurgeon"]}[choice]
        folders = {"onnxsim": fold_with_onnxsim, "graphsurgeon": fold_with_graphsurgeon}
        if not ctx.permit("fold", model.graph.name or "main"):
            return None
        current, worked = model, []
        failures: list[str] = []
        for name in chain:
            if name == "graphsurgeon" and worked and not overridable_initializers(current) \
                    and not graphsurgeon_has_work(current):
                continue  # after onnxsim: nothing left that graphsurgeon would fold or clean
            try:
                current = folders[name](current)
                worked.append(name)
            except Exception as exc:  # noqa: BLE001 - a folder's failure is reported, then the next one runs
                logger.info("fold backend %s failed: %s", name, exc)
                failures.append(name)
                log.note(f"{name} could not fold this model ({_first_line(exc)})")
        if not worked:
            fallback = next(n for n in folders if n not in chain) if len(chain) == 1 else None
            if fallback:
                try:
                    current = folders[fallback](current)
                    worked.append(fallback)
                    log.note(f"folded with {fallback} instead of {chain[0]}")
                except Exception as exc:  # noqa: BLE001
                    log.note(f"{fallback} could not fold this model either ({_first_line(exc)})")
        if not worked:
            try:
                current = infer_shapes(current)
            except Exception as exc:  # noqa: BLE001
                log.note(f"shape inference failed ({_first_line(exc)}); nothing folded")
                return None
        current = model_io.copy(current) if current is model else current
        current.ir_version = model.ir_version
        _restore_interface(current, model)
        _carry_metadata(current, model)
        if not _record(model, current, log):
            return None
        return current
