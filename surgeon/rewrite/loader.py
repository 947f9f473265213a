"""Finding rules: user rule files (``--rules my_rules.py``) and installed rule packs.

A rule file is an ordinary Python module that defines ``RULES``, a list of
:class:`~surgeon.rewrite.rule.Rule` instances. It is imported with importlib from its
path (never ``exec`` of a string), under a module name derived from the path, so two
files with the same base name do not collide. An installed package contributes rules
through the ``surgeon.rules`` entry-point group; the entry point names a module (or
any object) with a ``RULES`` attribute, or a list of rules itself.

Every way a file can be wrong becomes one :class:`~surgeon.errors.RuleError` sentence.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Iterable, Sequence

from surgeon.errors import RuleError
from surgeon.rewrite.rule import Rule

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "surgeon.rules"


def validate_rules(rules: Any, origin: str) -> list[Rule]:
    """``rules`` must be a list/tuple of Rule instances with non-empty, unique names."""
    if not isinstance(rules, (list, tuple)):
        raise RuleError(f"{origin}: RULES must be a list of rules, got {type(rules).__name__}")
    out: list[Rule] = []
    for i, r in enumerate(rules):
        if isinstance(r, type) and issubclass(r, Rule):
            raise RuleError(f"{origin}: RULES[{i}] is the class {r.__name__}; put an instance ({r.__name__}()) in RULES")
        if not isinstance(r, Rule):
            raise RuleError(f"{origin}: RULES[{i}] is a {type(r).__name__}, not a surgeon.rewrite.Rule")
        if not isinstance(r.name, str) or not r.name.strip():
            raise RuleError(f"{origin}: RULES[{i}] ({type(r).__name__}) has no name")
        if not r.pattern and type(r).match is Rule.match:
            raise RuleError(f"{origin}: rule '{r.name}' has neither a pattern nor its own match()")
        out.append(r)
    check_unique(out, origin)
    return out


def check_unique(rules: Sequence[Rule], origin: str) -> None:
    seen: set[str] = set()
    for r in rules:
        if r.name in seen:
            raise RuleError(f"{origin}: two rules are named '{r.name}'")
        seen.add(r.name)


def load_rule_file(path: str | Path) -> list[Rule]:
    """Import a user rule file and return its validated ``RULES``."""
    p = Path(path)
    if not p.is_file():
        raise RuleError(f"rule file '{p}' does not exist")
    if p.suffix != ".py":
        raise RuleError(f"rule file '{p}' is not a Python file (.py)")
    digest = hashlib.sha1(str(p.resolve()).encode()).hexdigest()[:12]
    module_name = f"surgeon_user_rules_{p.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(module_name, p)
    if spec is None or spec.loader is None:
        raise RuleError(f"rule file '{p}' cannot be imported")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look modules up here
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        sys.modules.pop(module_name, None)
        raise RuleError(f"rule file '{p}' has a syntax error at line {exc.lineno}: {exc.msg}") from exc
    except Exception as exc:
        sys.modules.pop(module_name, None)
        raise RuleError(f"rule file '{p}' failed to import: {type(exc).__name__}: {exc}") from exc
    if not hasattr(module, "RULES"):
        raise RuleError(f"rule file '{p}' defines no RULES (a list of surgeon.rewrite.Rule)")
    return validate_rules(module.RULES, f"rule file '{p}'")


def load_rule_files(paths: Iterable[str | Path]) -> list[Rule]:
    rules: list[Rule] = []
    for path in paths:
        rules.extend(load_rule_file(path))
    check_unique(rules, "the rule files")
    return rules


def installed_packs() -> list[Rule]:
    """Rules from installed packages (entry-point group ``surgeon.rules``), by entry-point name."""
    rules: list[Rule] = []
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        origin = f"rule pack '{ep.name}' ({ep.value})"
        try:
            obj = ep.load()
        except Exception as exc:
            raise RuleError(f"{origin} failed to load: {type(exc).__name__}: {exc}") from exc
        found = obj if isinstance(obj, (list, tuple)) else getattr(obj, "RULES", None)
        if found is None:
            raise RuleError(f"{origin} has no RULES")
        rules.extend(validate_rules(found, origin))
    return rules
