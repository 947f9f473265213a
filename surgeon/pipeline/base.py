"""The pass contract.

A pass edits the pipeline's one in-memory model (:class:`surgeon.graph.Model`) in place
and returns whether it changed anything. It never verifies itself and never restores
anything: the pipeline checks the result and, if needed, rolls the structure back.
What a pass did is recorded through its :class:`PassLog` (counts per rule or action,
near-miss notes); the pipeline turns that into the user-facing report and refuses a
pass that changes the model without counting anything.

Rewrite applications are numbered through :class:`RewriteBudget` (LLVM's opt-bisect):
a pass asks ``ctx.permit(...)`` before each rewrite, so ``--bisect-limit N`` applies only
the first N rewrites of a whole pipeline run and ``surgeon isolate`` can search them.
"""

from __future__ import annotations

import abc
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import onnx_graphsurgeon as gs

from surgeon import graph as G

if TYPE_CHECKING:
    from surgeon.graph import Model


@dataclass(frozen=True)
class Application:
    """One rewrite a pass asked to make, numbered in pipeline order."""

    index: int
    pass_name: str
    rule: str
    node: str
    applied: bool

    @property
    def key(self) -> str:
        """Stable identity for exclusion lists (index numbering shifts when rules change)."""
        return f"{self.pass_name}:{self.rule}:{self.node}"


@dataclass
class RewriteBudget:
    """Numbers rewrite applications; ``limit`` and ``excluded`` decide which are allowed."""

    limit: int | None = None
    excluded: frozenset[str] = frozenset()
    only: frozenset[str] | None = None  # when set, only these keys are allowed (isolate's candidates)
    applications: list[Application] = field(default_factory=list)

    def permit(self, pass_name: str, rule: str, node: str) -> bool:
        index = len(self.applications)
        key = f"{pass_name}:{rule}:{node}"
        allowed = (self.limit is None or index < self.limit) and key not in self.excluded
        allowed = allowed and (self.only is None or key in self.only)
        self.applications.append(Application(index, pass_name, rule, node, allowed))
        return allowed


@dataclass
class PassContext:
    """What a pass may read besides the model: options and the rewrite budget."""

    budget: RewriteBudget = field(default_factory=RewriteBudget)
    options: dict[str, Any] = field(default_factory=dict)
    pass_name: str = ""

    def permit(self, rule: str, node: "str | gs.Node") -> bool:
        """Ask before each rewrite; False means skip this one (bisect limit or exclusion).

        ``node`` is the (first) node the rewrite starts from, or its name. Unnamed nodes
        are identified by their first output, so exclusion keys stay stable.
        """
        if isinstance(node, gs.Node):
            node = node.name or (node.outputs[0].name if node.outputs else "")
        return self.budget.permit(self.pass_name, rule, node)


@dataclass
class PassLog:
    """What one pass run did: counted actions and near-miss notes."""

    counts: Counter = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)
    opaque: set[str] = field(default_factory=set)  # ops added on purpose that ONNX Runtime cannot run

    def count(self, what: str, n: int = 1) -> None:
        self.counts[what] += n

    def opaque_ops(self, *ops: str) -> None:
        """Declare ``domain::Op`` nodes this pass added on purpose (plugin nodes).

        When the candidate then fails to load in ONNX Runtime because of them, the
        verifier checks it structurally (interface, types and shapes by shape inference)
        instead of rolling it back; without a declaration a load failure is a failure.
        """
        self.opaque.update(ops)

    def note(self, message: str) -> None:
        if message not in self.notes:
            self.notes.append(message)


class Pass(abc.ABC):
    """Base of every pass. Subclasses set ``name`` (kebab-case, stable) and ``summary``.

    ``default_order``: position in the default pipeline, or None to leave the pass out of it.
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    default_order: ClassVar[int | None] = None

    @abc.abstractmethod
    def run(self, model: "Model", ctx: PassContext, log: PassLog) -> bool:
        """Edit ``model.graph`` in place; return True when something changed.

        Weights are shared read-only arrays: compute new arrays, never write into one.
        Every change must be counted in ``log`` (the pipeline refuses an uncounted change).
        """


class GraphPass(Pass):
    """A pass over the onnx-graphsurgeon graph, applied to the main graph and every subgraph.

    ``run_on_graph`` returns True when it changed ``graph``. Subgraphs share tensor
    objects with their enclosing graph, so outer-scope references stay intact as long as
    a pass does not remove a tensor that :func:`surgeon.graph_ops.outer_scope_names` reports.

    ``candidate_ops``: when set, a model with none of these op types (subgraphs included)
    is left alone without visiting a graph.
    """

    candidate_ops: ClassVar[frozenset[str]] = frozenset()

    @abc.abstractmethod
    def run_on_graph(self, graph: gs.Graph, ctx: PassContext, log: PassLog) -> bool:
        ...

    def run(self, model: "Model", ctx: PassContext, log: PassLog) -> bool:
        if self.candidate_ops and not any(n.op in self.candidate_ops for n in G.walk_nodes(model.graph)):
            return False
        changed = False
        for g in list(G.iter_graphs(model.graph)):
            changed |= bool(self.run_on_graph(g, ctx, log))
        return changed
