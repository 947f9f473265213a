"""replace-custom-ops: rewrite custom ops (and known op patterns) by rules.

Rules come from three places, tried in this order at every node: the user's rule files
(``surgeon fix --rules my_rules.py``, so a user can override a built-in), installed rule
packs (entry-point group ``surgeon.rules``), and the built-in packs (ONNX Runtime contrib
ops to standard ops; decomposed LayerNorm to LayerNormalization). A rule may emit a
plugin node in a custom domain for TensorRT; it is declared opaque so the pipeline
verifies it structurally rather than rolling it back for not running in ONNX Runtime.
Custom ops no rule touched are listed in the notes and left bit-identical.
"""

from __future__ import annotations

from typing import Any, Mapping

from passes.rulepacks import builtin_rules
from surgeon.graph import Model
from surgeon.pipeline.base import Pass, PassContext, PassLog
from surgeon.pipeline.registry import register
from surgeon.rewrite import Rule, apply_rules, installed_packs, load_rule_files
from surgeon.rewrite.loader import check_unique


@register
class ReplaceCustomOps(Pass):
    name = "replace-custom-ops"
    summary = ("Replace custom ops by rules: ONNX Runtime contrib ops to standard ops, decomposed LayerNorm "
               "to LayerNormalization, user rules (--rules) incl. TensorRT plugin nodes")
    default_order = 20

    @staticmethod
    def collect_rules(options: Mapping[str, Any]) -> list[Rule]:
        """The rules this pass applies for ``options`` (``rules``: user files; ``builtin_rules``: bool)."""
        rules = load_rule_files(options.get("rules") or [])
        rules += installed_packs()
        if options.get("builtin_rules", True):
            rules += builtin_rules()
        check_unique(rules, "the user rules, installed rule packs and built-in rules together")
        return rules

    def run(self, model: Model, ctx: PassContext, log: PassLog) -> bool:
        return apply_rules(model, self.collect_rules(ctx.options), ctx, log)
