"""The one in-memory model: an onnx-graphsurgeon graph in the middle, protobuf at the edges.

Passes edit ``Model.graph`` (onnx-graphsurgeon's ``Graph``/``Node``/``Variable``/
``Constant``, the API TensorRT users know) in place for the whole pipeline. Weights are
shared read-only arrays (:mod:`surgeon.weights`) and never pass through protobuf between
passes: :meth:`Model.export` writes a *skeleton* in which every large tensor is a stub,
plus a table from stub keys to arrays. The skeleton is what the checker, shape
inference and ONNX Runtime see (the arrays are handed to ONNX Runtime in memory), and
re-importing it is how a rollback restores the structure.

onnx-graphsurgeon loses things surgeon needs, so this module carries them itself: each
node's ``metadata_props`` (provenance: which pass and rule made a node) live in
``node.meta``; initializers a user may override stay listed as graph inputs; unused
initializers survive until ``cleanup`` removes them; model-level fields graphsurgeon does
not model (IR version, metadata, functions, opset imports) are kept in ``Model``.
Everything here costs time in proportion to the graph, never to the weight bytes.
"""

from __future__ import annotations

from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, Mapping

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx_graphsurgeon.exporters.onnx_exporter import constant_to_onnx_tensor, dtype_to_onnx
from onnx_graphsurgeon.ir.tensor import LazyValues, SparseValues
from onnx_graphsurgeon.util import misc

from surgeon import weights as W
from surgeon.graph_ops import (  # noqa: F401 - the walkers and marks live in the kernel; re-exported for callers
    META, OVERRIDABLE, PROVENANCE_FROM, PROVENANCE_PASS, PROVENANCE_RULE, all_names, body_reads, is_overridable,
    infer_shapes, iter_graphs, meta, outer_scope_names, proto_subgraphs, stamp, subgraphs, walk_nodes,
)
from surgeon.graph_ops import walk_graph_protos as _walk_graph_protos
from surgeon.graph_ops import walk_proto_nodes as _walk_proto_nodes

OWNER = "surgeon_owner"  # attribute on imported initializers: id of the graph that declared them


# --- walking (model level) -------------------------------------------------------------

def iter_proto_nodes(model: onnx.ModelProto) -> Iterator[onnx.NodeProto]:
    return _walk_proto_nodes(model.graph)


def count_nodes(model: "onnx.ModelProto | Model") -> int:
    """Nodes in the model, subgraphs included."""
    if isinstance(model, Model):
        return sum(1 for _ in walk_nodes(model.graph))
    return sum(1 for _ in _walk_proto_nodes(model.graph))


def _label(domain: str | None, op: str) -> str:
    return f"{domain}::{op}" if domain not in (None, "", "ai.onnx") else op


def op_histogram(model: "onnx.ModelProto | Model") -> Counter:
    """``domain::op`` (``op`` for the default domain) → count, subgraphs included."""
    if isinstance(model, Model):
        return Counter(_label(n.domain, n.op) for n in walk_nodes(model.graph))
    return Counter(_label(n.domain, n.op_type) for n in _walk_proto_nodes(model.graph))


def opset_version(model: onnx.ModelProto, domain: str = "") -> int | None:
    for o in model.opset_import:
        if o.domain == domain or (domain == "" and o.domain == "ai.onnx"):
            return o.version
    return None


# --- marks -------------------------------------------------------------------------------

def is_weight(tensor: gs.Tensor) -> bool:
    """A large Constant held as a shared array (see :mod:`surgeon.weights`)."""
    if not isinstance(tensor, gs.Constant):
        return False
    values = tensor._values
    if isinstance(values, (W.WeightValues, W.Derived)):
        return True
    return isinstance(values, np.ndarray) and W.is_large(values)


# --- the model -------------------------------------------------------------------------

@dataclass
class Exported:
    """A model written out as a skeleton: stubs for the weights, and the weights by key."""

    skeleton: onnx.ModelProto
    weights: dict[str, np.ndarray] = field(default_factory=dict)
    _digests: tuple[bytes, ...] | None = field(default=None, init=False, repr=False, compare=False)

    def digests(self) -> tuple[bytes, ...]:
        """The structural digests of the outputs (see surgeon.equivalence), computed once.

        An exported state is never edited, and each pipeline state is compared twice (as
        the candidate, then as the state the next pass starts from).
        """
        if self._digests is None:
            from surgeon.equivalence import output_digests

            self._digests = output_digests(self.skeleton, self.weights)
        return self._digests

    def _root_stubs(self) -> list[onnx.TensorProto]:
        return [t for t in self.skeleton.graph.initializer if W.stub_key(t)]

    def _embedded(self, root_too: bool) -> onnx.ModelProto:
        """A copy with stub data put back: everywhere, or only where ONNX Runtime needs it (not root initializers)."""
        out = onnx.ModelProto()
        out.CopyFrom(self.skeleton)
        for t in W.iter_graph_tensors(out.graph, initializers=root_too):
            key = W.stub_key(t)
            if key is not None:
                _fill(t, self.weights[key])
        return out

    def has_nested_stubs(self) -> bool:
        return any(W.stub_key(t) for t in W.iter_graph_tensors(self.skeleton.graph, initializers=False))

    def for_ort(self, *, as_inputs: bool = True) -> tuple[bytes, dict[str, np.ndarray]]:
        """A serialized skeleton for ONNX Runtime and the weights it must be given, by name.

        ``as_inputs``: the weights are graph inputs (``for_checker``), to be fed with every
        run: ONNX Runtime reads numpy inputs in place, so a session costs no weight copy
        and loads in a fraction of the time. Otherwise they stay initializers, to be
        handed over with ``SessionOptions.add_external_initializers``, which copies them
        (measured with ONNX Runtime 1.32: 2.8 GB of weights, 5.7 GB resident); that is
        the fallback for kernels that insist on constant weights. Stubs elsewhere
        (bodies, Constant attributes) are embedded, which only a rare model has.
        """
        if as_inputs:
            model = self.for_checker()
            stubs = {t.name: W.stub_key(t) for t in self.skeleton.graph.initializer if W.stub_key(t)}
            return model.SerializeToString(), {name: self.weights[key] for name, key in stubs.items()}
        model = self._embedded(root_too=False) if self.has_nested_stubs() else self.skeleton
        arrays = {t.name: self.weights[W.stub_key(t)] for t in model.graph.initializer if W.stub_key(t)}
        return model.SerializeToString(), arrays

    def for_checker(self) -> onnx.ModelProto:
        """The skeleton with root stubs as typed graph inputs: what the onnx checker can read.

        The checker insists that external data exists on disk; an input has the same
        type and dims and needs no data. Large tensors are never shape-like, so shape
        inference (``full_check``) sees everything it would have read.
        """
        model = self._embedded(root_too=False) if self.has_nested_stubs() else _copy(self.skeleton)
        listed = {vi.name for vi in model.graph.input}
        keep = []
        for t in model.graph.initializer:
            if W.stub_key(t) is None:
                keep.append(t)
            elif t.name not in listed:
                model.graph.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
        del model.graph.initializer[:]
        model.graph.initializer.extend(keep)
        return model

    def full(self) -> onnx.ModelProto:
        """A self-contained ModelProto with every weight embedded (copies every weight once)."""
        return self._embedded(root_too=True)

    @property
    def weight_bytes(self) -> int:
        return sum(a.nbytes for a in self.weights.values())


def _fill(tensor: onnx.TensorProto, array: np.ndarray) -> None:
    tensor.ClearField("external_data")
    tensor.ClearField("data_location")
    tensor.raw_data = np.ascontiguousarray(array).tobytes()


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


class Model:
    """The pipeline's model: ``graph`` (edited in place by passes) plus what gs does not hold.

    ``opsets`` (domain → version) is the opset import list; a pass that upgrades an opset
    or adds a domain edits it. ``header`` keeps the ModelProto fields graphsurgeon does
    not model. ``unused_initializers`` are main-graph initializers no node reads:
    graphsurgeon would drop them silently, ``cleanup`` removes them and counts it.
    """

    def __init__(self, skeleton: onnx.ModelProto, weights: Mapping[str, np.ndarray]):
        self._read(skeleton, weights)
        self.original = Exported(skeleton, dict(weights))  # what was read, for fidelity_problem()

    def fidelity_problem(self, now: Exported) -> str | None:
        """What this in-memory model would change if written back untouched, or None.

        onnx-graphsurgeon does not model everything ONNX can say; surgeon carries what it
        knows is lost, and this check makes sure nothing else was: the same computation
        (surgeon.equivalence) and the same declared types for every graph's interface.
        ``now``: this model's export (the pipeline's first state; its digests are kept).
        """
        from surgeon.equivalence import output_digests

        held = {id(a) for a in self.original.weights.values()}
        embedded = frozenset(k for k, a in now.weights.items() if id(a) not in held)  # read from float_data and such
        digests = output_digests(now.skeleton, now.weights, embedded) if embedded else now.digests()
        if self.original.digests() != digests:
            return "the graph read back differs from the file (an attribute or a node graphsurgeon cannot hold)"
        for before, after in zip(_walk_graph_protos(self.original.skeleton.graph), _walk_graph_protos(now.skeleton.graph)):
            for kind in ("input", "output"):
                a = [(vi.name, vi.type.SerializeToString(deterministic=True)) for vi in getattr(before, kind)]
                b = [(vi.name, vi.type.SerializeToString(deterministic=True)) for vi in getattr(after, kind)]
                if a != b:
                    changed = next((x[0] for x, y in zip(a, b) if x != y), "?")
                    return f"the declared type of {kind} '{changed}' of graph '{before.name}' would change"
        return None

    # -- import ------------------------------------------------------------------------

    def _read(self, skeleton: onnx.ModelProto, weights: Mapping[str, np.ndarray]) -> None:
        # Export caches (see _Exporter._node and _tensor): protos of unchanged nodes and small constants.
        self.node_protos: dict[int, tuple[tuple, onnx.NodeProto]] = {}
        self.tensor_protos: dict[int, tuple[tuple, onnx.TensorProto]] = {}
        self.header = onnx.ModelProto()
        self.header.CopyFrom(skeleton)
        self.header.ClearField("graph")
        g = skeleton.graph
        self.graph_extras = onnx.GraphProto()  # graph-level fields gs drops
        self.graph_extras.quantization_annotation.extend(g.quantization_annotation)
        self.graph_extras.metadata_props.extend(g.metadata_props)
        self.opsets: dict[str, int] = {}
        for o in skeleton.opset_import:
            self.opsets["" if o.domain == "ai.onnx" else o.domain] = o.version
        inits = {t.name for t in g.initializer}
        # The graph input list as declared: real inputs and overridable/IR<4 initializer listings.
        self.declared_inputs = [_copy_vi(vi) for vi in g.input]
        self.declared_outputs = {vi.name: _copy_vi(vi) for vi in g.output}
        self.listed_initializers = {vi.name for vi in g.input if vi.name in inits}
        self.graph = gs.import_onnx(skeleton)
        self._bind(skeleton, weights)
        used = self._read_names
        del self._read_names
        # An overridable default (IR >= 4, listed as an input) is part of the interface even unread:
        # unread ones are kept aside (cleanup never removes them), read ones in ``defaults``.
        interface = self.listed_initializers if self.header.ir_version >= 4 else set()
        self.unused_initializers = [_copy_tensor(t) for t in g.initializer if t.name not in used and t.name not in interface]
        self.unread_defaults = [_copy_tensor(t) for t in g.initializer if t.name not in used and t.name in interface]
        self.unused_weights = {W.stub_key(t): weights[W.stub_key(t)]
                               for t in self.unused_initializers + self.unread_defaults if W.stub_key(t)}

    def _bind(self, skeleton: onnx.ModelProto, weights: Mapping[str, np.ndarray]) -> None:
        """Metadata, overridable marks, owners, and the shared arrays behind stubs."""
        metas, self._read_names = _scan_protos(skeleton.graph)
        gs_nodes = list(walk_nodes(self.graph))
        if len(metas) != len(gs_nodes):
            raise AssertionError("graphsurgeon imported a different number of nodes")
        for (props, raw), node in zip(metas, gs_nodes):
            setattr(node, META, props)
            if raw:
                setattr(node, RAW_ATTRS, raw)
            _by_identity(node)
        self.declared_types = _declared_types(skeleton.graph, self.graph)
        overridable = self.listed_initializers if self.header.ir_version >= 4 else set()
        self.defaults: dict[str, gs.Constant] = {}  # the overridable initializers nodes read, by name
        owner_of = {name: gid for gid, names in _initializer_owners(skeleton.graph, self.graph).items() for name in names}
        root = id(self.graph)
        for const in self._constants():
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
                self.defaults[const.name] = const

    def _constants(self) -> Iterator[gs.Constant]:
        seen: set[int] = set()
        for g in iter_graphs(self.graph):
            for t in g.tensors().values():
                if isinstance(t, gs.Constant) and id(t) not in seen:
                    seen.add(id(t))
                    yield t
            for node in g.nodes:
                for value in node.attrs.values():
                    if isinstance(value, gs.Constant) and id(value) not in seen:
                        seen.add(id(value))
                        yield value

    @classmethod
    def from_proto(cls, model: onnx.ModelProto) -> "Model":
        """From an in-memory ModelProto: each large tensor is copied out of protobuf once."""
        skeleton = _copy(model)
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
        return cls(skeleton, arrays)

    # -- export ------------------------------------------------------------------------

    def export(self) -> Exported:
        """The skeleton and weight table of the current graph (cost: the graph, not the weights)."""
        return _Exporter(self).run()

    def to_proto(self) -> onnx.ModelProto:
        return self.export().full()

    def restore(self, exported: Exported) -> None:
        """Go back to an exported state (a rollback: the structure is re-imported, weights are shared)."""
        self._read(exported.skeleton, exported.weights)

    def opset(self, domain: str = "") -> int | None:
        return self.opsets.get(domain)

    def freeze_initializer_inputs(self) -> list[str]:
        """Make every overridable default (IR >= 4 initializer listed as an input) a plain constant.

        They leave the graph inputs, so passes may fold them; returns their names. For a
        user who knows the defaults are never overridden (``--freeze-initializer-inputs``);
        IR < 4 models have no overridable defaults (every initializer is listed there).
        """
        if self.header.ir_version < 4:
            return []
        names = sorted(self.listed_initializers)
        for const in self.defaults.values():
            setattr(const, OVERRIDABLE, False)
        self.defaults = {}
        self.unused_initializers.extend(self.unread_defaults)
        self.unread_defaults = []
        self.declared_inputs = [vi for vi in self.declared_inputs if vi.name not in self.listed_initializers]
        self.listed_initializers = set()
        return names

    def declare_output(self, name: str, tensor_type: onnx.TypeProto) -> None:
        """Replace a main-graph output's declared tensor type (its element type and dims)."""
        t = next(o for o in self.graph.outputs if o.name == name)
        tt = tensor_type.tensor_type
        t.dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)
        t.shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim]
        self.declared_types.get(id(self.graph), {}).pop(name, None)

    @property
    def ir_version(self) -> int:
        return self.header.ir_version

    def signature(self) -> tuple:
        """A structural fingerprint: equal before and after a pass that changed nothing.

        Identities of nodes, tensors and weight arrays, names, dtypes and shapes, and
        attribute values; no weight byte is read.
        """
        parts: list = [tuple(sorted(self.opsets.items())), len(self.unused_initializers), self.header.ir_version,
                       len(self.header.opset_import)]
        for g in iter_graphs(self.graph):
            parts.append(("graph", id(g), tuple(map(_tensor_sig, g.inputs)), tuple(map(_tensor_sig, g.outputs))))
            for n in g.nodes:
                parts.append((id(n), _node_key(n), tuple(map(_tensor_sig, n.inputs)), tuple(map(_tensor_sig, n.outputs))))
        return tuple(parts)


def extract(model: Model, nodes: list[gs.Node], outputs: list[gs.Tensor],
            inputs_as_constants: Mapping[str, np.ndarray] | None = None) -> Exported:
    """A model of just ``nodes`` (in the given order): the constants they read become
    initializers (weights stay shared), values in ``inputs_as_constants`` too, any other
    value they read becomes a graph input. Used to evaluate or check a piece of a model;
    the nodes must not carry bodies.
    """
    exporter = _Exporter(model)
    exporter.placement = {}  # flat: the nodes carry no bodies whose constants need placing
    given = dict(inputs_as_constants or {})
    produced = {id(t) for n in nodes for t in n.outputs}
    graph = onnx.GraphProto(name="extract")
    graph.node.extend(exporter._node(n) for n in nodes)
    seen: set[int] = set()
    for n in nodes:
        for t in n.inputs:
            if t.is_empty() or id(t) in produced or id(t) in seen:
                continue
            seen.add(id(t))
            if isinstance(t, gs.Constant):
                graph.initializer.append(exporter._tensor(t))
            elif t.name in given:
                graph.initializer.append(exporter._tensor(gs.Constant(t.name, W.frozen(np.asarray(given[t.name])))))
            else:
                graph.input.append(_value_info(t))
    graph.output.extend(_value_info(t) for t in outputs)
    out = _copy(model.header)
    out.graph.CopyFrom(graph)
    del out.opset_import[:]
    for domain, version in model.opsets.items():
        out.opset_import.append(onnx.helper.make_opsetid(domain, version))
    del out.functions[:]
    out.functions.extend(model.header.functions)
    return Exported(out, exporter.weights)


def infer_value_info(model: Model) -> dict[str, tuple[np.dtype | None, list | None]]:
    """Value name → (dtype, dims) found by onnx shape inference on the skeleton (bodies included).

    Raises what shape inference raises; callers decide whether that matters.
    """
    inferred = infer_shapes(model.export().for_checker())
    found: dict[str, tuple[np.dtype | None, list | None]] = {}

    def visit(g: onnx.GraphProto) -> None:
        for vi in g.value_info:
            if vi.type.WhichOneof("value") != "tensor_type":
                continue
            tt = vi.type.tensor_type
            dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type) if tt.elem_type else None
            dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim] \
                if tt.HasField("shape") else None
            found[vi.name] = (dtype, dims)
        for node in g.node:
            for sub in proto_subgraphs(node):
                visit(sub)

    visit(inferred.graph)
    return found


def annotate_types(model: Model, found: Mapping[str, tuple]) -> list[tuple[gs.Variable, object, object]]:
    """Give node outputs without dtype or shape the inferred ones; returns (tensor, old dtype, old shape) per change.

    Graph inputs and outputs are the model's interface and are never touched.
    """
    interface = {id(t) for g in iter_graphs(model.graph) for t in list(g.inputs) + list(g.outputs)}
    changed = []
    for g in iter_graphs(model.graph):
        for node in g.nodes:
            for t in node.outputs:
                hit = found.get(t.name)
                if hit is None or not isinstance(t, gs.Variable) or id(t) in interface:
                    continue
                old = (t.dtype, t.shape)
                if t.dtype is None and hit[0] is not None:
                    t.dtype = hit[0]
                if t.shape is None and hit[1] is not None:
                    t.shape = hit[1]
                if (t.dtype, t.shape) != old:
                    changed.append((t, *old))
    return changed


@contextmanager
def inferred_types(model: Model):
    """Inferred dtypes and shapes on the values that lack them, for the duration of a ``with`` block.

    Rules are proven from types and shapes, and most passes need them; only
    ``fold-constants`` records them in the model (as a counted change). Here they are
    taken away again afterwards, so a pass that rewrites nothing changes nothing.
    """
    try:
        found = infer_value_info(model)
    except Exception:  # noqa: BLE001 - inference helps rules, it is never required
        found = {}
    annotated = annotate_types(model, found)
    try:
        yield
    finally:
        for t, dtype, shape in annotated:
            inferred = found.get(t.name)
            if inferred is not None and t.dtype is inferred[0]:
                t.dtype = dtype
            if inferred is not None and t.shape is inferred[1]:
                t.shape = shape


_PLAIN_TYPES = frozenset({
    onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.BOOL,
    onnx.TensorProto.INT8, onnx.TensorProto.INT16, onnx.TensorProto.INT32, onnx.TensorProto.INT64,
    onnx.TensorProto.UINT8, onnx.TensorProto.UINT16, onnx.TensorProto.UINT32, onnx.TensorProto.UINT64,
})  # element types whose values numpy holds exactly (others stay lazy: graphsurgeon would cast them)


def _value_key(const: gs.Constant) -> tuple:
    """What a constant holds, by identity: a pass that computes new values makes a new array.

    Small values of plain types are loaded on import, so their identity is stable; a
    weight is identified by its shared array, which a lazy load hands out unchanged.
    """
    values = const._values
    if isinstance(values, (W.WeightValues, W.DenseSparseValues)):
        values = values.array  # what reading ``const.values`` puts in its place: the same key either way
    return ("values", id(values))


def _node_key(node: gs.Node) -> tuple:
    """Everything a node's NodeProto is made of, by value or identity (not its neighbours' types)."""
    return (node.op, node.domain, node.name, tuple(t.name for t in node.inputs), tuple(t.name for t in node.outputs),
            _attrs_sig(node.attrs), tuple(sorted(getattr(node, META, {}).items())),
            tuple(id(a) for a in getattr(node, RAW_ATTRS, ())))


def _tensor_sig(t: gs.Tensor) -> tuple:
    if isinstance(t, gs.Constant):
        return (id(t), t.name, _value_key(t))
    shape = tuple(t.shape) if t.shape is not None else None
    return (id(t), t.name, t.dtype, shape)  # the dtype itself: str() of a numpy dtype costs 5 µs, a third of this


def _attrs_sig(attrs: dict) -> tuple:
    out = []
    for key, value in attrs.items():
        if isinstance(value, gs.Graph):
            value = ("graph", id(value))
        elif isinstance(value, gs.Constant):
            value = ("tensor", _value_key(value))
        elif isinstance(value, (list, tuple)):
            if value and isinstance(value[0], (gs.Graph, gs.Constant)):
                value = tuple(("ref", id(v)) for v in value)
            else:
                try:
                    value = ("list", len(value), hash(tuple(value)))
                except TypeError:
                    value = ("list", len(value), repr(value))
        elif isinstance(value, np.ndarray):
            value = ("array", value.dtype.str, value.shape, value.tobytes())
        else:
            value = repr(value)
        out.append((key, value))
    return tuple(out)


def _copy_vi(vi: onnx.ValueInfoProto) -> onnx.ValueInfoProto:
    out = onnx.ValueInfoProto()
    out.CopyFrom(vi)
    return out


def _copy_tensor(t: onnx.TensorProto) -> onnx.TensorProto:
    out = onnx.TensorProto()
    out.CopyFrom(t)
    return out


# Attribute types graphsurgeon skips on import (with a warning): kept verbatim by surgeon.
_GS_SKIPS = frozenset({onnx.AttributeProto.TENSORS, onnx.AttributeProto.GRAPHS, onnx.AttributeProto.SPARSE_TENSOR,
                       onnx.AttributeProto.SPARSE_TENSORS, onnx.AttributeProto.TYPE_PROTO,
                       onnx.AttributeProto.TYPE_PROTOS, onnx.AttributeProto.UNDEFINED})
RAW_ATTRS = "surgeon_raw_attrs"  # node attribute: AttributeProtos graphsurgeon cannot hold, re-emitted on export


def _scan_protos(graph: onnx.GraphProto) -> tuple[list[tuple[dict[str, str], list]], set[str]]:
    """In one walk: each node's metadata and skipped attributes (walk order), and every name read."""
    metas: list[tuple[dict[str, str], list]] = []
    names = {vi.name for vi in graph.output}

    def walk(g: onnx.GraphProto) -> None:
        for node in g.node:
            raw = [_copy_attr(a) for a in node.attribute if a.type in _GS_SKIPS and not a.ref_attr_name] \
                if node.attribute else []
            metas.append(({p.key: p.value for p in node.metadata_props} if len(node.metadata_props) else {}, raw))
            names.update(node.input)
            if node.attribute:
                for sub in proto_subgraphs(node):
                    names.update(vi.name for vi in sub.output)
                    walk(sub)

    walk(graph)
    return metas, names


def _copy_attr(a: onnx.AttributeProto) -> onnx.AttributeProto:
    out = onnx.AttributeProto()
    out.CopyFrom(a)
    return out


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
        t = onnx.TypeProto()
        t.CopyFrom(vi.type)
        types[vi.name] = (t, None if mine is None else mine.dtype, None if mine is None else _shape_key(mine.shape))
    out = {id(gs_graph): types} if types else {}
    proto_subs = [sub for n in graph.node if n.attribute for sub in proto_subgraphs(n)]
    gs_subs = [sub for n in gs_graph.nodes for sub in subgraphs(n)]
    for p, g in zip(proto_subs, gs_subs):
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
    for field, peer in (("inputs", "outputs"), ("outputs", "inputs")):
        items = list(getattr(node, field))
        replacement = _IdentityList(node, peer, [])
        list.extend(replacement, items)
        object.__setattr__(node, field, replacement)


def _initializer_owners(graph: onnx.GraphProto, gs_graph: gs.Graph) -> dict[int, set[str]]:
    """id(gs graph) → names of the initializers that graph declared."""
    owners = {id(gs_graph): {t.name for t in graph.initializer}}
    proto_subs = [sub for n in graph.node if n.attribute for sub in proto_subgraphs(n)]
    gs_subs = [sub for n in gs_graph.nodes for sub in subgraphs(n)]
    for p, g in zip(proto_subs, gs_subs):
        owners.update(_initializer_owners(p, g))
    return owners


class _Exporter:
    """graphsurgeon → skeleton ModelProto, without serializing a weight.

    Written here rather than taken from graphsurgeon's exporter because that one copies
    every weight into protobuf on every export, and writes a body's outer-scope
    constants as initializers of the body (storing shared weights twice).
    """

    def __init__(self, model: Model):
        self.model = model
        self.weights: dict[str, np.ndarray] = {}
        self.keys: dict[int, str] = {}
        self.parent: dict[int, int | None] = {}
        self.uses: dict[int, list[int]] = {}  # id(constant) -> ids of graphs whose nodes read it
        self.constants: dict[int, gs.Constant] = {}

    def run(self) -> Exported:
        root = self.model.graph
        self._scan(root, None)
        placement: dict[int, list[gs.Constant]] = {}
        for cid, const in self.constants.items():
            placement.setdefault(self._home(const, self.uses[cid]), []).append(const)
        self.placement = placement
        graph = self._graph(root)
        placed = {t.name for t in graph.initializer}
        for name, const in self.model.defaults.items():  # a default no node reads any more stays an input
            if name not in placed:
                graph.initializer.append(self._tensor(const))
        for t in self.model.unused_initializers + self.model.unread_defaults:
            t2 = _copy_tensor(t)
            key = W.stub_key(t2)
            if key is not None:
                self._relabel(t2, self.model.unused_weights[key])
            graph.initializer.append(t2)
        graph.quantization_annotation.extend(a for a in self.model.graph_extras.quantization_annotation)
        graph.metadata_props.extend(self.model.graph_extras.metadata_props)
        self._interface(graph)
        out = _copy(self.model.header)
        out.graph.CopyFrom(graph)
        del out.opset_import[:]
        opsets = dict(self.model.opsets)
        for imp in root.import_domains or []:
            domain = "" if imp.domain == "ai.onnx" else imp.domain
            opsets.setdefault(domain, imp.version)
        for domain, version in opsets.items():
            out.opset_import.append(onnx.helper.make_opsetid(domain, version))
        return Exported(out, self.weights)

    # Which graph declares a constant: large ones live in the main graph (ONNX Runtime
    # takes main-graph initializers in memory); imported ones stay where they were
    # declared while that graph uses them; others go to the innermost graph that
    # encloses every use, so a constant two branches share is stored once.
    def _home(self, const: gs.Constant, users: list[int]) -> int:
        root = id(self.model.graph)
        if is_weight(const):
            return root
        owner = getattr(const, OWNER, None)
        if owner in self.parent and all(self._encloses(owner, u) for u in users):
            return owner
        chains = [self._chain(u) for u in users]
        common = set(chains[0])
        for c in chains[1:]:
            common &= set(c)
        return next(g for g in chains[0] if g in common)

    def _chain(self, gid: int) -> list[int]:
        chain = []
        cur: int | None = gid
        while cur is not None:
            chain.append(cur)
            cur = self.parent[cur]
        return chain

    def _encloses(self, outer: int, inner: int) -> bool:
        return outer in self._chain(inner)

    def _scan(self, g: gs.Graph, parent: int | None) -> None:
        self.parent[id(g)] = parent
        for t in list(g.outputs):
            self._use(t, g)
        for node in g.nodes:
            for t in node.inputs:
                self._use(t, g)
            for sub in subgraphs(node):
                self._scan(sub, id(g))

    def _use(self, t: gs.Tensor, g: gs.Graph) -> None:
        if isinstance(t, gs.Constant) and not t.is_empty():
            self.constants[id(t)] = t
            self.uses.setdefault(id(t), []).append(id(g))

    def _relabel(self, stub: onnx.TensorProto, array: np.ndarray) -> None:
        """Point a stub at this export's key for ``array`` (keys are per export)."""
        key = self.keys.get(id(array))
        if key is None:
            key = f"{W.STUB_PREFIX}{len(self.weights)}"
            self.keys[id(array)] = key
            self.weights[key] = array
        stub.external_data[0].value = key

    def _tensor(self, const: gs.Constant) -> onnx.TensorProto:
        values = const._values
        if isinstance(values, W.WeightValues):
            stub = W.make_stub(const.name, values.tensor.data_type, values.tensor.dims, "")
            self._relabel(stub, values.array)
            return stub
        if isinstance(values, W.Derived):  # a recipe whose values a pass has read (graphsurgeon unwrapped it)
            stub = W.make_stub(const.name, dtype_to_onnx(values.dtype), values.shape, "")
            self._relabel(stub, values)
            return stub
        if isinstance(values, W.DenseSparseValues):  # where it must be a dense initializer (an extracted piece)
            values = values.array
        elif isinstance(values, LazyValues):
            t = _copy_tensor(values.tensor)
            t.name = const.name
            return t
        if W.is_large(values) and np.dtype(const.export_dtype) == values.dtype:
            stub = W.make_stub(const.name, dtype_to_onnx(values.dtype), values.shape, "")
            self._relabel(stub, W.frozen(values))
            return stub
        key = (const.name, id(values), const.export_dtype)
        hit = self.model.tensor_protos.get(id(const))
        if hit is not None and hit[0] == key:
            return hit[1]
        t = constant_to_onnx_tensor(const)
        if const.data_location is not None:
            t.data_location = const.data_location
        self.model.tensor_protos[id(const)] = (key, t)
        return t

    def _node(self, node: gs.Node) -> onnx.NodeProto:
        # Most nodes are unchanged between two exports; their protos are kept on the model,
        # checked against the node's key. Nodes holding tensors or bodies are rebuilt
        # (weight stub keys are per export; bodies are exported recursively).
        cacheable = not any(isinstance(v, gs.Graph) or (isinstance(v, gs.Constant) and is_weight(v)) or
                            (isinstance(v, (list, tuple)) and v and isinstance(v[0], (gs.Constant, gs.Graph)))
                            for v in node.attrs.values())
        if cacheable:
            key = _node_key(node)
            hit = self.model.node_protos.get(id(node))
            if hit is not None and hit[0] == key:
                return hit[1]
        proto = self._build_node(node)
        if cacheable:
            self.model.node_protos[id(node)] = (key, proto)
        return proto

    def _build_node(self, node: gs.Node) -> onnx.NodeProto:
        proto = onnx.helper.make_node(node.op, inputs=[t.name for t in node.inputs],
                                      outputs=[t.name for t in node.outputs], name=node.name or None,
                                      domain=node.domain or None)
        for key, value in node.attrs.items():
            proto.attribute.append(self._attribute(key, value))
        for attr in getattr(node, RAW_ATTRS, ()):
            if attr.name not in node.attrs:
                proto.attribute.append(attr)
        for key, value in getattr(node, META, {}).items():
            proto.metadata_props.add(key=key, value=value)
        return proto

    def _attribute(self, key: str, value) -> onnx.AttributeProto:
        if isinstance(value, gs.Constant):
            return onnx.helper.make_attribute(key, self._tensor(value))
        if isinstance(value, gs.Graph):
            return onnx.helper.make_attribute(key, self._graph(value))
        if isinstance(value, (list, tuple)) and value and all(isinstance(v, gs.Constant) for v in value):
            return onnx.helper.make_attribute(key, [self._tensor(v) for v in value])
        if isinstance(value, (list, tuple)) and value and all(isinstance(v, gs.Graph) for v in value):
            return onnx.helper.make_attribute(key, [self._graph(v) for v in value])
        if isinstance(value, gs.Node.AttributeRef):
            attr = onnx.AttributeProto(name=key, ref_attr_name=value.name)
            attr.type = misc.convert_to_onnx_attr_type(value.type)
            return attr
        if isinstance(value, type):
            try:
                value = dtype_to_onnx(value)
            except TypeError:
                pass
        return onnx.helper.make_attribute(key, value)

    def _graph(self, g: gs.Graph) -> onnx.GraphProto:
        out = onnx.GraphProto(name=g.name or "", doc_string=g.doc_string or "")
        out.node.extend(self._node(n) for n in g.nodes)
        declared = self.model.declared_types.get(id(g), {})
        out.input.extend(_value_info(t, declared) for t in g.inputs)
        out.output.extend(_value_info(t, declared) for t in g.outputs)
        io = {id(t) for t in g.inputs} | {id(t) for t in g.outputs}
        for const in self.placement.get(id(g), []):
            if isinstance(const._values, SparseValues):
                out.sparse_initializer.append(const._values.tensor)
            else:
                out.initializer.append(self._tensor(const))
        seen: set[int] = set()
        for node in g.nodes:
            for t in node.outputs:
                if isinstance(t, gs.Variable) and id(t) not in io and id(t) not in seen and \
                        (t.dtype is not None or t.shape is not None):
                    seen.add(id(t))
                    out.value_info.append(_value_info(t, declared))
        return out

    def _interface(self, graph: onnx.GraphProto) -> None:
        """Main-graph inputs as declared (initializer listings kept), non-tensor types kept."""
        model = self.model
        current = {vi.name: vi for vi in graph.input}
        inits = {t.name for t in graph.initializer}
        inputs = []
        for vi in model.declared_inputs:
            if vi.name in current:
                mine = current.pop(vi.name)
                inputs.append(vi if vi.type.WhichOneof("value") not in (None, "tensor_type") else mine)
            elif vi.name in model.listed_initializers and vi.name in inits:
                inputs.append(vi)
        inputs.extend(current.values())  # inputs a pass added
        if model.header.ir_version < 4:
            named = {vi.name for vi in inputs}
            for t in graph.initializer:
                if t.name not in named:
                    inputs.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
        del graph.input[:]
        graph.input.extend(inputs)
        for vi in graph.output:
            declared = model.declared_outputs.get(vi.name)
            if declared is not None and declared.type.WhichOneof("value") not in (None, "tensor_type"):
                vi.type.CopyFrom(declared.type)


def _shape_key(shape) -> tuple | None:
    return None if shape is None else tuple(shape)


def _value_info(t: gs.Tensor, declared: Mapping[str, tuple] | None = None) -> onnx.ValueInfoProto:
    """``declared``: see :func:`_declared_types`."""
    kept = (declared or {}).get(t.name)
    if kept is not None and not isinstance(t, gs.Constant):
        type_proto, dtype, shape = kept
        plain = type_proto.WhichOneof("value") in (None, "tensor_type")
        if not plain or (t.dtype == dtype and _shape_key(t.shape) == shape):
            vi = onnx.ValueInfoProto(name=t.name)
            vi.type.CopyFrom(type_proto)
            return vi
    if isinstance(t.dtype, onnx.TypeProto):  # graphsurgeon keeps optional and other non-tensor types as they are
        vi = onnx.ValueInfoProto(name=t.name)
        vi.type.CopyFrom(t.dtype)
        return vi
    if t.dtype is None:
        return onnx.helper.make_empty_tensor_value_info(t.name)
    kind = getattr(t, "type", "tensor_type")
    if kind == "sequence_type":
        return onnx.helper.make_tensor_sequence_value_info(t.name, dtype_to_onnx(t.dtype), t.shape)
    if kind == "sparse_tensor_type":
        return onnx.helper.make_sparse_tensor_value_info(t.name, dtype_to_onnx(t.dtype), t.shape)
    return onnx.helper.make_tensor_value_info(t.name, dtype_to_onnx(t.dtype), t.shape)
