"""What a sweep records: one :class:`StepResult` per model and step, typed statuses, and the
metrics a baseline is compared on.

Why a summary beside the full reports: each step also writes the report its single command
writes (``OUT/<model>/<step>.json``), but a baseline comparison, a JUnit file and a PR
comment need a few stable numbers per step (node counts, the verification, TensorRT
failures by node, FP32 nodes, latency with its interval), and they must be the same
whichever engine ran the job. Timings live only under ``seconds`` (and profile's latency),
so two runs can be compared with those left out.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

STEPS = ("fix", "trt-check", "scan", "fp16", "profile")


class Status(str, enum.Enum):
    """How a step ended. Only ``ok`` carries a verdict; the others say why there is none."""

    OK = "ok"  # the step ran; see the verdict
    ERROR = "error"  # the step refused this model or its options (a usage or input problem, one sentence)
    CRASHED = "crashed"  # the job's process died (a signal, e.g. SIGSEGV) while this step ran
    TIMEOUT = "timeout"  # the job ran past its time limit while this step ran
    OUT_OF_MEMORY = "out-of-memory"  # the job's resident memory passed its limit while this step ran
    SKIPPED = "skipped"  # not run: an earlier step of the job crashed, timed out or ran out of memory

    @property
    def infrastructure(self) -> bool:
        """The job did not finish this step (the process was lost), as opposed to a result."""
        return self in (Status.CRASHED, Status.TIMEOUT, Status.OUT_OF_MEMORY)


# Verdicts per step (Status.OK only). A step passes when its single command would exit 0,
# unless the manifest names the verdicts it expects.
PASSING = {
    "fix": {"verified", "unverified"},
    "trt-check": {"ready"},
    "scan": {"clean", "could"},
    "fp16": {"passed"},
    "profile": {"measured"},
}
VERDICTS = {
    "fix": ("verified", "unverified", "refused"),
    "trt-check": ("ready", "not-ready"),
    "scan": ("clean", "could", "will"),
    "fp16": ("passed", "mismatch"),
    "profile": ("measured",),
}


@dataclass
class StepResult:
    step: str
    status: Status
    verdict: str | None = None
    passed: bool = False  # the verdict is one this step accepts (or the manifest expects)
    message: str = ""  # one line: what happened, for tables and JUnit
    metrics: dict[str, Any] = field(default_factory=dict)  # what baselines compare (see module doc)
    reports: list[str] = field(default_factory=list)  # files written, relative to OUT
    input: str = ""  # which model the step ran on: "original" or "fixed"
    seconds: float = 0.0
    cached: bool = False  # taken from an earlier run's cache, not recomputed

    def to_dict(self) -> dict:
        return {"step": self.step, "status": self.status.value, "verdict": self.verdict, "passed": self.passed,
                "message": self.message, "metrics": self.metrics, "reports": self.reports, "input": self.input,
                "seconds": round(self.seconds, 3), "cached": self.cached}

    @classmethod
    def from_dict(cls, d: dict) -> "StepResult":
        return cls(step=d["step"], status=Status(d["status"]), verdict=d.get("verdict"), passed=bool(d.get("passed")),
                   message=d.get("message", ""), metrics=dict(d.get("metrics") or {}),
                   reports=list(d.get("reports") or []), input=d.get("input", ""),
                   seconds=float(d.get("seconds") or 0.0), cached=bool(d.get("cached")))


@dataclass
class ModelResult:
    name: str
    path: str
    steps: list[StepResult] = field(default_factory=list)
    sha256: str = ""
    seconds: float = 0.0
    worker: str = ""  # which process/node ran it (left out of comparisons)

    @property
    def passed(self) -> bool:
        return all(s.passed for s in self.steps)

    def step(self, name: str) -> StepResult | None:
        return next((s for s in self.steps if s.step == name), None)

    def to_dict(self) -> dict:
        return {"model": self.name, "path": self.path, "sha256": self.sha256, "passed": self.passed,
                "steps": [s.to_dict() for s in self.steps], "seconds": round(self.seconds, 3),
                "worker": self.worker}

    @classmethod
    def from_dict(cls, d: dict) -> "ModelResult":
        return cls(name=d["model"], path=d.get("path", ""), steps=[StepResult.from_dict(s) for s in d.get("steps", [])],
                   sha256=d.get("sha256", ""), seconds=float(d.get("seconds") or 0.0), worker=d.get("worker", ""))
