"""DAG patterns with bindings: what a rule matches, and the names it gives to what it found.

A pattern is a tree of :class:`Node` written the way the computation reads, rooted at
the node the replacement takes the place of::

    Node("BatchNormalization", Node("Conv", "x", "w", Opt("b"), bind="conv"),
         "scale", "bias", "mean", "var", bind="bn")

Each input of a :class:`Node` is one of:

- a name (``"x"``): binds the tensor found there; the same name twice must be the same tensor,
  which is how a DAG says that two nodes read one value (LayerNorm's ``x``);
- ``"_"``: any tensor, not bound;
- :class:`Opt` (``Opt("b")``): an optional input, bound to None when absent;
- another :class:`Node`: the tensor must be written (at ``output``, default 0) by a node of the
  same graph that matches it. The same ``Node`` object used twice must match one node.

``Add``, ``Mul`` (and ``And``, ``Or``, ``Xor``, ``Sum`` of two) are matched in both input
orders. ``bind`` names the matched node; ``keep=True`` marks a node the rule reads but
does not replace (it stays unless the replacement leaves it without readers).
Matching is structural only: whether the rule *may* apply is its ``check``'s question.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

import onnx_graphsurgeon as gs

from surgeon import graph_ops as K

COMMUTATIVE = frozenset({"Add", "Mul", "And", "Or", "Xor", "Sum", "Max", "Min"})
ANY = "_"


@dataclass(frozen=True)
class Opt:
    """An optional input: binds the tensor, or None when the node leaves it out."""

    name: str


@dataclass(frozen=True, eq=False, init=False)
class Node:
    """One node of a pattern (identity matters: the same object twice is one node)."""

    op: str | tuple[str, ...]
    inputs: tuple = ()
    domain: str = ""
    attrs: Mapping[str, Any] = field(default_factory=dict)
    bind: str | None = None
    output: int = 0  # which output of this node its reader reads
    more: bool = False  # the node may have inputs beyond those listed
    keep: bool = False

    def __init__(self, op, *inputs, domain: str = "", attrs: Mapping[str, Any] | None = None,
                 bind: str | None = None, output: int = 0, more: bool = False, keep: bool = False):
        for key, value in (("op", op), ("inputs", tuple(inputs)), ("domain", "" if domain == "ai.onnx" else domain),
                           ("attrs", dict(attrs or {})), ("bind", bind), ("output", output), ("more", more),
                           ("keep", keep)):
            object.__setattr__(self, key, value)

    @property
    def op_types(self) -> tuple[str, ...]:
        return (self.op,) if isinstance(self.op, str) else tuple(self.op)

    def fits(self, node: gs.Node) -> bool:
        """Op type, domain and required attributes (a callable attribute value is a predicate)."""
        if node.op not in self.op_types or K.node_domain(node) != self.domain:
            return False
        for key, want in self.attrs.items():
            if key not in node.attrs:
                return False
            have = node.attrs[key]
            if not (want(have) if callable(want) else have == want):
                return False
        return True

    def walk(self) -> Iterator["Node"]:
        """This node pattern and every one below it (each once)."""
        seen: set[int] = set()
        stack = [self]
        while stack:
            p = stack.pop()
            if id(p) in seen:
                continue
            seen.add(id(p))
            yield p
            stack.extend(i for i in p.inputs if isinstance(i, Node))

    def required_ops(self) -> tuple[frozenset[tuple[str, str]], ...]:
        return tuple(frozenset((p.domain, t) for t in p.op_types) for p in self.walk())


@dataclass(frozen=True)
class Found:
    """A structural match: matched nodes (``keep`` ones apart) and every binding by name."""

    nodes: tuple[gs.Node, ...]
    kept: tuple[gs.Node, ...]
    bindings: Mapping[str, Any]


class _State:
    """Bindings made so far on one path of the search (copied at each alternative)."""

    __slots__ = ("values", "nodes")

    def __init__(self, values: dict[str, Any] | None = None, nodes: dict[int, gs.Node] | None = None):
        self.values = dict(values or {})
        self.nodes = dict(nodes or {})

    def copy(self) -> "_State":
        return _State(self.values, self.nodes)

    def bind_value(self, name: str, tensor: gs.Tensor | None) -> bool:
        if name in self.values:
            return self.values[name] is tensor
        self.values[name] = tensor
        return True


def _inputs_of(node: gs.Node) -> list[gs.Tensor | None]:
    """The node's inputs with omitted ones as None and trailing omissions dropped."""
    ins = [None if (isinstance(t, gs.Variable) and not t.name) else t for t in node.inputs]
    while ins and ins[-1] is None:
        ins.pop()
    return ins


def _match_node(p: Node, node: gs.Node, scope: K.Scope, st: _State) -> Iterator[_State]:
    if not p.fits(node):
        return
    bound = st.nodes.get(id(p))
    if bound is not None:
        if bound is node:
            yield st
        return
    if any(n is node for n in st.nodes.values()):
        return
    ins = _inputs_of(node)
    required = sum(1 for i in p.inputs if not isinstance(i, Opt))
    if len(ins) < required or (not p.more and len(ins) > len(p.inputs)):
        return
    st = st.copy()
    st.nodes[id(p)] = node
    if p.bind and not st.bind_value(p.bind, node):
        return
    orders = [p.inputs]
    if node.op in COMMUTATIVE and len(p.inputs) == 2 and p.inputs[0] is not p.inputs[1]:
        orders.append(p.inputs[::-1])
    for order in orders:
        yield from _match_inputs(list(order), ins, 0, scope, st)


def _match_inputs(pats: list, ins: list, i: int, scope: K.Scope, st: _State) -> Iterator[_State]:
    if i == len(pats):
        yield st
        return
    ip = pats[i]
    t = ins[i] if i < len(ins) else None
    if isinstance(ip, Opt):
        st = st.copy()
        if st.bind_value(ip.name, t):
            yield from _match_inputs(pats, ins, i + 1, scope, st)
        return
    if t is None:
        return
    if isinstance(ip, str):
        if ip == ANY:
            yield from _match_inputs(pats, ins, i + 1, scope, st)
            return
        st = st.copy()
        if st.bind_value(ip, t):
            yield from _match_inputs(pats, ins, i + 1, scope, st)
        return
    producer = scope.producer(t)
    if producer is None or ip.output >= len(producer.outputs) or producer.outputs[ip.output] is not t:
        return
    for inner in _match_node(ip, producer, scope, st):
        yield from _match_inputs(pats, ins, i + 1, scope, inner)


def match(pattern: Node, node: gs.Node, scope: K.Scope) -> Found | None:
    """The first way ``pattern`` (rooted at ``node``) fits the graph, or None."""
    for st in _match_node(pattern, node, scope, _State()):
        nodes = tuple(n for key, n in st.nodes.items() if not _pattern_of(pattern, key).keep)
        kept = tuple(n for key, n in st.nodes.items() if _pattern_of(pattern, key).keep)
        return Found(nodes, kept, dict(st.values))
    return None


def _pattern_of(root: Node, key: int) -> Node:
    return next(p for p in root.walk() if id(p) == key)
