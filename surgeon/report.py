"""User-facing reports: one data model, rendered as a terminal table or as JSON.

Reports are the third channel beside logs (developers) and exceptions (failures).
Every command's report is a dataclass with ``to_dict``; :func:`write_json` writes it
atomically and :func:`console` prints tables with rich.
"""

from __future__ import annotations

import json
import math
from typing import Any

from rich.console import Console
from rich.table import Table

from surgeon import model as model_io


def console(stderr: bool = False) -> Console:
    return Console(stderr=stderr, highlight=False, soft_wrap=False)


def _clean(value: Any) -> Any:
    """JSON has no NaN/Inf; write them as strings so the file stays standard JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return _clean(value.item())
    return value


def to_json(data: dict) -> str:
    return json.dumps(_clean(data), indent=2, sort_keys=False) + "\n"


def write_json(path: str, data: dict) -> None:
    model_io.write_text_atomic(path, to_json(data))


def table(title: str | None, columns: list[str], rows: list[list[Any]], *, justify: dict[str, str] | None = None) -> Table:
    t = Table(title=title, title_justify="left", header_style="bold")
    for c in columns:
        t.add_column(c, justify=(justify or {}).get(c, "left"), overflow="fold")
    for r in rows:
        t.add_row(*["" if v is None else str(v) for v in r])
    return t


def fmt_err(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2e}"


def fmt_delta(delta: dict[str, int], limit: int = 4) -> str:
    """``{'BatchNormalization': -2, 'Conv': 0}`` → ``BatchNormalization -2``."""
    items = sorted(((k, v) for k, v in delta.items() if v), key=lambda kv: (-abs(kv[1]), kv[0]))
    text = ", ".join(f"{k} {v:+d}" for k, v in items[:limit])
    if len(items) > limit:
        text += f", +{len(items) - limit} more"
    return text or "-"
