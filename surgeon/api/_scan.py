"""``surgeon.scan``: a reference run and an FP16-emulated run with every tensor inspected."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from surgeon.api._common import check_outputs, input_samples, write_report


@dataclass
class ScanResult:
    """The scan of one model: ``report`` (a :class:`surgeon.debug.scan.ScanReport`) and the
    model it was run on. ``failed``: a finding goes wrong on these inputs (exit 1)."""

    model: str
    report: Any

    @property
    def clean(self) -> bool:
        return self.report.clean

    @property
    def will(self) -> list:
        return self.report.will

    @property
    def findings(self) -> list:
        return self.report.findings

    @property
    def failed(self) -> bool:
        return bool(self.report.will)

    @property
    def fp16_mismatching(self) -> list[str]:
        """Outputs the FP16 emulation changes beyond the tolerance."""
        fp16 = self.report.fp16
        return [o for o, d in fp16.get("outputs", {}).items() if not d["passed"]] if fp16 else []

    def to_dict(self) -> dict:
        return {"model": self.model, **self.report.to_dict()}


def scan(
    model: str | os.PathLike,
    *,
    ref: str = "onnxrt",
    near_zero: float = 1e-6,
    fp16: bool = True,
    fp16_keep: Sequence[str] = (),
    load_inputs: str | os.PathLike | None = None,
    save_inputs: str | os.PathLike | None = None,
    input_shapes: Mapping[str, tuple[int, ...]] | None = None,
    value_ranges: Mapping[str, tuple[float, float]] | None = None,
    iterations: int = 1,
    seed: int = 0,
    atol: Any = None,
    rtol: Any = None,
    report: str | os.PathLike | None = None,
) -> ScanResult:
    """Run ``model`` on ``ref`` with every tensor inspected (NaN/Inf, scatter and division
    hazards) and, unless ``fp16=False``, on the FP16 emulation (overflow, underflow,
    saturation, clamped weights), each finding ranked by what it does to the outputs.
    ``atol``/``rtol``: when the FP16 run counts as changing the outputs (default: float16's).
    """
    import surgeon
    from surgeon import backends
    from surgeon.debug.scan import scan_model

    check_outputs(model, report)
    loaded = surgeon.load(model)
    backend = backends.create(ref)
    if fp16_keep:
        backends.create("fp16", keep=list(fp16_keep)).check(loaded)
    samples = input_samples(loaded, str(model), load_inputs=load_inputs, save_inputs=save_inputs,
                            input_shapes=input_shapes, value_ranges=value_ranges, iterations=iterations, seed=seed,
                            reference=ref)
    found = scan_model(loaded, samples, backend, near_zero=near_zero, fp16=fp16, fp16_keep=list(fp16_keep), atol=atol,
                       rtol=rtol)
    result = ScanResult(str(model), found)
    write_report(report, result.to_dict())
    return result
