"""Rewrite rules over onnx-graphsurgeon graphs: pattern → check → rewrite.

User rule files and rule packs import what they need from here::

    from surgeon.rewrite import Op, Rule, rule

See :mod:`surgeon.rewrite.rule` for the contract, :mod:`surgeon.rewrite.engine` for how
rules are applied and :mod:`surgeon.rewrite.loader` for how they are found.
"""

from surgeon.rewrite.builder import Builder
from surgeon.rewrite.engine import Finding, MatchReport, apply_rules, find_matches
from surgeon.rewrite.loader import installed_packs, load_rule_file, load_rule_files, validate_rules
from surgeon.rewrite.rule import STANDARD_DOMAINS, FunctionRule, Match, Op, Rule, RuleContext, Scope, rule

__all__ = [
    "Builder", "Finding", "FunctionRule", "Match", "MatchReport", "Op", "Rule", "RuleContext", "STANDARD_DOMAINS",
    "Scope", "apply_rules", "find_matches", "installed_packs", "load_rule_file", "load_rule_files", "rule",
    "validate_rules",
]
