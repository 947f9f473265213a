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
from typing import Iterator, Mapping

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from surgeon import weights as W
from surgeon.graph_export import Exported, Exporter, extract, is_weight, node_key, tensor_sig
from surgeon.graph_import import bind, proto_copy, stub_large_tensors
from surgeon.graph_ops import (
    OVERRIDABLE, PROVENANCE_FROM, PROVENANCE_PASS, PROVENANCE_RULE, all_names, infer_shapes, is_overridable,
    iter_graphs, meta, proto_subgraphs, stamp, subgraphs, walk_nodes,
)
from surgeon.graph_ops import walk_graph_protos as _walk_graph_protos
from surgeon.graph_ops import walk_proto_nodes as _walk_proto_nodes

# The walkers and marks live in the kernel (surgeon.graph_ops), the exporter in surgeon.graph_export:
# callers reach them through this module too.
__all__ = [
    "PROVENANCE_FROM", "PROVENANCE_PASS", "PROVENANCE_RULE", "Exported", "Model", "all_names", "annotate_types",
    "count_nodes", "extract", "infer_value_info", "inferred_types", "is_overridable", "is_weight", "iter_graphs",
    "iter_proto_nodes", "meta", "op_histogram", "opset_version", "proto_subgraphs", "stamp", "subgraphs", "walk_nodes",
]


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


# --- the model -------------------------------------------------------------------------

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
        # Export caches (see Exporter._node and _tensor in surgeon.graph_export): protos of unchanged
        # nodes and small constants.
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
        self.declared_inputs = [proto_copy(vi) for vi in g.input]
        self.declared_outputs = {vi.name: proto_copy(vi) for vi in g.output}
        self.listed_initializers = {vi.name for vi in g.input if vi.name in inits}
        self.graph = gs.import_onnx(skeleton)
        # An overridable default (IR >= 4, listed as an input) is part of the interface even unread:
        # unread ones are kept aside (cleanup never removes them), read ones in ``defaults``.
        interface = self.listed_initializers if self.header.ir_version >= 4 else set()
        self.declared_types, self.defaults, used = bind(self.graph, skeleton, weights, interface)
        self.unused_initializers = [proto_copy(t) for t in g.initializer if t.name not in used and t.name not in interface]
        self.unread_defaults = [proto_copy(t) for t in g.initializer if t.name not in used and t.name in interface]
        self.unused_weights = {W.stub_key(t): weights[W.stub_key(t)]
                               for t in self.unused_initializers + self.unread_defaults if W.stub_key(t)}

    @classmethod
    def from_proto(cls, model: onnx.ModelProto) -> "Model":
        """From an in-memory ModelProto: each large tensor is copied out of protobuf once."""
        return cls(*stub_large_tensors(model))

    # -- export ------------------------------------------------------------------------

    def export(self) -> Exported:
        """The skeleton and weight table of the current graph (cost: the graph, not the weights)."""
        return Exporter(self).run()

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
            parts.append(("graph", id(g), tuple(map(tensor_sig, g.inputs)), tuple(map(tensor_sig, g.outputs))))
            for n in g.nodes:
                parts.append((id(n), node_key(n), tuple(map(tensor_sig, n.inputs)), tuple(map(tensor_sig, n.outputs))))
        return tuple(parts)


# --- inferred types ----------------------------------------------------------------------

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
