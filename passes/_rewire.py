"""Small graph-editing helpers shared by the node-reducing passes.

Why a module of its own: ``eliminate-neutral-ops``, ``drop-default-inputs`` and
``fuse-matmul-add`` all need the same three things done the same careful way: read a
constant (initializer or ``Constant`` node, never an overridable default), bypass a node
whose output equals one of its inputs without breaking graph-output names or outer-scope
references, and drop the producers a rewrite left without readers.

All helpers are pure queries except :func:`bypass` and :func:`drop_if_dead`, which edit
the graph they are given and say so in their docstrings.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import onnx_graphsurgeon as gs

from surgeon import graph as G


STANDARD_DOMAINS = (None, "", "ai.onnx")
MAX_CONSTANT_ELEMENTS = 1 << 20  # a neutral operand is a bias or a scalar, never a big weight


def is_standard(node: gs.Node) -> bool:
    return node.domain in STANDARD_DOMAINS


def present(node: gs.Node, index: int) -> gs.Tensor | None:
    """Input ``index`` of ``node``, or None when absent or given as the empty name."""
    if index >= len(node.inputs):
        return None
    t = node.inputs[index]
    return None if (isinstance(t, gs.Variable) and not t.name) else t


def producer(tensor: gs.Tensor) -> gs.Node | None:
    return tensor.inputs[0] if len(tensor.inputs) == 1 else None


def constant_value(tensor: gs.Tensor | None, max_elements: int = MAX_CONSTANT_ELEMENTS) -> np.ndarray | None:
    """The value of an initializer or a ``Constant`` node's output; None otherwise.

    An initializer a user may override (listed as a graph input, IR >= 4) is not a
    constant; a constant over ``max_elements`` is not read (the caller only wants small ones).
    """
    if tensor is None:
        return None
    if isinstance(tensor, gs.Constant):
        if G.is_overridable(tensor) or int(np.prod(tensor.shape)) > max_elements:
            return None
        return np.asarray(tensor.values)
    node = producer(tensor)
    if node is None or node.op != "Constant" or not is_standard(node):
        return None
    attrs = node.attrs
    value = attrs.get("value")
    if isinstance(value, gs.Constant):
        return np.asarray(value.values) if int(np.prod(value.shape)) <= max_elements else None
    for key, dtype in (("value_float", np.float32), ("value_floats", np.float32),
                       ("value_int", np.int64), ("value_ints", np.int64)):
        if key in attrs:
            return np.asarray(attrs[key], dtype=dtype)
    return None


def nested_graphs(graph: gs.Graph) -> Iterator[gs.Graph]:
    """Every graph strictly inside ``graph`` (bodies of its nodes, recursively)."""
    for node in graph.nodes:
        for value in node.attrs.values():
            for item in value if isinstance(value, (list, tuple)) else [value]:
                if isinstance(item, gs.Graph):
                    yield item
                    yield from nested_graphs(item)


class Scope:
    """Facts about one graph that decide whether a tensor can be bypassed.

    Computed once per graph (linear), then kept up to date by :func:`bypass`; it lives
    only as long as one ``run_on_graph`` call, never on the pass object.
    """

    def __init__(self, graph: gs.Graph):
        self.graph = graph
        self.here = {id(n) for n in graph.nodes}
        self.outputs = {id(t) for t in graph.outputs}
        self.inputs = {id(t) for t in graph.inputs}
        subs = list(nested_graphs(graph))
        self.nested_outputs = {id(t) for sub in subs for t in sub.outputs}
        self.nested_defined = {t.name for sub in subs for t in sub.inputs}
        self.nested_defined |= {t.name for sub in subs for n in sub.nodes for t in n.outputs}
        self.removed: set[int] = set()

    def refusal(self, x: gs.Tensor, y: gs.Tensor) -> str | None:
        """Why ``y`` (a node output equal to ``x``) cannot be replaced by ``x``; None: it can. Pure."""
        if id(y) in self.nested_outputs:
            return "its output is also a subgraph's output"
        if x.name in self.nested_defined:
            return "a subgraph defines a value with its input's name"
        if id(y) not in self.outputs:
            return None
        # y names a graph output: x's producer must write y instead, so x must be a plain
        # intermediate tensor of this very graph.
        src = producer(x)
        if src is None or id(src) not in self.here or id(src) in self.removed:
            return "a graph output would copy a graph input, a constant or an outer-scope value"
        if id(x) in self.outputs or id(x) in self.nested_outputs:
            return "its input is a graph output too"
        return None

    def finish(self) -> None:
        """Drop the nodes marked removed from the graph (one linear rebuild)."""
        if self.removed:
            self.graph.nodes = [n for n in self.graph.nodes if id(n) not in self.removed]
            self.here -= self.removed
            self.removed = set()


def _replace_uses(old: gs.Tensor, new: gs.Tensor) -> None:
    for consumer in list(old.outputs):
        for i, t in enumerate(consumer.inputs):
            if t is old:
                consumer.inputs[i] = new


def detach(scope: Scope, node: gs.Node) -> None:
    """Disconnect ``node`` and mark it for removal (edits the graph)."""
    node.inputs.clear()
    node.outputs.clear()
    scope.removed.add(id(node))


def bypass(scope: Scope, node: gs.Node, x: gs.Tensor, y: gs.Tensor) -> None:
    """Remove ``node`` whose output ``y`` equals its input ``x`` (edits the graph).

    Call only when :meth:`Scope.refusal` returned None. Readers of ``y`` read ``x``;
    when ``y`` is a graph output, ``x``'s producer writes ``y`` instead (so the output
    keeps its name and place) and ``x``'s readers read ``y``. Other outputs of ``node``
    must have no readers (the caller checks).
    """
    if id(y) in scope.outputs:
        src = producer(x)
        detach(scope, node)
        slot = [id(t) for t in src.outputs].index(id(x))
        _replace_uses(x, y)
        src.outputs[slot] = y
        if y.dtype is None:
            y.dtype = x.dtype
        if y.shape is None:
            y.shape = x.shape
    else:
        detach(scope, node)
        _replace_uses(y, x)


def unread(scope: Scope, t: gs.Tensor) -> bool:
    """No node reads ``t`` and it is no graph output of this graph or a body."""
    return not t.outputs and id(t) not in scope.outputs and id(t) not in scope.nested_outputs


def drop_if_dead(scope: Scope, tensor: gs.Tensor) -> int:
    """Remove ``tensor``'s producer chain as far as nothing else reads it (edits the graph).

    Returns the number of nodes removed. Only nodes of this graph, and only nodes
    without subgraphs (a body may read names invisibly), are removed.
    """
    removed = 0
    work = [tensor]
    while work:
        t = work.pop()
        node = producer(t)
        if node is None or id(node) not in scope.here or id(node) in scope.removed:
            continue
        if any(isinstance(v, gs.Graph) or (isinstance(v, (list, tuple)) and any(isinstance(i, gs.Graph) for i in v))
               for v in node.attrs.values()):
            continue
        if not all(unread(scope, o) for o in node.outputs):
            continue
        inputs = [i for i in node.inputs if isinstance(i, gs.Variable) and i.name]
        detach(scope, node)
        removed += 1
        work.extend(inputs)
    return removed


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
