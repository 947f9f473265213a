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
from surgeon.graph import Model
from surgeon.pipeline import registry
from surgeon.pipeline.base import PassContext, PassLog, RewriteBudget
from surgeon.verify import INVALID, NUMERIC, PROOF, Verifier

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
    verification: str  # "numeric", "proof" (every change proven structurally), or why only structural checks ran

    @property
    def verified(self) -> bool:
        """Whether the output is shown to compute what the input does (numerically or by proof)."""
        return self.verification in (NUMERIC, PROOF)
    samples: list[str]
    seconds: float
    applications: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

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
    fix_shapes: bool = False,
    rounds: int = 2,
    bisect_limit: int | None = None,
    exclude: frozenset[str] | set[str] = frozenset(),
    only: frozenset[str] | set[str] | None = None,
    options: Mapping[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
) -> tuple["onnx.ModelProto | Model", FixReport]:
    """Run a verified pipeline over ``model`` and return (new model, report).

    A ModelProto is not modified (a new one is returned); a :class:`surgeon.graph.Model`
    (from :func:`surgeon.model.open_model`) is edited in place and returned, so that its
    weights are never copied. ``passes``: names or "a,b,c" (None: the default pipeline).
    ``input_shapes`` pins dynamic dims for verification; with ``fix_shapes`` they are also
    written into the model. ``bisect_limit``/``exclude``/``only`` restrict rewrite
    applications (see RewriteBudget).
    """
    names = registry.parse_pipeline(passes)
    start = time.perf_counter()
    as_proto = isinstance(model, onnx.ModelProto)
    work = Model.from_proto(model) if as_proto else model
    if fix_shapes:
        if not input_shapes:
            raise SurgeonError("--fix-shapes needs --input-shapes")
        from surgeon.shapes import pin_input_shapes

        pin_input_shapes(work, input_shapes)
    nodes_before, ops_before = G.count_nodes(work), G.op_histogram(work)
    cur_nodes, cur_ops = nodes_before, ops_before
    accepted = work.export()  # the verified state; a rollback re-imports it
    verifier = Verifier(accepted, numeric=verify, input_shapes=input_shapes, samples=samples, atol=atol, rtol=rtol,
                        seed=seed)
    budget = RewriteBudget(limit=bisect_limit, excluded=frozenset(exclude),
                           only=None if only is None else frozenset(only))
    reports: list[PassReport] = []
    version = 0  # bumped whenever the model changes
    signature = work.signature()
    unchanged: dict[str, _Unchanged] = {}  # pass name -> its last run that changed nothing

    def roll_back() -> None:
        nonlocal signature
        work.restore(accepted)
        signature = work.signature()

    for round_no in range(1, max(1, rounds) + 1):
        round_changed = False
        for name in names:
            if progress:
                progress(f"round {round_no}: {name}")
            seen = unchanged.get(name)
            if seen is not None and seen.version == version and (budget.limit is None or seen.all_refused):
                # Same model as last time: the pass would change nothing again. Its permit
                # requests are replayed so that rewrite numbering (opt-bisect) is unchanged.
                for request in seen.applications:
                    budget.permit(*request)
                if round_no == 1 or seen.notes:
                    reports.append(PassReport(name, round_no, UNCHANGED, cur_nodes, cur_nodes, 0.0,
                                              counts=dict(seen.counts), notes=list(seen.notes)))
                continue
            instance = registry.get(name)()
            ctx = PassContext(budget=budget, options=dict(options or {}), pass_name=name)
            plog = PassLog()
            t0 = time.perf_counter()
            first_request = len(budget.applications)
            try:
                claimed = instance.run(work, ctx, plog)
            except SurgeonError:
                roll_back()
                raise
            except Exception as exc:  # a bug in a pass must not lose the user's run
                log.debug("pass %s crashed", name, exc_info=True)
                roll_back()
                reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
                plog.note(f"pass crashed and was rolled back: {reason}")
                reports.append(PassReport(name, round_no, ROLLED_BACK, cur_nodes, cur_nodes,
                                          time.perf_counter() - t0, notes=plog.notes, reason=f"crashed: {reason}"))
                continue
            after = work.signature()
            if after == signature:
                requests = budget.applications[first_request:]
                unchanged[name] = _Unchanged(version, dict(plog.counts), list(plog.notes),
                                             [(a.pass_name, a.rule, a.node) for a in requests],
                                             all(not a.applied for a in requests))
                if round_no == 1 or plog.notes:
                    reports.append(PassReport(name, round_no, UNCHANGED, cur_nodes, cur_nodes,
                                              time.perf_counter() - t0, counts=dict(plog.counts), notes=plog.notes))
                continue
            verdict = None
            if not claimed:
                result_reason = "the pass changed the model but returned False (contract violation)"
            elif not plog.counts:
                result_reason = "the pass changed the model but reported no change (contract violation)"
            else:
                candidate = work.export()
                verdict = verifier.check(accepted, candidate, opaque=plog.opaque)
                result_reason = verdict.reason
                if verdict.ok and verdict.note:
                    plog.note(verdict.note)
            elapsed = time.perf_counter() - t0
            if verdict is not None and verdict.ok:
                verifier.accept(verdict)
                after_nodes, after_ops = G.count_nodes(work), G.op_histogram(work)
                reports.append(PassReport(name, round_no, APPLIED, cur_nodes, after_nodes, elapsed,
                                          _op_delta(cur_ops, after_ops), dict(plog.counts),
                                          plog.notes, "", verdict.max_abs, verdict.max_rel, verdict.method))
                accepted, signature = candidate, after
                cur_nodes, cur_ops = after_nodes, after_ops
                version += 1
                round_changed = True
            else:
                log.info("pass %s rolled back: %s", name, result_reason)
                roll_back()
                reports.append(PassReport(name, round_no, ROLLED_BACK, cur_nodes, cur_nodes, elapsed,
                                          {}, dict(plog.counts), plog.notes, result_reason,
                                          verdict.max_abs if verdict else None, verdict.max_rel if verdict else None,
                                          verdict.method if verdict else ""))
        if not round_changed:
            break
    if verifier.level == INVALID:
        raise ModelLoadError(f"the model is invalid and the passes could not repair it: {verifier.checker_reason}")
    notes = [verifier.note] if verifier.note else []
    if verifier.numeric:
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
    )
    if as_proto:
        if version == 0 and not fix_shapes:  # nothing changed: the input as it was, byte for byte
            unchanged_model = onnx.ModelProto()
            unchanged_model.CopyFrom(model)
            return unchanged_model, report
        return accepted.full(), report
    return work, report
