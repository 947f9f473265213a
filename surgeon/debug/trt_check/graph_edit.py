"""Node identity and cutting, for repeated parses of one model.

Why unique names first: the TensorRT parser names the node it rejects (``node_name``)
and gives its index *within the graph it sits in* (a body of an If/Loop/Scan has its
own numbering), often with no path to that body. Exporters leave names empty or
duplicated. So the working copy gives every node, in every body, a unique name before
the first parse; an error then points at exactly one node, wherever it is. The report
shows the original name (or "unnamed") and the body path.

Why cut by turning outputs into graph inputs: to find the *next* failing node, the
failing one must stop failing without changing what the rest of the graph looks like
to the parser. Removing it and feeding its outputs in as new main-graph inputs (a body
reads them from the outer scope) keeps every consumer's input types and ranks. A node
downstream of a cut sees a runtime input where there was a computed tensor, so a
failure found there is flagged ``downstream_of_cut``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Iterator

import onnx
from onnx import helper

from surgeon import graph_ops as K
from surgeon.graph_ops import infer_shapes


@dataclass(frozen=True)
class NodeRef:
    """Where one node lives: its unique working name, original name, op, and body path."""

    name: str
    original: str
    op_type: str
    domain: str
    path: tuple[str, ...]  # ("If_0.then_branch", "Loop_3.body"): the bodies enclosing the node, outermost first

    @property
    def where(self) -> str:
        return " > ".join(self.path) if self.path else "main graph"

    @property
    def qualified_op(self) -> str:
        return self.op_type if K.is_default_domain(self) else f"{self.domain}::{self.op_type}"

    @property
    def display(self) -> str:
        return self.original or f"(unnamed {self.op_type}; working name {self.name})"


def _graph_attrs(node: onnx.NodeProto) -> Iterator[tuple[str, onnx.GraphProto]]:
    for a in node.attribute:
        if a.HasField("g"):
            yield a.name, a.g
        for i, g in enumerate(a.graphs):
            yield f"{a.name}[{i}]", g


def walk(graph: onnx.GraphProto, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], onnx.GraphProto, onnx.NodeProto]]:
    """Every node of every graph, depth first, with the path of the bodies around it."""
    for node in graph.node:
        yield path, graph, node
        for attr, body in _graph_attrs(node):
            yield from walk(body, path + (f"{node.name}.{attr}",))


def assign_unique_names(model: onnx.ModelProto) -> dict[str, str]:
    """Give every node a unique name in place (the caller's working copy); working name -> original."""
    seen: set[str] = set()
    original: dict[str, str] = {}
    counter = 0
    for _path, _graph, node in walk(model.graph):
        name = node.name
        if not name or name in seen:
            base = name or node.op_type
            while True:
                counter += 1
                candidate = f"{base}__surgeon{counter}"
                if candidate not in seen:
                    break
            node.name = candidate
        seen.add(node.name)
        original[node.name] = name
    return original


@dataclass
class NodeIndex:
    """Every node of a working copy (names already unique), by name."""

    model: onnx.ModelProto
    original: dict[str, str]
    refs: dict[str, NodeRef] = field(init=False)
    order: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.refs, self.order = {}, []
        for path, _graph, node in walk(self.model.graph):
            self.refs[node.name] = NodeRef(node.name, self.original.get(node.name, node.name), node.op_type, node.domain, path)
            self.order.append(node.name)

    def get(self, name: str) -> NodeRef | None:
        return self.refs.get(name)

    def by_op(self, op_type: str) -> list[NodeRef]:
        return [self.refs[n] for n in self.order if self.refs[n].op_type == op_type]


def value_infos(model: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    """Types of every tensor shape inference can tell, in bodies too (weights are not needed)."""
    from surgeon import model as model_io

    try:
        inferred = infer_shapes(model_io.shape_only_copy(model))
    except Exception:  # noqa: BLE001 - shape inference is best effort here; a cut then guesses types
        inferred = model
    out: dict[str, onnx.ValueInfoProto] = {}

    def collect(g: onnx.GraphProto) -> None:
        for vi in list(g.input) + list(g.output) + list(g.value_info):
            if vi.type.WhichOneof("value") == "tensor_type" and vi.type.tensor_type.elem_type:
                out.setdefault(vi.name, vi)
        for n in g.node:
            for _a, body in _graph_attrs(n):
                collect(body)

    collect(inferred.graph)
    return out


def _find(graph: onnx.GraphProto, name: str) -> tuple[onnx.GraphProto, int] | None:
    for i, node in enumerate(graph.node):
        if node.name == name:
            return graph, i
        for _a, body in _graph_attrs(node):
            found = _find(body, name)
            if found is not None:
                return found
    return None


def _guess_type(node: onnx.NodeProto, types: dict[str, onnx.ValueInfoProto], output: str) -> onnx.ValueInfoProto:
    """A custom op's output type is unknown to shape inference: assume it is shaped like its first input."""
    for i in node.input:
        if i in types:
            vi = copy.deepcopy(types[i])
            vi.name = output
            return vi
    return helper.make_tensor_value_info(output, onnx.TensorProto.FLOAT, None)


def cut(model: onnx.ModelProto, names: list[str], types: dict[str, onnx.ValueInfoProto]) -> tuple[onnx.ModelProto, list[str]]:
    """A copy without the named nodes; their outputs become main-graph inputs. Returns (model, guessed outputs).

    ``model`` should be a skeleton (weights external), so the copy is cheap. Graph
    outputs that a cut node produced are dropped from the main graph's outputs (a graph
    input cannot also be the output); the main-graph tensors a cut node read become
    outputs instead, so the nodes that fed it stay alive for the builder.
    """
    out = copy.deepcopy(model)
    existing_inputs = {i.name for i in out.graph.input}
    guessed: list[str] = []
    produced: set[str] = set()
    keep_alive: list[str] = []
    made_in_main = {o for n in out.graph.node for o in n.output if o}
    for name in names:
        found = _find(out.graph, name)
        if found is None:
            continue
        graph, index = found
        node = graph.node[index]
        keep_alive.extend(i for i in node.input if i in made_in_main and i in types)
        for o in node.output:
            if not o or o in existing_inputs:
                continue
            produced.add(o)
            if o in types:
                vi = copy.deepcopy(types[o])
            else:
                vi = _guess_type(node, types, o)
                guessed.append(o)
            out.graph.input.append(vi)
            existing_inputs.add(o)
        del graph.node[index]
    keep = [o for o in out.graph.output if o.name not in produced]
    names_kept = {o.name for o in keep}
    for t in dict.fromkeys(keep_alive):
        if t not in names_kept and t not in produced:
            vi = copy.deepcopy(types[t])
            keep.append(vi)
            names_kept.add(t)
    del out.graph.output[:]
    out.graph.output.extend(keep)
    return out, guessed


def downstream(model: onnx.ModelProto, sources: set[str]) -> set[str]:
    """Names of nodes that read (directly or through other nodes, bodies included) any of ``sources`` tensors."""
    from surgeon.debug.bisect.extract import node_reads

    tainted = set(sources)
    hit: set[str] = set()
    changed = True
    nodes = [(node, node_reads(node)) for _p, _g, node in walk(model.graph)]
    while changed:
        changed = False
        for node, reads in nodes:
            if node.name not in hit and tainted.intersection(reads):
                hit.add(node.name)
                tainted.update(o for o in node.output if o)
                changed = True
    return hit
