"""``surgeon passes``: the registered passes, pipeline order first."""

from __future__ import annotations

from typing import Any, Sequence

from surgeon.report import table


def render_passes(rows: Sequence[tuple[str, bool, str]], out: Any) -> None:
    out.print(table(None, ["pass", "default", "summary"], [[name, "yes" if default else "", summary]
                                                           for name, default, summary in rows]))
