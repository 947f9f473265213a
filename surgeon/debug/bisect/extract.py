"""From node sets to runnable models: subgraph extraction and output marking.

Why not ``onnx.utils.Extractor``: it works from tensor names (we think in node sets:
the strategy proposes "these nodes"), and it runs shape inference over the whole model
on every construction and needs a ``value_info`` for each boundary tensor, which
exporters often leave out. Here the model is indexed once (:class:`GraphView`), a
candidate is built by copying only the chosen NodeProtos and the initializers they read,
and boundary types come from the reference run's actual values (:func:`types_from_values`),
so intermediate tensors always have a dtype and a shape.

Only the main graph is cut: an If/Loop/Scan node is one unit, and the outer-scope names
its bodies read count as its inputs.

``Constant`` nodes are not searched (they cannot diverge on their own in a way a
subgraph would show differently); a candidate takes along every Constant that feeds it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import onnx
from onnx import helper

from surgeon import graph_ops as K
from surgeon import model as model_io
from surgeon.debug.bisect.strategy import Dag
from surgeon.graph_ops import infer_shapes


def node_reads(node: onnx.NodeProto) -> list[str]:
    """Inputs of a node, plus the outer-scope names its bodies read (deduplicated, in order)."""
    names = [i for i in node.input if i]
    for g in K.proto_subgraphs(node):
        names.extend(sorted(K.proto_outer_reads(g)))
    return list(dict.fromkeys(names))


@dataclass
class GraphView:
    """An index over a model's main graph, built once per bisect."""

    model: onnx.ModelProto
    nodes: list[onnx.NodeProto] = field(init=False)
    searchable: list[int] = field(init=False)  # dag index -> node index (non-Constant nodes)
    reads: list[list[str]] = field(init=False)
    producer: dict[str, int] = field(init=False)
    consumers: dict[str, list[int]] = field(init=False)
    initializers: dict[str, onnx.TensorProto] = field(init=False)
    input_names: list[str] = field(init=False)
    output_names: list[str] = field(init=False)
    dag: Dag = field(init=False)
    dag_of: dict[int, int] = field(init=False)  # node index -> dag index

    def __post_init__(self) -> None:
        g = self.model.graph
        self.nodes = list(g.node)
        self.initializers = {t.name: t for t in g.initializer}
        self.input_names = [i.name for i in g.input if i.name not in self.initializers]
        self.output_names = [o.name for o in g.output]
        self.reads = [node_reads(n) for n in self.nodes]
        self.producer = {o: i for i, n in enumerate(self.nodes) for o in n.output if o}
        self.consumers = {}
        for i, names in enumerate(self.reads):
            for name in names:
                self.consumers.setdefault(name, []).append(i)
        self.searchable = [i for i, n in enumerate(self.nodes) if not _is_constant(n)]
        dag_index = {node: k for k, node in enumerate(self.searchable)}
        self.dag_of = dag_index
        preds = []
        for node in self.searchable:
            ps = {dag_index[self.producer[x]] for x in self.reads[node] if x in self.producer and self.producer[x] in dag_index}
            preds.append(sorted(ps))
        outs = set(self.output_names)
        sinks = [k for k, node in enumerate(self.searchable) if outs & set(self.nodes[node].output)]
        self.dag = Dag.build(preds, sinks)

    # -- names ----------------------------------------------------------------------------

    def node(self, k: int) -> onnx.NodeProto:
        """The NodeProto of dag index ``k``."""
        return self.nodes[self.searchable[k]]

    def label(self, k: int) -> str:
        """The name users know dag index ``k`` by (``OpType#index`` when the node has none)."""
        node = self.node(k)
        return node.name or f"{node.op_type}#{self.searchable[k]}"

    def outputs_of(self, dag_nodes: Iterable[int]) -> list[str]:
        return [o for k in sorted(dag_nodes) for o in self.node(k).output if o]

    def owner(self, tensor: str) -> int | None:
        """The dag index of the node producing ``tensor`` (None for inputs, initializers, Constants)."""
        node = self.producer.get(tensor)
        return None if node is None else self.dag_of.get(node)

    def is_everything(self, dag_nodes: frozenset[int]) -> bool:
        return len(dag_nodes) == len(self.searchable)

    # -- boundary -------------------------------------------------------------------------

    def members(self, dag_nodes: Iterable[int]) -> list[int]:
        """Node indices of a candidate: the chosen nodes plus the Constants that feed them."""
        chosen = {self.searchable[k] for k in dag_nodes}
        for node in list(chosen):
            for name in self.reads[node]:
                p = self.producer.get(name)
                if p is not None and _is_constant(self.nodes[p]):
                    chosen.add(p)
        return sorted(chosen)

    def boundary(self, dag_nodes: Iterable[int]) -> tuple[list[str], list[str], list[int]]:
        """(inputs to feed, outputs to compare, member node indices) of a candidate."""
        members = self.members(dag_nodes)
        inside = set(members)
        produced = {o for m in members for o in self.nodes[m].output if o}
        inputs = []
        for m in members:
            for name in self.reads[m]:
                if name not in produced and name not in self.initializers:
                    inputs.append(name)
        graph_outs = set(self.output_names)
        outputs = []
        for m in members:
            if _is_constant(self.nodes[m]):
                continue
            for o in self.nodes[m].output:
                if not o:
                    continue
                if o in graph_outs or any(c not in inside for c in self.consumers.get(o, [])):
                    outputs.append(o)
        if not outputs:  # nothing leaves the candidate: compare what its last node makes
            outputs = [o for o in self.nodes[members[-1]].output if o]
        return list(dict.fromkeys(inputs)), outputs, members

    def subgraph_model(self, dag_nodes: frozenset[int], types: Mapping[str, onnx.TypeProto]) -> tuple[onnx.ModelProto, list[str], list[str]]:
        """A standalone model of the candidate; its inputs are fed reference values."""
        if self.is_everything(dag_nodes):
            return self.model, list(self.input_names), list(self.output_names)
        inputs, outputs, members = self.boundary(dag_nodes)
        nodes = [self.nodes[m] for m in members]
        return build_model(self.model, nodes, inputs, outputs, types), inputs, outputs


def _is_constant(node: onnx.NodeProto) -> bool:
    return node.op_type == "Constant" and K.is_default_domain(node)


def value_info(name: str, types: Mapping[str, onnx.TypeProto]) -> onnx.ValueInfoProto:
    vi = onnx.ValueInfoProto()
    vi.name = name
    if name in types:
        vi.type.CopyFrom(types[name])
    return vi


def build_model(like: onnx.ModelProto, nodes: Sequence[onnx.NodeProto], inputs: Sequence[str], outputs: Sequence[str],
                types: Mapping[str, onnx.TypeProto]) -> onnx.ModelProto:
    """A model of ``nodes`` (topologically ordered) with the given boundary, initializers copied as needed."""
    inits = {t.name: t for t in like.graph.initializer}
    needed = [n for n in dict.fromkeys(x for node in nodes for x in node_reads(node)) if n in inits and n not in inputs]
    graph = helper.make_graph(
        list(nodes), f"{like.graph.name or 'graph'}_subgraph",
        [value_info(n, types) for n in inputs], [value_info(n, types) for n in outputs],
        initializer=[inits[n] for n in needed],
    )
    model = helper.make_model(graph, opset_imports=list(like.opset_import), ir_version=like.ir_version)
    model.functions.extend(like.functions)
    model.producer_name = "surgeon-bisect"
    return model


def with_outputs(model: onnx.ModelProto, names: Sequence[str], types: Mapping[str, onnx.TypeProto]) -> onnx.ModelProto:
    """The whole model with ``names`` marked as extra outputs (nothing else changes)."""
    out = model_io.copy(model)
    have = {o.name for o in out.graph.output}
    for n in names:
        if n not in have:
            out.graph.output.append(value_info(n, types))
            have.add(n)
    return out


def run_marked(session: Any, samples: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per sample, its feeds and every output of ``session`` (on a model from :func:`with_outputs`:
    every marked tensor's value)."""
    out = []
    for s in samples:
        values = dict(s)
        values.update(session.run(s))
        out.append(values)
    return out


def extract_by_names(model: onnx.ModelProto, inputs: Sequence[str], outputs: Sequence[str],
                     types: Mapping[str, onnx.TypeProto], available: set[str]) -> onnx.ModelProto | None:
    """The part of ``model`` computing ``outputs`` from ``inputs`` (tensors matched by name).

    Used for ``--against B.onnx``: the candidate's boundary comes from model A, the nodes
    from B. A name B needs beyond ``inputs`` is fed too when ``available`` (has a reference
    value); otherwise B cannot be cut there and None is returned.
    """
    g = model.graph
    producer = {o: i for i, n in enumerate(g.node) for o in n.output if o}
    inits = {t.name for t in g.initializer}
    feed = list(inputs)
    stop = set(inputs) | inits
    chosen: set[int] = set()
    stack = list(outputs)
    seen: set[str] = set()
    while stack:
        name = stack.pop()
        if name in seen or name in stop:
            continue
        seen.add(name)
        p = producer.get(name)
        if p is None:
            if name in available:
                feed.append(name)
                continue
            return None
        if p not in chosen:
            chosen.add(p)
            stack.extend(node_reads(g.node[p]))
    feed = [n for n in dict.fromkeys(feed) if n in seen or n in set(inputs)]
    nodes = [g.node[i] for i in sorted(chosen)]
    used = {x for node in nodes for x in node_reads(node)} | set(outputs)
    feed = [n for n in feed if n in used]
    return build_model(model, nodes, feed, outputs, types)


def all_tensor_names(model: onnx.ModelProto) -> list[str]:
    """Every tensor a main-graph node makes, then the graph outputs (what a full reference run marks)."""
    names = [o for n in model.graph.node for o in n.output if o]
    return list(dict.fromkeys(names + [o.name for o in model.graph.output]))


def types_from_values(samples: Sequence[Mapping[str, Any]], fallback: Mapping[str, onnx.TypeProto] | None = None) -> dict[str, onnx.TypeProto]:
    """Tensor types from actual values: dtype, and each dim static when all samples agree."""
    types: dict[str, onnx.TypeProto] = dict(fallback or {})
    if not samples:
        return types
    for name, first in samples[0].items():
        if not isinstance(first, np.ndarray):
            continue
        shapes = [np.shape(s[name]) for s in samples if name in s and isinstance(s[name], np.ndarray)]
        try:
            elem = helper.np_dtype_to_tensor_dtype(first.dtype)
        except (KeyError, TypeError, ValueError):
            continue
        if all(len(s) == len(shapes[0]) for s in shapes):
            dims = [d if all(s[i] == d for s in shapes) else f"{name}_dim{i}" for i, d in enumerate(shapes[0])]
            types[name] = helper.make_tensor_type_proto(elem, dims)
        else:
            types[name] = helper.make_tensor_type_proto(elem, None)
    return types


def inferred_types(model: onnx.ModelProto) -> dict[str, onnx.TypeProto]:
    """Types shape inference knows (used for non-tensor values and when no run is possible)."""
    try:
        inferred = infer_shapes(model) if not model_io.needs_external_data(model) else model
    except Exception:  # inference is best effort here; real values cover tensors
        inferred = model
    g = inferred.graph
    return {vi.name: vi.type for vi in list(g.value_info) + list(g.input) + list(g.output) if vi.type.WhichOneof("value")}
