"""Oracles: a candidate (node set) in, a verdict out.

Two kinds, one interface (``judge(candidate) -> Observation``, ``calls``, ``can_mark``,
``mark_all``, ``describe()``):

- :class:`NumericOracle` compares a test side with reference values computed once
  (one reference run of the whole model with every tensor marked, per input sample).
  The test side is a backend (``--test fp16``) or a second model run on the reference
  backend (``--against B.onnx``; tensors matched by name). Subgraphs are fed the
  reference values of their inputs for *every* sample, so a node is judged on exactly
  the data it sees in the full model.
- :class:`CommandOracle` runs a shell command (``--check "CMD {model}"``); the exit
  status is the verdict. For crashes and parser errors, where there is nothing to compare.

Oracles hold no search state; the strategy decides what to ask and the driver caches
verdicts, so an oracle is never asked the same question twice.
"""

from __future__ import annotations

import logging
import shlex
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import onnx

from surgeon import model as model_io
from surgeon import comparison as compare
from surgeon.debug.bisect import extract
from surgeon.debug.bisect.strategy import Candidate
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


def _tol_ratio(ref: Any, test: Any, atol: float, rtol: float) -> float:
    """The worst ``|test - ref| / (atol + rtol*|ref|)`` over finite elements: how many
    tolerances off a tensor is, comparable across tensors of any scale (> 1: outside)."""
    if not isinstance(ref, np.ndarray) or not isinstance(test, np.ndarray) or ref.shape != test.shape or not ref.size:
        return 0.0
    if ref.dtype.kind not in "fc" or test.dtype.kind not in "fc":
        return 0.0
    r, t = ref.astype(np.float64), test.astype(np.float64)
    both = np.isfinite(r) & np.isfinite(t)
    if not both.any():
        return 0.0
    bound = atol + rtol * np.abs(r[both])
    err = np.abs(t[both] - r[both])
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(bound > 0, err / np.where(bound > 0, bound, 1.0), np.where(err > 0, np.inf, 0.0))
    return float(ratio.max())


class NumericOracle:
    """Test side vs reference values, elementwise with explicit tolerances."""

    can_mark = True

    def __init__(self, view: extract.GraphView, ref_values: Sequence[Mapping[str, Any]], types: Mapping[str, onnx.TypeProto],
                 *, test: Any, against: onnx.ModelProto | None = None, atol: Any = None, rtol: Any = None,
                 nan_equal: bool = False, block_size: int = 32, against_label: str = "B"):
        self.view = view
        self.ref = ref_values
        self.types = types
        self.test = test
        self.against = against
        self.against_label = against_label
        self.atol, self.rtol, self.nan_equal = atol, rtol, nan_equal
        self.block_size = max(1, block_size)
        self.mark_all = not getattr(test, "fuses", True)
        self.calls = 0
        self._b_names: set[str] | None = None
        if against is not None:
            g = against.graph
            self._b_names = {o for n in g.node for o in n.output if o} | {i.name for i in g.input}

    def describe(self) -> str:
        side = f"{self.against_label} on {self.test.describe()}" if self.against is not None else self.test.describe()
        return f"{side} vs reference values"

    # -- running ----------------------------------------------------------------------------

    def _run(self, model: onnx.ModelProto, feeds_per_sample: list[dict[str, Any]], want: Sequence[str]) -> tuple[list[dict], str | None]:
        self.calls += 1
        try:
            sess = self.test.session(model)
            return [sess.run(f) for f in feeds_per_sample], None
        except BackendError as exc:
            return [], str(exc)

    def _compare(self, outs: list[dict], names: Sequence[str]) -> list[dict]:
        failing: dict[str, dict] = {}
        for i, (ref, got) in enumerate(zip(self.ref, outs)):
            want = {n: ref[n] for n in names if n in ref}
            for d in compare.diff_outputs(want, got, atol=self.atol, rtol=self.rtol, nan_equal=self.nan_equal):
                if not d.passed and d.name not in failing:
                    failing[d.name] = _diff_summary(d, i)
        return sorted(failing.values(), key=_severity, reverse=True)

    def _graph_feeds(self) -> list[dict[str, Any]]:
        names = self.view.input_names if self.against is None else [i.name for i in self.against.graph.input]
        return [{n: s[n] for n in names if n in s} for s in self.ref]

    def judge(self, cand: Candidate) -> Observation:
        return self._mark(cand.nodes) if cand.kind == "mark" else self._subgraph(cand.nodes)

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
        model, inputs, outputs = self.view.subgraph_model(nodes, self.types)
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
        diffs = self._compare(outs, outputs)
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
    """A shell command decides: exit status 0 = passes, anything else = fails.

    ``{model}`` is replaced by the candidate's path and ``{inputs}`` (optional) by a
    ``.npz`` of the reference values for the candidate's inputs, one entry per sample.
    """

    can_mark = False
    mark_all = False

    def __init__(self, view: extract.GraphView, command: str, ref_values: Sequence[Mapping[str, Any]],
                 types: Mapping[str, onnx.TypeProto], *, timeout: float | None = None, workdir: str | None = None):
        self.view = view
        self.command = command
        self.ref = ref_values
        self.types = types
        self.timeout = timeout
        self.workdir = workdir
        self.calls = 0

    def describe(self) -> str:
        return f"shell command: {self.command}"

    def judge(self, cand: Candidate) -> Observation:
        model, inputs, _ = self.view.subgraph_model(cand.nodes, self.types)
        with tempfile.TemporaryDirectory(prefix="surgeon-check-", dir=self.workdir) as d:
            path = Path(d) / "candidate.onnx"
            model_io.save(model, path)
            subst = {"model": shlex.quote(str(path))}
            if "{inputs}" in self.command:
                from surgeon import input_files

                ipath = Path(d) / "inputs.npz"
                input_files.save_inputs(ipath, [{n: s[n] for n in inputs if n in s} for s in self.ref])
                subst["inputs"] = shlex.quote(str(ipath))
            cmd = self.command
            for key, value in subst.items():
                cmd = cmd.replace("{" + key + "}", value)
            self.calls += 1
            try:
                proc = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=self.timeout, cwd=d)
            except subprocess.TimeoutExpired:
                return Observation(True, f"the check command ran past {self.timeout:g} s", crashed=True)
        if proc.returncode == 0:
            return Observation(False, "the check command exits 0")
        tail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        return Observation(True, f"exit status {proc.returncode}" + (f": {tail[-1][:200]}" if tail else ""), crashed=True)
