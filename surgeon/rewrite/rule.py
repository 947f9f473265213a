"""What a rule is: pattern → check → rewrite, over onnx-graphsurgeon nodes.

A rule is an object with three parts, each testable alone:

- ``match(node, scope)`` is structural: does the pattern end at ``node``? ``pattern`` is
  a DAG of :class:`surgeon.rewrite.pattern.Node` whose names bind values and nodes (the
  usual form), or a chain of :class:`Op` where each node consumes the first output of the
  one before (the form of older rule files).
- ``check(match, ctx)`` is pure and returns :func:`~surgeon.rewrite.result.ok` with what it
  computed, or :func:`~surgeon.rewrite.result.fail` with a sentence saying why the rule
  refuses (opset too old, attribute unsupported, a type unknown). That sentence is what
  the user reads as a near miss, so it names the reason, not the code path.
- ``rewrite(match, b)`` builds the replacement through a :class:`~surgeon.rewrite.builder.Builder`
  and returns one tensor per ``match.outputs`` (an existing tensor: the match is bypassed).
  It reads what the pattern and the check bound as ``match["name"]``. The engine, not the
  rule, rewires the graph, keeps output names, stamps provenance and adds opset imports.

Nothing is kept on the rule between the three calls: whatever ``match`` and ``check`` find
travels in the :class:`Match` (its bindings).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from surgeon import graph_ops as K
from surgeon.graph_ops import Scope, node_domain, op_label  # noqa: F401 - part of this module's API
from surgeon.rewrite import pattern as P
from surgeon.rewrite.result import Bound, Refused  # noqa: F401 - check's return types

STANDARD_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "ai.onnx.preview.training"})


@dataclass(frozen=True)
class Op:
    """One node of a pattern: op type(s), domain and required attribute values.

    An attribute value may be a callable predicate (``{"alpha": lambda a: a > 0}``);
    otherwise it must be equal. A missing attribute never matches a required value.
    """

    op_type: str | tuple[str, ...]
    domain: str = ""
    attrs: Mapping[str, Any] = field(default_factory=dict)

    def matches(self, node: gs.Node) -> bool:
        types = (self.op_type,) if isinstance(self.op_type, str) else tuple(self.op_type)
        domain = "" if self.domain == "ai.onnx" else self.domain
        if node.op not in types or node_domain(node) != domain:
            return False
        for key, want in self.attrs.items():
            if key not in node.attrs:
                return False
            have = node.attrs[key]
            if callable(want):
                if not want(have):
                    return False
            elif have != want:
                return False
        return True


@dataclass
class Match:
    """A found occurrence of a pattern; everything ``check`` and ``rewrite`` need.

    ``nodes`` are in graph order; ``root`` (the last) is the node the replacement is
    named after. ``inputs`` are the tensors the matched nodes read from outside the
    match (in order of first use); ``outputs`` are the matched nodes' tensors that are
    used outside it (or are graph outputs) — the rewrite must produce one for each.
    """

    rule: str
    scope: Scope
    nodes: list[gs.Node]
    roles: dict[str, Any] = field(default_factory=dict)
    inputs: list[gs.Tensor] = field(default_factory=list)
    outputs: list[gs.Tensor] = field(default_factory=list)

    @property
    def graph(self) -> gs.Graph:
        return self.scope.graph

    def __getitem__(self, name: str) -> Any:
        """What the pattern or the check bound under ``name``."""
        return self.roles[name]

    def with_bound(self, values: Mapping[str, Any]) -> "Match":
        """This match with the check's bindings added (a new object: the rule keeps nothing)."""
        return Match(self.rule, self.scope, self.nodes, {**self.roles, **values}, self.inputs, self.outputs)

    @property
    def root(self) -> gs.Node:
        return self.nodes[-1]

    @property
    def anchor(self) -> gs.Node:
        return self.nodes[0]

    @classmethod
    def of(cls, rule: str, scope: Scope, nodes: Sequence[gs.Node], roles: Mapping[str, Any] | None = None) -> "Match":
        ordered = sorted(nodes, key=scope.position)
        inside = {id(n) for n in ordered}
        produced = {id(t) for n in ordered for t in n.outputs}
        inputs, seen = [], set()
        for n in ordered:
            for t in n.inputs:
                if t.name and id(t) not in produced and id(t) not in seen:
                    seen.add(id(t))
                    inputs.append(t)
        outputs = [
            t for n in ordered for t in n.outputs
            if scope.is_graph_output(t) or any(id(c) not in inside for c in t.outputs)
        ]
        return cls(rule, scope, ordered, dict(roles or {}), inputs, outputs)


@dataclass(frozen=True)
class RuleContext:
    """What a rule may read about the whole model: opsets and inferred tensor types."""

    opsets: Mapping[str, int]
    types: Mapping[str, tuple[int, tuple | None]] = field(default_factory=dict)

    @property
    def opset(self) -> int:
        return self.opsets.get("", 1)

    def dtype(self, tensor: gs.Tensor) -> np.dtype | None:
        """The tensor's element type (declared or inferred), None when unknown."""
        if tensor.dtype is not None:
            try:
                return np.dtype(tensor.dtype)
            except TypeError:
                return None
        known = self.types.get(tensor.name)
        if known and known[0]:
            try:
                return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(known[0]))
            except (KeyError, TypeError):
                return None
        return None

    def shape(self, tensor: gs.Tensor) -> tuple | None:
        """Dims (int, or str for symbolic/unknown), None when even the rank is unknown."""
        if isinstance(tensor, gs.Constant):
            return tuple(tensor.values.shape)
        if tensor.shape is not None:
            return tuple(d if isinstance(d, int) and d >= 0 else str(d) for d in tensor.shape)
        known = self.types.get(tensor.name)
        return known[1] if known else None

    def rank(self, tensor: gs.Tensor) -> int | None:
        s = self.shape(tensor)
        return None if s is None else len(s)

    def constant(self, tensor: gs.Tensor | None) -> np.ndarray | None:
        """The value of a constant (see :func:`surgeon.graph_ops.constant`: never an overridable input)."""
        return K.constant(tensor)


class Rule:
    """Base of every rule. Subclasses set ``name`` and either ``pattern`` or ``match``.

    ``domains`` declares opset versions for custom domains the rewrite emits (a domain
    not declared gets version 1). ``max_output_from_root`` style restrictions live in
    :meth:`outputs_problem`: by default only the root node's outputs may be used
    outside the match.
    """

    name: str = ""
    pattern: "tuple[Op, ...] | P.Node" = ()
    domains: Mapping[str, int] = MappingProxyType({})  # immutable: a subclass declares its own
    # Op types a model must contain for ``match`` to succeed anywhere: one set of
    # alternative (domain, op_type) pairs per required node. Derived from ``pattern``;
    # a rule with its own ``match`` may declare it (None: unknown, the rule always runs).
    requires: tuple[frozenset[tuple[str, str]], ...] | None = None

    def required_ops(self) -> tuple[frozenset[tuple[str, str]], ...] | None:
        """What ``requires`` says, or what ``pattern`` implies when ``match`` is the default.

        Lets the engine skip a model in which no rule can match without importing it.
        """
        if self.requires is not None:
            return self.requires
        if type(self).match is not Rule.match or not self.pattern:
            return None
        if isinstance(self.pattern, P.Node):
            return self.pattern.required_ops()
        out = []
        for op in self.pattern:
            types = (op.op_type,) if isinstance(op.op_type, str) else tuple(op.op_type)
            domain = "" if op.domain == "ai.onnx" else op.domain
            out.append(frozenset((domain, t) for t in types))
        return tuple(out)

    def root_ops(self) -> frozenset[tuple[str, str]] | None:
        """The (domain, op) pairs a node must have for ``match`` to start there; None: any node.

        Known for the default ``match``, and for a DAG ``pattern`` (a rule that overrides
        ``match`` keeps the pattern's root as where it starts; one that starts elsewhere
        overrides this too).
        """
        if type(self).match is not Rule.match and not isinstance(self.pattern, P.Node):
            return None
        if isinstance(self.pattern, P.Node):
            return frozenset((self.pattern.domain, t) for t in self.pattern.op_types)
        if not self.pattern:
            return None
        first = self.pattern[0]
        types = (first.op_type,) if isinstance(first.op_type, str) else tuple(first.op_type)
        return frozenset(("" if first.domain == "ai.onnx" else first.domain, t) for t in types)

    def match(self, node: gs.Node, scope: Scope) -> Match | None:
        """Fit the DAG ``pattern`` ending at ``node``, or follow a chain ``pattern`` starting there."""
        if isinstance(self.pattern, P.Node):
            found = P.match(self.pattern, node, scope)
            return None if found is None else Match.of(self.name, scope, found.nodes, found.bindings)
        if not self.pattern or not self.pattern[0].matches(node):
            return None
        nodes = [node]
        for op in self.pattern[1:]:
            if not nodes[-1].outputs:
                return None
            # Follow a consumer of this graph that fits; other uses of the intermediate
            # are caught by outputs_problem, so the user hears why it was not replaced.
            nxt = next((c for c in nodes[-1].outputs[0].outputs if scope.contains(c) and op.matches(c)), None)
            if nxt is None or any(nxt is n for n in nodes):
                return None
            nodes.append(nxt)
        return Match.of(self.name, scope, nodes)

    def outputs_problem(self, match: Match) -> str | None:
        for t in match.outputs:
            if not any(t is o for o in match.root.outputs):
                return f"intermediate tensor '{t.name}' is also used outside the pattern"
        return None

    def check(self, match: Match, ctx: RuleContext) -> "Bound | Refused | str | None":
        return None

    def rewrite(self, match: Match, b) -> Sequence[gs.Tensor]:
        raise NotImplementedError(f"rule {self.name} has no rewrite")

    def note(self, node: gs.Node, reason: str) -> str:
        """The near-miss line the report shows for a refusal at ``node``."""
        label = node.name or (node.outputs[0].name if node.outputs else node.op)
        return f"{label}: rule {self.name} refused: {reason}"

    def __repr__(self) -> str:
        return f"<rule {self.name}>"


class FunctionRule(Rule):
    """A rule made of plain functions: the convenient form for user rule files."""

    def __init__(
        self,
        name: str,
        pattern: Sequence[Op] | Op,
        rewrite: Callable[[Match, Any], Sequence[gs.Tensor]],
        *,
        check: Callable[[Match, RuleContext], str | None] | None = None,
        domains: Mapping[str, int] | None = None,
    ):
        self.name = name
        self.pattern = (pattern,) if isinstance(pattern, Op) else tuple(pattern)
        self._rewrite = rewrite
        self._check = check
        self.domains = dict(domains or {})

    def check(self, match: Match, ctx: RuleContext) -> str | None:
        return self._check(match, ctx) if self._check else None

    def rewrite(self, match: Match, b) -> Sequence[gs.Tensor]:
        return self._rewrite(match, b)


def rule(name: str, pattern: Sequence[Op] | Op, rewrite, *, check=None, domains=None) -> Rule:
    """Build a rule from a pattern and functions (see :class:`FunctionRule`)."""
    return FunctionRule(name, pattern, rewrite, check=check, domains=domains)
