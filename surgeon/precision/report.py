"""The ``surgeon fp16`` report: one data model, rendered as rich tables or written as JSON."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from surgeon.precision.oracle import Judgement
from surgeon.precision.search import Island
from surgeon.report import table


@dataclass
class Fp16Report:
    model: str
    output: str
    precision: str
    tolerances: dict[str, dict[str, float]]
    samples: list[str]
    nodes: int
    candidates: int
    status: str
    message: str
    kept: list[str] = field(default_factory=list)  # chosen by the search
    user_kept: list[str] = field(default_factory=list)  # --keep
    fixed: dict[str, int] = field(default_factory=dict)  # reason -> count (float nodes never converted)
    islands: list[Island] = field(default_factory=list)
    full: Judgement | None = None  # every candidate in reduced precision, on the emulation
    mixed: Judgement | None = None  # the chosen set, on the emulation
    ort: Judgement | None = None  # the written model on ONNX Runtime's float16 execution
    ort_note: str = ""
    oracle_calls: int = 0
    ort_runs: int = 0
    cache_hits: int = 0
    inferred: int = 0
    phases: list[dict] = field(default_factory=list)
    conversion: dict[str, Any] = field(default_factory=dict)
    checker: str = ""
    trt_rtx: dict[str, Any] = field(default_factory=dict)
    layer_precisions: str | None = None
    renamed_nodes: int = 0
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    search_seconds: float = 0.0
    covers: list[str] = field(default_factory=list)  # the input sizes the proof covers, and how

    @property
    def passed(self) -> bool:
        """The written model meets the tolerance on the emulation and (where it ran) on ORT."""
        return bool(self.mixed and self.mixed.passed and (self.ort is None or self.ort.passed))

    def to_dict(self) -> dict:
        return {
            "verdict": "ok" if self.passed else "mismatch", "model": self.model, "output": self.output,
            "precision": self.precision, "status": self.status, "message": self.message,
            "tolerances": self.tolerances, "samples": self.samples, "covers": self.covers, "nodes": self.nodes,
            "float_compute_nodes": self.candidates, "fp32_nodes": {"searched": self.kept, "requested": self.user_kept},
            "fixed_in_fp32": self.fixed, "islands": [i.to_dict() for i in self.islands],
            "errors": {"full_reduced_precision": self.full.to_dict() if self.full else None,
                       "mixed_emulation": self.mixed.to_dict() if self.mixed else None,
                       "mixed_onnxruntime": self.ort.to_dict() if self.ort else None, "onnxruntime_note": self.ort_note},
            "search": {"oracle_calls": self.oracle_calls, "onnxruntime_runs": self.ort_runs, "cache_hits": self.cache_hits,
                       "answered_by_monotonicity": self.inferred, "phases": self.phases, "seconds": round(self.search_seconds, 3)},
            "conversion": self.conversion, "checker": self.checker, "trt_rtx": self.trt_rtx,
            "layer_precisions": self.layer_precisions, "renamed_nodes": self.renamed_nodes, "notes": self.notes,
            "seconds": round(self.seconds, 3),
        }


def _cell(j: Judgement | None, name: str) -> str:
    if j is None:
        return "-"
    if j.error:
        return f"run failed: {j.error}"
    o = next((o for o in j.outputs if o.name == name), None)
    if o is None:
        return "-"
    return f"{'ok' if o.passed else 'FAIL'}: {o.short()}"


def render(report: Fp16Report, console: Any) -> None:
    low = report.precision.upper()
    rows = []
    for n, isl in enumerate(report.islands, 1):
        w = isl.without.worst() if isl.without else None
        without = "-" if isl.without is None else (f"run failed: {isl.without.error}" if isl.without.error else
                                                   f"'{w.name}' {w.short()}" if w else "-")
        ops = ", ".join(sorted(set(isl.op_types)))
        rows.append([str(n), ", ".join(isl.nodes), ops, "; ".join(isl.why) or "accuracy", without])
    if rows:
        console.print(table(f"surgeon fp16: FP32 islands ({len(report.kept)} node(s))",
                            ["#", "nodes", "ops", "why", f"with it in {low}"], rows))
    if report.user_kept:
        console.print(f"kept in FP32 on request: {', '.join(report.user_kept)}", markup=False, soft_wrap=True)
    out_rows = []
    for name, tol in report.tolerances.items():
        out_rows.append([name, f"{tol['atol']:g} / {tol['rtol']:g}", _cell(report.full, name), _cell(report.mixed, name),
                         _cell(report.ort, name)])
    console.print(table("error per output against the FP32 model",
                        ["output", "atol / rtol", f"all {low} (emulation)", "mixed (emulation)",
                         f"mixed (ORT {'float16' if report.precision == 'fp16' else 'bfloat16'})"],
                        out_rows))
    if report.ort_note:
        console.print(f"note: {report.ort_note}", markup=False, soft_wrap=True)
    if report.covers:
        console.print(f"proof covers: {'; '.join(report.covers)}", markup=False, soft_wrap=True)
    conv = report.conversion
    console.print(f"{report.message}", markup=False, soft_wrap=True)
    console.print(f"{report.candidates} float compute node(s): {len(conv.get('fp32_nodes', []))} in FP32, "
                  f"{conv.get('low_nodes', 0)} in {low}; {conv.get('casts', 0)} border Cast(s) "
                  f"({conv.get('merged_casts', 0)} merged); checker: {report.checker}", markup=False, soft_wrap=True)
    console.print(f"search: {report.oracle_calls} oracle call(s), {report.ort_runs} ONNX Runtime run(s), "
                  f"{report.cache_hits} answered from cache, {report.inferred} inside ddmin by monotonicity "
                  f"(every claim re-checked), {report.search_seconds:.1f} s", markup=False, soft_wrap=True)
    if report.trt_rtx:
        t = report.trt_rtx
        if t.get("built"):
            console.print(f"TensorRT-RTX: built the strongly typed model on the CPU ({t.get('engine_bytes', 0)} bytes, "
                          f"{t.get('seconds', 0)} s); no engine can run here", markup=False, soft_wrap=True)
        elif t.get("ran"):
            console.print(f"TensorRT-RTX: the build failed: {t.get('reason')}", markup=False, soft_wrap=True)
        else:
            console.print(f"TensorRT-RTX: the mixed-precision model was not built ({t.get('reason')})", markup=False,
                          soft_wrap=True)
    for note in report.notes:
        console.print(f"note: {note}", markup=False, soft_wrap=True)
    if report.layer_precisions:
        console.print(f"TensorRT builder flags: {report.layer_precisions}", markup=False, soft_wrap=True)
    verdict = "[bold green]OK[/]" if report.passed else "[bold red]MISMATCH[/]"
    console.print(f"fp16: {verdict}: wrote {report.output}")
