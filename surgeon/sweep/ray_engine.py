"""The Ray engine: the same job, as one Ray task per model, on a local or an existing cluster.

Ray is an optional extra (``pip install "surgeon[ray]"``), imported only here and only when
``--engine ray`` is asked for. Each task runs the job exactly as the local engine does, in
its own warm-forked process under the same time and memory limits (a forkserver per Ray
worker), so a segfault or an out-of-memory kill is that model's result and not a lost Ray
worker, and the results do not depend on the engine. Tasks are spread over the nodes.
Every node must see the models and ``--out`` at the same paths (a shared filesystem).
"""

from __future__ import annotations

from typing import Any, Callable

from surgeon.errors import BackendUnavailableError
from surgeon.sweep.isolation import Ending, Job, Supervisor, assemble
from surgeon.sweep.results import ModelResult, Status


def check_available() -> None:
    try:
        import ray  # noqa: F401
    except ImportError:
        raise BackendUnavailableError("{0} needs Ray, which is not installed here: pip install \"surgeon[ray]\" "
                                      "(or use {1})", "engine=ray", "engine=local") from None


def _task(job: Job, default_memory: int | None) -> dict:
    """One model's job inside a Ray worker: the local supervisor with a capacity of one."""
    import ray

    job.node = ray.get_runtime_context().get_node_id()[:12]
    supervisor = Supervisor(1, default_memory=default_memory)
    try:
        supervisor.start(job)
        while True:
            for done_job, events, ending, seconds in supervisor.wait():
                return assemble(done_job, events, ending, seconds).to_dict()
    finally:
        supervisor.close()


def run(jobs: list[Job], *, address: str | None, capacity: int, default_memory: int | None,
        on_result: Callable[[ModelResult], None]) -> None:
    """Submit every job, collect results as they finish; a lost task is that model's crash."""
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        init: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
        if address:
            init["address"] = address
        else:
            init["num_cpus"] = capacity
        ray.init(**init)
    try:
        remote = ray.remote(num_cpus=1, max_retries=0)(_task).options(scheduling_strategy="SPREAD")
        pending = {remote.remote(job, default_memory): job for job in jobs}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                job = pending.pop(ref)
                try:
                    result = ModelResult.from_dict(ray.get(ref))
                except ray.exceptions.RayError as exc:
                    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                    result = assemble(job, [], Ending(Status.CRASHED, f"the Ray task was lost: {first}"), 0.0)
                on_result(result)
    finally:
        if started_here:
            ray.shutdown()
