"""A pass made of rewrite rules: declare the rules, the engine does the rest.

Most built-in passes are a list of rules plus two choices: whether the rules read types
that onnx shape inference must first put on the graph, and whether one in-order sweep
reaches the fixed point. ``run`` is the same for all of them, so it is written once here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Sequence

from surgeon import graph as G
from surgeon.pipeline.base import Pass, PassContext, PassLog
from surgeon.rewrite.engine import MAX_SWEEPS, apply_rules
from surgeon.rewrite.rule import Rule

if TYPE_CHECKING:
    from surgeon.graph import Model


class RulePass(Pass):
    """Subclasses set ``name``, ``summary``, ``default_order`` and ``rules`` (a tuple).

    ``needs_types``: the rules prove things from dtypes and shapes; inferred ones are put on
    the values that lack them for the run and taken away after (see ``graph.inferred_types``).
    ``sweeps``: 1 when one in-order sweep reaches the fixed point (the pipeline repeats passes).
    ``applies(model)``: a cheap test that lets a model with nothing to match skip the run.
    """

    rules: ClassVar[Sequence[Rule]] = ()
    needs_types: ClassVar[bool] = False
    sweeps: ClassVar[int] = MAX_SWEEPS

    def applies(self, model: "Model") -> bool:
        return True

    def run(self, model: "Model", ctx: PassContext, log: PassLog) -> bool:
        if not self.applies(model):
            return False
        if not self.needs_types:
            return apply_rules(model, self.rules, ctx, log, infer=False, untouched=False, sweeps=self.sweeps)
        with G.inferred_types(model):
            return apply_rules(model, self.rules, ctx, log, infer=False, untouched=False, sweeps=self.sweeps)
