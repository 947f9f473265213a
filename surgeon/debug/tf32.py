"""Is a GPU's difference TF32's rounding? Run it again with TF32 off and say.

Why a re-run and not a bound: TF32 rounds the inputs of each Conv, MatMul and Gemm to a 10-bit
mantissa (relative error up to 2^-11 per input) and accumulates in float32, so the error of one
output element is bounded by about 2 * 2^-11 * sum_k |a_k * b_k| over its reduction; that sum is
not known without re-computing every product, and after a few layers the bound is loose by
orders of magnitude. Running the same model once more with TF32 off (every other option kept)
answers the question directly, for the inputs at hand: where the mismatch goes away, TF32
explains it; where it stays, something else does. Both runs are reported; the verdict of the
comparison stays that of the configuration that was asked for.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from surgeon.errors import BackendError

EXPLAINED, PARTLY, NOT_EXPLAINED, WITHIN, NO_EFFECT = "explained", "partly", "not-explained", "within-tolerance", "no-effect"


def applies(backend: Any) -> bool:
    """A backend with TF32 on that can be re-made with it off (``onnxrt-cuda``)."""
    return getattr(backend, "tf32", False) is True and callable(getattr(backend, "with_options", None))


def _worst(results: Sequence[Any]) -> float:
    return max((r.worst.max_abs or 0.0 for r in results), default=0.0)


def verdict(on: Sequence[Any], off: Sequence[Any]) -> tuple[str, str]:
    """(kind, sentence) from the per-output results with TF32 on and off (``OutputResult``s)."""
    bad_on = [r.name for r in on if not r.passed]
    bad_off = [r.name for r in off if not r.passed]
    e_on, e_off = _worst(on), _worst(off)
    errors = f"largest max abs error {e_on:.2g} with TF32 on, {e_off:.2g} off"
    if not bad_on:
        if e_on == e_off:
            return NO_EFFECT, (f"TF32 off gives the same errors ({errors}): TF32 plays no part here (no float32 Conv, "
                               "MatMul or Gemm on tensor cores, or a GPU before Ampere)")
        return WITHIN, f"TF32's rounding is within tolerance here ({errors})"
    fixed = [n for n in bad_on if n not in bad_off]
    if not bad_off:
        return EXPLAINED, (f"TF32 explains the mismatch: with TF32 off every output matches ({errors}); TF32 rounds "
                           "the inputs of Conv, MatMul and Gemm to a 10-bit mantissa. Check the kernels at full "
                           "float32 precision with tf32=0, or accept TF32 with a looser tolerance")
    if fixed:
        return PARTLY, (f"TF32 explains {', '.join(fixed)} (they match with TF32 off), not {', '.join(bad_off)}, "
                        f"which still differ with TF32 off ({errors})")
    return NOT_EXPLAINED, (f"TF32 does not explain the mismatch: with TF32 off {', '.join(bad_off)} still differ "
                           f"({errors})")


def follow_up(backend: Any, model: Any, samples: Sequence[Mapping[str, Any]], ref_runs: Sequence[Mapping[str, Any]],
              on: Sequence[Any], judge: Any) -> dict[str, Any]:
    """Run ``model`` on ``backend`` with TF32 off, judge every output as ``on`` was judged.

    ``judge(name, refs, tests) -> OutputResult`` is the comparison's own judging rule (same
    tolerances); ``on`` the results with TF32 on. Returns the follow-up as a dict for the
    report: both runs per output, the kind of verdict and one sentence.
    """
    off_backend = backend.with_options(tf32=False)
    out: dict[str, Any] = {"kind": "tf32", "question": "is the difference TF32's rounding?",
                           "backend": off_backend.describe()}
    try:
        session = off_backend.session(model)
        runs = [session.run(s) for s in samples]
    except BackendError as exc:
        out.update(verdict="error", message=f"the run with TF32 off failed: {exc}", outputs=[])
        return out
    off = [judge(r.name, [x[r.name] for x in ref_runs], [x[r.name] for x in runs]) for r in on
           if all(r.name in x for x in runs)]
    kind, sentence = verdict(on, off)
    by_name = {r.name: r for r in off}
    out["outputs"] = [{"name": r.name, "tf32_on": {"passed": r.passed, "max_abs": r.worst.max_abs, "max_rel": r.worst.max_rel},
                       "tf32_off": ({"passed": by_name[r.name].passed, "max_abs": by_name[r.name].worst.max_abs,
                                     "max_rel": by_name[r.name].worst.max_rel} if r.name in by_name else None)}
                      for r in on]
    out.update(verdict=kind, message=sentence)
    return out


def render(followup: Mapping[str, Any], out: Any) -> None:
    """Two lines under the comparison table: the two runs per output, and the sentence."""
    def e(v: Any) -> str:
        return "-" if v is None else f"{v:.2g}"

    cells = []
    for o in followup.get("outputs", []):
        off = o["tf32_off"] or {}
        cells.append(f"{o['name']}: {e(o['tf32_on']['max_abs'])} ({'ok' if o['tf32_on']['passed'] else 'MISMATCH'}) "
                     f"-> {e(off.get('max_abs'))} ({'ok' if off.get('passed') else 'MISMATCH'})")
    if cells:
        out.print("TF32 on -> off, max abs error per output: " + "; ".join(cells), markup=False, soft_wrap=True)
    out.print(f"TF32: {followup['message']}", markup=False, soft_wrap=True)
