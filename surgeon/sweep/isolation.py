"""One process per model job, with a time and a memory limit, started warm.

Why a process per job: a segfaulting custom op, a model that needs more memory than the
machine has, or a hung TensorRT build must end that model's job and nothing else. Why
warm: importing onnx, ONNX Runtime, onnx-graphsurgeon, Polygraphy and the passes costs
seconds, more than a small model's whole job, so the jobs are forked from a forkserver
that imported all of it once (:mod:`surgeon.sweep._warm`).

What the memory limit limits: the job's *anonymous* resident memory (``RssAnon`` in
``/proc/PID/status``), summed over the job's process tree (a TensorRT worker is a child of
the job). Not the address space: RLIMIT_AS counts every memory-mapped weight file and
every reserved-but-untouched thread stack and malloc arena, so a limit low enough to
matter kills healthy jobs that map a large model. Not total RSS either: clean file-backed
pages of mapped weights are resident but the kernel drops them under pressure; they are
not what runs a machine out of memory. A watchdog in the supervising process reads it
every ``poll`` seconds and kills the job's process group when it passes the limit.
Where /proc is missing the memory limit is not enforced (said so in the result).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from dataclasses import dataclass, field
from multiprocessing.connection import wait as mp_wait
from pathlib import Path
from typing import Any

from surgeon.sweep.results import ModelResult, Status, StepResult
from surgeon.sweep.spec import ModelSpec

PROC = Path("/proc")


@dataclass
class Job:
    """One model's job as the supervisor runs it: the spec, what the cache already holds."""

    spec: ModelSpec
    out: str  # OUT
    cached: dict[str, dict] = field(default_factory=dict)  # step -> StepResult dict
    memory: int | None = None  # bytes; the spec's own, else the sweep's default
    node: str = ""  # which machine runs it (Ray's node id); the host name when empty


@dataclass
class Ending:
    status: Status | None  # None: the process finished normally
    message: str = ""


# --- in the job's process -------------------------------------------------------------------

def child_main(spec: dict, out: str, cached: dict, node: str, conn: Any) -> None:
    """The job process: its own process group (so its whole tree can be killed), then the job."""
    from surgeon.sweep.job import run_job

    try:
        os.setpgid(0, 0)
    except OSError:
        pass
    # What the libraries print (ONNX Runtime, TensorRT, Polygraphy warnings) goes to the model's
    # job.log, not onto the sweep's own output, which is its table or its JSON lines.
    folder = Path(out) / spec["name"]
    folder.mkdir(parents=True, exist_ok=True)
    log = os.open(folder / "job.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    for fd in (1, 2):
        os.dup2(log, fd)
    os.close(log)
    try:
        run_job(ModelSpec.from_dict(spec), Path(out), {k: StepResult.from_dict(v) for k, v in cached.items()}, conn.send,
                node=node)
    finally:
        conn.close()


# --- process tree and memory ---------------------------------------------------------------------

def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        kids.setdefault(ppid, []).append(int(entry.name))
    return kids


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (from /proc)."""
    kids = _children_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, ()))
    return out


def anonymous_rss(pids: list[int]) -> int:
    """Bytes of anonymous resident memory of these processes together."""
    total = 0
    for pid in pids:
        try:
            for line in (PROC / str(pid) / "status").read_text().splitlines():
                if line.startswith("RssAnon:"):
                    total += int(line.split()[1]) * 1024
                    break
        except OSError:
            continue
    return total


def kill_tree(pid: int) -> None:
    """SIGKILL the job's process group and every descendant still known by its parent."""
    pids = process_tree(pid) if PROC.is_dir() else [pid]
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass


def _signal_name(n: int) -> str:
    try:
        return signal.Signals(n).name
    except ValueError:
        return f"signal {n}"


def _mb(n: float) -> str:
    return f"{n / 2**20:.0f} MB"


# --- the supervisor ----------------------------------------------------------------------------

@dataclass
class _Running:
    job: Job
    process: Any
    conn: Any
    deadline: float
    started: float
    events: list = field(default_factory=list)
    ending: Ending | None = None
    peak: int = 0


def warm_context(preload: bool = True):
    """The multiprocessing context jobs start from: a forkserver with the heavy imports done."""
    methods = multiprocessing.get_all_start_methods()
    if "forkserver" not in methods:
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    if preload:
        ctx.set_forkserver_preload(["surgeon.sweep._warm"])
    return ctx


class Supervisor:
    """Runs up to ``capacity`` jobs at once, each in its own process, and watches them."""

    def __init__(self, capacity: int, *, default_memory: int | None, poll: float = 0.2, context: Any = None):
        self.capacity = capacity
        self.default_memory = default_memory
        self.poll = poll
        self.ctx = context or warm_context()
        self.running: list[_Running] = []
        self.watch_memory = PROC.is_dir()

    @property
    def free(self) -> int:
        return self.capacity - len(self.running)

    def start(self, job: Job) -> None:
        recv, send = self.ctx.Pipe(duplex=False)
        p = self.ctx.Process(target=child_main, args=(job.spec.to_dict(), job.out, job.cached, job.node, send),
                             name=f"surgeon-sweep:{job.spec.name}", daemon=True)
        now = time.monotonic()
        p.start()
        send.close()
        self.running.append(_Running(job, p, recv, now + job.spec.timeout, now))

    def _drain(self, r: _Running) -> None:
        try:
            while r.conn.poll():
                r.events.append(r.conn.recv())
        except (EOFError, OSError):
            pass

    def _watch(self, r: _Running) -> None:
        if r.ending is not None:
            return
        now = time.monotonic()
        if now > r.deadline:
            kill_tree(r.process.pid)
            r.ending = Ending(Status.TIMEOUT, f"ran past the time limit of {r.job.spec.timeout:g} s")
            return
        limit = r.job.memory or self.default_memory
        if limit and self.watch_memory:
            used = anonymous_rss(process_tree(r.process.pid))
            r.peak = max(r.peak, used)
            if used > limit:
                kill_tree(r.process.pid)
                r.ending = Ending(Status.OUT_OF_MEMORY,
                                  f"used {_mb(used)} of anonymous memory, past the limit of {_mb(limit)}")

    def wait(self) -> list[tuple[Job, list, Ending, float]]:
        """Block up to ``poll`` seconds; return the jobs that ended (events, ending, seconds)."""
        if not self.running:
            return []
        mp_wait([r.conn for r in self.running] + [r.process.sentinel for r in self.running], timeout=self.poll)
        done = []
        for r in list(self.running):
            self._drain(r)
            self._watch(r)
            if r.process.is_alive() and r.ending is None:
                continue
            r.process.join(5)
            self._drain(r)
            if r.ending is None:
                code = r.process.exitcode
                if code == 0:
                    r.ending = Ending(None)
                elif code is not None and code < 0 and -code == signal.SIGKILL:
                    r.ending = Ending(Status.OUT_OF_MEMORY, "killed by SIGKILL from outside the sweep (the kernel's "
                                                            "out-of-memory killer, most likely)")
                elif code is not None and code < 0:
                    r.ending = Ending(Status.CRASHED, f"the process died of {_signal_name(-code)}")
                else:
                    r.ending = Ending(Status.CRASHED, f"the process exited with status {code}")
            kill_tree(r.process.pid)  # whatever it left behind (a TensorRT worker) goes with it
            r.conn.close()
            self.running.remove(r)
            done.append((r.job, r.events, r.ending, time.monotonic() - r.started))
        return done

    def close(self) -> None:
        for r in self.running:
            kill_tree(r.process.pid)
        self.running.clear()


def assemble(job: Job, events: list, ending: Ending, seconds: float) -> ModelResult:
    """The model's result from what the job reported, and how its process ended."""
    done: dict[str, StepResult] = {k: StepResult.from_dict(v) for k, v in job.cached.items()}
    started: str | None = None
    worker = ""
    sha = ""
    for event in events:
        kind = event[0]
        if kind == "start":
            started = event[1]
        elif kind == "done":
            done[event[1]] = StepResult.from_dict(event[2])
            started = None
        elif kind == "hello":
            worker, sha = event[1], event[2]
    result = ModelResult(job.spec.name, job.spec.path, sha256=sha, seconds=seconds, worker=worker)
    lost = ending.status is not None
    for step in job.spec.steps:
        if step in done:
            result.steps.append(done[step])
        elif lost and (started == step or started is None):
            result.steps.append(StepResult(step, ending.status, message=ending.message))
            started, lost = "", False  # later steps were never started
        else:
            why = f"not run: the job's process was lost ({ending.message})" if ending.status else "not run"
            result.steps.append(StepResult(step, Status.SKIPPED, message=why))
    return result
