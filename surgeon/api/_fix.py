"""``surgeon.fix``: the verified pass pipeline, from a file or a model in memory."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from surgeon.api._common import check_outputs, write_report
from surgeon.errors import BackendError, SurgeonError, UsageError


@dataclass
class FixResult:
    """The fixed model and its report; unpacks as ``model, report = surgeon.fix(...)``.

    ``profile`` is the latency of the output against the input (``profile=True``), or
    ``profile_error`` says why it could not be timed: the fix stands either way.
    """

    model: Any  # surgeon.graph.Model (edited in place) or onnx.ModelProto
    report: Any  # surgeon.pipeline.FixReport
    output: str | None = None
    profile: Any = None  # surgeon.debug.profile.result.Comparison
    profile_error: str | None = None
    profile_on: str | None = None  # the backend the profile ran on (None: ONNX Runtime CPU)

    def __iter__(self) -> Iterator[Any]:
        yield self.model
        yield self.report

    @property
    def verified(self) -> bool:
        return self.report.verified

    @property
    def verification(self) -> str:
        """``numeric`` (the whole model compared after the changes), ``region`` (some changes
        compared on the region they changed only), ``proof``, or why only structural checks ran."""
        return self.report.verification

    @property
    def verify_mode(self) -> str | None:
        """How outputs were compared: ``whole`` or ``local`` (regions); None without numeric checks.
        ``report.verify_mode_reason`` says why (asked, or what ``auto`` found)."""
        return self.report.verify_mode

    @property
    def unproven(self) -> bool:
        """A pass was rolled back or the output was not verified numerically (``--strict`` fails)."""
        return bool(self.report.rolled_back) or not self.report.verified

    def to_dict(self) -> dict:
        extra = {"profile": self.profile.to_dict()} if self.profile else (
            {"profile": {"error": self.profile_error}} if self.profile_error else {})
        return {**self.report.to_dict(), **extra}


VERIFY_MODES = ("auto", "whole", "local")  # surgeon.verify_mode.MODES, without importing onnx here


def _lean_session(exported: Any):
    """The session that checks loaded inputs: memory-lean (weights are run inputs), and a
    model with more weights than a slice runs a slice at a time (surgeon.staged), so a
    multi-GB model is never held whole; None when ONNX Runtime cannot load it (the
    verifier then says so)."""
    from surgeon import backends, staged

    backend = backends.create("onnxrt", optimization="basic", memory_lean=True)
    try:
        session = backend.session(exported)  # loads at all? (no weight is read here)
    except BackendError:
        return None
    return staged.Probe(staged.Session(backend, exported, session).run)  # its outputs are the verifier's reference


def read_exclusions(path: str | os.PathLike | None) -> frozenset[str]:
    """A file of ``PASS:RULE:NODE`` rewrite keys, one a line (``#`` comments)."""
    if not path:
        return frozenset()
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise SurgeonError(f"cannot read the exclusion list '{path}': {exc.strerror}") from exc
    return frozenset(l.strip() for l in lines if l.strip() and not l.startswith("#"))


def fix(
    model: Any,
    passes: str | Sequence[str] | None = None,
    *,
    output: str | os.PathLike | None = None,
    report: str | os.PathLike | None = None,
    verify: bool | str = True,
    strict: bool = False,
    input_shapes: Mapping[str, tuple[int, ...]] | None = None,
    samples: list[dict[str, Any]] | None = None,
    value_ranges: Mapping[str, tuple[float, float]] | None = None,
    load_inputs: str | os.PathLike | None = None,
    seed: int = 0,
    atol: Any = None,
    rtol: Any = None,
    fix_shapes: bool = False,
    freeze_initializer_inputs: bool = False,
    rounds: int = 2,
    bisect_limit: int | None = None,
    exclude: frozenset[str] | set[str] = frozenset(),
    exclude_file: str | os.PathLike | None = None,
    only: frozenset[str] | set[str] | None = None,
    rules: Sequence[str] = (),
    target_opset: int | None = None,
    options: Mapping[str, Any] | None = None,
    profile: bool = False,
    profile_on: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> FixResult:
    """Run a verified pass pipeline over ``model`` and return a :class:`FixResult`.

    ``model``: a path (opened with memory-mapped weights, never modified), an
    ``onnx.ModelProto`` (not modified; a new one is returned) or a
    :class:`surgeon.graph.Model` (edited in place, so its weights are never copied).
    ``passes``: names or ``"a,b,c"`` (None: the default pipeline). With ``output`` the
    result is saved atomically (with external data when the input had it) and, with
    ``report``, the JSON report too. ``load_inputs`` verifies on the samples of an .npz or
    Polygraphy JSON file, which must fit the model; ``value_ranges`` sets the values of
    generated samples for the inputs it names (``{'': (lo, hi)}`` for all). ``profile`` then times input and output
    on ONNX Runtime CPU (or on the backend ``profile_on``, e.g. ``onnxrt-cuda``). ``strict`` only checks that verification is on; whether the result
    is proven is :attr:`FixResult.unproven`. ``freeze_initializer_inputs``: initializers listed as
    graph inputs (defaults a user may override) become plain constants first, so passes may fold them.
    ``verify``: ``"whole"`` compares the whole model's outputs after the changes, ``"local"`` each
    change on the region it changed (on values recorded from the input model), ``"auto"`` (or
    True) regions where a whole-model run would not fit in memory or is heavy; False checks
    structure only. :attr:`FixResult.verify_mode` says which way ran (docs/large-models.md).
    """
    from surgeon import model as model_io
    from surgeon.pipeline import registry
    from surgeon.pipeline.runner import fix as run_pipeline

    names = registry.fix_pipeline(list(passes) if passes is not None and not isinstance(passes, str) else passes,
                                  target_opset=target_opset)
    if verify is True:
        verify = "auto"
    if verify is not False and verify not in VERIFY_MODES:
        raise UsageError(f"{{0}} is one of {', '.join(VERIFY_MODES)} (or False), not {verify!r}", "verify")
    if strict and not verify:
        raise UsageError("{0} asks for numeric verification, which {1} turns off; give one of them", "strict", "verify=False")
    if profile_on and not profile:
        raise UsageError("{0} goes with {1}", "profile_on", "profile")
    if profile_on:  # a backend that cannot run here is refused before the fix, not after
        from surgeon.debug.profile import check_backend

        check_backend(profile_on, runnable=True)
    path = model if isinstance(model, (str, os.PathLike)) else None
    if path is not None:
        if output is not None:
            check_outputs(path, output)
        check_outputs(path, report)
        model = model_io.open_model(path)
    elif output is None and (report is not None or profile):
        raise UsageError("a report or a profile of the fix needs the model written to an output path")
    label = f"'{path}'" if path is not None else "the model"
    reference_outputs = None
    if load_inputs:  # data that does not fit the input model is a usage error, not a silent skip
        from surgeon import input_files
        from surgeon.input_data import check_feeds

        exported = model.export() if hasattr(model, "export") else model
        skeleton = getattr(exported, "skeleton", exported)
        checked = _lean_session(exported)
        samples = check_feeds(skeleton, input_files.load_inputs(load_inputs), label, session=checked)
        if checked is not None:  # the check ran the input model on them: the verifier need not again
            reference_outputs = checked.ran_on(samples)
    opts = dict(options or {})
    if rules or path is not None:
        opts.setdefault("rules", list(rules))
    if target_opset is not None or path is not None:
        opts.setdefault("target_opset", target_opset)
    exclusions = frozenset(exclude) | read_exclusions(exclude_file)
    fixed, fix_report = run_pipeline(
        model, names, verify=verify is not False, verify_mode=verify or "auto", reference_outputs=reference_outputs,
        input_shapes=input_shapes, samples=samples, seed=seed, atol=atol, rtol=rtol,
        value_ranges=value_ranges, fix_shapes=fix_shapes, freeze_initializer_inputs=freeze_initializer_inputs,
        rounds=rounds, bisect_limit=bisect_limit, exclude=exclusions, only=only,
        options=opts, progress=progress,
    )
    result = FixResult(fixed, fix_report, profile_on=profile_on)
    if output is not None:
        # Keep the input's layout: a model that came with external data is saved with it.
        external = True if getattr(model, "source_external", False) else None
        model_io.save(fixed, output, external=external)
        result.output = str(output)
    if profile:
        from surgeon.debug.profile import fix_summary

        say = progress or (lambda _m: None)
        try:
            result.profile = fix_summary(path if path is not None else model, output, samples=samples,
                                         input_shapes=input_shapes, seed=seed,
                                         progress=lambda msg: say(f"timing: {msg}"), backend=profile_on or "onnxrt")
        except SurgeonError as exc:  # the fix itself stands; only the timing could not be done
            result.profile_error = str(exc)
    write_report(report, result.to_dict())
    return result
