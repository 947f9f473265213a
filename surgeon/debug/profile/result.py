"""The profile of one model, and the comparison of two: the data the table, the JSON
report and the plots are made from."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from surgeon.debug.profile.stats import Difference, Summary


@dataclass
class KernelTime:
    """One kernel (ONNX Runtime) or layer (TensorRT) as it ran, after the backend's fusions."""

    name: str
    op_type: str
    median_ms: float
    p90_ms: float | None  # None where the source has no per-run times (a trtexec profile)
    share: float | None  # of the run time (ORT: model_run; TensorRT: the sum of layers)
    calls: float  # executions per run (more than 1 inside a Loop body)
    origin: list[str]  # ONNX node names it came from
    origin_ops: list[str]
    how: str  # same / fused / rewritten / by name / unmapped / ...
    parent: str | None = None  # the If/Loop/Scan kernel whose body ran it
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class GroupTime:
    """Time summed over kernels that share one op type, or one set of ONNX origin nodes."""

    key: str
    kernels: int
    median_ms: float
    p90_ms: float | None
    share: float | None
    origin: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ModelProfile:
    model: str
    backend: str
    source: str  # where the per-kernel times come from
    nodes: int  # ONNX nodes, subgraphs included
    inputs: str = ""
    threads: int = 0
    warmup: int = 0
    iterations: int = 0
    latency: Summary | None = None  # runs without the profiler
    profiled_latency: Summary | None = None  # runs with the profiler on, interleaved with the above
    run_time: Summary | None = None  # the backend's own measure of a profiled run (ORT's model_run)
    kernels: list[KernelTime] = field(default_factory=list)
    op_types: list[GroupTime] = field(default_factory=list)
    origins: list[GroupTime] = field(default_factory=list)
    body_op_types: list[GroupTime] = field(default_factory=list)  # kernels in If/Loop/Scan bodies
    removed: list[tuple[str, str]] = field(default_factory=list)  # ONNX nodes the backend folded away
    memory: dict[str, int] | None = None
    notes: list[str] = field(default_factory=list)
    latency_runs_ms: list[float] = field(default_factory=list)
    profiled_runs_ms: list[float] = field(default_factory=list)
    gpu_timing: dict[str, Any] | None = None  # onnxrt-cuda: how per-node GPU times were measured, vs latency

    @property
    def overhead(self) -> float | None:
        """Profiled against unprofiled median latency, minus one."""
        if self.latency is None or self.profiled_latency is None or self.latency.median_ms <= 0:
            return None
        return self.profiled_latency.median_ms / self.latency.median_ms - 1.0

    @property
    def kernel_count(self) -> int:
        return sum(1 for k in self.kernels if k.parent is None)

    def to_dict(self) -> dict:
        return {
            "model": self.model, "backend": self.backend, "source": self.source, "onnx_nodes": self.nodes,
            "kernels_top_level": self.kernel_count, "inputs": self.inputs, "threads": self.threads,
            "warmup": self.warmup, "iterations": self.iterations,
            "latency": self.latency.to_dict() if self.latency else None,
            "profiled_latency": self.profiled_latency.to_dict() if self.profiled_latency else None,
            "profiling_overhead": self.overhead,
            "run_time": self.run_time.to_dict() if self.run_time else None,
            "memory": self.memory, "notes": self.notes,
            "kernels": [k.to_dict() for k in self.kernels],
            "op_types": [g.to_dict() for g in self.op_types],
            "origins": [g.to_dict() for g in self.origins],
            "body_op_types": [g.to_dict() for g in self.body_op_types],
            "removed_at_load": [{"node": n, "op_type": op} for n, op in self.removed],
            "latency_runs_ms": self.latency_runs_ms, "profiled_runs_ms": self.profiled_runs_ms,
            **({"gpu_timing": self.gpu_timing} if self.gpu_timing is not None else {}),
        }


@dataclass
class OpDiff:
    op_type: str
    a_ms: float
    b_ms: float
    a_kernels: int
    b_kernels: int

    @property
    def delta_ms(self) -> float:
        return self.b_ms - self.a_ms

    def to_dict(self) -> dict:
        return {**asdict(self), "delta_ms": self.delta_ms}


@dataclass
class Comparison:
    """Model B against model A on the same inputs and backend, runs interleaved."""

    a: ModelProfile
    b: ModelProfile
    difference: Difference
    op_diff: list[OpDiff] = field(default_factory=list)

    def headline(self) -> str:
        """``nodes 1389 → 564, latency 41.2 → 33.0 ms (−20%, median of 50)``."""
        la, lb = self.a.latency, self.b.latency
        change = self.difference.change * 100
        sign = "−" if change < 0 else "+"
        text = (f"nodes {self.a.nodes} → {self.b.nodes}, latency {_ms(la.median_ms)} → {_ms(lb.median_ms)} ms "
                f"({sign}{abs(change):.0f}%, median of {la.runs})")
        return text

    def noise_line(self) -> str:
        d = self.difference
        noise = f"±{d.noise * 100:.1f}%" if d.noise is not None else "not measurable (fewer than 4 runs)"
        return (f"run-to-run noise {noise} (A/A split of each model's runs); B/A {d.ratio:.3f}, "
                f"95% interval {d.ci_low:.3f}–{d.ci_high:.3f}: {d.verdict}")

    def to_dict(self) -> dict:
        return {"a": self.a.to_dict(), "b": self.b.to_dict(), "difference": self.difference.to_dict(),
                "headline": self.headline(), "op_type_diff": [d.to_dict() for d in self.op_diff]}


def _ms(value: float) -> str:
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def fmt_ms(value: float | None) -> str:
    return "-" if value is None else _ms(value)
