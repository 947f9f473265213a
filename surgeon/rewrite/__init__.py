"""Rewrite rules over onnx-graphsurgeon graphs: pattern → check → rewrite.

User rule files and rule packs import what they need from here::

    from surgeon.rewrite import Node, Op, Opt, Rule, fail, ok, rule

See :mod:`surgeon.rewrite.rule` for the contract, :mod:`surgeon.rewrite.engine` for how
rules are applied and :mod:`surgeon.rewrite.loader` for how they are found.
"""

from surgeon.rewrite.builder import Builder
from surgeon.rewrite.engine import Finding, FindingStatus, MatchReport, apply_rules, find_matches
from surgeon.rewrite.loader import installed_packs, load_rule_file, load_rule_files, validate_rules
from surgeon.rewrite.pattern import Node, Opt
from surgeon.rewrite.result import Bound, Refused, fail, ok
from surgeon.rewrite.rule import STANDARD_DOMAINS, FunctionRule, Match, Op, Rule, RuleContext, Scope, rule
from surgeon.rewrite.rule_pass import RulePass

__all__ = [
    "Bound", "Builder", "Finding", "FindingStatus", "FunctionRule", "Match", "MatchReport", "Node", "Op", "Opt",
    "Refused", "Rule", "RuleContext", "RulePass", "STANDARD_DOMAINS", "Scope", "apply_rules", "fail", "find_matches",
    "installed_packs", "load_rule_file", "load_rule_files", "ok", "rule", "validate_rules",
]
