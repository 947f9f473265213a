"""The verified pipeline: run passes in order, check each, roll back what breaks.

Verification belongs here, not in the passes: after each pass that changed the model
the candidate is checked (interface, onnx checker, ONNX Runtime, outputs against the
model before the pass on seeded samples). A failing candidate is dropped, the failure
reported, and the pipeline goes on from the model before that pass. Rounds repeat the
whole list until a round changes nothing (a fixed point) or ``rounds`` is reached.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping

import onnx

from surgeon import graph as G
from surgeon.errors import ModelLoadError, SurgeonError
from surgeon.graph import Exported, Model
from surgeon.pipeline import registry
from surgeon.pipeline.base import PassContext, PassLog, RewriteBudget
from surgeon.verify import FULL, INVALID, NUMERIC, PENDING, PROOF, REGION, Verifier, contradicted_outputs

log = logging.getLogger(__name__)

APPLIED, UNCHANGED, ROLLED_BACK = "applied", "unchanged", "rolled-back"


@dataclass
class PassReport:
    name: str
    round: int
    status: str
    nodes_before: int
    nodes_after: int
    seconds: float
    op_delta: dict[str, int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    reason: str = ""
    max_abs: float | None = None
    max_rel: float | None = None
    checked: str = ""  # how the change was verified: proof, numeric, structural (see surgeon.verify)

    @property
    def changed(self) -> bool:
        return self.status == APPLIED


@dataclass
class FixReport:
    passes: list[PassReport]
    nodes_before: int
    nodes_after: int
    ops_before: dict[str, int]
    ops_after: dict[str, int]
    # "numeric" (the whole model compared), "region" (some changes compared on their regions
    # only: surgeon.verify_region), "proof" (every change proven structurally), or why only
    # structural checks ran
    verification: str

    @property
    def verified(self) -> bool:
        """Whether every change is shown to compute what it replaced (numerically, on its region, or by proof)."""
        return self.verification in (NUMERIC, REGION, PROOF)
    samples: list[str]
    seconds: float
    applications: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    frozen_inputs: list[str] = field(default_factory=list)  # initializer-backed inputs made constants first
    # How outputs were compared: "whole" (the whole model) or "local" (each change on its
    # region, surgeon.verify_region); None without numeric checks. The reason: asked, or what
    # --verify auto found.
    verify_mode: str | None = None
    verify_mode_reason: str | None = None

    @property
    def rolled_back(self) -> list[PassReport]:
        return [p for p in self.passes if p.status == ROLLED_BACK]

    @property
    def changed(self) -> bool:
        return any(p.changed for p in self.passes)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["rolled_back"] = [p.name for p in self.rolled_back]
        return d


def _dims(type_proto: onnx.TypeProto) -> str:
    dims = type_proto.tensor_type.shape.dim
    return "[" + ", ".join(str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?") for d in dims) + "]"


def _op_delta(before: Counter, after: Counter) -> dict[str, int]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in sorted(set(before) | set(after)) if after.get(k, 0) != before.get(k, 0)}


@dataclass
class _Unchanged:
    """A pass run that changed nothing: the model version it saw and what it reported.

    Passes are deterministic functions of (model, options, rewrite budget), so the same
    pass given the same model version again changes nothing again; the pipeline replays
    the run (its permit requests and notes) instead of repeating it.
    """

    version: int
    counts: dict[str, int]
    notes: list[str]
    applications: list[tuple[str, str, str]]  # (pass, rule, node) of each permit request, in order
    all_refused: bool  # every request was refused (replaying is then exact under a bisect limit too)


class _Pipeline:
    """One pipeline run (local state only; see :func:`fix`).

    Numeric verification is batched: a change that is not proven structurally is
    checked at once for everything cheap (interface, checker) and its outputs are
    compared at the end of the round, together with the changes after it. When that
    comparison fails, the model goes back to the last state whose outputs were compared
    and the same passes run again one at a time, each compared on its own, so the one
    that broke equivalence is the one rolled back. Passes are deterministic functions of
    (model, options, rewrite budget), so the rerun makes the same changes.
    """

    def __init__(self, work: Model, initial: Exported, names: list[str], verifier: Verifier, budget: RewriteBudget,
                 options: Mapping[str, Any], progress: Callable[[str], None] | None, batch: bool):
        self.work, self.names, self.verifier, self.budget = work, names, verifier, budget
        self.options, self.progress, self.batch = dict(options), progress, batch
        self.reports: list[PassReport] = []
        self.version = 0  # bumped whenever the model changes
        self.unchanged: dict[str, _Unchanged] = {}  # pass name -> its last run that changed nothing
        self.current = initial  # the state passes build on (checked; its outputs maybe not compared yet)
        self.compared = self.current  # the last state whose outputs were compared (or that needs no comparison)
        self.signature = work.signature()
        self.nodes, self.ops = G.count_nodes(work), G.op_histogram(work)
        self.pending: list[PassReport] = []  # applied, outputs not compared yet
        self.since_compared: list[tuple[str, int]] = []  # (pass, round) run since ``compared``, for a rerun
        self.mark = (0, 0, self.nodes, self.ops)  # len(reports), len(applications), nodes, ops at ``compared``
        self.opaque: set[str] = set()

    def run(self, rounds: int) -> None:
        # Region checks record the input model's values once for every change they compare:
        # one comparison at the end of the run, not one per round.
        at_end = self.verifier.regions is not None
        for round_no in range(1, max(1, rounds) + 1):
            changed = False
            for name in self.names:
                changed |= self._step(name, round_no, defer=self.batch)
            if not at_end:
                changed &= self._settle()
            if not changed:
                break
        if at_end:
            self._settle()

    def _roll_back(self) -> None:
        self.work.restore(self.current)
        self.signature = self.work.signature()

    def _step(self, name: str, round_no: int, *, defer: bool) -> bool:
        """Run one pass; True when it changed the model (and the change was kept)."""
        if self.progress:
            self.progress(f"round {round_no}: {name}")
        self.since_compared.append((name, round_no))
        nodes = self.nodes
        seen = self.unchanged.get(name)
        if seen is not None and seen.version == self.version and (self.budget.limit is None or seen.all_refused):
            # Same model as last time: the pass would change nothing again. Its permit
            # requests are replayed so that rewrite numbering (opt-bisect) is unchanged.
            for request in seen.applications:
                self.budget.permit(*request)
            if round_no == 1 or seen.notes:
                self.reports.append(PassReport(name, round_no, UNCHANGED, nodes, nodes, 0.0,
                                               counts=dict(seen.counts), notes=list(seen.notes)))
            return False
        instance = registry.get(name)()
        ctx = PassContext(budget=self.budget, options=dict(self.options), pass_name=name)
        plog = PassLog()
        t0 = time.perf_counter()
        first_request = len(self.budget.applications)
        try:
            claimed = instance.run(self.work, ctx, plog)
        except SurgeonError:
            self._roll_back()
            raise
        except Exception as exc:  # a bug in a pass must not lose the user's run
            log.debug("pass %s crashed", name, exc_info=True)
            self._roll_back()
            reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
            plog.note(f"pass crashed and was rolled back: {reason}")
            self.reports.append(PassReport(name, round_no, ROLLED_BACK, nodes, nodes, time.perf_counter() - t0,
                                           notes=plog.notes, reason=f"crashed: {reason}"))
            return False
        after = self.work.signature()
        if after == self.signature:
            requests = self.budget.applications[first_request:]
            self.unchanged[name] = _Unchanged(self.version, dict(plog.counts), list(plog.notes),
                                              [(a.pass_name, a.rule, a.node) for a in requests],
                                              all(not a.applied for a in requests))
            if round_no == 1 or plog.notes:
                self.reports.append(PassReport(name, round_no, UNCHANGED, nodes, nodes, time.perf_counter() - t0,
                                               counts=dict(plog.counts), notes=plog.notes))
            return False
        verdict = None
        if not claimed:
            reason = "the pass changed the model but returned False (contract violation)"
        elif not plog.counts:
            reason = "the pass changed the model but reported no change (contract violation)"
        else:
            candidate = self.work.export()
            verdict = self.verifier.check(self.current, candidate, opaque=plog.opaque, numeric=not defer)
            reason = verdict.reason
            if verdict.ok and verdict.note:
                plog.note(verdict.note)
        elapsed = time.perf_counter() - t0
        if verdict is None or not verdict.ok:
            log.info("pass %s rolled back: %s", name, reason)
            self._roll_back()
            self.reports.append(PassReport(name, round_no, ROLLED_BACK, nodes, nodes, elapsed, {}, dict(plog.counts),
                                           plog.notes, reason, verdict.max_abs if verdict else None,
                                           verdict.max_rel if verdict else None, verdict.method if verdict else ""))
            return False
        self.verifier.accept(verdict)
        after_nodes, after_ops = G.count_nodes(self.work), G.op_histogram(self.work)
        report = PassReport(name, round_no, APPLIED, nodes, after_nodes, elapsed, _op_delta(self.ops, after_ops),
                            dict(plog.counts), plog.notes, "", verdict.max_abs, verdict.max_rel, verdict.method)
        self.reports.append(report)
        self.current, self.signature = candidate, after
        self.nodes, self.ops = after_nodes, after_ops
        self.version += 1
        if verdict.method == PENDING:
            self.pending.append(report)
            self.opaque |= plog.opaque
        elif not self.pending:
            self._mark_compared()
        return True

    def _mark_compared(self) -> None:
        self.compared = self.current
        self.since_compared = []
        self.mark = (len(self.reports), len(self.budget.applications), self.nodes, self.ops)

    def _settle(self) -> bool:
        """Compare the outputs of the pending changes; on a mismatch, rerun them one by one.

        Returns False when the rerun kept none of the changes since the last comparison.
        """
        if not self.pending:
            return True
        started = time.perf_counter()
        verdict = self.verifier.compare(self.compared, self.current, self.opaque)
        names = ", ".join(dict.fromkeys(p.name for p in self.pending))
        if verdict.ok:
            self.verifier.accept(verdict)
            share = (time.perf_counter() - started) / len(self.pending)
            for p in self.pending:
                p.checked, p.max_abs, p.max_rel = verdict.method, verdict.max_abs, verdict.max_rel
                p.seconds += share
                if verdict.note:
                    p.notes.append(verdict.note)
                if len(self.pending) > 1:
                    p.notes.append(f"outputs compared once for the changes of: {names}")
            self.pending, self.opaque = [], set()
            self._mark_compared()
            return True
        log.info("batched comparison of %s failed (%s); rerunning them one at a time", names, verdict.reason)
        rerun = self.since_compared
        n_reports, n_apps, self.nodes, self.ops = self.mark
        del self.reports[n_reports:]
        del self.budget.applications[n_apps:]
        self.pending, self.opaque = [], set()
        self.current = self.compared
        self._roll_back()
        self.version += 1  # a fresh version: nothing run in the batch is replayed as "unchanged"
        self.since_compared = []
        changed = False
        for name, round_no in rerun:
            changed |= self._step(name, round_no, defer=False)
        return changed


def region_note(verifier: Verifier, changes: int) -> str:
    """What "verification: region" means for this run, in one sentence for the report."""
    rec = verifier.regions.recorder
    return (f"verification: region ({verifier.mode_note}): {changes} change(s) were compared on the part of the "
            f"model they changed, fed with values recorded from the input model (its reference run and {rec.runs} "
            f"run(s) of parts of it, {rec.recorded_bytes / 1e6:.1f} MB); the whole model was not compared after them, so an error within "
            "tolerance that later layers amplify is not ruled out (docs/large-models.md)")


def fix(
    model: "onnx.ModelProto | Model",
    passes: str | list[str] | None = None,
    *,
    verify: bool = True,
    input_shapes: Mapping[str, tuple[int, ...]] | None = None,
    samples: list[dict[str, Any]] | None = None,
    atol: float | None = None,
    rtol: float | None = None,
    seed: int = 0,
    value_ranges: Mapping[str, tuple[float, float]] | None = None,
    fix_shapes: bool = False,
    freeze_initializer_inputs: bool = False,
    rounds: int = 2,
    bisect_limit: int | None = None,
    exclude: frozenset[str] | set[str] = frozenset(),
    only: frozenset[str] | set[str] | None = None,
    options: Mapping[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
    verify_mode: str = "auto",
    reference_outputs: list[dict[str, Any]] | None = None,
) -> tuple["onnx.ModelProto | Model", FixReport]:
    """Run a verified pipeline over ``model`` and return (new model, report).

    A ModelProto is not modified (a new one is returned); a :class:`surgeon.graph.Model`
    (from :func:`surgeon.model.open_model`) is edited in place and returned, so that its
    weights are never copied. ``passes``: names or "a,b,c" (None: the default pipeline).
    ``input_shapes`` pins dynamic dims for verification; with ``fix_shapes`` they are also
    written into the model. ``value_ranges`` (``--val-range``) sets the values of generated
    samples for the inputs it names. ``freeze_initializer_inputs``: initializers listed as graph
    inputs (IR >= 4: defaults a user may override, which no pass folds) leave the inputs
    first and become constants; the report names them. ``bisect_limit``/``exclude``/``only``
    restrict rewrite applications (see RewriteBudget). ``verify_mode``: ``whole`` compares the
    whole model after every change, ``local`` each change on its region (surgeon.verify_region),
    ``auto`` the whole model where a run of it fits in memory and is light, regions elsewhere.
    ``reference_outputs``: the input model's outputs on ``samples``, where the caller ran them
    already (fix's check of loaded inputs), so that they are not run again.
    """
    names = registry.parse_pipeline(passes)
    start = time.perf_counter()
    as_proto = isinstance(model, onnx.ModelProto)
    work = Model.from_proto(model) if as_proto else model
    initial = work.export()
    problem = work.fidelity_problem(initial)
    if problem:
        raise ModelLoadError(f"surgeon cannot hold this model without changing it: {problem}; nothing was written")
    if fix_shapes:
        if not input_shapes:
            raise SurgeonError("{0} needs {1}", "fix_shapes", "input_shapes")
        from surgeon.shapes import pin_input_shapes

        pin_input_shapes(work, input_shapes)
        initial = work.export()
    frozen = work.freeze_initializer_inputs() if freeze_initializer_inputs else []
    if frozen:
        initial = work.export()
    nodes_before, ops_before = G.count_nodes(work), G.op_histogram(work)
    verifier = Verifier(initial, numeric=verify, input_shapes=input_shapes, samples=samples, atol=atol, rtol=rtol,
                        seed=seed, value_ranges=value_ranges, mode=verify_mode,
                        reference=reference_outputs if samples is not None and not frozen else None)
    budget = RewriteBudget(limit=bisect_limit, excluded=frozenset(exclude),
                           only=None if only is None else frozenset(only))
    pipeline = _Pipeline(work, initial, names, verifier, budget, options or {}, progress,
                         batch=verifier.numeric and bisect_limit is None and only is None)
    pipeline.run(rounds)
    reports, accepted, cur_nodes, cur_ops = pipeline.reports, pipeline.current, pipeline.nodes, pipeline.ops
    notes: list[str] = []
    repairs = getattr(work, "repairs", None)  # what the lenient open repaired (surgeon.model.open_model)
    if repairs:
        from surgeon.repair import describe

        notes.append(f"repaired when the model was opened (in memory; the input file is unchanged): {describe(repairs)}")
    contradicted = contradicted_outputs(accepted) if verifier.level == FULL else {}
    for name, inferred in contradicted.items():
        declared = next(vi for vi in accepted.skeleton.graph.output if vi.name == name)
        work.declare_output(name, inferred)
        notes.append(f"the declared shape of output '{name}' {_dims(declared.type)} contradicts what the graph computes, "
                     f"{_dims(inferred)} (shape inference, once the graph was simplified); the declaration was corrected")
    if contradicted:
        accepted = work.export()
    if verifier.level == INVALID:
        raise ModelLoadError(f"the model is invalid and the passes could not repair it: {verifier.checker_reason}")
    notes[:0] = verifier.notes
    if frozen:
        notes.insert(0, f"{len(frozen)} initializer(s) listed as graph inputs were frozen (made constants, no "
                        f"longer inputs, so passes may fold them): {', '.join(frozen)}")
    regional = [p for p in reports if p.status == APPLIED and p.checked == REGION]
    if verifier.numeric:
        untested = verifier.untested_changes(accepted)
        if untested is not None:
            verification = f"not verified: {untested}; give --load-inputs"
        elif regional:
            verification = REGION
            notes.append(region_note(verifier, len(regional)))
        else:
            verification = NUMERIC
    elif all(p.checked == PROOF for p in reports if p.status == APPLIED):
        # Every change is the same computation graph: equivalent without running anything.
        verification = PROOF
        notes.append(f"numeric checks were not possible ({verifier.skipped}); every change was proven structurally")
    else:
        verification = verifier.skipped or "structural only"
    report = FixReport(
        passes=reports,
        nodes_before=nodes_before,
        nodes_after=cur_nodes,
        ops_before=dict(ops_before),
        ops_after=dict(cur_ops),
        verification=verification,
        samples=verifier.sample_shapes(),
        seconds=time.perf_counter() - start,
        applications=[asdict(a) for a in budget.applications],
        notes=notes,
        frozen_inputs=frozen,
        verify_mode=verifier.mode if verifier.numeric else None,
        verify_mode_reason=verifier.mode_note if verifier.numeric else None,
    )
    if as_proto:
        if not any(p.status == APPLIED for p in reports) and not fix_shapes and not frozen:  # the input as it was, byte for byte
            unchanged_model = onnx.ModelProto()
            unchanged_model.CopyFrom(model)
            return unchanged_model, report
        return accepted.full(), report
    return work, report
