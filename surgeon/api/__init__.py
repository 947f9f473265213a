"""The public API: one function per command, each returning a typed result with ``to_dict()``.

The command line is a thin layer over these (argument parsing, then one call, then a
renderer from :mod:`surgeon.render`). Each function takes Python values (shape mappings,
tolerance numbers, paths), raises :class:`surgeon.SurgeonError` for usage or input
problems before any work, and never prints. They are re-exported from ``surgeon``
(``surgeon.fix``, ``surgeon.scan``...), imported on first use so that ``import surgeon``
stays cheap. docs/api.md is the reference.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "fix": "_fix", "FixResult": "_fix",
    "compare": "_compare", "doctor": "_compare",
    "bisect": "_bisect", "BisectOutcome": "_bisect",
    "scan": "_scan", "ScanResult": "_scan",
    "isolate": "_isolate", "IsolateOutcome": "_isolate",
    "trt_check": "_trt_check",
    "fp16": "_fp16",
    "profile": "_profile", "ProfileResult": "_profile",
    "match": "_match", "pass_table": "_match",
    "sweep": "surgeon.sweep", "SweepResult": "surgeon.sweep",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module 'surgeon.api' has no attribute '{name}'")
    module = importlib.import_module(where if "." in where else f"surgeon.api.{where}")
    value = getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
