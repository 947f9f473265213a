"""Oracles: a candidate (node set) in, a verdict out.

Two kinds, one interface (``judge(candidate) -> Observation``, ``calls``, ``can_mark``,
``mark_all``, ``describe()``):

- :class:`NumericOracle` compares a test side with the reference. Reference values come
  from one run of the whole model with every tensor marked (what subgraphs are fed) and
  one unmarked run (what graph outputs are compared with: marking can change a backend's
  outputs). The test side is a backend (``--test fp16``) or a second model run on the
  reference backend (``--against B.onnx``; tensors matched by name). Subgraphs are fed
  the reference values of their inputs for *every* sample and run on both sides, so a
  node is judged on exactly the data it sees in the full model and against what the
  reference computes for the same cut. It also answers the ``noise`` question: how far
  the outputs move when tensors are marked (:mod:`surgeon.debug.bisect.noise`).
- :class:`CommandOracle` runs the user's ``--check`` command under the one contract of
  :mod:`surgeon.debug.check_command`; the exit status is the verdict. For crashes and
  parser errors, where there is nothing to compare.

Oracles hold no search state; the strategy decides what to ask and the driver caches
verdicts, so an oracle is never asked the same question twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import onnx

from surgeon import comparison as compare
from surgeon.debug import check_command
from surgeon.debug.bisect import extract, noise
from surgeon.debug.bisect.strategy import Candidate
from surgeon.debug.check_command import CheckCommand
from surgeon.debug.verdict import Verdict
from surgeon.errors import BackendError

log = logging.getLogger(__name__)


@dataclass
class Observation:
    """What an oracle saw on one candidate: ``failed`` (its :attr:`verdict`), and the evidence:
    for mark candidates the diverging nodes; ``diffs``: failing tensors, worst first."""

    failed: bool
    detail: str = ""
    diverging: frozenset[int] = frozenset()
    diffs: list[dict] = field(default_factory=list)
    crashed: bool = False

    @property
    def verdict(self) -> Verdict:
        return Verdict.FAIL if self.failed else Verdict.PASS

    def to_dict(self) -> dict:
        return {"failed": self.failed, "detail": self.detail, "diverging": sorted(self.diverging),
                "diffs": self.diffs, "crashed": self.crashed}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Observation":
        return cls(bool(d["failed"]), d.get("detail", ""), frozenset(d.get("diverging", [])), list(d.get("diffs", [])),
                   bool(d.get("crashed", False)))

    def for_strategy(self, kind: str) -> object:
        return self.diverging if kind == "mark" else self.failed


def _diff_summary(d: compare.OutputDiff, sample: int) -> dict:
    return {"tensor": d.name, "sample": sample, "reason": d.reason, "max_abs": d.max_abs, "max_rel": d.max_rel,
            "mismatches": d.mismatches, "elements": d.elements, "nan_mismatches": d.nan_mismatches,
            "inf_mismatches": d.inf_mismatches, "worst_ref": d.worst_ref, "worst_test": d.worst_test}


def _severity(d: Mapping[str, Any]) -> tuple:
    return (d.get("nan_mismatches", 0) + d.get("inf_mismatches", 0), d.get("max_abs") or 0.0)


_tol_ratio = noise.tol_ratio


class NumericOracle:
    """Test side vs reference values, elementwise with explicit tolerances."""

    can_mark = True

    def __init__(self, view: extract.GraphView, ref_values: Sequence[Mapping[str, Any]], types: Mapping[str, onnx.TypeProto],
                 *, test: Any, against: onnx.ModelProto | None = None, atol: Any = None, rtol: Any = None,
                 nan_equal: bool = False, block_size: int = 32, against_label: str = "B", reference: Any = None,
                 ref_marked: Sequence[Mapping[str, Any]] | None = None):
        """``ref_values``: per sample, every tensor's reference value (graph outputs from the
        unmarked run); ``reference``: the reference backend, which runs each subgraph too
        (None: subgraphs are compared with ``ref_values``); ``ref_marked``: the graph
        outputs of the reference run with every tensor marked (the reference's marking
        noise; None: not measured)."""
        self.view = view
        self.ref = ref_values
        self.types = types
        self.test = test
        self.against = against
        self.against_label = against_label
        self.atol, self.rtol, self.nan_equal = atol, rtol, nan_equal
        self.block_size = max(1, block_size)
        self.mark_all = not getattr(test, "fuses", True)
        self.reference = reference
        self.ref_marked = ref_marked
        self.calls = 0  # runs of the test side for candidates
        self.ref_calls = 0  # runs of the reference side on the same cuts
        self.noise_calls = 0  # runs measuring marking noise
        self._b_names: set[str] | None = None
        if against is not None:
            g = against.graph
            self._b_names = {o for n in g.node for o in n.output if o} | {i.name for i in g.input}

    def describe(self) -> str:
        side = f"{self.against_label} on {self.test.describe()}" if self.against is not None else self.test.describe()
        return f"{side} vs reference values"

    # -- running ----------------------------------------------------------------------------

    def _run(self, model: onnx.ModelProto, feeds_per_sample: list[dict[str, Any]], want: Sequence[str],
             backend: Any = None) -> tuple[list[dict], str | None]:
        if backend is None:
            self.calls += 1
        try:
            sess = (backend or self.test).session(model)
            return [sess.run(f) for f in feeds_per_sample], None
        except BackendError as exc:
            return [], str(exc)

    def _compare(self, outs: list[dict], names: Sequence[str], expected: Sequence[Mapping[str, Any]] | None = None) -> list[dict]:
        failing: dict[str, dict] = {}
        for i, (ref, got) in enumerate(zip(self.ref if expected is None else expected, outs)):
            want = {n: ref[n] for n in names if n in ref}
            for d in compare.diff_outputs(want, got, atol=self.atol, rtol=self.rtol, nan_equal=self.nan_equal):
                if not d.passed and d.name not in failing:
                    failing[d.name] = _diff_summary(d, i)
        return sorted(failing.values(), key=_severity, reverse=True)

    def _graph_feeds(self) -> list[dict[str, Any]]:
        names = self.view.input_names if self.against is None else [i.name for i in self.against.graph.input]
        return [{n: s[n] for n in names if n in s} for s in self.ref]

    def judge(self, cand: Candidate) -> Observation:
        if cand.kind == "noise":
            return self.marking_noise()
        return self._mark(cand.nodes) if cand.kind == "mark" else self._subgraph(cand.nodes)

    def marks(self) -> tuple[list[str], str]:
        """The tensors the search marks in one run, and how they were chosen (for the noise
        measurement): every tensor on a backend that does not fuse, else one block spread
        over the graph."""
        names = [n for n in self.view.outputs_of(range(self.view.dag.n))
                 if n in self.ref[0] and isinstance(self.ref[0][n], np.ndarray) and n not in self.view.output_names]
        if self._b_names is not None:
            names = [n for n in names if n in self._b_names]
        if self.mark_all:
            return names, f"every tensor ({len(names)})"
        chosen = noise.spread(names, self.block_size)
        return chosen, f"{len(chosen)} tensors spread over the graph (one --block-size block)"

    def marking_noise(self) -> Observation:
        """How far the outputs move when tensors are marked (test side, reference side), and
        between two identical unmarked runs of the test side. ``failed``: too far for marked
        tensors to be trusted (:func:`surgeon.debug.bisect.noise.noisy`)."""
        base = self.view.model if self.against is None else self.against
        outputs = [o.name for o in base.graph.output]
        feeds = self._graph_feeds()
        marks, how = self.marks()
        self.noise_calls += 2
        try:
            sess = self.test.session(base)
            first = [sess.run(f) for f in feeds]
            second = [sess.run(f) for f in feeds]
        except BackendError as exc:
            return Observation(True, f"the test side cannot run the model: {exc}", crashed=True)
        rows = noise.shift_rows(noise.TEST, noise.REPEAT, first, second, outputs, atol=self.atol, rtol=self.rtol)
        try:
            marked_sess = self.test.session(extract.with_outputs(base, marks, self.types))
            marked = [marked_sess.run(f) for f in feeds]
        except BackendError as exc:
            return Observation(True, f"with {how} marked, the test side fails: {exc}", diffs=rows)
        rows += noise.shift_rows(noise.TEST, noise.MARKING, first, marked, outputs, atol=self.atol, rtol=self.rtol)
        if self.ref_marked is not None:
            names = [n for n in self.view.output_names]
            rows += noise.shift_rows(noise.REFERENCE, noise.MARKING, self.ref, self.ref_marked, names,
                                     atol=self.atol, rtol=self.rtol)
        verdict = noise.noisy(rows)
        return Observation(verdict, noise.sentence(rows, how) + ("" if verdict else "; marked tensors are trusted"),
                       diffs=rows)

    def _mark(self, nodes: frozenset[int]) -> Observation:
        names = [n for n in self.view.outputs_of(nodes) if n in self.ref[0] and isinstance(self.ref[0][n], np.ndarray)]
        names += [n for n in self.view.output_names if n not in names and self.view.owner(n) in nodes]
        if self._b_names is not None:
            names = [n for n in names if n in self._b_names]
        if not names:
            return Observation(False, "no tensor of these nodes can be compared")
        base = self.view.model if self.against is None else self.against
        blocks = [names] if self.mark_all else [names[i:i + self.block_size] for i in range(0, len(names), self.block_size)]
        for block in blocks:
            outs, crash = self._run(extract.with_outputs(base, block, self.types), self._graph_feeds(), block)
            if crash:
                return Observation(True, crash, frozenset(nodes), crashed=True)
            diffs = self._compare(outs, block)
            if diffs:
                owners = frozenset(o for o in (self.view.owner(d["tensor"]) for d in diffs) if o is not None)
                return Observation(True, diffs[0]["reason"], owners, diffs)
        return Observation(False, f"{len(names)} tensors match")

    def _subgraph(self, nodes: frozenset[int]) -> Observation:
        """Run the candidate on the test side, fed reference values, and compare its outputs
        with the reference backend's run of the same cut (both sides see the same graph
        around the cut, so how a backend treats graph inputs and outputs cancels out); the
        whole model is compared with the unmarked reference run."""
        ref_model, ref_inputs, outputs = self.view.subgraph_model(nodes, self.types)
        model, inputs = ref_model, ref_inputs
        if self.against is not None:
            if self.view.is_everything(nodes):
                model, inputs = self.against, [i.name for i in self.against.graph.input]
            else:
                model = extract.extract_by_names(self.against, inputs, outputs, self.types, available=set(self.ref[0]))
                if model is None:
                    return Observation(False, "the second model has no part matching these tensors by name")
                inputs = [i.name for i in model.graph.input]
        feeds = [{n: s[n] for n in inputs if n in s} for s in self.ref]
        outs, crash = self._run(model, feeds, outputs)
        if crash:
            return Observation(True, crash, crashed=True)
        expected = None
        if self.reference is not None and not self.view.is_everything(nodes):
            self.ref_calls += 1
            ref_feeds = [{n: s[n] for n in ref_inputs if n in s} for s in self.ref]
            got, problem = self._run(ref_model, ref_feeds, outputs, backend=self.reference)
            if problem:
                log.info("the reference cannot run this cut (%s); comparing with the reference values", problem)
            else:
                expected = got
        diffs = self._compare(outs, outputs, expected)
        return Observation(bool(diffs), diffs[0]["reason"] if diffs else f"{len(outputs)} outputs match", diffs=diffs)


    def tensor_errors(self, names: Sequence[str]) -> dict[str, dict]:
        """How far each named tensor of the whole model's test run is from the reference, over
        every sample (worst abs/rel error, elements outside tolerance), passing or not: the
        error-growth profile that shows accumulation. Marked in blocks like a cut."""
        names = [n for n in dict.fromkeys(names) if n in self.ref[0] and isinstance(self.ref[0][n], np.ndarray)]
        if self._b_names is not None:
            names = [n for n in names if n in self._b_names]
        base = self.view.model if self.against is None else self.against
        blocks = [names] if self.mark_all else [names[i:i + self.block_size] for i in range(0, len(names), self.block_size)]
        out: dict[str, dict] = {}
        for block in (b for b in blocks if b):
            outs, crash = self._run(extract.with_outputs(base, block, self.types), self._graph_feeds(), block)
            if crash:
                log.info("error profile: the test side failed to run: %s", crash)
                continue
            for ref, got in zip(self.ref, outs):
                want = {n: ref[n] for n in block}
                for d in compare.diff_outputs(want, got, atol=self.atol, rtol=self.rtol, nan_equal=self.nan_equal):
                    acc = out.setdefault(d.name, {"tensor": d.name, "max_abs": 0.0, "max_rel": 0.0, "tol_ratio": 0.0,
                                                  "mismatches": 0, "elements": 0, "nan_mismatches": 0,
                                                  "inf_mismatches": 0, "atol": d.atol, "rtol": d.rtol})
                    acc["max_abs"] = max(acc["max_abs"], d.max_abs)
                    acc["max_rel"] = max(acc["max_rel"], d.max_rel)
                    acc["tol_ratio"] = max(acc["tol_ratio"], _tol_ratio(want[d.name], got.get(d.name), d.atol, d.rtol))
                    for k in ("mismatches", "elements", "nan_mismatches", "inf_mismatches"):
                        acc[k] += getattr(d, k)
        return out


class CommandOracle:
    """The user's ``--check`` command decides, under the one contract of
    :mod:`surgeon.debug.check_command` (exit 0 good, 125 cannot tell, other bad; a timeout
    is bad). ``{inputs}`` holds the reference values of the candidate's inputs, one entry
    per sample. A candidate the command cannot judge counts as not failing (``unresolved``
    says how many there were)."""

    can_mark = False
    mark_all = False

    def __init__(self, view: extract.GraphView, command: "str | CheckCommand", ref_values: Sequence[Mapping[str, Any]],
                 types: Mapping[str, onnx.TypeProto], *, timeout: float | None = None, workdir: str | None = None):
        self.view = view
        self.check = command if isinstance(command, CheckCommand) else CheckCommand(
            command, check_command.DEFAULT_TIMEOUT if timeout is None else timeout)
        self.ref = ref_values
        self.types = types
        self.workdir = workdir
        self.calls = 0
        self.unresolved = 0

    @property
    def command(self) -> str:
        return self.check.command

    def describe(self) -> str:
        return f"shell command: {self.check.command}"

    def judge(self, cand: Candidate) -> Observation:
        model, inputs, _ = self.view.subgraph_model(cand.nodes, self.types)
        feeds = [{n: s[n] for n in inputs if n in s} for s in self.ref]
        self.calls += 1
        result = self.check.run(model, feeds, workdir=self.workdir)
        if result.outcome == check_command.UNRESOLVED:
            self.unresolved += 1
        return Observation(result.bad, result.detail, crashed=result.bad)
