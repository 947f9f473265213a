"""``surgeon.api.match`` and ``pass_table``: what replace-custom-ops would do, and the passes."""

from __future__ import annotations

import os
from typing import Sequence

from surgeon.api._common import check_outputs, write_report


def match(model: str | os.PathLike, *, rules: Sequence[str] = (), builtin: bool = True,
          report: str | os.PathLike | None = None):
    """What the replace-custom-ops rules (user ``rules`` files first, then the built-in packs
    unless ``builtin=False``) would replace in ``model``; writes nothing but the report.
    Returns a :class:`surgeon.rewrite.engine.MatchReport` with ``rules`` set to the rules tried."""
    import surgeon
    from surgeon.pipeline import registry
    from surgeon.rewrite import find_matches

    loaded = surgeon.load(model)
    check_outputs(model, report)
    found = registry.rules_of("replace-custom-ops", {"rules": list(rules), "builtin_rules": builtin})
    result = find_matches(loaded, found)
    write_report(report, result.to_dict())
    return result


def pass_table() -> list[tuple[str, bool, str]]:
    """(name, in the default pipeline, summary) for every registered pass, pipeline order first."""
    from surgeon.pipeline import registry

    default = registry.default_pipeline()
    order = {name: i for i, name in enumerate(default)}  # pipeline order first, then the rest by name
    passes = sorted(registry.all_passes().items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0]))
    return [(name, name in order, cls.summary) for name, cls in passes]
