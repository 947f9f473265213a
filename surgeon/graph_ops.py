"""The graph operations every pass needs, written once: the vocabulary of ``surgeon``'s passes.

Why one module: bypassing a node, moving the readers of a value, reading a constant,
making a fresh name and walking nested graphs were each written several times, under
different names and with rules that disagreed (one reader folded an initializer the user
may override, another refused it). Here each is one function with one rule:

* **Domains.** :func:`is_default_domain` is the one test for the ONNX default domain
  (``""``, ``"ai.onnx"`` or unset).
* **Scopes.** :func:`walk_nodes`, :func:`iter_graphs` and :func:`nested_graphs` visit If/Loop/Scan
  bodies; :func:`outer_scope_names`, :func:`node_outer_reads` and :func:`body_reads` name what
  a body reads from an enclosing graph without a visible edge (onnx-graphsurgeon shares the
  tensor object).
  On protobuf graphs: :func:`proto_subgraphs`, :func:`walk_graph_protos`,
  :func:`walk_proto_nodes` and :func:`proto_outer_reads`.
* **Constants.** :func:`constant` reads an initializer or a ``Constant`` node's output, and
  nothing else. One rule for overridable inputs: an initializer that is also a graph input
  at IR >= 4 (:func:`is_overridable`) is a default the user may replace, so it is never
  read as a constant. :func:`not_constant_reason` says why a value is not one, in words.
* **Names.** :func:`unique_name` ``(base, taken)``: ``base`` when free, else ``base_1``, ``base_2`` ...
* **Uses.** :func:`replace_all_uses` moves every reader (bodies included) from one value to another.
* **Bypass.** :func:`bypass` removes a node whose output ``y`` equals its input ``x``. The
  cases of :meth:`Scope.bypass_refusal`, in the order the code tests them:

  1. ``y`` is also a body's output, or a body defines a value named like ``x``: kept (the
     body would see another value under the same name).
  2. ``y`` is not a graph output of this graph: readers of ``y`` read ``x``; the node goes.
  3. ``y`` is a graph output and ``x`` is written by a node of this graph that stays, is no
     graph output itself, and is read by no body: that node writes ``y`` instead (the output
     keeps its name and place) and ``x``'s readers read ``y``; the node goes.
  4. ``y`` is a graph output and ``x`` is a graph input, a constant or an outer-scope value
     (nothing here could write ``y``), or ``x`` is a graph output too: kept.

* **Shape inference.** :func:`infer_shapes` runs onnx's inference with one set of flags.

Nothing here keeps state between calls; a :class:`Scope` lives for one pass over one graph.
"""

from __future__ import annotations

from functools import cached_property
from typing import Iterator

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from surgeon.weights import is_derived

DEFAULT_DOMAINS = frozenset({"", "ai.onnx"})

META = "meta"  # name of the attribute holding a node's metadata_props as a dict
OVERRIDABLE = "overridable"  # attribute set True on gs.Constants a user may override
PROVENANCE_PASS = "surgeon.pass"
PROVENANCE_RULE = "surgeon.rule"
PROVENANCE_FROM = "surgeon.from"


# --- domains -----------------------------------------------------------------------------

def node_domain(node: gs.Node) -> str:
    """The node's domain with the default-domain spellings folded to ``""``."""
    d = node.domain or ""
    return "" if d == "ai.onnx" else d


def is_default_domain(node: gs.Node) -> bool:
    return (node.domain or "") in DEFAULT_DOMAINS


def op_label(node: gs.Node) -> str:
    """``domain::Op``, or ``Op`` in the default domain."""
    d = node_domain(node)
    return f"{d}::{node.op}" if d else node.op


# --- walking -------------------------------------------------------------------------------

_Graph = gs.Graph  # exact type tests: this runs for every node of every walk
_GRAPH, _GRAPHS, _UNDEFINED = onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS, onnx.AttributeProto.UNDEFINED


def proto_subgraphs(node: onnx.NodeProto) -> Iterator[onnx.GraphProto]:
    for attr in node.attribute:
        kind = attr.type
        if kind == _GRAPH or (kind == _UNDEFINED and attr.HasField("g")):
            yield attr.g
        if kind == _GRAPHS or kind == _UNDEFINED:
            yield from attr.graphs


def walk_graph_protos(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    yield graph
    for node in graph.node:
        if node.attribute:
            for sub in proto_subgraphs(node):
                yield from walk_graph_protos(sub)


def walk_proto_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    for node in graph.node:
        yield node
        if node.attribute:
            for sub in proto_subgraphs(node):
                yield from walk_proto_nodes(sub)


def proto_outer_reads(graph: onnx.GraphProto) -> set[str]:
    """Names a (sub)graph proto reads from enclosing scopes: what its nodes, its bodies and its
    outputs read that it does not define (inputs, initializers, node outputs).

    The protobuf counterpart of :func:`outer_scope_names`: a node holding ``graph`` as a
    body depends on these names as much as on its inputs.
    """
    defined = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    defined |= {t.values.name for t in graph.sparse_initializer}
    defined |= {o for n in graph.node for o in n.output if o}
    used = {o.name for o in graph.output}
    for n in graph.node:
        used.update(i for i in n.input if i)
        if n.attribute:
            for sub in proto_subgraphs(n):
                used |= proto_outer_reads(sub)
    return used - defined


def subgraphs(node: gs.Node) -> tuple[gs.Graph, ...]:
    """The bodies held in a node's attributes (If branches, Loop/Scan bodies).

    A tuple, not a generator: it is asked of every node in every walk, and most have none.
    """
    found: tuple[gs.Graph, ...] = ()
    for value in node.attrs.values():
        kind = type(value)
        if kind is _Graph:
            found += (value,)
        elif (kind is list or kind is tuple) and value and type(value[0]) is _Graph:
            found += tuple(item for item in value if type(item) is _Graph)
    return found


def has_subgraphs(node: gs.Node) -> bool:
    return bool(subgraphs(node))


def walk_nodes(graph: gs.Graph) -> Iterator[gs.Node]:
    """Every node of ``graph`` and of its bodies, outer first, in node order."""
    for node in graph.nodes:
        yield node
        for sub in subgraphs(node):
            yield from walk_nodes(sub)


def iter_graphs(graph: gs.Graph) -> Iterator[gs.Graph]:
    """The graph and every subgraph (If/Loop/Scan bodies), outer first."""
    yield graph
    for node in graph.nodes:
        for sub in subgraphs(node):
            yield from iter_graphs(sub)


def nested_graphs(graph: gs.Graph) -> Iterator[gs.Graph]:
    """Every graph strictly inside ``graph``."""
    for node in graph.nodes:
        for sub in subgraphs(node):
            yield from iter_graphs(sub)


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
        for sub in subgraphs(node):
            used |= outer_scope_names(sub) - produced
    return used


def node_outer_reads(node: gs.Node) -> set[str]:
    """Names ``node``'s bodies read from the graph the node lives in (or further out)."""
    names: set[str] = set()
    for sub in subgraphs(node):
        names |= outer_scope_names(sub)
    return names


def body_reads(graph: gs.Graph) -> set[str]:
    """Names the bodies of ``graph``'s nodes read from it through outer scope (no visible edge)."""
    names: set[str] = set()
    for node in graph.nodes:
        names |= node_outer_reads(node)
    return names


def all_names(graph: gs.Graph) -> set[str]:
    """Every tensor and node name in ``graph`` and its bodies (a new name must avoid them all)."""
    names: set[str] = set()
    for g in iter_graphs(graph):
        names.update(g.tensors().keys())
        names.update(n.name for n in g.nodes if n.name)
    return names


# --- provenance and marks ----------------------------------------------------------------

def meta(node: gs.Node) -> dict[str, str]:
    """A node's metadata dict (created empty for nodes made by a pass)."""
    if not hasattr(node, META):
        setattr(node, META, {})
    return getattr(node, META)


def stamp(node: gs.Node, pass_name: str, rule: str, sources: list[str] | str) -> gs.Node:
    """Record which pass and rule created ``node`` and from which original nodes.

    Sources already recorded on ``node`` (a node rewritten twice) are kept first.
    """
    if isinstance(sources, str):
        sources = [sources]
    m = meta(node)
    earlier = [s for s in m.get(PROVENANCE_FROM, "").split(",") if s] if m.get(PROVENANCE_PASS) == pass_name else []
    m[PROVENANCE_PASS] = pass_name
    m[PROVENANCE_RULE] = rule
    m[PROVENANCE_FROM] = ",".join(dict.fromkeys(earlier + [s for s in sources if s]))
    return node


def is_overridable(tensor: gs.Tensor) -> bool:
    """Whether ``tensor`` is an initializer the user may override (never fold its value)."""
    return bool(getattr(tensor, OVERRIDABLE, False))


# --- values --------------------------------------------------------------------------------

def producer(tensor: gs.Tensor) -> gs.Node | None:
    """The node writing ``tensor`` (in any graph), None for inputs, constants and outer values."""
    return tensor.inputs[0] if len(tensor.inputs) == 1 else None


def present(node: gs.Node, index: int) -> gs.Tensor | None:
    """Input ``index`` of ``node``, or None when absent or given as the empty name."""
    if index >= len(node.inputs):
        return None
    t = node.inputs[index]
    return None if (isinstance(t, gs.Variable) and not t.name) else t


SMALL = 1 << 20  # max_elements for rules that want a bias, a scalar or a shape, never a big weight

_SCALAR_ATTRS = (("value_float", np.float32), ("value_floats", np.float32),
                 ("value_int", np.int64), ("value_ints", np.int64))


def constant(tensor: gs.Tensor | None, max_elements: int | None = None, *, held: bool = False) -> np.ndarray | None:
    """The value of an initializer or of a default-domain ``Constant`` node's output; None otherwise.

    Never the value of an overridable initializer (a graph input with a default, IR >= 4).
    With ``max_elements``, a larger constant is not read (the caller only wants small ones).
    A weight a pass derived from others is held as a recipe (:class:`surgeon.weights.Derived`)
    and computed here; with ``held`` the recipe itself is returned (it has ``shape``,
    ``dtype`` and row slicing), for a pass that derives a new weight from it in turn.
    """
    if tensor is None or is_overridable(tensor):
        return None
    if isinstance(tensor, gs.Constant):
        if max_elements is not None and int(np.prod(tensor.shape)) > max_elements:
            return None
        try:
            value = tensor.values
            return value if held and is_derived(value) else np.asarray(value)
        except Exception:  # noqa: BLE001 - lazily loaded data that cannot be read is no constant
            return None
    node = producer(tensor)
    if node is None or node.op != "Constant" or not is_default_domain(node):
        return None
    attrs = node.attrs
    value = attrs.get("value")
    if isinstance(value, gs.Constant):
        if max_elements is not None and int(np.prod(value.shape)) > max_elements:
            return None
        return np.asarray(value.values)
    for key, dtype in _SCALAR_ATTRS:
        if key in attrs:
            return np.asarray(attrs[key], dtype=dtype)
    return None


def not_constant_reason(tensor: gs.Tensor) -> str:
    """Why ``tensor`` is not a constant, as the end of a sentence for a refusal note."""
    if is_overridable(tensor):
        return "is an initializer listed as a graph input (a default the user may override)"
    node = producer(tensor)
    if node is None:
        return "is a graph input"
    if node.op == "DequantizeLinear":
        return f"comes through DequantizeLinear {node.name} (Q/DQ is kept for explicit quantization)"
    return f"is computed by {node.op} {node.name}"


def shape_of(t: gs.Tensor) -> list | None:
    """Dims of ``t`` (ints for static dims, anything else for unknown), None when the rank is unknown."""
    if isinstance(t, gs.Constant):
        return list(t.shape)
    return None if t.shape is None else list(t.shape)


def broadcast_keeps_shape(x_shape: list | None, c_shape: tuple) -> bool:
    """Whether broadcasting ``x`` with a tensor of static shape ``c_shape`` leaves ``x``'s shape.

    Proven from shapes only: ``c`` has no more dims than ``x`` and each of its dims is 1
    or equal to ``x``'s (static) dim at the same place, counted from the right.
    """
    c_shape = tuple(int(d) for d in c_shape)
    if not c_shape:
        return True  # a scalar never changes the shape
    if x_shape is None or len(c_shape) > len(x_shape):
        return False
    for xd, cd in zip(reversed(x_shape), reversed(c_shape)):
        if cd == 1:
            continue
        if not (isinstance(xd, (int, np.integer)) and int(xd) == cd):
            return False
    return True


# --- names and uses ------------------------------------------------------------------------

def unique_name(base: str, taken: set[str]) -> str:
    """``base`` when free, else ``base_k`` with the smallest free k >= 1; the result joins ``taken``."""
    name, k = base, 1
    while name in taken:
        name = f"{base}_{k}"
        k += 1
    taken.add(name)
    return name


def replace_all_uses(old: gs.Tensor, new: gs.Tensor) -> None:
    """Every reader of ``old`` (in its graph or a body: graphsurgeon shares the tensor) reads ``new``."""
    for consumer in list(old.outputs):
        for i, t in enumerate(consumer.inputs):
            if t is old:
                consumer.inputs[i] = new


def write_instead(x: gs.Tensor, y: gs.Tensor) -> None:
    """The node writing ``x`` writes ``y`` in its place, and ``x``'s readers read ``y``.

    How a graph output keeps its name when the value behind it is found elsewhere
    (a bypassed node, a merged duplicate). ``y`` takes ``x``'s dtype and shape where it had none.
    """
    src = producer(x)
    slot = [id(t) for t in src.outputs].index(id(x))
    replace_all_uses(x, y)
    src.outputs[slot] = y
    if y.dtype is None:
        y.dtype = x.dtype
    if y.shape is None:
        y.shape = x.shape


# --- one graph: facts and edits -------------------------------------------------------------

class Scope:
    """One graph and the facts that decide whether its values may be rewired.

    Built in one linear walk; the facts about bodies are computed on first use. Edits are
    recorded, and ``graph.nodes`` is rebuilt once by :meth:`finish`: nodes removed through
    :func:`detach` go, nodes added through :meth:`place` take the place of the node they
    replace (``list.remove`` compares graphsurgeon nodes with an expensive ``__eq__``, and
    one rebuild per edit made a pass quadratic). Positions are tuples, so a node placed where
    a placed node was sorts between that node's neighbours.
    """

    def __init__(self, graph: gs.Graph):
        self.graph = graph
        self._index: dict[int, tuple] = {id(n): (i,) for i, n in enumerate(graph.nodes)}
        self.outputs = {id(t) for t in graph.outputs}
        self.removed: set[int] = set()
        self._placed: list[gs.Node] = []

    def forget_bodies(self) -> None:
        """An edit touched a node holding a body: the facts about bodies are computed again."""
        self.__dict__.pop("_bodies", None)

    def place(self, nodes: list[gs.Node], where: gs.Node) -> None:
        """``nodes`` (new) go where ``where`` is, in order; ``graph.nodes`` gets them in :meth:`finish`."""
        at = self._index[id(where)]
        for i, n in enumerate(nodes):
            self._index[id(n)] = at + (i,)
            self._placed.append(n)

    @cached_property
    def _bodies(self) -> tuple[set[int], set[str], set[str]]:
        subs = list(nested_graphs(self.graph))
        outs = {id(t) for sub in subs for t in sub.outputs}
        defined = {t.name for sub in subs for t in sub.inputs}
        defined |= {t.name for sub in subs for n in sub.nodes for t in n.outputs}
        return outs, defined, body_reads(self.graph)

    @property
    def nested_outputs(self) -> set[int]:
        """ids of the tensors that are a body's output."""
        return self._bodies[0]

    @property
    def body_reads(self) -> set[str]:
        """Names the bodies read from this graph through outer scope."""
        return self._bodies[2]

    def contains(self, node: gs.Node) -> bool:
        return id(node) in self._index and id(node) not in self.removed

    def position(self, node: gs.Node) -> tuple:
        """Where ``node`` is in graph order (comparable, not an index)."""
        return self._index[id(node)]

    def producer(self, tensor: gs.Tensor) -> gs.Node | None:
        """The node of this graph writing ``tensor`` (None for inputs, constants, outer values)."""
        if isinstance(tensor, gs.Constant) or len(tensor.inputs) != 1:
            return None
        node = tensor.inputs[0]
        return node if self.contains(node) else None

    def consumers(self, tensor: gs.Tensor) -> list[gs.Node]:
        return list(tensor.outputs)

    def is_graph_output(self, tensor: gs.Tensor) -> bool:
        return id(tensor) in self.outputs

    def escapes(self, tensor: gs.Tensor) -> bool:
        """Read where no edge shows it: a graph output here or of a body, or read by a body by name."""
        return id(tensor) in self.outputs or id(tensor) in self.nested_outputs or tensor.name in self.body_reads

    def single_consumer(self, tensor: gs.Tensor) -> gs.Node | None:
        """The only consumer of ``tensor`` in this graph, if it has exactly one use overall."""
        if self.is_graph_output(tensor) or len(tensor.outputs) != 1:
            return None
        node = tensor.outputs[0]
        return node if self.contains(node) else None

    def unread(self, t: gs.Tensor) -> bool:
        """No node reads ``t`` and it is no graph output of this graph or a body."""
        return not t.outputs and id(t) not in self.outputs and id(t) not in self.nested_outputs

    def bypass_refusal(self, x: gs.Tensor, y: gs.Tensor) -> str | None:
        """Why ``y`` (a node output equal to ``x``) cannot be replaced by ``x``; None: it can. Pure.

        The cases are those of the module docstring, in the same order.
        """
        outs, defined, reads = self._bodies
        if id(y) in outs:  # case 1
            return "its output is also a subgraph's output"
        if x.name in defined:
            return "a subgraph defines a value with its input's name"
        if id(y) not in self.outputs:  # case 2
            return None
        src = self.producer(x)  # case 3 or 4
        if src is None:
            where = "a graph input" if any(t is x for t in self.graph.inputs) else (
                "a constant" if isinstance(x, gs.Constant) else "an outer-scope value")
            return f"a (sub)graph output copies {where}"
        if id(x) in self.outputs:
            return "its input and output are both graph outputs"
        if id(x) in outs:
            return "its input is also a subgraph's output"
        if x.name in reads:
            return "it names a graph output and its input is read by a subgraph"
        return None

    def finish(self) -> None:
        """Rebuild ``graph.nodes`` once: removed nodes out, placed nodes in their places."""
        if not self.removed and not self._placed:
            return
        alive = [n for n in list(self.graph.nodes) + self._placed if id(n) not in self.removed]
        if self._placed:
            alive.sort(key=lambda n: self._index[id(n)])
        self.graph.nodes = alive
        self._index = {id(n): (i,) for i, n in enumerate(alive)}
        self.removed, self._placed = set(), []


def detach(scope: Scope, node: gs.Node) -> None:
    """Disconnect ``node`` and mark it for removal by :meth:`Scope.finish` (edits the graph)."""
    node.inputs.clear()
    node.outputs.clear()
    scope.removed.add(id(node))


def bypass(scope: Scope, node: gs.Node, x: gs.Tensor, y: gs.Tensor) -> None:
    """Remove ``node`` whose output ``y`` equals its input ``x`` (edits the graph).

    Call only when :meth:`Scope.bypass_refusal` returned None; the cases are the module
    docstring's. Other outputs of ``node`` must have no readers (the caller checks).
    """
    if id(y) in scope.outputs:  # case 3: x's producer writes y
        detach(scope, node)
        write_instead(x, y)
    else:  # case 2
        detach(scope, node)
        replace_all_uses(y, x)


def drop_if_dead(scope: Scope, tensor: gs.Tensor) -> int:
    """Remove ``tensor``'s producer chain as far as nothing else reads it (edits the graph).

    Returns the number of nodes removed. Only nodes of this graph, and only nodes
    without subgraphs (a body may read names invisibly), are removed.
    """
    removed = 0
    work = [tensor]
    while work:
        t = work.pop()
        node = scope.producer(t) if isinstance(t, gs.Variable) else None
        if node is None or has_subgraphs(node) or not all(scope.unread(o) for o in node.outputs):
            continue
        inputs = [i for i in node.inputs if isinstance(i, gs.Variable) and i.name]
        detach(scope, node)
        removed += 1
        work.extend(inputs)
    return removed


# --- shape inference -----------------------------------------------------------------------

def infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """onnx shape inference with the one set of flags surgeon uses.

    Not strict (an op without a schema, a custom op, leaves its outputs unknown instead of
    failing the whole model) and with data propagation (a shape computed by Shape → Gather
    → Concat is followed, which is how exported Reshape targets get their dims). Raises
    what onnx raises on a model it cannot read; callers decide whether that matters.
    """
    return onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
