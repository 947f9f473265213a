"""``surgeon.bisect``: the first node where a backend (or a second model) goes wrong, and a
minimal failing subgraph, written as a repro bundle."""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from surgeon.api._common import input_samples
from surgeon.errors import UsageError


@dataclass
class BisectOutcome:
    """What ``surgeon.bisect`` found: the search result, the report written to
    ``outdir/report.json`` (``to_dict()``), and the folder."""

    result: Any  # surgeon.debug.bisect.BisectResult
    report: dict
    outdir: Path

    @property
    def failed(self) -> bool:
        """The full model fails (and a reduced repro was written)."""
        return bool(self.result.failed)

    def to_dict(self) -> dict:
        return self.report


def bisect_tolerances(atol: Any, rtol: Any, test_backend: Any) -> tuple[Any, Any]:
    """The given tolerances, else the looser defaults of the precision the test backend computes in."""
    if test_backend is not None and atol is None and rtol is None:
        from surgeon.comparison import DEFAULT_TOLERANCES
        from surgeon.debug.compare_run import backend_precision

        precision = backend_precision(test_backend)
        if precision in DEFAULT_TOLERANCES:
            atol, rtol = DEFAULT_TOLERANCES[precision]
    return atol, rtol


def repro_command(*, check: str | None, test: str | None, ref: str, atol: Any, rtol: Any, nan_equal: bool,
                  fp16_keep: Sequence[str], check_timeout: float = 600.0) -> str:
    """The command that reproduces the failure on the bundle's reduced model."""
    if check:
        from surgeon.debug.check_command import CheckCommand

        return CheckCommand(check, check_timeout).repro()
    parts = ["surgeon", "compare", "reduced.onnx"]
    parts += ["--test", test] if test else ["--against", "reduced_against.onnx"]
    parts += ["--ref", ref, "--load-inputs", "inputs.npz"]
    for flag, value in (("--atol", atol), ("--rtol", rtol)):
        if isinstance(value, (int, float)):
            parts += [flag, f"{value:g}"]
    if nan_equal:
        parts.append("--nan-equal")
    if fp16_keep:
        parts += ["--fp16-keep", *fp16_keep]
    return " ".join(shlex.quote(p) for p in parts)


def bisect(
    model: str | os.PathLike,
    *,
    outdir: str | os.PathLike,
    test: str | None = None,
    against: str | os.PathLike | None = None,
    check: str | None = None,
    ref: str = "onnxrt",
    test_options: Mapping[str, Any] | None = None,
    load_inputs: str | os.PathLike | None = None,
    save_inputs: str | os.PathLike | None = None,
    input_shapes: Mapping[str, tuple[int, ...]] | None = None,
    value_ranges: Mapping[str, tuple[float, float]] | None = None,
    iterations: int = 1,
    seed: int = 0,
    atol: Any = None,
    rtol: Any = None,
    nan_equal: bool = False,
    block_size: int = 32,
    check_timeout: float = 600.0,
    max_context: int = 16,
    trt_engine: str = "auto",
    target_cc: Sequence[str] = (),
    progress: Callable[[str], None] | None = None,
) -> BisectOutcome:
    """Confirm that ``model`` fails, find the first diverging node, reduce to a minimal
    failing subgraph, and write the bundle (reduced.onnx, inputs.npz, expected.npz,
    report.json, REPRO.md) into ``outdir``.

    The oracle is one of: a ``test`` backend against ``ref``; a second model ``against``
    (tensors matched by name); or a ``check`` shell command (exit 0 = good; ``{model}`` and
    ``{inputs}`` are substituted; ``"trt-build"`` = TensorRT must parse and build it).
    A full model that passes writes only report.json; :attr:`BisectOutcome.failed` says which.
    """
    import surgeon
    from surgeon import backends
    from surgeon.debug.bisect import artifacts, bisect_model, repro_text
    from surgeon.report import write_json

    if block_size < 1:
        raise UsageError("{0} must be at least 1", "block_size")
    if max_context < 0:
        raise UsageError("{0} must be 0 or more", "max_context")
    test_backend = backends.create(test, **dict(test_options or {})) if test else None
    oracle_check: Any = check
    if check == "trt-build":  # built-in oracle (trt-check): one TensorRT worker for the whole search
        from surgeon.debug.trt_check.bisect_oracle import TrtBuildCheck

        oracle_check = TrtBuildCheck(trt_engine, list(target_cc))
    elif trt_engine != "auto" or target_cc:
        raise UsageError("{0} and {1} apply to {2} only", "trt_engine", "target_cc", "check=trt-build")
    loaded = surgeon.load(model)
    against_model = surgeon.load(against) if against else None
    ref_backend = backends.create(ref)
    samples = input_samples(loaded, str(model), load_inputs=load_inputs, save_inputs=save_inputs,
                            input_shapes=input_shapes, value_ranges=value_ranges, iterations=iterations, seed=seed,
                            reference=ref)
    atol, rtol = bisect_tolerances(atol, rtol, test_backend)
    out = artifacts.prepare_outdir(str(outdir))
    try:
        result = bisect_model(loaded, samples, ref=ref_backend, test=test_backend if test_backend is not None else ref_backend,
                              against=against_model, against_label=str(against) if against else "B", check=oracle_check,
                              atol=atol, rtol=rtol, nan_equal=nan_equal, block_size=block_size, timeout=check_timeout,
                              outdir=out, max_context=max_context, progress=progress)
    finally:
        if hasattr(oracle_check, "close"):
            oracle_check.close()
    report = {"model": str(model), "tolerance": {"atol": atol, "rtol": rtol}, **result.to_dict()}
    if not result.failed:
        write_json(str(out / "report.json"), report)
        return BisectOutcome(result, report, out)
    if hasattr(oracle_check, "repro_command"):
        command = oracle_check.repro_command()
    else:
        command = repro_command(check=check, test=test, ref=ref, atol=atol, rtol=rtol, nan_equal=nan_equal,
                                fp16_keep=list((test_options or {}).get("keep", ())) if test == "fp16" else [],
                                check_timeout=check_timeout)
    report["repro"] = command
    artifacts.write_bundle(out, reduced=result.reduced_model, inputs=result.inputs, expected=result.expected,
                           ref_name=ref, report=report, repro=repro_text(result, command, model_path=str(model)),
                           against=result.reduced_against)
    return BisectOutcome(result, report, out)
