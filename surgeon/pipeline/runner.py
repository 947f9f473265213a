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
from surgeon import model as model_io
from surgeon.errors import SurgeonError
from surgeon.pipeline import registry
from surgeon.pipeline.base import PassContext, PassLog, RewriteBudget
from surgeon.verify import Verifier

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
    verification: str  # "numeric", or why only structural checks ran
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


def _same_bytes(a: onnx.ModelProto, b: onnx.ModelProto) -> bool:
    """Whether two models serialize identically (a pass that returned its input unchanged).

    Cheap differences are looked at first: serializing a large model twice costs tens of
    milliseconds, and most candidates differ in their node or initializer lists.
    """
    if len(a.graph.node) != len(b.graph.node) or len(a.graph.initializer) != len(b.graph.initializer):
        return False
    if any(x.SerializeToString(deterministic=True) != y.SerializeToString(deterministic=True)
           for x, y in zip(a.graph.node, b.graph.node)):
        return False
    if model_io.needs_external_data(a) or model_io.needs_external_data(b):
        return False  # too large to serialize; trust the pass
    return a.SerializeToString(deterministic=True) == b.SerializeToString(deterministic=True)


@dataclass
class _Unchanged:
    """A pass run that returned None: the model version it saw and what it reported.

    Passes are deterministic functions of (model, options, rewrite budget), so the same
    pass given the same model version again returns None again; the pipeline replays the
    run (its permit requests and notes) instead of repeating it.
    """

    version: int
    counts: dict[str, int]
    notes: list[str]
    applications: list[tuple[str, str, str]]  # (pass, rule, node) of each permit request, in order
    all_refused: bool  # every request was refused (replaying is then exact under a bisect limit too)


def fix(
    model: onnx.ModelProto,
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
) -> tuple[onnx.ModelProto, FixReport]:
    """Run a verified pipeline over ``model`` (not modified) and return (new model, report).

    ``passes``: names or "a,b,c" (None: the default pipeline). ``input_shapes`` pins
    dynamic dims for verification; with ``fix_shapes`` they are also written into the
    model. ``bisect_limit``/``exclude``/``only`` restrict rewrite applications (see RewriteBudget).
    """
    names = registry.parse_pipeline(passes)
    start = time.perf_counter()
    current = model_io.copy(model)
    if fix_shapes:
        if not input_shapes:
            raise SurgeonError("--fix-shapes needs --input-shapes")
        from surgeon.shapes import pin_input_shapes

        current = pin_input_shapes(current, input_shapes)
    nodes_before, ops_before = G.count_nodes(model), G.op_histogram(model)
    # Node count and op histogram of ``current``, recomputed only when it changes.
    cur_nodes, cur_ops = (G.count_nodes(current), G.op_histogram(current)) if fix_shapes else (nodes_before, ops_before)
    verifier = Verifier(current, numeric=verify, input_shapes=input_shapes, samples=samples, atol=atol, rtol=rtol, seed=seed)
    budget = RewriteBudget(limit=bisect_limit, excluded=frozenset(exclude),
                           only=None if only is None else frozenset(only))
    reports: list[PassReport] = []
    version = 0  # bumped whenever ``current`` changes
    unchanged: dict[str, _Unchanged] = {}  # pass name -> its last run that returned None
    for round_no in range(1, max(1, rounds) + 1):
        round_changed = False
        for name in names:
            if progress:
                progress(f"round {round_no}: {name}")
            seen = unchanged.get(name)
            if seen is not None and seen.version == version and (budget.limit is None or seen.all_refused):
                # Same model as last time: the pass would return None again. Its permit
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
            before_nodes, before_ops = cur_nodes, cur_ops
            first_request = len(budget.applications)
            try:
                # No defensive copy: passes must not modify their input (a 500 MB model costs
                # ~0.15 s per copy, per pass); tests/passes/test_pass_contract.py enforces it.
                candidate = instance.run(current, ctx, plog)
            except SurgeonError:
                raise
            except Exception as exc:  # a bug in a pass must not lose the user's run
                log.exception("pass %s crashed", name)
                candidate = None
                plog.note(f"pass crashed and was skipped: {type(exc).__name__}: {exc}")
                reports.append(PassReport(name, round_no, ROLLED_BACK, before_nodes, before_nodes,
                                          time.perf_counter() - t0, notes=plog.notes,
                                          reason=f"{type(exc).__name__}: {exc}"))
                continue
            after_nodes = G.count_nodes(candidate) if candidate is not None else before_nodes
            if candidate is not None and after_nodes == before_nodes and _same_bytes(candidate, current):
                candidate = None
            if candidate is None:
                requests = budget.applications[first_request:]
                unchanged[name] = _Unchanged(version, dict(plog.counts), list(plog.notes),
                                             [(a.pass_name, a.rule, a.node) for a in requests],
                                             all(not a.applied for a in requests))
                if round_no == 1 or plog.notes:
                    reports.append(PassReport(name, round_no, UNCHANGED, before_nodes, before_nodes,
                                              time.perf_counter() - t0, counts=dict(plog.counts), notes=plog.notes))
                continue
            if not plog.counts:
                result_reason = "the pass changed the model but reported no change (contract violation)"
                verdict = None
            else:
                verdict = verifier.check(current, candidate, opaque=plog.opaque)
                result_reason = verdict.reason
                if verdict.ok and verdict.note:
                    plog.note(verdict.note)
            elapsed = time.perf_counter() - t0
            if verdict is not None and verdict.ok:
                verifier.accept(verdict)
                after_ops = G.op_histogram(candidate)
                reports.append(PassReport(name, round_no, APPLIED, before_nodes, after_nodes, elapsed,
                                          _op_delta(before_ops, after_ops), dict(plog.counts),
                                          plog.notes, "", verdict.max_abs, verdict.max_rel))
                current, cur_nodes, cur_ops = candidate, after_nodes, after_ops
                version += 1
                round_changed = True
            else:
                log.info("pass %s rolled back: %s", name, result_reason)
                reports.append(PassReport(name, round_no, ROLLED_BACK, before_nodes, before_nodes, elapsed,
                                          {}, dict(plog.counts), plog.notes, result_reason,
                                          verdict.max_abs if verdict else None, verdict.max_rel if verdict else None))
        if not round_changed:
            break
    notes = [verifier.note] if verifier.note else []
    report = FixReport(
        passes=reports,
        nodes_before=nodes_before,
        nodes_after=cur_nodes,
        ops_before=dict(ops_before),
        ops_after=dict(cur_ops),
        verification="numeric" if verifier.numeric else (verifier.skipped or "structural only"),
        samples=verifier.sample_shapes(),
        seconds=time.perf_counter() - start,
        applications=[asdict(a) for a in budget.applications],
        notes=notes,
    )
    return current, report
