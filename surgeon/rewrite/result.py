"""What a rule's ``check`` returns: a match with what it bound, or a failure with its reason.

Modelled on onnxscript's ``MatchResult``: the check computes what it needs to decide
(a folded scale, a plan, the input a neutral op returns) and hands it on, so the rewrite
receives it instead of computing it again::

    def check(self, m, ctx):
        plan = plan_for(m["einsum"], ctx)
        if isinstance(plan, str):
            return fail(plan)
        return ok(plan=plan)

    def rewrite(self, m, b):
        return [emit(b, m["plan"])]

``None`` and a string are still accepted from ``check`` (user rule files written before):
None is :func:`ok` with nothing bound, a string is :func:`fail` with that reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping


@dataclass(frozen=True)
class Bound:
    """The check passed; ``values`` are added to the match's bindings for the rewrite."""

    values: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def __bool__(self) -> bool:
        return True


@dataclass(frozen=True)
class Refused:
    """The check refused; ``reason`` is the sentence the user reads as a near miss."""

    reason: str

    def __bool__(self) -> bool:
        return False


def ok(**values: Any) -> Bound:
    return Bound(MappingProxyType(dict(values)))


def fail(reason: str) -> Refused:
    return Refused(reason)


def as_result(value: Any) -> Bound | Refused:
    """A check's return value as a typed result (see the module docstring)."""
    if isinstance(value, (Bound, Refused)):
        return value
    if value is None:
        return ok()
    if isinstance(value, str):
        return fail(value)
    raise TypeError(f"check returned a {type(value).__name__}; return ok(...), fail(reason), None or a reason")
