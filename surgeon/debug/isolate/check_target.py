"""Isolate adapter: a target's candidates judged by the user's ``--check`` command.

The target (today :class:`~surgeon.debug.isolate.passes_target.PassesTarget`) still says
what the choices are and builds the model for a subset of them; the command under the
one ``--check`` contract (:mod:`surgeon.debug.check_command`) says whether that model is
good, bad, or cannot be told. ``{inputs}`` is the samples the search runs on.
"""

from __future__ import annotations

from typing import Any

from surgeon.debug.check_command import BAD, UNRESOLVED, CheckCommand
from surgeon.debug.isolate.ddmin import Subset, Verdict


class CheckedTarget:
    """``target``'s choices and avoid-file, ``check``'s verdicts."""

    def __init__(self, target: Any, check: CheckCommand):
        self.target, self.check = target, check
        self.name, self.choices = target.name, target.choices
        self.describe, self.label, self.write_avoid = target.describe, target.label, target.write_avoid
        self.mechanism = target.mechanism.split(",")[0] + f", judged by: {check.command}"

    def __call__(self, subset: Subset) -> Verdict:
        result = self.check.run(self.target.candidate(subset), getattr(self.target, "samples", None))
        if result.outcome == UNRESOLVED:
            return Verdict.UNRESOLVED
        return Verdict.FAIL if result.outcome == BAD else Verdict.PASS
