"""onnx-graphsurgeon in the middle, protobuf at the edges.

Passes work on ``gs.Graph``. onnx-graphsurgeon drops each node's ``metadata_props`` on
import and export, and surgeon relies on them for provenance (which pass and rule made
a node), so this module carries them across: on import it copies them to
``node.meta`` (a plain dict), on export it writes ``node.meta`` back. Everything else
about a model that gs does not model (IR version, model metadata, opset imports of
domains nobody touched) is copied from the original model.
"""

from __future__ import annotations

from collections import Counter
from typing import Iterator

import onnx
import onnx_graphsurgeon as gs

from surgeon import model as model_io

META = "meta"  # name of the attribute holding a node's metadata_props as a dict

PROVENANCE_PASS = "surgeon.pass"
PROVENANCE_RULE = "surgeon.rule"
PROVENANCE_FROM = "surgeon.from"


def _walk_proto_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from _walk_proto_nodes(attr.g)
            for sub in attr.graphs:
                yield from _walk_proto_nodes(sub)


def _walk_gs_nodes(graph: gs.Graph) -> Iterator[gs.Node]:
    for node in graph.nodes:
        yield node
        for value in node.attrs.values():
            if isinstance(value, gs.Graph):
                yield from _walk_gs_nodes(value)
            elif isinstance(value, (list, tuple)):
                for item in value:
                    if isinstance(item, gs.Graph):
                        yield from _walk_gs_nodes(item)


def import_graph(model: onnx.ModelProto) -> gs.Graph:
    """Import a model into onnx-graphsurgeon, keeping each node's metadata_props."""
    graph = gs.import_onnx(model)
    proto_nodes = list(_walk_proto_nodes(model.graph))
    gs_nodes = list(_walk_gs_nodes(graph))
    assert len(proto_nodes) == len(gs_nodes), "graphsurgeon imported a different number of nodes"
    for proto, node in zip(proto_nodes, gs_nodes):
        setattr(node, META, {p.key: p.value for p in proto.metadata_props})
    _mark_overridable(graph, model)
    return graph


OVERRIDABLE = "overridable"  # attribute set True on gs.Constants a user may override


def _mark_overridable(graph: gs.Graph, model: onnx.ModelProto) -> None:
    """Mark initializers that are also graph inputs (IR >= 4): defaults a user may feed.

    onnx-graphsurgeon imports them as plain Constants and drops the listing, so a pass
    would otherwise fold a value the user can replace at run time. Before IR 4 every
    initializer had to be listed as an input, and runtimes treat them as constants.
    """
    if model.ir_version < 4:
        return
    inits = {t.name for t in model.graph.initializer}
    names = {vi.name for vi in model.graph.input if vi.name in inits}
    if not names:
        return
    for name, tensor in graph.tensors().items():
        if name in names and isinstance(tensor, gs.Constant):
            setattr(tensor, OVERRIDABLE, True)


def is_overridable(tensor: gs.Tensor) -> bool:
    """Whether ``tensor`` is an initializer the user may override (never fold its value)."""
    return bool(getattr(tensor, OVERRIDABLE, False))


def meta(node: gs.Node) -> dict[str, str]:
    """A node's metadata dict (created empty for nodes made by a pass)."""
    if not hasattr(node, META):
        setattr(node, META, {})
    return getattr(node, META)


def stamp(node: gs.Node, pass_name: str, rule: str, sources: list[str] | str) -> gs.Node:
    """Record which pass and rule created ``node`` and from which original nodes."""
    if isinstance(sources, str):
        sources = [sources]
    m = meta(node)
    m[PROVENANCE_PASS] = pass_name
    m[PROVENANCE_RULE] = rule
    m[PROVENANCE_FROM] = ",".join(s for s in sources if s)
    return node


def export_model(graph: gs.Graph, like: onnx.ModelProto) -> onnx.ModelProto:
    """Export ``graph`` as a model that keeps everything of ``like`` gs does not model."""
    # graphsurgeon's lazily loaded constants wrap the *source* TensorProtos, and its exporter
    # writes their names back into them: unnamed Constant-attribute tensors of ``like`` would
    # gain an explicit empty name, so a model no pass changed would not stay bit-identical.
    unnamed = [t for t in model_io.iter_all_tensors(like) if not t.HasField("name")]
    out = gs.export_onnx(graph, do_type_check=False)
    for tensor in unnamed:
        tensor.ClearField("name")
    for proto, node in zip(_walk_proto_nodes(out.graph), _walk_gs_nodes(graph)):
        del proto.metadata_props[:]
        for key, value in getattr(node, META, {}).items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
    out.ir_version = like.ir_version
    out.producer_name = like.producer_name
    out.producer_version = like.producer_version
    out.domain = like.domain
    out.model_version = like.model_version
    out.doc_string = like.doc_string
    del out.metadata_props[:]
    out.metadata_props.extend(like.metadata_props)
    # Keep the original opset imports (custom domains stay declared even if unused
    # now), and add the ones a pass introduced.
    original = {o.domain: o.version for o in like.opset_import}
    added = {o.domain: o.version for o in out.opset_import if o.domain not in original}
    del out.opset_import[:]
    for domain, version in {**original, **added}.items():
        out.opset_import.append(onnx.helper.make_opsetid(domain, version))
    if not graph.functions:
        del out.functions[:]
        out.functions.extend(like.functions)
    keep_initializer_inputs(out, like)
    _hoist_outer_initializers(out, like)
    _keep_non_tensor_types(out, like)
    return out


def _keep_non_tensor_types(out: onnx.ModelProto, like: onnx.ModelProto) -> None:
    """Put back the declared types of main-graph inputs/outputs that are not tensors (in place).

    Why: graphsurgeon models every value as a tensor and exports a ``seq(map(...))`` output
    (scikit-learn's ZipMap) as a sequence of untyped tensors, which the checker rejects.
    """
    for mine, theirs in ((out.graph.output, like.graph.output), (out.graph.input, like.graph.input)):
        declared = {vi.name: vi for vi in theirs if vi.type.WhichOneof("value") not in (None, "tensor_type")}
        for vi in mine:
            if vi.name in declared:
                vi.type.CopyFrom(declared[vi.name].type)


def _subgraph_protos(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    for node in graph.node:
        for attr in node.attribute:
            subs = ([attr.g] if attr.HasField("g") else []) + list(attr.graphs)
            for sub in subs:
                yield sub
                yield from _subgraph_protos(sub)


def _hoist_outer_initializers(out: onnx.ModelProto, like: onnx.ModelProto) -> None:
    """Move main-graph initializers that graphsurgeon copied into bodies back out (in place).

    Why: on export graphsurgeon writes a constant a body reads from the outer scope as an
    initializer of that body, and of every body that reads it: weights shared by two
    branches would be stored twice, and the model's layout changes for no reason.
    """
    outer = {t.name for t in like.graph.initializer}
    local = {t.name for sub in _subgraph_protos(like.graph) for t in sub.initializer}
    present = {t.name for t in out.graph.initializer}
    for sub in _subgraph_protos(out.graph):
        moved = [t for t in sub.initializer if t.name in outer and t.name not in local]
        if not moved:
            continue
        keep = [t for t in sub.initializer if not (t.name in outer and t.name not in local)]
        for t in moved:
            if t.name not in present:
                out.graph.initializer.append(t)
                present.add(t.name)
        del sub.initializer[:]
        sub.initializer.extend(keep)


def keep_initializer_inputs(out: onnx.ModelProto, like: onnx.ModelProto) -> None:
    """Put back initializers that ``like`` listed as graph inputs (in place, on ``out``).

    Why: before IR 4 every initializer must also be a graph input (an overridable
    default), and later IRs still allow it. onnx-graphsurgeon drops such entries on
    import, which makes an IR 3 model invalid and removes a default a user may feed.
    The original input order is kept; an initializer that no longer exists is not put
    back (no stale required input). Under IR 3 a new initializer is listed too.
    """
    inits = {t.name for t in out.graph.initializer}
    like_inits = {t.name for t in like.graph.initializer}
    listed = [vi for vi in like.graph.input if vi.name in like_inits]
    if not listed and out.ir_version >= 4:
        return
    current = {vi.name: vi for vi in out.graph.input}
    new_inputs = []
    for vi in like.graph.input:
        if vi.name in current:
            new_inputs.append(current.pop(vi.name))
        elif vi.name in like_inits and vi.name in inits:
            new_inputs.append(vi)
    new_inputs.extend(current.values())  # inputs a pass added
    if out.ir_version < 4:
        named = {vi.name for vi in new_inputs}
        for t in out.graph.initializer:
            if t.name not in named:
                new_inputs.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    del out.graph.input[:]
    out.graph.input.extend(new_inputs)


def iter_graphs(graph: gs.Graph) -> Iterator[gs.Graph]:
    """The graph and every subgraph (If/Loop/Scan bodies), outer first."""
    yield graph
    for node in graph.nodes:
        for value in node.attrs.values():
            subs = value if isinstance(value, (list, tuple)) else [value]
            for sub in subs:
                if isinstance(sub, gs.Graph):
                    yield from iter_graphs(sub)


def count_nodes(model: onnx.ModelProto) -> int:
    """Nodes in the model, subgraphs included."""
    return sum(1 for _ in _walk_proto_nodes(model.graph))


def op_histogram(model: onnx.ModelProto) -> Counter:
    """``domain::op`` (``op`` for the default domain) → count, subgraphs included."""
    return Counter(
        (f"{n.domain}::{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type)
        for n in _walk_proto_nodes(model.graph)
    )


def iter_proto_nodes(model: onnx.ModelProto) -> Iterator[onnx.NodeProto]:
    return _walk_proto_nodes(model.graph)


def opset_version(model: onnx.ModelProto, domain: str = "") -> int | None:
    for o in model.opset_import:
        if o.domain == domain or (domain == "" and o.domain == "ai.onnx"):
            return o.version
    return None


def outer_scope_names(graph: gs.Graph) -> set[str]:
    """Names a subgraph reads from enclosing graphs (gs keeps them as shared tensors).

    A pass that removes or renames a tensor must check this set for every subgraph of
    the graph it edits: a body may read the tensor without a visible edge.
    """
    produced = {t.name for node in graph.nodes for t in node.outputs}
    produced |= {t.name for t in graph.inputs}
    used = set()
    for node in graph.nodes:
        for t in node.inputs:
            if t.name and t.name not in produced and not isinstance(t, gs.Constant):
                used.add(t.name)
        for value in node.attrs.values():
            subs = value if isinstance(value, (list, tuple)) else [value]
            for sub in subs:
                if isinstance(sub, gs.Graph):
                    used |= outer_scope_names(sub) - produced
    return used
