"""``surgeon isolate``: which single choice (or minimal set of choices) breaks the model.

One delta-debugging engine (:mod:`.ddmin`) and three adapters that turn a subset of
choices into a verdict: our own rewrite applications (:mod:`.passes_target`), ONNX
Runtime graph optimizers (:mod:`.ort_optimizers`) and TensorRT tactics
(:mod:`.trt_tactics`). :func:`run` ties an adapter to the engine and to the output
directory (:mod:`.artifacts`) and returns the report as a dict.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, Sequence

from surgeon.debug.isolate import ddmin as _dd
from surgeon.debug.isolate.artifacts import ArtifactDir
from surgeon.debug.isolate.ddmin import BASELINE_FAILS, CULPRITS, FLAKY, INCOMPLETE, NO_DIVERGENCE, IsolateResult, Subset, Verdict, isolate

__all__ = ["ArtifactDir", "IsolateResult", "Target", "Verdict", "isolate", "run"]


class Target(Protocol):
    """What an adapter provides: the choices, an oracle over subsets of them, the avoid-file."""

    name: str
    mechanism: str
    choices: Sequence[str]

    def __call__(self, subset: Subset) -> Verdict: ...

    def describe(self, index: int) -> dict[str, Any]: ...

    def label(self, index: int) -> str: ...

    def write_avoid(self, culprits: Subset, art: ArtifactDir) -> tuple[str, str]: ...


def run(target: Target, outdir: str, *, max_sets: int = 4, confirm_repeats: int = 1, resume: bool = True,
        progress: Callable[[str], None] | None = None) -> tuple[IsolateResult, dict[str, Any]]:
    """Search, confirm, write OUTDIR; return the result and the report written to report.json."""
    art = ArtifactDir(outdir, target.name, list(target.choices))
    art.create()
    cache = art.resume_cache() if resume else {}
    if progress:
        progress(f"{len(target.choices)} choices; {target.mechanism}" + (f"; resuming {len(cache)} verdicts" if cache else ""))
    if not target.choices:
        result = IsolateResult(status=NO_DIVERGENCE, size=0, message="there is nothing to choose from")
        # still check whether the configuration diverges at all
        verdict = target(())
        if verdict == Verdict.FAIL:
            result.status = _dd.BASELINE_FAILS
            result.message = "the problem is there with no choice applied (and there are no choices)"
    else:
        result = isolate(len(target.choices), target, max_sets=max_sets, confirm_repeats=confirm_repeats,
                         cache=cache, progress=progress, on_call=art.record)
    avoid = None
    if result.status in (CULPRITS, INCOMPLETE) and result.culprits:
        path, how = target.write_avoid(result.culprits, art)
        avoid = {"file": path, "how": how}
    report = {
        "target": target.name,
        "mechanism": target.mechanism,
        "status": result.status,
        "message": result.message,
        "choices": len(target.choices),
        "oracle_calls": result.oracle_calls,
        "cache_hits": result.cache_hits,
        "resumed_verdicts": len(cache),
        "culprit_sets": [[dict(target.describe(i), label=target.label(i)) for i in s] for s in result.culprit_sets],
        "confirmations": [{"what": c.what, "applied": len(c.subset), "expected": c.expected.value,
                           "verdicts": [v.value for v in c.verdicts], "ok": c.ok} for c in result.confirmations],
        "flaky_subsets": [list(s) for s in result.flaky_subsets],
        "calls": [{"n": c.number, "applied": len(c.subset), "verdict": c.verdict.value, "phase": c.phase}
                  for c in result.calls],
        "avoid": avoid,
    }
    art.write_report(report)
    return result, report
