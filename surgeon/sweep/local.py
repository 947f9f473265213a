"""The local engine: a pool of ``capacity`` job processes on this machine (nothing to start)."""

from __future__ import annotations

from typing import Callable

from surgeon.sweep.isolation import Job, Supervisor, assemble
from surgeon.sweep.results import ModelResult


def run_local(jobs: list[Job], *, capacity: int, default_memory: int | None,
              on_result: Callable[[ModelResult], None]) -> None:
    """Run ``jobs`` (in order), ``capacity`` at a time, each in its own warm-forked process."""
    supervisor = Supervisor(capacity, default_memory=default_memory)
    queue = list(jobs)
    try:
        while queue or supervisor.running:
            while queue and supervisor.free > 0:
                supervisor.start(queue.pop(0))
            for job, events, ending, seconds in supervisor.wait():
                on_result(assemble(job, events, ending, seconds))
    finally:
        supervisor.close()
