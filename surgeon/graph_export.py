"""The exporter: the graph back to a skeleton ModelProto, without serializing a weight.

:class:`Exported` is a model written out as a skeleton (stubs for the weights) plus the
weights by key: what the checker, shape inference and ONNX Runtime see, and what a
rollback re-imports. :class:`Exporter` writes one from a :class:`surgeon.graph.Model`
(written here rather than taken from graphsurgeon, whose exporter copies every weight
into protobuf on every export); :func:`extract` writes a model of a few nodes. The
signatures here (:func:`node_key`, :func:`tensor_sig`) say what a node's proto is made
of: the export caches and ``Model.signature`` compare them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx_graphsurgeon.exporters.onnx_exporter import constant_to_onnx_tensor, dtype_to_onnx
from onnx_graphsurgeon.ir.tensor import LazyValues, SparseValues
from onnx_graphsurgeon.util import misc

from surgeon import weights as W
from surgeon.graph_import import OWNER, RAW_ATTRS, proto_copy, shape_key
from surgeon.graph_ops import META, subgraphs

if TYPE_CHECKING:
    from surgeon.graph import Model


def is_weight(tensor: gs.Tensor) -> bool:
    """A large Constant held as a shared array (see :mod:`surgeon.weights`)."""
    if not isinstance(tensor, gs.Constant):
        return False
    values = tensor._values
    if isinstance(values, (W.WeightValues, W.Derived)):
        return True
    return isinstance(values, np.ndarray) and W.is_large(values)


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
        model = self._embedded(root_too=False) if self.has_nested_stubs() else proto_copy(self.skeleton)
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


def _value_key(const: gs.Constant) -> tuple:
    """What a constant holds, by identity: a pass that computes new values makes a new array.

    Small values of plain types are loaded on import, so their identity is stable; a
    weight is identified by its shared array, which a lazy load hands out unchanged.
    """
    values = const._values
    if isinstance(values, (W.WeightValues, W.DenseSparseValues)):
        values = values.array  # what reading ``const.values`` puts in its place: the same key either way
    return ("values", id(values))


def node_key(node: gs.Node) -> tuple:
    """Everything a node's NodeProto is made of, by value or identity (not its neighbours' types)."""
    return (node.op, node.domain, node.name, tuple(t.name for t in node.inputs), tuple(t.name for t in node.outputs),
            _attrs_sig(node.attrs), tuple(sorted(getattr(node, META, {}).items())),
            tuple(id(a) for a in getattr(node, RAW_ATTRS, ())))


def tensor_sig(t: gs.Tensor) -> tuple:
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


class Exporter:
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
            t2 = proto_copy(t)
            key = W.stub_key(t2)
            if key is not None:
                self._relabel(t2, self.model.unused_weights[key])
            graph.initializer.append(t2)
        graph.quantization_annotation.extend(a for a in self.model.graph_extras.quantization_annotation)
        graph.metadata_props.extend(self.model.graph_extras.metadata_props)
        self._interface(graph)
        out = proto_copy(self.model.header)
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
            t = proto_copy(values.tensor)
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
            key = node_key(node)
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


def extract(model: Model, nodes: list[gs.Node], outputs: list[gs.Tensor],
            inputs_as_constants: Mapping[str, np.ndarray] | None = None) -> Exported:
    """A model of just ``nodes`` (in the given order): the constants they read become
    initializers (weights stay shared), values in ``inputs_as_constants`` too, any other
    value they read becomes a graph input. Used to evaluate or check a piece of a model;
    the nodes must not carry bodies.
    """
    exporter = Exporter(model)
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
    out = proto_copy(model.header)
    out.graph.CopyFrom(graph)
    del out.opset_import[:]
    for domain, version in model.opsets.items():
        out.opset_import.append(onnx.helper.make_opsetid(domain, version))
    del out.functions[:]
    out.functions.extend(model.header.functions)
    return Exported(out, exporter.weights)


def _value_info(t: gs.Tensor, declared: Mapping[str, tuple] | None = None) -> onnx.ValueInfoProto:
    """``declared``: see :func:`surgeon.graph_import.bind` (the declared interface types)."""
    kept = (declared or {}).get(t.name)
    if kept is not None and not isinstance(t, gs.Constant):
        type_proto, dtype, shape = kept
        plain = type_proto.WhichOneof("value") in (None, "tensor_type")
        if not plain or (t.dtype == dtype and shape_key(t.shape) == shape):
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
