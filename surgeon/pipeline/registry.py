"""Declarative pass registration.

Passes register themselves with :func:`register`; the built-in ``passes`` package and
third-party packs are found through the ``surgeon.passes`` entry-point group, so the
core never imports ``passes`` by name.
"""

from __future__ import annotations

import importlib
import logging
from importlib.metadata import entry_points

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
