"""One model's job: its steps in order, inside the job's own process.

The job function is the same whichever engine runs it (the local pool or a Ray task).
It reports through ``send``: ``("hello", worker, sha256)``, then ``("start", step)`` and
``("done", step, result)`` per step, so that the supervisor knows which step a lost
process was running and keeps every step that finished before it.

Steps after ``fix`` run on the fixed model (what a user ships), unless fix refused the
model; each result says which model it ran on.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, Callable

from surgeon.sweep.results import Status, StepResult
from surgeon.sweep.spec import ModelSpec
from surgeon.sweep.steps import StepContext, run_step


def run_job(spec: ModelSpec, out: Path, cached: dict[str, StepResult], send: Callable[[Any], None], *,
            node: str = "") -> None:
    from surgeon.sweep.cache import _sha256_file

    send(("hello", f"{node or socket.gethostname()}:{os.getpid()}", _sha256_file(Path(spec.path))))
    folder = out / spec.name
    folder.mkdir(parents=True, exist_ok=True)
    model, which = Path(spec.path), "original"
    for step in spec.steps:
        result = cached.get(step)
        if result is None:
            send(("start", step))
            ctx = StepContext(model=model, input=which, folder=folder, out=out, options=dict(spec.options.get(step, {})),
                              expect=spec.expect.get(step))
            result = run_step(step, ctx)
            send(("done", step, result.to_dict()))
        if step == "fix" and result.status == Status.OK and result.verdict != "refused":
            model, which = folder / "fixed.onnx", "fixed"
