"""The importer: a skeleton ModelProto into onnx-graphsurgeon, plus what graphsurgeon loses.

``gs.import_onnx`` builds the graph; :func:`bind` then carries what it drops or gets
wrong: each node's ``metadata_props`` (provenance) and the attributes it skips, the
declared types of every graph's interface, which graph declared each initializer, node
input/output lists that remove by identity, and the shared arrays behind weight stubs
(:mod:`surgeon.weights`). :func:`stub_large_tensors` turns an in-memory ModelProto into
a skeleton and its weights. The exporter (:mod:`surgeon.graph_export`) reads the marks
set here; :class:`surgeon.graph.Model` holds the result.
"""

from __future__ import annotations

from typing import Iterator, Mapping, TypeVar

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from google.protobuf.message import Message
from onnx_graphsurgeon.ir.tensor import LazyValues, SparseValues
from onnx_graphsurgeon.util import misc

from surgeon import weights as W
from surgeon.graph_ops import META, OVERRIDABLE, iter_graphs, proto_subgraphs, subgraphs, walk_nodes

OWNER = "surgeon_owner"  # attribute on imported initializers: id of the graph that declared them
RAW_ATTRS = "surgeon_raw_attrs"  # node attribute: AttributeProtos graphsurgeon cannot hold, re-emitted on export

# Attribute types graphsurgeon skips on import (with a warning): kept verbatim by surgeon.
_GS_SKIPS = frozenset({onnx.AttributeProto.TENSORS, onnx.AttributeProto.GRAPHS, onnx.AttributeProto.SPARSE_TENSOR,
                       onnx.AttributeProto.SPARSE_TENSORS, onnx.AttributeProto.TYPE_PROTO,
                       onnx.AttributeProto.TYPE_PROTOS, onnx.AttributeProto.UNDEFINED})
_PLAIN_TYPES = frozenset({
    onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.BOOL,
    onnx.TensorProto.INT8, onnx.TensorProto.INT16, onnx.TensorProto.INT32, onnx.TensorProto.INT64,
    onnx.TensorProto.UINT8, onnx.TensorProto.UINT16, onnx.TensorProto.UINT32, onnx.TensorProto.UINT64,
})  # element types whose values numpy holds exactly (others stay lazy: graphsurgeon would cast them)


M = TypeVar("M", bound=Message)


def proto_copy(message: M) -> M:
    """A deep copy of a protobuf message (a ModelProto, TensorProto, ValueInfoProto ...)."""
    out = type(message)()
    out.CopyFrom(message)
    return out


def shape_key(shape) -> tuple | None:
    return None if shape is None else tuple(shape)


def stub_large_tensors(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """A skeleton of an in-memory ModelProto and its weights: each large tensor is copied out
    of protobuf once, and a stub (:mod:`surgeon.weights`) takes its place."""
    skeleton = proto_copy(model)
    arrays: dict[str, np.ndarray] = {}
    for t in W.iter_graph_tensors(skeleton.graph):
        if t.data_location == onnx.TensorProto.EXTERNAL or not t.HasField("raw_data"):
            continue
        dtype = W.numpy_dtype(t.data_type)
        if dtype is None or len(t.raw_data) < W.LARGE_BYTES:
            continue
        key = f"{W.STUB_PREFIX}{len(arrays)}"
        arrays[key] = W.frozen(np.frombuffer(t.raw_data, dtype=dtype).reshape(tuple(t.dims)))
        t.ClearField("raw_data")
        t.data_location = onnx.TensorProto.EXTERNAL
        t.external_data.add(key="location", value=key)
    return skeleton, arrays


def bind(graph: gs.Graph, skeleton: onnx.ModelProto, weights: Mapping[str, np.ndarray], overridable: set[str],
         ) -> tuple[dict[int, dict[str, tuple]], dict[str, gs.Constant], set[str]]:
    """Metadata, overridable marks, owners, and the shared arrays behind stubs, on ``graph``
    (just imported from ``skeleton``).

    ``overridable``: the names of the main graph's initializers a user may override.
    Returns the declared interface types (see :func:`_declared_types`), the overridable
    initializers nodes read (by name), and every name some node or graph output reads.
    """
    metas, read_names = _scan_protos(skeleton.graph)
    gs_nodes = list(walk_nodes(graph))
    if len(metas) != len(gs_nodes):
        raise AssertionError("graphsurgeon imported a different number of nodes")
    for (props, raw), node in zip(metas, gs_nodes):
        setattr(node, META, props)
        if raw:
            setattr(node, RAW_ATTRS, raw)
        _by_identity(node)
    declared_types = _declared_types(skeleton.graph, graph)
    defaults: dict[str, gs.Constant] = {}  # the overridable initializers nodes read, by name
    owner_of = {name: gid for gid, names in _initializer_owners(skeleton.graph, graph).items() for name in names}
    root = id(graph)
    for const in _constants(graph):
        if isinstance(const._values, SparseValues):
            const._values = W.DenseSparseValues(const._values.tensor)
        elif isinstance(const._values, LazyValues):
            key = W.stub_key(const._values.tensor)
            if key is not None:
                const._values = W.WeightValues(const._values.tensor, weights[key])
            elif const._values.tensor.data_type in _PLAIN_TYPES:
                # Small values are read now, once: graphsurgeon would swap in a fresh array
                # on first access, and identity is how signatures and exports see changes.
                const._values = const._values.load()
        owner = owner_of.get(const.name)
        if owner is not None:
            setattr(const, OWNER, owner)
        if owner == root and const.name in overridable:
            setattr(const, OVERRIDABLE, True)
            defaults[const.name] = const
    return declared_types, defaults, read_names


def _constants(graph: gs.Graph) -> Iterator[gs.Constant]:
    seen: set[int] = set()
    for g in iter_graphs(graph):
        for t in g.tensors().values():
            if isinstance(t, gs.Constant) and id(t) not in seen:
                seen.add(id(t))
                yield t
        for node in g.nodes:
            for value in node.attrs.values():
                if isinstance(value, gs.Constant) and id(value) not in seen:
                    seen.add(id(value))
                    yield value


def _scan_protos(graph: onnx.GraphProto) -> tuple[list[tuple[dict[str, str], list]], set[str]]:
    """In one walk: each node's metadata and skipped attributes (walk order), and every name read."""
    metas: list[tuple[dict[str, str], list]] = []
    names = {vi.name for vi in graph.output}

    def walk(g: onnx.GraphProto) -> None:
        for node in g.node:
            raw = [proto_copy(a) for a in node.attribute if a.type in _GS_SKIPS and not a.ref_attr_name] \
                if node.attribute else []
            metas.append(({p.key: p.value for p in node.metadata_props} if len(node.metadata_props) else {}, raw))
            names.update(node.input)
            if node.attribute:
                for sub in proto_subgraphs(node):
                    names.update(vi.name for vi in sub.output)
                    walk(sub)

    walk(graph)
    return metas, names


def _declared_types(graph: onnx.GraphProto, gs_graph: gs.Graph) -> dict[int, dict[str, tuple]]:
    """id(gs graph) → name → (declared TypeProto, dtype and shape graphsurgeon gave that value on import).

    graphsurgeon does not keep optional types or a sequence's element shape, and a graph
    output takes the (often vaguer) shape of a value_info entry of the same name. The
    declared type is written back as long as no pass changed the value's dtype or shape.
    """
    tensors = {t.name: t for t in list(gs_graph.inputs) + list(gs_graph.outputs)}
    types: dict[str, tuple] = {}
    for vi in list(graph.value_info) + list(graph.input) + list(graph.output):  # the interface's declaration wins
        plain = vi.type.WhichOneof("value") in (None, "tensor_type")
        mine = tensors.get(vi.name)
        if plain and mine is None:
            continue  # an intermediate's value_info: graphsurgeon holds it
        types[vi.name] = (proto_copy(vi.type), None if mine is None else mine.dtype,
                          None if mine is None else shape_key(mine.shape))
    out = {id(gs_graph): types} if types else {}
    for p, g in _paired_bodies(graph, gs_graph):
        out.update(_declared_types(p, g))
    return out


class _IdentityList(misc.SynchronizedList):
    """graphsurgeon's synchronized input/output list, taking a node out of a tensor's list by identity.

    graphsurgeon removes with ``list.remove``, which compares nodes by name, op, attributes
    and tensor names: two sibling bodies written alike (an If whose branches are one
    exporter-copied graph) hold nodes that compare equal, and detaching one removed the
    other's entry from the outer tensor they both read (a crash later, or a wrong graph).
    """

    def _remove_from_elem(self, elem):
        peers = getattr(elem, self.field_name)
        for i, x in enumerate(peers):
            if x is self.parent_obj:
                list.__delitem__(peers, i)
                return
        raise ValueError(f"{self.parent_obj!r} is not in the {self.field_name} of {elem.name}")


def _by_identity(node: gs.Node) -> None:
    """Give an imported node identity-based input/output lists (their counterparts are already linked)."""
    for side, peer in (("inputs", "outputs"), ("outputs", "inputs")):
        items = list(getattr(node, side))
        replacement = _IdentityList(node, peer, [])
        list.extend(replacement, items)
        object.__setattr__(node, side, replacement)


def _initializer_owners(graph: onnx.GraphProto, gs_graph: gs.Graph) -> dict[int, set[str]]:
    """id(gs graph) → names of the initializers that graph declared."""
    owners = {id(gs_graph): {t.name for t in graph.initializer}}
    for p, g in _paired_bodies(graph, gs_graph):
        owners.update(_initializer_owners(p, g))
    return owners


def _paired_bodies(graph: onnx.GraphProto, gs_graph: gs.Graph) -> Iterator[tuple[onnx.GraphProto, gs.Graph]]:
    """The bodies of ``graph``'s nodes, each with the graphsurgeon body imported from it."""
    proto_subs = [sub for n in graph.node if n.attribute for sub in proto_subgraphs(n)]
    gs_subs = [sub for n in gs_graph.nodes for sub in subgraphs(n)]
    return zip(proto_subs, gs_subs)
