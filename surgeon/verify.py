"""Is the rewritten model still the same function? (The pipeline's gatekeeper.)

A candidate passes when: its graph inputs and outputs keep their names, order, element
types and dynamic dims; the onnx checker accepts it; ONNX Runtime loads it; and on every
seeded sample its outputs match the current reference within tolerance. Samples exercise
every dynamic dimension at two sizes, so a pass that bakes a size in fails here.

A comparison is only as strong as its samples: when the input model's outputs on them
are NaN, constant or blind to the inputs (:mod:`surgeon.evidence`), other samples are
drawn (:func:`surgeon.input_data.exercise`); when none gives an informative reference,
nothing is verified numerically and the report says why ("not verified: the reference is
NaN on every sample; give --load-inputs").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import onnx

from surgeon import model as model_io
from surgeon import staged
from surgeon.graph import Exported, op_histogram
from surgeon import backends, coverage, evidence, input_data
from surgeon.comparison import diff_outputs
from surgeon.errors import BackendError, ModelLoadError
from surgeon.graph_ops import infer_shapes

log = logging.getLogger(__name__)


@dataclass
class VerifyResult:
    ok: bool
    reason: str = ""
    max_abs: float | None = None
    max_rel: float | None = None
    numeric: bool = False  # whether outputs were compared (False: structural checks only)
    outputs: list[dict[str, Any]] | None = field(default=None, repr=False)  # per sample, kept for accept()
    note: str = ""  # for the pass report, e.g. why only structural checks were possible
    opaque: tuple[str, ...] = ()  # declared ops ONNX Runtime could not run (numeric checks end here)
    level: int | None = None  # the candidate's checker level (FULL, BASIC, INVALID)
    method: str = ""  # how equivalence was shown: PROOF, NUMERIC, REGION, or STRUCTURAL (checks only)
    unverified: frozenset[str] = frozenset()  # REGION: values the change computes that were not compared

    def __post_init__(self):
        if not self.method:
            self.method = NUMERIC if self.numeric else STRUCTURAL

    def to_dict(self) -> dict:
        return {"ok": self.ok, "reason": self.reason, "max_abs": self.max_abs, "max_rel": self.max_rel, "numeric": self.numeric}


def _signature(vis, *, keep_dims: bool) -> list[tuple]:
    sig = []
    for vi in vis:
        t = vi.type
        kind = t.WhichOneof("value")
        elem = t.tensor_type.elem_type if kind == "tensor_type" else None
        dims = None
        if keep_dims and kind == "tensor_type" and t.tensor_type.HasField("shape"):
            # Only dynamic-ness is part of the contract: a dim that was dynamic must stay so.
            dims = tuple("dyn" if not d.HasField("dim_value") else "static" for d in t.tensor_type.shape.dim)
        sig.append((vi.name, kind, elem, dims))
    return sig


def io_problem(before: onnx.ModelProto, after: onnx.ModelProto) -> str | None:
    """Why ``after`` does not keep ``before``'s interface, or None.

    From IR 4 on, an initializer listed as a graph input is an input with a default, which
    a user may feed: it counts like any input. Before IR 4 every initializer had to be
    listed, so those listings say nothing about the interface and are left out.
    """
    legacy = before.ir_version < 4
    inits_b = {t.name for t in before.graph.initializer} if legacy else set()
    inits_a = {t.name for t in after.graph.initializer} if legacy else set()
    ins_b = [vi for vi in before.graph.input if vi.name not in inits_b]
    ins_a = [vi for vi in after.graph.input if vi.name not in inits_a]
    if _signature(ins_b, keep_dims=True) != _signature(ins_a, keep_dims=True):
        return "graph inputs changed (names, order, types or dynamic dims)"
    outs_b = _signature(before.graph.output, keep_dims=False)
    outs_a = _signature(after.graph.output, keep_dims=False)
    if [o[:3] for o in outs_b] != [o[:3] for o in outs_a]:
        return "graph outputs changed (names, order or types)"
    for vb, va in zip(before.graph.output, after.graph.output):
        db = vb.type.tensor_type.shape.dim if vb.type.tensor_type.HasField("shape") else []
        da = va.type.tensor_type.shape.dim if va.type.tensor_type.HasField("shape") else []
        for axis, (x, y) in enumerate(zip(db, da)):
            if not x.HasField("dim_value") and y.HasField("dim_value"):
                return f"output '{vb.name}' axis {axis} was dynamic and is now fixed to {y.dim_value}"
    return None


# How a candidate was shown to compute the same function.
PROOF = "proof"  # the same computation graph up to Identity, dead nodes, names and order (surgeon.equivalence)
PENDING = "pending"  # structurally checked; its outputs are compared later, with the changes after it
NUMERIC = "numeric"  # outputs compared on the samples
REGION = "region"  # the changed region's outputs compared, on values recorded from the input model (verify_region)
STRUCTURAL = "structural"  # checker and interface only (numeric verification off or impossible)

# How far the onnx checker accepts a model: both checks, the basic check only, or neither.
FULL, BASIC, INVALID = 2, 1, 0


def checker_level(exported: Exported) -> tuple[int, str]:
    """(level, the checker's sentence when not FULL) for a skeleton, without serializing a weight.

    A full check that fails only on the declared shapes of the graph outputs counts as
    FULL: those are a model's own, sometimes wrong, advice (an exporter's ``[1, seqlen]``
    for a rank-3 result), which shape inference only contradicts once a pass has made the
    graph clear enough to see it; the pipeline corrects them at the end
    (:func:`contradicted_outputs`).
    """
    model = exported.for_checker()
    try:
        model_io.check_model(model, full=True)
        return FULL, ""
    except ModelLoadError as exc:
        reason = str(exc)
    corrected = contradicted_outputs(exported, model)
    if corrected:
        for vi in model.graph.output:
            if vi.name in corrected:
                vi.type.CopyFrom(corrected[vi.name])
        try:
            model_io.check_model(model, full=True)
            return FULL, ""
        except ModelLoadError:
            pass
    try:
        model_io.check_model(model, full=False)
        return BASIC, reason
    except ModelLoadError as exc:
        return INVALID, str(exc)


def contradicted_outputs(exported: Exported, checkable: onnx.ModelProto | None = None) -> dict[str, onnx.TypeProto]:
    """Graph output name → the type shape inference gives it, where the declared shape contradicts it.

    A declaration contradicts inference when the ranks differ or a dim is static in both
    and differs. Inference runs with the outputs undeclared, so it says what it finds.
    """
    model = onnx.ModelProto()
    model.CopyFrom(checkable if checkable is not None else exported.for_checker())
    declared = {vi.name: vi for vi in model.graph.output}
    del model.graph.output[:]
    model.graph.output.extend(onnx.helper.make_empty_tensor_value_info(name) for name in declared)
    try:
        inferred = infer_shapes(model)
    except Exception:  # noqa: BLE001 - no inference, no contradiction to report
        return {}
    out = {}
    for got in inferred.graph.output:
        mine = declared[got.name]
        if mine.type.WhichOneof("value") != "tensor_type" or got.type.WhichOneof("value") != "tensor_type":
            continue
        d, g = mine.type.tensor_type, got.type.tensor_type
        if not (d.HasField("shape") and g.HasField("shape")):
            continue
        if len(d.shape.dim) != len(g.shape.dim) or any(
                x.HasField("dim_value") and y.HasField("dim_value") and x.dim_value != y.dim_value
                for x, y in zip(d.shape.dim, g.shape.dim)):
            out[got.name] = got.type
    return out


class Verifier:
    """Holds the seeded samples and the reference outputs of the last accepted model.

    Everything works on skeletons (:class:`surgeon.graph.Exported`): the checker reads
    large tensors as typed inputs, ONNX Runtime gets the weight arrays in memory. The
    checker level may only go up: a model the checker rejects (nodes out of order, say)
    may pass through passes that do not repair it yet, but once valid it stays valid.
    ``reference``: the input model's outputs on the given ``samples`` where the caller ran
    them already (fix's check of loaded inputs): a multi-GB model is not run once more for them.
    """

    def __init__(
        self,
        model: Exported,
        *,
        numeric: bool = True,
        input_shapes: Mapping[str, tuple[int, ...]] | None = None,
        samples: list[dict[str, Any]] | None = None,
        atol: float | None = None,
        rtol: float | None = None,
        seed: int = 0,
        value_ranges: Mapping[str, tuple[float, float]] | None = None,
        mode: str = "auto",
        reference: list[dict[str, Any]] | None = None,
    ):
        self.atol, self.rtol = atol, rtol
        self.backend = backends.create("onnxrt", optimization="basic", memory_lean=True)
        self.samples: list[dict[str, Any]] = []
        self.reference: list[dict[str, Any]] = []
        self.skipped: str | None = None if numeric else "numeric verification disabled (--no-verify)"
        self.note: str | None = None
        self.notes: list[str] = []  # for the report: how the samples were chosen, what they cannot show
        self.evidence: evidence.Evidence | None = None
        self.uncovered: list[tuple[coverage.DataIf, str]] = []  # If branches no sample takes
        self.initial: Exported | None = None  # the input model, whose uncovered branches a change must leave alone
        self.regions = None  # surgeon.verify_region.RegionChecks when changes are checked on their regions
        self.mode: str | None = None  # how outputs are compared: "whole" or "local" (regions); None without numeric checks
        self.mode_note: str | None = None  # why that way
        from surgeon.verify_mode import MODES

        if mode not in MODES:
            raise ValueError(f"unknown verification mode '{mode}' (one of {', '.join(MODES)})")
        self.level, self.checker_reason = checker_level(model)
        if not numeric:
            return
        input_data.check_value_ranges(model.skeleton, value_ranges)
        try:
            session = self.backend.session(model)
        except BackendError as exc:
            self.skipped = f"verification skipped: {exc}"
            return

        generated = samples is None
        # A model with more weights than a slice runs a slice at a time (surgeon.staged): probes,
        # reference and further samples alike, so no run holds all its weights.
        runs = staged.probe(self.backend, model, session)
        run_one = staged.Session(self.backend, model, session).run

        def draw(variant: input_data.Variant | None = None) -> list[dict[str, Any]]:
            ranges = {**(variant.ranges if variant else {}), **dict(value_ranges or {})}
            found, note = input_data.verification_samples(model.skeleton, input_shapes, seed, runs, ranges,
                                                           images=bool(variant and variant.images))
            if variant is None:
                self.note = note
            return found

        if samples is None:
            samples = draw()
            if self.note:
                self.notes.append(self.note)
        if not samples:
            self.skipped = f"verification skipped: {self.note}"
            return
        try:
            if generated:  # the probes ran these very feeds: their outputs are the reference
                reference = [runs.outputs(feeds) for feeds in samples]
            elif reference is None or len(reference) != len(samples):
                reference = staged.run(self.backend, model, samples, session=session)
        except BackendError as exc:
            self.skipped = f"verification skipped: the input model fails on the given inputs ({exc})"
            return
        dependent = evidence.input_dependent_outputs(model.skeleton)

        def judge(refs: list[dict[str, Any]], feeds: list[dict[str, Any]]) -> evidence.Evidence:
            return evidence.assess(refs, feeds, dependent=dependent, atol=atol, rtol=rtol)

        if generated:
            found = input_data.exercise(model.skeleton, samples, reference, make=draw, run=run_one, judge=judge,
                                        given=value_ranges)
        else:
            found = input_data.Exercised(samples, reference, judge(reference, samples))
        self.evidence = found.evidence
        if not found.evidence.conclusive:
            tried = f" (so it is with {'; with '.join(found.tried)})" if found.tried else ""
            hint = "give --load-inputs" if generated else "the given inputs cannot show a difference; give others"
            self.skipped = f"not verified: {found.evidence.summary()}{tried}; {hint}"
            return
        if found.note():
            self.notes.append(found.note())
        self.notes.extend(found.evidence.notes())
        samples, reference = found.samples, found.references
        ifs = coverage.data_dependent_ifs(model.skeleton)
        if ifs:
            samples, reference = self._cover(model, ifs, samples, reference, run_one, runs, generated,
                                             input_shapes, seed, value_ranges)
        self.samples, self.reference = samples, reference
        self._choose_mode(model, mode)

    def _cover(self, model: Exported, ifs: list[coverage.DataIf], samples: list[dict[str, Any]],
               reference: list[dict[str, Any]], run_one: Any, runs: Any, generated: bool,
               input_shapes: Mapping[str, tuple[int, ...]] | None, seed: int,
               value_ranges: Mapping[str, tuple[float, float]] | None) -> tuple[list, list]:
        """Samples that take every branch of the data-dependent Ifs, where such samples can be drawn."""
        try:
            conds = self.backend.session(Exported(coverage.condition_model(model.skeleton, ifs), model.weights))
        except BackendError:
            return samples, reference
        candidates = []
        if generated:
            # Other values for the inputs the conditions depend on (the rest as drawn), then other seeds.
            given = dict(value_ranges or {})
            deps = {n for i in ifs for n in i.inputs} - set(given)
            specs = [s for s in input_data.input_specs(model.skeleton) if s.is_tensor and s.name in deps]
            floats = [s.name for s in specs if input_data.is_float_dtype(s.dtype)]
            ints = [s.name for s in specs if input_data.is_integer_dtype(s.dtype)]
            tries = [({n: (lo, hi) for n in ints}, seed) for lo, hi in ((0.0, 1.0), (1.0, 4.0)) if ints]
            tries += [({n: (lo, hi) for n in floats}, seed) for lo, hi in ((0.0, 1.0), (-1.0, 0.0), (-10.0, 10.0))
                      if floats]
            tries += [({}, seed + 100), ({}, seed + 200)]
            for ranges, s in tries:
                merged = {**ranges, **given}
                candidates.append(lambda merged=merged, s=s: input_data.verification_samples(
                    model.skeleton, input_shapes, s, runs, merged)[0])
        found = coverage.cover(ifs, samples, conditions=lambda feeds: [conds.run(f) for f in feeds],
                               candidates=candidates, runs=runs)
        reference = reference + [run_one(f) for f in found.samples[len(samples):]]
        self.uncovered, self.initial = found.uncovered, model
        self.notes.extend(found.notes())
        return found.samples, reference

    def untested_changes(self, final: Exported) -> str | None:
        """Why ``final`` is not verified although every comparison passed: a branch that no
        sample takes computes something else than in the input model. None otherwise."""
        if not self.uncovered or self.initial is None:
            return None
        changed = coverage.changed_branches(self.uncovered, self.initial.skeleton, self.initial.weights,
                                            final.skeleton, final.weights)
        if not changed:
            return None
        return "; ".join(f"the {b.split('_')[0]} branch of {i.label} changed and no sample takes it"
                         for i, b in changed)

    def _choose_mode(self, model: Exported, mode: str) -> None:
        """Whole-model comparisons or region checks (see surgeon.verify_mode.choose); the
        reference outputs stay, for changes that have no region to check alone."""
        from surgeon import verify_mode, verify_region

        choice = verify_mode.choose(mode, model, self.samples)
        self.mode, self.mode_note = choice.mode, choice.why
        if choice.mode == "local":
            self.regions = verify_region.RegionChecks(model, self.samples, self.backend, atol=self.atol,
                                                      rtol=self.rtol, inferred=choice.inferred, describe=self._describe,
                                                      outputs=self.reference)

    def _describe(self, i: int) -> str:
        return f"sample {i + 1} ({input_data.describe_feeds(self.samples[i])})"

    @property
    def numeric(self) -> bool:
        return self.skipped is None

    def sample_shapes(self) -> list[str]:
        return [input_data.describe_feeds(s) for s in self.samples]

    def check(self, before: Exported, candidate: Exported, opaque: Iterable[str] = (), *,
              numeric: bool = True) -> VerifyResult:
        """Interface, checker, then a proof or (``numeric``) a comparison on the samples.

        ``opaque``: ``domain::Op`` the pass added on purpose (see PassLog.opaque_ops). With
        ``numeric=False`` a change that is not proven comes back ``method=PENDING``: the
        caller compares it later, together with the changes after it (see the runner).
        """
        problem = io_problem(before.skeleton, candidate.skeleton)
        if problem:
            return VerifyResult(False, problem)
        level, reason = checker_level(candidate)
        if level < self.level:
            return VerifyResult(False, reason)
        if before.digests() == candidate.digests():
            result = VerifyResult(True, method=PROOF)
        elif numeric or not self.numeric:
            result = self.compare(before, candidate, opaque)
        else:
            result = VerifyResult(True, method=PENDING)
        result.level = level
        return result

    def compare(self, before: Exported, candidate: Exported, opaque: Iterable[str] = ()) -> VerifyResult:
        """The candidate's outputs against the reference (the last accepted outputs) on every sample.

        ``before`` is the state the reference outputs belong to; it is only read to tell
        which declared plugin ops are new when ONNX Runtime cannot load the candidate.
        """
        if not self.numeric:
            return VerifyResult(True)
        why_whole = ""
        if self.regions is not None:
            result = self._compare_region(before, candidate)
            if isinstance(result, VerifyResult):
                return result
            why_whole = f"compared on the whole model: {result}"
        try:
            outputs = staged.run(self.backend, candidate, self.samples)
        except staged.RunFailure as exc:
            return VerifyResult(False, f"on sample {exc.index + 1} ({input_data.describe_feeds(self.samples[exc.index])}): "
                                       f"{exc}")
        except BackendError as exc:
            blocking = _new_ops(before.skeleton, candidate.skeleton, opaque)
            if not blocking:
                return VerifyResult(False, str(exc))
            problem = inferred_output_problem(before.for_checker(), candidate.for_checker())
            if problem:
                return VerifyResult(False, problem)
            return VerifyResult(True, numeric=False, opaque=tuple(blocking), note=(
                f"numeric verification was not possible: ONNX Runtime cannot run {', '.join(blocking)}; "
                "checked structurally (checker, output names, types and shapes by shape inference)"))
        max_abs = max_rel = 0.0
        for i, (ref, out) in enumerate(zip(self.reference, outputs)):
            for d in diff_outputs(ref, out, atol=self.atol, rtol=self.rtol, nan_equal=True, detail=False):
                max_abs, max_rel = max(max_abs, d.max_abs), max(max_rel, d.max_rel)
                if not d.passed:
                    return VerifyResult(
                        False,
                        f"output '{d.name}' differs on sample {i + 1} ({input_data.describe_feeds(self.samples[i])}): {d.reason}",
                        max_abs, max_rel, True,
                    )
        return VerifyResult(True, "", max_abs, max_rel, True, outputs, note=why_whole)

    def _compare_region(self, before: Exported, candidate: Exported) -> "VerifyResult | str":
        """The change checked on its region (surgeon.verify_region), or why it has none to check alone."""
        try:
            got = self.regions.compare(before, candidate)
        except BackendError as exc:
            # The recording run of the input model failed: the samples do not run on the input
            # model itself (what the whole-model reference run finds at the start).
            self.samples, self.regions = [], None
            self.skipped = f"verification skipped: the input model fails on the given inputs ({exc})"
            return VerifyResult(True, method=STRUCTURAL, note=self.skipped)
        if isinstance(got, str):
            return got
        if not got.ok:
            return VerifyResult(False, got.reason, got.max_abs, got.max_rel, True, method=REGION)
        return VerifyResult(True, "", got.max_abs, got.max_rel, True, method=REGION, unverified=got.unverified,
                            note=f"compared on the {got.nodes} nodes it changed, on values recorded from the input model")

    def accept(self, result: VerifyResult) -> None:
        """Make the accepted candidate's outputs the reference for the next pass."""
        if self.regions is not None and result.method == REGION:
            self.regions.accept(result.unverified)
        if result.outputs is not None:
            self.reference = result.outputs
            result.outputs = None
        if result.level is not None and result.level > self.level:
            self.level, self.checker_reason = result.level, ""
        if result.opaque and self.skipped is None:
            self.skipped = (f"numeric until the model gained {', '.join(result.opaque)} (ONNX Runtime cannot run it); "
                            "structural checks after that")


def _new_ops(before: onnx.ModelProto, candidate: onnx.ModelProto, declared: Iterable[str]) -> list[str]:
    """Declared opaque ops that the candidate has and ``before`` did not."""
    declared = set(declared)
    if not declared:
        return []
    had, has = op_histogram(before), op_histogram(candidate)
    return sorted(op for op in declared if has.get(op, 0) > had.get(op, 0))


def inferred_output_problem(before: onnx.ModelProto, candidate: onnx.ModelProto) -> str | None:
    """Why shape inference gives ``candidate``'s outputs other types/shapes than ``before``'s, or None.

    Used when the candidate cannot run: inference must get past the new ops (their
    outputs carry value_info) and agree with the model before the pass on every output.
    """
    def outputs(m: onnx.ModelProto) -> dict[str, tuple]:
        try:
            inferred = infer_shapes(m)
        except Exception:  # inference failing on the input is not the candidate's fault
            inferred = m
        known = {vi.name: vi for vi in list(inferred.graph.value_info) + list(inferred.graph.output)}
        out = {}
        for o in m.graph.output:
            vi = known.get(o.name, o)
            tt = vi.type.tensor_type
            dims = None
            if tt.HasField("shape"):
                dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim)
            out[o.name] = (tt.elem_type, dims)
        return out

    ref, got = outputs(before), outputs(candidate)
    for name, (elem, dims) in ref.items():
        g_elem, g_dims = got.get(name, (0, None))
        if elem and g_elem and elem != g_elem:
            return f"shape inference gives output '{name}' element type {g_elem}, was {elem}"
        if dims is not None and g_dims is not None:
            if len(dims) != len(g_dims):
                return f"shape inference gives output '{name}' rank {len(g_dims)}, was {len(dims)}"
            for axis, (a, b) in enumerate(zip(dims, g_dims)):
                if a is not None and b is not None and a != b:
                    return f"shape inference gives output '{name}' axis {axis} size {b}, was {a}"
        if dims is not None and g_dims is None:
            return f"shape inference cannot get to output '{name}' any more (no value_info past the new ops?)"
    return None
