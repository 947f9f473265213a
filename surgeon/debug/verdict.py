"""The debug half's one vocabulary: an oracle's :class:`Verdict` and how a search over
choices ended (:class:`SearchStatus`), shared by isolate and the fp16 island search.

Why enums of strings: the values are what reports and JSON say ("flaky-oracle"), so they
must be spelt once; comparing against a str still works.
"""

from __future__ import annotations

import enum


class Verdict(str, enum.Enum):
    """What an oracle says of one configuration."""

    FAIL = "fail"  # the configuration shows the problem
    PASS = "pass"  # it does not
    UNRESOLVED = "unresolved"  # it could not be judged (counts as "does not fail", Zeller's convention)


class SearchStatus(str, enum.Enum):
    """How a search over a set of choices ended."""

    # isolate (delta debugging over rewrites, optimizers, tactics)
    CULPRITS = "culprits"  # minimal failing set(s) found and confirmed
    NO_DIVERGENCE = "no-divergence"  # everything applied: the oracle passes
    BASELINE_FAILS = "baseline-fails"  # nothing applied: the oracle already fails
    INCOMPLETE = "incomplete"  # culprit sets found, but removing them all still fails (max_sets reached)
    # the fp16 island search
    NO_ISLANDS = "no-islands"  # the full reduced-precision model meets the tolerance
    MINIMAL = "minimal"  # a 1-minimal set, every island confirmed
    BUDGET = "budget"  # stopped by the call budget: the set meets the tolerance, minimality not proven
    # both
    FLAKY = "flaky-oracle"  # the oracle answered the same question two ways; nothing it said can be trusted

    def __str__(self) -> str:
        return self.value
