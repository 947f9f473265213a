"""User-facing reports: one data model, rendered as a terminal table or as JSON.

Reports are the third channel beside logs (developers) and exceptions (failures).
Every command's report is a dataclass with ``to_dict``; :func:`write_json` writes it
atomically and :func:`console` prints tables with rich.
"""

from __future__ import annotations

import json
import logging
import math
import re
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from surgeon.files import write_text_atomic

log = logging.getLogger(__name__)


# Below a terminal (a pipe, a log file) rich would assume 80 columns and fold table cells,
# splitting numbers such as 1.19e-06 over two lines. Lines there are as long as they need.
PIPE_WIDTH = 4096


def console(stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    if stream.isatty():
        return Console(stderr=stderr, highlight=False, soft_wrap=False)
    return Console(stderr=stderr, highlight=False, soft_wrap=True, width=PIPE_WIDTH, color_system=None)


def tables_console(quiet: bool = False) -> Console:
    """Where a command's tables go: stdout, or nowhere when stdout carries the JSON report (``--json``)."""
    if quiet:
        import io

        return Console(file=io.StringIO())
    return console()


class Progress:
    """What a long command is doing: a spinner on a terminal, plain throttled lines on stderr otherwise.

    Why: under a pipe or in CI a spinner shows nothing at all, and a user of a minutes-long
    bisect cannot tell a slow run from a hung one. Lines are written at most every
    ``interval`` seconds, the first one only once the work has lasted that long (a quick
    command, or one that stops at once on bad input, prints no progress at all). Use as a
    context manager; ``update(message)`` is the callback the API functions take.
    """

    def __init__(self, first: str, *, interval: float = 2.0, stream=None):
        self.stream = stream or sys.stderr
        self.interval = interval
        self.first = first
        self._status = None
        self._last = -math.inf

    def __enter__(self) -> "Progress":
        if self.stream.isatty():
            from rich.status import Status

            self._status = Status(self.first, console=Console(file=self.stream, highlight=False))
            self._status.__enter__()
        else:
            self._last = time.monotonic()
        return self

    def update(self, message: str) -> None:
        if self._status is not None:
            self._status.update(message)
            return
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            print(f"surgeon: {message}", file=self.stream, flush=True)

    def __exit__(self, *exc) -> None:
        if self._status is not None:
            self._status.__exit__(*exc)


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
    write_text_atomic(path, to_json(data))


def read_json(path: Path) -> dict | None:
    """A JSON document an earlier run wrote (resumable state): None when there is none, or
    when it cannot be read (a warning names it; the run then starts afresh)."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        log.warning("ignoring unreadable %s", path)
        return None


_NUMBER = re.compile(r"^[-+]?(\d[\d,]*\.?\d*|\.\d+)([eE][-+]?\d+)?\s*(s|ms|%|x|MB|KB|GB)?$|^-$|^$")


def table(title: str | None, columns: list[str], rows: list[list[Any]], *, justify: dict[str, str] | None = None) -> Table:
    """A rich table; a column of numbers is never wrapped (text columns fold on a narrow terminal)."""
    cells = [["" if v is None else str(v) for v in r] for r in rows]
    t = Table(title=title, title_justify="left", header_style="bold")
    for i, c in enumerate(columns):
        numeric = bool(cells) and all(_NUMBER.match(r[i].strip()) for r in cells if i < len(r))
        t.add_column(c, justify=(justify or {}).get(c, "right" if numeric else "left"),
                     overflow="fold", no_wrap=numeric, min_width=None)
    for r in cells:
        t.add_row(*r)
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
