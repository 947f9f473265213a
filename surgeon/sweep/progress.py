"""The sweep's progress: a rich bar on a terminal, throttled plain lines on stderr otherwise."""

from __future__ import annotations

import sys
import time
from typing import Any


class SweepProgress:
    """``update(done, total, result)`` is the callback :func:`surgeon.sweep` takes.

    Why two forms: a bar redraws in place, which a CI log shows as noise or not at all;
    there a line per finished model (at most one every ``interval`` seconds, plus every
    failure) says how far the sweep is and whether it is stuck.
    """

    def __init__(self, *, quiet: bool = False, stream: Any = None, interval: float = 5.0):
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.interval = interval
        self._bar = None
        self._task = None
        self._last = 0.0

    def __enter__(self) -> "SweepProgress":
        if self.stream.isatty() and not self.quiet:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(TextColumn("sweep"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                 TextColumn("{task.description}"), console=Console(file=self.stream), transient=True)
            self._bar.__enter__()
            self._task = self._bar.add_task("", total=None)
        return self

    def update(self, done: int, total: int, result: Any = None) -> None:
        name = ""
        if result is not None:
            bad = [s.step for s in result.steps if not s.passed]
            name = f"{result.name}" + (f" ({', '.join(bad)} failed)" if bad else "")
        if self._bar is not None:
            self._bar.update(self._task, completed=done, total=total, description=name)
            return
        now = time.monotonic()
        failed = result is not None and not result.passed
        if result is not None and (failed or now - self._last >= self.interval or done == total):
            self._last = now
            print(f"surgeon: sweep: {done}/{total} done; last: {name}", file=self.stream, flush=True)

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
