"""Declarative pass registration.

Passes register themselves with :func:`register`; the built-in ``passes`` package and
third-party packs are found through the ``surgeon.passes`` entry-point group, so the
core never imports ``passes`` by name.
"""

from __future__ import annotations

import importlib
import logging
from importlib.metadata import entry_points
from typing import Any, Mapping

from surgeon.errors import UnknownPassError, UsageError
from surgeon.pipeline.base import Pass

log = logging.getLogger(__name__)

_PASSES: dict[str, type[Pass]] = {}
_loaded = False


def register(cls: type[Pass]) -> type[Pass]:
    """Class decorator: make a pass available by its ``name``."""
    name = getattr(cls, "name", None)
    if not name or name != name.lower() or " " in name or "_" in name:
        raise UsageError(f"pass class {cls.__name__} needs a kebab-case name, got {name!r}")
    existing = _PASSES.get(name)
    if existing is not None and existing is not cls:
        raise UsageError(f"two passes are named '{name}': {existing.__module__} and {cls.__module__}")
    _PASSES[name] = cls
    return cls


def _load_entry_points() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    found = entry_points(group="surgeon.passes")
    for ep in found:
        ep.load()
    if not found:  # running from a source tree that was never installed
        try:
            importlib.import_module("passes")
        except ImportError:
            log.debug("no pass packages found")


def all_passes() -> dict[str, type[Pass]]:
    _load_entry_points()
    return dict(sorted(_PASSES.items()))


def get(name: str) -> type[Pass]:
    passes = all_passes()
    if name not in passes:
        raise UnknownPassError(f"unknown pass '{name}'; known passes: {', '.join(passes)}")
    return passes[name]


def default_pipeline() -> list[str]:
    passes = all_passes()
    ordered = sorted((cls.default_order, name) for name, cls in passes.items() if cls.default_order is not None)
    return [name for _, name in ordered]


def parse_pipeline(text: str | list[str] | None) -> list[str]:
    """A pass list → validated pass names; None → the default pipeline.

    Two forms, not mixed: ``"a,b,c"`` is the pipeline itself; ``"+a,-b"`` edits the
    default pipeline (``+name`` adds a pass after the default ones, in the order given;
    ``-name`` removes one). Why both: the usual wish is "the defaults, plus the opt-in
    lower-einsum" or "the defaults without merge-duplicates", and spelling the default
    list out by hand goes stale when a pass joins it.
    """
    if text is None:
        return default_pipeline()
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text)]
    names = [n for n in names if n]
    if not names:
        raise UsageError("the pass list is empty")
    edits = [n for n in names if n[0] in "+-"]
    if edits and len(edits) != len(names):
        raise UsageError(f"the pass list mixes names with +/- edits ({', '.join(names)}); give either the whole "
                         "pipeline (a,b,c) or edits of the default one (+a,-b)")
    if not edits:
        for name in names:
            get(name)
        return names
    pipeline = default_pipeline()
    for edit in edits:
        op, name = edit[0], edit[1:].strip()
        get(name)
        if op == "+":
            if name in pipeline:
                raise UsageError(f"'+{name}': the pipeline already runs {name}")
            pipeline.append(name)
        else:
            if name not in pipeline:
                raise UsageError(f"'-{name}': the default pipeline does not run {name} (see 'surgeon passes')")
            pipeline.remove(name)
    if not pipeline:
        raise UsageError("the pass list removes every pass of the default pipeline")
    return pipeline


def fix_pipeline(text: str | list[str] | None, *, target_opset: int | None = None) -> list[str]:
    """The passes ``surgeon fix --passes TEXT [--target-opset N]`` runs: :func:`parse_pipeline`,
    with ``upgrade-opset`` first when an opset is asked for (the opset is raised before any
    other pass looks at the model). One place for the CLI and for trt-check's remedies,
    which run the exact command they propose."""
    names = parse_pipeline(text)
    if target_opset is not None and "upgrade-opset" not in names:
        names = ["upgrade-opset", *names]
    return names


def rules_of(name: str, options: Mapping[str, Any] | None = None) -> list:
    """The rewrite rules the pass ``name`` applies with ``options``, for dry runs
    (``surgeon match``, trt-check's remedies) that ask what it would replace.

    The public way to ask, so that callers do not reach into a pass: a rule-applying pass
    offers its rules through a ``collect_rules(options)`` static method (today
    ``replace-custom-ops``: the user's rule files, installed packs, the built-in packs).
    """
    cls = get(name)
    collect = getattr(cls, "collect_rules", None)
    if collect is None:
        raise UsageError(f"pass '{name}' applies no rewrite rules")
    return list(collect(dict(options or {})))
