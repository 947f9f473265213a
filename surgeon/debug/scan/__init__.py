"""``surgeon scan``: one reference run and one FP16-emulated run, every intermediate inspected.

Why: most "TensorRT gives garbage" reports are not engine bugs but numerics the model
already has, hidden until a lower-precision engine exposes them: a 0/0 or a log of zero
producing NaN, activations beyond float16's ±65504, values that flush to zero,
ScatterND/ScatterElements writing the same position twice (the order is undefined, so
GPUs give nondeterministic results), divisions by values near zero.

Why two runs, and the emulation's rules rather than our own: a scan that judges float16
by its own rules disagrees with ``compare --test fp16`` and with TensorRT. A −1e9
attention mask is not an "Inf" in FP16: TensorRT (and ``surgeon.backends.fp16``) clamps
weights to ±65504, and the Softmax after it computes the same probabilities. A weight
below the smallest subnormal is not "0" either: TensorRT raises it to 2**-24. So the
FP16 part of the scan runs the emulation itself (every op in float32, outputs rounded
through float16, weights converted by ``fp16._to_fp16_weights``), with every tensor
marked, and reads the verdicts off the two runs.

Findings are ranked by consequence and carry a ``severity``:

- ``will``: goes wrong on these inputs. A NaN/Inf the reference itself produces; an
  activation that actually overflows in the FP16 run (the first node whose finite, in-range
  inputs give Inf); a converted weight (clamped or raised) whose conversion alone moves
  the outputs beyond tolerance; scatter writes that put different values on one position.
  These, and only these, make the exit status 1.
- ``could``: a hazard that does no harm on these inputs: a clamped constant whose
  conversion leaves the outputs within tolerance, a value saturated from a clamped
  constant (a −1e9 mask rounded to −Inf before a Softmax), activations close to ±65504,
  values that flush to 0 or become subnormal, divisions by values near zero.

Values beyond float16's range are followed past where they start: every node whose own
float32 value exceeds ±65504 is named, grouped into chains (who starts it, who continues
it, who reads it), and the set of nodes to keep in float32 is checked with the emulation
itself; a chain the outputs absorb (a −1e9 mask before a Softmax) is listed as harmless.
A chain's findings take its severity: needed → will, harmless → could.

Each finding says what was checked (``consequence``): which outputs an overflow reaches
in the FP16 run, whether a converted weight changes the outputs (checked by running the
reference with that weight converted), or that the FP16 run's outputs match the
reference, which clears every "could" at once. Repeated findings (same severity, kind and
op pattern) are grouped with counts, so a detector with 130 identical Conv weights reads
as one line.

Only the main graph's tensors are run-time inspected (bodies of If/Loop/Scan cannot be
marked as outputs); the emulation keeps those bodies in float32, so their constants are
not FP16 findings either.

One module per job: :mod:`.findings` (the report), :mod:`.graph_values` (the indexed graph
and run values), :mod:`.reference` (the reference run's findings), :mod:`.fp16_run` (the
emulated run's activations), :mod:`.weight_checks` (converted weights), :mod:`.chains`
(values beyond float16's range).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import onnx

from surgeon import comparison
from surgeon.debug.bisect import extract
from surgeon.debug.bisect.reduce import reference_values
from surgeon.debug.scan.chains import chain_findings, check_chains, range_chains, range_lines
from surgeon.debug.scan.findings import COULD, WILL, Finding, ScanReport, rank, settle_could
from surgeon.debug.scan.fp16_run import activation_findings, emulated_values
from surgeon.debug.scan.graph_values import FP16_MAX, ScanGraph, outputs_diff
from surgeon.debug.scan.reference import NEAR_ZERO, reference_findings
from surgeon.debug.scan.weight_checks import weight_findings
from surgeon.errors import BackendError

__all__ = ["COULD", "FP16_MAX", "WILL", "Finding", "ScanReport", "range_lines", "scan_model"]


def scan_model(model: onnx.ModelProto, samples: Sequence[Mapping[str, Any]], backend: Any, *, near_zero: float = NEAR_ZERO,
               fp16: bool = True, fp16_keep: Sequence[str] = (), atol: Any = None, rtol: Any = None) -> ScanReport:
    """Scan ``model`` on ``samples``: the reference run on ``backend``, and (``fp16``) the FP16 emulation.

    ``atol``/``rtol``: the tolerance for "changes the outputs" (default: float16's).
    """
    d_atol, d_rtol = comparison.DEFAULT_TOLERANCES["float16"]
    atol = d_atol if atol is None else atol
    rtol = d_rtol if rtol is None else rtol
    ref = reference_values(model, backend, samples)
    graph = ScanGraph(model)
    findings: list[Finding] = []
    notes: list[str] = []
    tensors = reference_findings(model, graph, ref, near_zero, findings)
    fp16_summary: dict = {}
    constants = 0
    if fp16:
        types = extract.types_from_values(ref, extract.inferred_types(model))
        try:
            emu, plan = emulated_values(model, samples, fp16_keep, types)
        except BackendError as exc:
            notes.append(f"the FP16 emulation could not run the model ({exc}); no FP16 findings")
            emu, plan = None, None
        if emu is not None:
            out_diff = outputs_diff(ref, emu, graph.outputs, atol, rtol)
            fp16_summary = {"outputs_match": all(d["passed"] for d in out_diff.values()), "outputs": out_diff,
                            "converted": len(plan.converted), "kept": plan.kept, "tolerance": {"atol": atol, "rtol": rtol}}
            converted = set(plan.converted)
            activation_findings(graph, ref, emu, converted, out_diff, findings)
            constants = weight_findings(model, graph, converted, ref, samples, backend, atol, rtol, findings, notes)
            settle_could(findings, fp16_summary["outputs_match"])
            chains = range_chains(graph, ref, converted)
            pin, pin_check = check_chains(model, graph, chains, ref, samples, fp16_keep, fp16_summary["outputs_match"],
                                          atol, rtol)
            chain_findings(graph, chains, ref, findings)
    else:
        notes.append("FP16 checks skipped (--no-fp16)")
    if any(a.HasField("g") or len(a.graphs) for n in model.graph.node for a in n.attribute):
        notes.append("tensors inside If/Loop/Scan bodies were not inspected at run time, and the FP16 emulation "
                     "keeps those bodies (and their constants) in float32")
    report = ScanReport(rank(findings), tensors, constants, len(ref), notes, fp16_summary)
    if fp16 and fp16_summary:
        report.chains, report.pin, report.pin_check = chains, pin, pin_check
    return report
