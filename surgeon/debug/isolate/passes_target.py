"""Isolate adapter: which of our own rewrite applications make the fixed model diverge.

LLVM's opt-bisect, applied to surgeon's pipeline: every rewrite a pass makes is asked
for through ``ctx.permit`` and numbered (:class:`surgeon.pipeline.base.RewriteBudget`).
A first full run, *without* the pipeline's own verification (which would roll a broken
pass back and hide it), lists the applications that were made; they are the choices.
A candidate re-runs the pipeline allowing only a subset of them (``fix(..., only=keys)``)
and compares the result with the *input* model on the user's samples.

Choices are identified by their stable key ``pass:rule:node`` rather than by index,
because indices shift as soon as an earlier rewrite is skipped; a key seen in several
rounds is one choice. The culprit keys are exactly what ``surgeon fix --exclude-rewrites``
reads.
"""

from __future__ import annotations

from typing import Any, Mapping

import onnx

from surgeon import backends
from surgeon.debug.isolate.ddmin import Subset, Verdict
from surgeon.debug.isolate.judge import judge
from surgeon.errors import UsageError
from surgeon.pipeline import runner


class PassesTarget:
    """Oracle over rewrite applications: allowed subset → does the fixed model still match?"""

    name = "passes"

    def __init__(
        self,
        model: onnx.ModelProto,
        samples: list[dict[str, Any]],
        *,
        passes: str | list[str] | None = None,
        options: Mapping[str, Any] | None = None,
        backend: str = "onnxrt-noopt",
        atol: float | Mapping[str, float] | None = None,
        rtol: float | Mapping[str, float] | None = None,
        nan_equal: bool = False,
        rounds: int = 2,
        exclude: frozenset[str] = frozenset(),
    ):
        if not samples:
            raise UsageError("isolate needs at least one input sample")
        self.model, self.samples = model, samples
        self.passes, self.options, self.rounds = passes, dict(options or {}), rounds
        self.atol, self.rtol, self.nan_equal = atol, rtol, nan_equal
        self.exclude = frozenset(exclude)
        self.backend = backends.create(backend)
        self.reference = [self.backend.session(model).run(f) for f in samples]
        _, report = self._fix(None)
        self.applications: dict[str, dict[str, Any]] = {}
        for app in report.applications:
            if app["applied"]:
                key = f"{app['pass_name']}:{app['rule']}:{app['node']}"
                self.applications.setdefault(key, app)
        self.choices = list(self.applications)
        self.mechanism = (f"surgeon rewrite budget (only= subsets of {len(self.choices)} applications), "
                          f"fixed model vs input model on {self.backend.describe()}")

    def _fix(self, only: frozenset[str] | None):
        return runner.fix(self.model, self.passes, verify=False, options=self.options, rounds=self.rounds,
                          only=only, exclude=self.exclude)

    def candidate(self, subset: Subset) -> onnx.ModelProto:
        model, _ = self._fix(frozenset(self.choices[i] for i in subset))
        return model

    def __call__(self, subset: Subset) -> Verdict:
        return judge(subset, lambda: self.backend.session(self.candidate(subset)), self.samples, self.reference,
                     atol=self.atol, rtol=self.rtol, nan_equal=self.nan_equal)

    def describe(self, index: int) -> dict[str, Any]:
        app = self.applications[self.choices[index]]
        return {"key": self.choices[index], "index": app["index"], "pass": app["pass_name"], "rule": app["rule"],
                "node": app["node"]}

    def label(self, index: int) -> str:
        app = self.applications[self.choices[index]]
        return f"#{app['index']} {app['pass_name']} / {app['rule']} @ {app['node']}"

    def write_avoid(self, culprits: Subset, art) -> tuple[str, str]:
        """``exclude-rewrites.txt``: the culprit keys, for ``surgeon fix --exclude-rewrites``."""
        lines = ["# rewrites found by surgeon isolate --target passes; pass to surgeon fix --exclude-rewrites"]
        lines += [self.choices[i] for i in culprits]
        path = art.write_text("exclude-rewrites.txt", "\n".join(lines) + "\n")
        return str(path), f"surgeon fix MODEL -o OUT.onnx --exclude-rewrites {path}"
