"""Regressions against an earlier sweep (its ``sweep.json``), each named in one line.

A regression is something this release made worse for a model that both sweeps ran:

- fix: the node count after fix rose; a model once verified is now refused or unverified;
- trt-check: a failure (node, op, phase) the baseline did not have;
- fp16: more FP32 nodes are needed to keep the tolerance;
- profile: the latency rose beyond its measured noise, i.e. this run's 95% interval of the
  median lies wholly above the baseline's (two intervals that overlap are noise);
- any step: it passed before and now fails, errs, crashes, times out or runs out of memory.

Models or steps only one sweep has are reported as notes, not regressions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


from surgeon.errors import UsageError
from surgeon.sweep.results import ModelResult, Status, StepResult


@dataclass
class Regression:
    model: str
    step: str
    kind: str  # node-count, verification, trt-failures, fp32-nodes, latency, step-failed
    message: str

    def to_dict(self) -> dict:
        return {"model": self.model, "step": self.step, "kind": self.kind, "message": self.message}

    def __str__(self) -> str:
        return f"{self.model} / {self.step}: {self.message}"


def load_baseline(path: str | Path) -> dict[str, ModelResult]:
    """The models of an earlier ``sweep.json``, by name; one sentence when it cannot be read."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read the baseline '{p}': {exc.strerror}") from exc
    except ValueError as exc:
        raise UsageError(f"the baseline '{p}' is not JSON: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("models"), list):
        raise UsageError(f"the baseline '{p}' is not a surgeon sweep result (no 'models' list); give an earlier "
                         "sweep's sweep.json")
    try:
        return {m["model"]: ModelResult.from_dict(m) for m in data["models"]}
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"the baseline '{p}' is not a surgeon sweep result ({exc})") from exc


def _fix(name: str, old: StepResult, new: StepResult) -> list[Regression]:
    out = []
    if old.verdict == "verified" and new.verdict in ("refused", "unverified"):
        out.append(Regression(name, "fix", "verification", f"was verified, now {new.verdict}: {new.message}"))
    a, b = old.metrics.get("nodes_after"), new.metrics.get("nodes_after")
    if isinstance(a, int) and isinstance(b, int) and b > a:
        out.append(Regression(name, "fix", "node-count", f"node count after fix rose from {a} to {b}"))
    return out


def _key(f: dict) -> tuple:
    return f.get("node"), f.get("op"), f.get("phase")


def _trt(name: str, old: StepResult, new: StepResult) -> list[Regression]:
    before = {_key(f) for f in old.metrics.get("failures", [])}
    fresh = [f for f in new.metrics.get("failures", []) if _key(f) not in before]
    if not fresh:
        return []
    listed = ", ".join(f"{f['node']} ({f['op']}, {f['phase']})" for f in fresh[:5]) + (", ..." if len(fresh) > 5 else "")
    return [Regression(name, "trt-check", "trt-failures", f"{len(fresh)} new TensorRT failure(s): {listed}")]


def _fp16(name: str, old: StepResult, new: StepResult) -> list[Regression]:
    a, b = old.metrics.get("fp32_nodes"), new.metrics.get("fp32_nodes")
    if isinstance(a, int) and isinstance(b, int) and b > a:
        return [Regression(name, "fp16", "fp32-nodes", f"needs {b} FP32 node(s) to keep the tolerance, was {a}")]
    return []


def _latency(name: str, old: StepResult, new: StepResult) -> list[Regression]:
    a, b = old.metrics.get("latency_ms"), new.metrics.get("latency_ms")
    if not a or not b:
        return []
    if b["ci_low"] > a["ci_high"]:
        return [Regression(name, "profile", "latency",
                           f"median latency rose from {a['median']:.3f} ms (95% CI {a['ci_low']:.3f}-{a['ci_high']:.3f}) "
                           f"to {b['median']:.3f} ms (95% CI {b['ci_low']:.3f}-{b['ci_high']:.3f}), beyond the noise")]
    return []


_CHECKS = {"fix": _fix, "trt-check": _trt, "fp16": _fp16, "profile": _latency}


def regressions(baseline: dict[str, ModelResult], models: list[ModelResult]) -> tuple[list[Regression], list[str]]:
    """(regressions, notes) of ``models`` against ``baseline``."""
    found: list[Regression] = []
    notes: list[str] = []
    for m in models:
        old_model = baseline.get(m.name)
        if old_model is None:
            notes.append(f"{m.name}: not in the baseline")
            continue
        for new in m.steps:
            old = old_model.step(new.step)
            if old is None:
                notes.append(f"{m.name} / {new.step}: not in the baseline")
                continue
            specific = []
            if old.status == Status.OK and new.status == Status.OK and new.step in _CHECKS:
                specific = _CHECKS[new.step](m.name, old, new)
            if not specific and old.passed and not new.passed:
                now = new.status.value if new.status != Status.OK else new.verdict
                specific = [Regression(m.name, new.step, "step-failed", f"passed before, now {now}: {new.message}")]
            found += specific
    names = {m.name for m in models}
    notes += [f"{name}: in the baseline, not in this sweep" for name in baseline if name not in names]
    return found, notes


