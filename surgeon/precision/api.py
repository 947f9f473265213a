"""``convert_mixed_precision``: classify, search, convert, check, report (what ``surgeon fp16`` runs).

Bad input is refused before any search, with one sentence: a model with no float32 tensors
(or none outside shape, integer, quantization and control-flow paths), a ``--keep`` name
that matches no op type or node (with the nearest names), and a tolerance that the FP32
model itself misses against its own reference run (a nondeterministic model, or a
tolerance tighter than run-to-run noise): there is nothing a search could prove then.
"""

from __future__ import annotations

import difflib
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import onnx
from onnx import TensorProto

from surgeon import graph_ops as K
from surgeon import model as model_io
from surgeon.backends.fp16 import Classification, classify, opset_version
from surgeon.errors import BackendError, SurgeonError, UsageError
from surgeon.precision import layer_precisions as lp
from surgeon.precision.analysis import Analysis, analyse
from surgeon.precision.convert import convert, feeds_for
from surgeon.precision.oracle import EmulationOracle, Judgement, judge, resolve_tolerances
from surgeon.precision.report import Fp16Report
from surgeon.precision.search import FLAKY, search_islands

log = logging.getLogger(__name__)


@dataclass
class Fp16Options:
    precision: str = "fp16"
    keep: Sequence[str] = ()
    keep_io_types: bool = False
    atol: Any = None  # float, per-output mapping, or None (the precision's defaults)
    rtol: Any = None
    max_oracle_calls: int = 300
    trt_check: bool | None = None  # None: where tensorrt_rtx is installed
    layer_precisions: str | None = None  # path of the TensorRT flags file
    optimization: str = "all"  # ONNX Runtime level of the emulation runs
    realistic: bool = True  # also check the result at a realistic size (off for loaded samples: they are the user's)


def name_nodes(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, str], int]:
    """A copy whose main-graph nodes all have unique names (what the search, the report and
    TensorRT's layer flags refer to), the TensorRT layer name of each node in the *input*
    model (its name, or ``node_of_<first output>`` as TensorRT's parser names an unnamed
    node), and how many nodes were named."""
    out = model_io.copy(model)
    seen: set[str] = set()
    taken = {n.name for n in out.graph.node if n.name}
    trt_name: dict[str, str] = {}
    renamed = 0
    for i, n in enumerate(out.graph.node):
        original = n.name
        if not n.name or n.name in seen:
            n.name = K.unique_name(f"{n.op_type}_{i}", taken | seen)
            renamed += 1
        seen.add(n.name)
        taken.add(n.name)
        trt_name[n.name] = original or (f"node_of_{n.output[0]}" if n.output else n.name)
    return out, trt_name, renamed


def resolve_keep(model: onnx.ModelProto, keep: Sequence[str]) -> list[str]:
    """Node names matched by ``--keep`` items (op types or node names); a miss is a usage error."""
    ops = {n.op_type for n in model.graph.node}
    names = [n.name for n in model.graph.node]
    chosen: list[str] = []
    for item in keep:
        hits = [n.name for n in model.graph.node if n.op_type == item or n.name == item]
        if not hits:
            near = difflib.get_close_matches(item, sorted(ops) + names, n=1, cutoff=0.6)
            hint = f"; did you mean '{near[0]}'?" if near else f"; op types here: {', '.join(sorted(ops)[:12])}"
            raise UsageError(f"--keep '{item}' matches no op type or node name of the model{hint}")
        chosen.extend(h for h in hits if h not in chosen)
    return chosen


def _refuse_without_floats(cls: Classification, label: str, precision: str) -> None:
    if not any(t == TensorProto.FLOAT for t in cls.types.values()):
        raise UsageError(f"'{label}' has no float32 tensors: there is nothing to convert to {precision}")
    if not cls.candidates:
        reasons = Counter(c.fixed for c in cls.nodes if c.fixed and c.fixed != "no float32 tensors")
        detail = "; ".join(f"{r} x{n}" for r, n in reasons.most_common(3)) or "none compute in float32"
        raise UsageError(f"no node of '{label}' computes in float32 outside shape, integer, quantization and "
                         f"control-flow paths ({detail}): there is nothing to convert to {precision}")


def _sizes(samples: Sequence[Mapping[str, Any]]) -> str:
    from surgeon.input_data import describe_feeds

    return " | ".join(dict.fromkeys(describe_feeds(s) for s in samples))


def realistic_samples(model: onnx.ModelProto, samples: Sequence[Mapping[str, Any]], seed: int = 1000) -> list[dict[str, Any]]:
    """One sample at a realistic size for image-like inputs (224, else 256 or 320, with image-like
    content), when the given samples are smaller; none otherwise (the report then says which
    sizes the proof covers, and only those)."""
    from surgeon import backends
    from surgeon.input_data import image_layout, input_specs, make_samples, runs_on

    specs = [s for s in input_specs(model) if image_layout(s)]
    if not specs:
        return []
    try:
        session = backends.create("onnxrt").session(model)
        found = make_samples(model, seed=seed, runs=runs_on(session), realistic=True)
    except (BackendError, SurgeonError):
        return []
    def area(feeds: Mapping[str, Any]) -> int:
        return sum(int(getattr(feeds.get(s.name), "size", 0)) // max(1, int(getattr(feeds.get(s.name), "shape", (1,))[0]))
                   for s in specs)
    return found if area(found[0]) > max(area(s) for s in samples) else []


def reference_outputs(model: onnx.ModelProto, samples: Sequence[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The FP32 outputs per sample, and a second run of the first sample in the same session
    (a fresh session can repeat a random op's sequence; the same session does not)."""
    from surgeon.backends.onnxrt import OnnxRuntimeBackend

    try:
        session = OnnxRuntimeBackend().session(model)
        runs = [session.run(s) for s in samples]
        return runs, session.run(samples[0])
    except BackendError as exc:
        raise BackendError(f"the FP32 model does not run on ONNX Runtime with these inputs ({exc}); "
                           "give --input-shapes, --val-range or --load-inputs") from exc


def refuse_degenerate(model: onnx.ModelProto, samples: Sequence[Mapping[str, Any]],
                      reference: Sequence[Mapping[str, Any]], tolerances: Mapping[str, Any]) -> None:
    """A UsageError when the FP32 outputs cannot show a difference (:mod:`surgeon.evidence`):
    NaN on every sample, or every output constant or blind. Any set of FP32 islands would
    "meet the tolerance" against such a reference, so there is nothing to search."""
    from surgeon import evidence

    found = evidence.assess(reference, samples, dependent=evidence.input_dependent_outputs(model),
                            atol={k: t.atol for k, t in tolerances.items()},
                            rtol={k: t.rtol for k, t in tolerances.items()})
    if not found.conclusive:
        raise UsageError(f"the FP32 model's outputs on these samples cannot show an FP16 error: "
                         f"{found.summary().replace('the reference', 'the FP32 reference', 1)}; "
                         "give --load-inputs with inputs the model computes real values on")


def _unmeetable(j: Judgement) -> UsageError:
    worst = j.worst()
    detail = j.error or (f"output '{worst.name}': {worst.short()}" if worst else "")
    return UsageError(f"the FP32 model itself misses the tolerance against its own reference run ({detail}): it is "
                      "nondeterministic or the tolerance is tighter than run-to-run differences; nothing to search")


def _island_why(nodes: Sequence[str], why: Mapping[str, list[str]], growth: Mapping[str, float], low: str) -> list[str]:
    facts: list[str] = []
    hard = any(w.startswith(("overflow", "reads weight")) for n in nodes for w in why.get(n, []))
    for n in nodes:
        for w in why.get(n, [])[:2]:
            if hard and not w.startswith(("overflow", "reads weight")):
                continue  # an overflow explains the island; the rest is noise
            text = f"{n}: {w}"
            if text not in facts:
                facts.append(text)
    if not any("overflow" in f or "weight" in f for f in facts):
        g = max((growth.get(n, 0.0) for n in nodes), default=0.0)
        facts.append(f"accuracy: adds up to {g:.2g} relative error in {low}" if g else "accuracy")
    return facts


def run_on_ort(model: onnx.ModelProto, samples: Sequence[Mapping[str, Any]], reference, tolerances) -> tuple[Judgement | None, str, int]:
    """The written model on ONNX Runtime's own float16 execution: (verdict, note, runs).

    Runs in a worker process; when ORT crashes or refuses the model at its default
    optimization level, the lower levels are tried and the note says which one ran."""
    from surgeon.backends.ort_worker import run_in_worker

    feeds = [feeds_for(model, dict(s)) for s in samples]
    problems = []
    with model_io.materialized(model) as path:
        for level in ("all", "basic", "disable"):
            outs, why = run_in_worker(path, feeds, optimization=level)
            if outs is not None:
                note = "" if not problems else f"{problems[0]}; ran at optimization level '{level}'"
                return judge(reference, outs, tolerances), note, len(feeds)
            problems.append(why)
            if "crashed" not in why:
                break  # a refusal (no kernel, bad type) does not change with the level
    return None, f"ONNX Runtime cannot run the written model: {problems[0]}", 0


def convert_mixed_precision(model: str | os.PathLike | onnx.ModelProto, output: str | os.PathLike, *,
                            samples: Sequence[Mapping[str, Any]], options: Fp16Options | None = None,
                            progress: Callable[[str], None] | None = None) -> Fp16Report:
    """Search the FP32 islands, write the mixed-precision model to ``output``; see the package docstring."""
    from surgeon.input_data import check_feeds

    options = options or Fp16Options()
    say = progress or (lambda _m: None)
    start = time.perf_counter()
    if isinstance(model, onnx.ModelProto):
        original, label = model, model.graph.name or "<model>"
    else:
        model_io.check_output_path(model, output)
        original, label = model_io.load(model), str(model)
    if options.precision == "bf16" and opset_version(original) < 13:
        raise UsageError(f"--precision bf16 needs opset 13 or later (Cast to bfloat16); '{label}' is opset "
                         f"{opset_version(original)}")
    named, trt_name, renamed = name_nodes(original)
    cls = classify(named, options.precision)
    _refuse_without_floats(cls, label, options.precision)
    requested = resolve_keep(named, options.keep)
    candidates = cls.candidates
    always = frozenset(r for r in requested if r in set(candidates))
    if options.max_oracle_calls < 3:
        raise UsageError("--max-oracle-calls must be at least 3 (the two preconditions and a confirmation)")
    samples = check_feeds(named, samples, f"'{label}'")
    say("running the FP32 model")
    reference, again = reference_outputs(named, samples)
    tolerances = resolve_tolerances(reference[0], options.atol, options.rtol, options.precision)
    refuse_degenerate(named, samples, reference, tolerances)
    repeat = judge(reference[:1], [again], tolerances)
    if not repeat.passed:
        raise _unmeetable(repeat)
    oracle = EmulationOracle(named, cls, samples, reference, tolerances, always_keep=always,
                             optimization=options.optimization, max_calls=options.max_oracle_calls, progress=say)
    t0 = time.perf_counter()
    labels = [c.label for c in cls.nodes]
    searchable = [c for c in candidates if c not in always]
    analysis = Analysis()

    def plan() -> tuple[list[str], list[str]]:
        nonlocal analysis
        say("range analysis (scan) and error growth along the full reduced-precision model")
        analysis = analyse(named, cls, samples, always_keep=always)
        return list(analysis.prior), analysis.ranking

    result = search_islands(named, labels, searchable, oracle, plan=plan, progress=say)
    search_seconds = time.perf_counter() - t0
    if result.status == "unmeetable":
        raise _unmeetable(result.baseline)
    if result.status == FLAKY:
        raise SurgeonError(f"{result.message}; nothing was written")
    covers = [f"search on {_sizes(samples)}"]
    checked = (samples, reference)  # what the written model is run on at the end
    bigger = realistic_samples(named, samples) if options.realistic else []
    if bigger:
        say("checking the result at a realistic size")
        big_reference, _ = reference_outputs(named, bigger)
        check = EmulationOracle(named, cls, bigger, big_reference, tolerances, always_keep=always,
                                optimization=options.optimization, max_calls=None)
        verdict = check.evaluate(frozenset(result.kept))
        oracle.ort_runs += check.ort_runs
        if verdict.passed:
            covers.append(f"the result checked at {_sizes(bigger)}")
            checked = (list(samples) + bigger, list(reference) + big_reference)
        else:
            worst = verdict.worst()
            say("the result misses the tolerance at a realistic size: searching again on every size")
            samples, reference = list(samples) + bigger, list(reference) + big_reference
            oracle = EmulationOracle(named, cls, samples, reference, tolerances, always_keep=always,
                                     optimization=options.optimization, max_calls=options.max_oracle_calls, progress=say)
            result = search_islands(named, labels, searchable, oracle, plan=plan, progress=say)
            search_seconds = time.perf_counter() - t0
            if result.status in ("unmeetable", FLAKY):
                raise SurgeonError(f"at {_sizes(bigger)} {result.message}; nothing was written")
            covers = [f"search on {_sizes(samples)} (the first result missed the tolerance at {_sizes(bigger)}: "
                      f"{worst.name if worst else ''} {worst.short() if worst else verdict.error})"]
            checked = (samples, reference)
    low = options.precision.upper()
    for isl in result.islands:
        isl.why = _island_why(isl.nodes, analysis.why, analysis.growth, low)

    say("writing the mixed-precision model")
    kept_all = set(result.kept) | set(always)
    conv = convert(named, cls, kept_all, keep_io_types=options.keep_io_types)
    model_io.check_model(conv.model, what="the mixed-precision model (a surgeon bug: please report it)", full=True)
    say("running the written model on ONNX Runtime")
    ort, ort_note, ort_runs = run_on_ort(conv.model, checked[0], checked[1], tolerances)
    if ort is None and options.precision == "fp16":
        ort = Judgement(False, [], error=ort_note)
    model_io.save(conv.model, output)

    fixed = Counter(c.fixed for c in cls.nodes if c.fixed and not c.silent)
    report = Fp16Report(
        model=label, output=str(output), precision=options.precision,
        tolerances={k: {"atol": t.atol, "rtol": t.rtol} for k, t in tolerances.items()},
        samples=[", ".join(f"{k}{list(getattr(v, 'shape', []))}" for k, v in s.items()) for s in samples],
        nodes=len(cls.nodes), candidates=len(candidates), status=result.status, message=result.message,
        kept=list(result.kept), user_kept=list(requested), fixed=dict(fixed), islands=result.islands,
        full=result.full, mixed=result.final, ort=ort, ort_note=ort_note, oracle_calls=len(oracle.calls),
        ort_runs=oracle.ort_runs + ort_runs + len(samples) + 1 + analysis.ort_runs, cache_hits=oracle.cache_hits, inferred=result.inferred, phases=result.phases,
        conversion=conv.to_dict(), checker="passes (full_check)", renamed_nodes=renamed,
        notes=list(analysis.notes) + conv.notes, search_seconds=search_seconds, covers=covers)
    if renamed:
        report.notes.append(f"{renamed} unnamed or duplicate node name(s) were named in the output (e.g. for "
                            "per-layer flags); TensorRT names them node_of_<output> in the input model")
    if conv.clamped:
        report.notes.append(f"{len(conv.clamped)} weight(s) clamped to the {options.precision} range "
                            f"(first: {conv.clamped[0]})")

    if options.layer_precisions:
        forced = [c.label for c in cls.nodes if c.fixed and not c.silent and c.op_type not in ("If", "Loop", "Scan")]
        to_trt = lambda names: [trt_name.get(n, n) for n in names]  # noqa: E731
        text = lp.layer_precision_text(label, to_trt(sorted(kept_all, key=labels.index)), options.precision,
                                       forced=to_trt(forced))
        if options.trt_check is False:  # --no-trt-check: TensorRT is not asked anything, and the file says so
            text += "# layer names not checked against TensorRT's parser (--no-trt-check)\n"
        elif isinstance(model, (str, os.PathLike)) and lp.trt_rtx_available():
            names = lp.trt_layer_names(model)
            if names.get("parsed"):
                wanted = to_trt(sorted(kept_all, key=labels.index)) + to_trt(forced)
                missing = [n for n in wanted if n not in set(names["layers"])]
                line = (f"# layer names checked against TensorRT's parser ({names.get('module')}) on the FP32 model: "
                        "every name above is a layer" if not missing else
                        f"# layer names checked against TensorRT's parser on the FP32 model: {len(missing)} name(s) "
                        f"are not layers (first: {missing[0]})")
                text += line + "\n"
                report.notes.append(line.lstrip("# "))
        model_io.write_text_atomic(options.layer_precisions, text)
        report.layer_precisions = options.layer_precisions

    want_trt = lp.trt_rtx_available() if options.trt_check is None else options.trt_check
    if want_trt:
        say("building the strongly typed model with TensorRT-RTX on the CPU")
        report.trt_rtx = lp.trt_rtx_build(output, lp.sample_shapes(samples[0]))
    else:
        report.trt_rtx = {"ran": False, "reason": "tensorrt_rtx is not installed" if options.trt_check is None
                          else "--no-trt-check"}
    report.seconds = time.perf_counter() - start
    return report


def output_path_checks(model_path: str, *paths: str | None) -> None:
    for p in paths:
        if p:
            model_io.check_output_path(model_path, p)
            if not Path(p).resolve().parent.is_dir():
                raise UsageError(f"the folder of '{p}' does not exist")
