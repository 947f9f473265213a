"""``surgeon.sweep``: a zoo of models through fix, trt-check, scan, fp16 and profile.

Order of work: collect and check every model and option (a usage error is one sentence
before any work), look every step up in the cache, run the jobs that are left on the
engine (largest model first, so that a long job does not start last), then write the
outputs and compare with the baseline. The results are the same whichever engine ran
them, apart from the ``seconds`` fields and the ``worker`` that ran each model.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from surgeon.files import write_text_atomic
from surgeon.errors import UsageError
from surgeon.sweep import spec as _spec
from surgeon.sweep.baseline import Regression, load_baseline, regressions
from surgeon.sweep.cache import Cache
from surgeon.sweep.isolation import Job
from surgeon.sweep.results import ModelResult

ENGINES = ("local", "ray")
ARGS_FILE = "sweep-args.json"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("surgeon")
    except PackageNotFoundError:
        from surgeon import __version__

        return __version__


@dataclass
class SweepResult:
    """Every model's result, the regressions against the baseline, and where it was written."""

    models: list[ModelResult]
    out: Path
    steps: list[str]
    engine: str
    jobs: int
    seconds: float = 0.0
    started_jobs: int = 0  # jobs that ran in a worker (the rest came whole from the cache)
    baseline: str | None = None
    regressions: list[Regression] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)
    expected: dict[str, list[str]] = field(default_factory=dict)  # model -> steps the manifest gave verdicts for

    @property
    def failures(self) -> list[tuple[str, Any]]:
        """(model, step result) for every step that did not pass."""
        return [(m.name, s) for m in self.models for s in m.steps if not s.passed]

    @property
    def failed(self) -> bool:
        """Exit 1: with a baseline, a regression (known failures are in the baseline) or an
        expectation of the manifest not met; without one, any step that did not pass."""
        if self.baseline is None:
            return bool(self.failures)
        expected = {(m.name, s.step) for m in self.models for s in m.steps if s.step in self.expected.get(m.name, ())}
        return bool(self.regressions) or any((name, s.step) in expected for name, s in self.failures)

    def counts(self) -> dict[str, int]:
        steps = [s for m in self.models for s in m.steps]
        return {"models": len(self.models), "steps": len(steps), "passed": sum(s.passed for s in steps),
                "failed": sum(not s.passed for s in steps),
                "lost": sum(s.status.infrastructure for s in steps), "cached": sum(s.cached for s in steps)}

    def to_dict(self) -> dict:
        return {"surgeon": _version(), "steps": self.steps, "engine": self.engine, "jobs": self.jobs,
                "seconds": round(self.seconds, 3), "started_jobs": self.started_jobs, "summary": self.counts(),
                "failed": self.failed, "baseline": self.baseline, "regressions": [r.to_dict() for r in self.regressions],
                "notes": self.notes, "models": [m.to_dict() for m in self.models], "files": self.files}


def _keys(cache: Cache, s: _spec.ModelSpec) -> dict[str, str]:
    """Each step's cache key; steps after fix are keyed by fix's (the fixed model is a function of it)."""
    input_key = cache.model_hash(s.path)
    keys = {}
    for step in s.steps:
        keys[step] = cache.step_key(step, {**s.options.get(step, {}), "expect": s.expect.get(step)}, input_key)
        if step == "fix":
            input_key = keys[step]
    return keys


def _prepare_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UsageError(f"{{0}} '{out}' exists and is not a folder", "out")
    out.mkdir(parents=True, exist_ok=True)


def _resume_args(out: Path) -> dict:
    path = out / ARGS_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError:
        raise UsageError(f"{{0}}: '{out}' holds no earlier sweep to continue ({ARGS_FILE} is missing); "
                         "give the models", "resume") from None
    except ValueError as exc:
        raise UsageError(f"{{0}}: '{path}' is not readable JSON: {exc}", "resume") from exc


def default_memory(jobs: int) -> int | None:
    """Each job may use its share of 80% of the machine's memory (None where that is unknown)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None
    return int(total * 0.8 / max(jobs, 1))


def sweep(
    sources: Sequence[str | os.PathLike] = (),
    *,
    out: str | os.PathLike,
    steps: str | Sequence[str] = ("fix", "trt-check"),
    jobs: int | None = None,
    engine: str = "local",
    ray_address: str | None = None,
    resume: bool = False,
    cache: bool = True,
    baseline: str | os.PathLike | None = None,
    junit: str | os.PathLike | None = None,
    timeout: float = _spec.DEFAULT_TIMEOUT,
    memory: int | str | None = None,
    progress: Callable[[int, int, ModelResult | None], None] | None = None,
) -> SweepResult:
    """Run every model of ``sources`` (model files, folders of them, YAML/JSON manifests)
    through ``steps`` and write the results into ``out``; returns a :class:`SweepResult`.

    Each model's job runs in its own process, forked warm, under ``timeout`` seconds and
    ``memory`` bytes (``"4G"``; default: a ``jobs``-th of 80% of the machine) of anonymous
    resident memory: a crash, a timeout or an out-of-memory kill is that model's result.
    ``engine``: ``local`` (a process pool, ``jobs`` wide, default the CPU count) or ``ray``
    (``ray_address``: an existing cluster; none starts a local one). Steps whose model,
    options and surgeon version are unchanged are taken from ``out``'s cache (``cache=False``
    recomputes them); ``resume`` continues the sweep recorded in ``out`` when no
    ``sources`` are given. With ``baseline`` (an earlier sweep.json), regressions are named.
    Outputs in ``out``: per model ``<name>/<step>.json|.txt`` (and fixed.onnx, fp16.onnx),
    ``results.jsonl``, ``sweep.json``, ``summary.md``; ``junit`` writes JUnit XML.
    Usage errors (a missing model, an unreadable manifest, an unknown step) raise
    :class:`surgeon.errors.UsageError` before any work.
    """
    t0 = time.perf_counter()
    out_dir = Path(out)
    if engine not in ENGINES:
        raise UsageError(f"unknown engine '{engine}'; choose local or ray")
    if ray_address and engine != "ray":
        raise UsageError("{0} applies to {1} only", "ray_address", "engine=ray")
    jobs = jobs if jobs is not None else (os.cpu_count() or 1)
    if jobs < 1:
        raise UsageError("{0} must be at least 1", "jobs")
    if timeout <= 0:
        raise UsageError("{0} must be a positive number of seconds", "timeout")
    limit = _spec.parse_size(memory) if memory is not None else default_memory(jobs)
    step_names = _spec.parse_steps(steps)
    sources = [str(s) for s in sources]
    if resume and not sources:
        recorded = _resume_args(out_dir)
        sources, step_names = recorded["sources"], recorded["steps"]
        timeout = recorded.get("timeout", timeout)
    if not sources:
        raise UsageError("nothing to sweep: give models, folders or a manifest (or --resume with an earlier --out)")
    specs = _spec.collect(sources, steps=step_names, timeout=timeout, memory=None)
    old = load_baseline(baseline) if baseline is not None else None
    if junit and Path(junit).resolve().parent not in (out_dir.resolve(),) and not Path(junit).resolve().parent.is_dir():
        raise UsageError(f"the folder of '{junit}' does not exist")  # --out itself is made by the sweep
    if engine == "ray":
        from surgeon.sweep import ray_engine

        ray_engine.check_available()
    _prepare_out(out_dir)
    write_text_atomic(str(out_dir / ARGS_FILE), json.dumps(
        {"sources": [str(Path(s).resolve()) for s in sources], "steps": step_names, "timeout": timeout}, indent=2))

    store = Cache(out_dir / ".cache", _version(), enabled=cache)
    results: dict[str, ModelResult] = {}
    pending: list[Job] = []
    keys: dict[str, dict[str, str]] = {}
    for s in specs:
        keys[s.name] = _keys(store, s)
        cached = {}
        for step in s.steps:
            hit = store.get(keys[s.name][step], out_dir)
            if hit is not None:
                cached[step] = hit.to_dict()
        if len(cached) == len(s.steps):
            from surgeon.sweep.isolation import Ending, assemble

            results[s.name] = assemble(Job(s, str(out_dir), cached), [], Ending(None), 0.0)
            results[s.name].sha256 = store.file_hash(s.path)
        else:
            pending.append(Job(s, str(out_dir), cached, memory=s.memory))
    store.save_hashes()
    total = len(specs)
    if progress:
        progress(len(results), total, None)

    def finished(result: ModelResult) -> None:
        for st in result.steps:
            if not st.cached:
                store.put(keys[result.name][st.step], st)
        results[result.name] = result
        with open(out_dir / "results.jsonl.partial", "a", encoding="utf-8") as f:
            f.write(json.dumps(result.to_dict()) + "\n")
        if progress:
            progress(len(results), total, result)

    pending.sort(key=lambda j: -os.path.getsize(j.spec.path))
    if pending:
        if engine == "ray":
            from surgeon.sweep import ray_engine

            ray_engine.run(pending, address=ray_address, capacity=jobs, default_memory=limit, on_result=finished)
        else:
            from surgeon.sweep.local import run_local

            run_local(pending, capacity=jobs, default_memory=limit, on_result=finished)
    models = [results[s.name] for s in specs]
    result = SweepResult(models, out_dir, step_names, engine, jobs, started_jobs=len(pending),
                         baseline=str(baseline) if baseline is not None else None,
                         expected={s.name: sorted(s.expect) for s in specs if s.expect})
    if old is not None:
        result.regressions, result.notes = regressions(old, models)
    result.seconds = time.perf_counter() - t0
    from surgeon.sweep.outputs import write_outputs

    write_outputs(result, junit=junit)
    (out_dir / "results.jsonl.partial").unlink(missing_ok=True)
    return result
