"""The surgeon command line: parse arguments, call surgeon's API, print, exit.

Exit codes: 0 success / match, 1 a verdict of failure (mismatch, or a rolled-back pass
under --strict), 2 usage or input error (one sentence on stderr, never a traceback), 3 a
bug in surgeon (one sentence too; ``-v`` shows the traceback).
Each subcommand has an ``_add_<name>`` function that builds its parser and a ``_cmd_<name>``
function that runs it.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from surgeon.errors import SurgeonError

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit code 2 (no usage dump)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"surgeon: error: {message} (see '{self.prog} --help')\n")


def _tol_arg(text: str) -> tuple[str | None, float]:
    """``1e-3`` (global) or ``NAME:1e-3`` (one output)."""
    name, _, value = text.rpartition(":")
    try:
        v = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a tolerance (NUMBER or OUTPUT:NUMBER)") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"tolerance '{text}' is negative")
    return (name or None), v


def _tolerances(values: list[tuple[str | None, float]] | None) -> float | dict[str, float] | None:
    """Global value, or per-output dict; a global given with per-output ones fills the rest."""
    if not values:
        return None
    glob = [v for n, v in values if n is None]
    per = {n: v for n, v in values if n is not None}
    if not per:
        return glob[-1]
    return _PerOutput(per, glob[-1] if glob else None)


class _PerOutput(dict):
    """Per-output tolerances with a fallback used for outputs not named."""

    def __init__(self, values: dict[str, float], default: float | None):
        super().__init__(values)
        self.default = default

    def get(self, key, default=None):  # type: ignore[override]
        return super().get(key, self.default if default is None else default)


def _add_common_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input-shapes", nargs="+", metavar="NAME:1x3x224x224", default=[],
                   help="shapes for inputs (also NAME:[1,3,224,224]); dynamic dims not named get generated sizes")
    p.add_argument("--atol", type=_tol_arg, action="append", metavar="[OUT:]A", help="absolute tolerance, global or per output")
    p.add_argument("--rtol", type=_tol_arg, action="append", metavar="[OUT:]R", help="relative tolerance, global or per output")
    p.add_argument("--seed", type=int, default=0, help="seed for generated inputs (default 0)")


def _add_data_args(p: argparse.ArgumentParser) -> None:
    """Input-data and tolerance options shared by compare, doctor, bisect, scan and isolate."""
    _add_common_model_args(p)
    p.add_argument("--val-range", nargs="+", default=[], metavar="NAME:[LO,HI]", help="value range for generated inputs")
    p.add_argument("--iterations", type=int, default=1, help="number of input samples (default 1)")
    p.add_argument("--load-inputs", metavar="FILE", help="inputs from .npz or Polygraphy JSON (polygraphy run --save-inputs)")
    p.add_argument("--save-inputs", metavar="FILE", help="write the inputs used (.npz or .json, Polygraphy's format)")
    p.add_argument("--nan-equal", action="store_true", help="count NaN in both runs at the same place as a match")


def _samples_from_args(args, model, runs=None) -> list:
    """The input samples a debug command runs on: loaded from a file, or generated and seeded.

    A loaded file must fit the model (names, kinds, dtypes, ranks, static dims, integer
    ranges, and one run on the reference backend): otherwise one line and exit 2.
    """
    from surgeon import input_files
    from surgeon.input_data import check_feeds, make_samples, parse_shape_args, parse_value_ranges

    if getattr(args, "load_inputs", None):
        feeds = input_files.load_inputs(args.load_inputs)
        feeds = check_feeds(model, feeds, f"'{args.model}'", session=_reference_session(args, model))
    else:
        feeds = make_samples(
            model, input_shapes=parse_shape_args(args.input_shapes),
            value_ranges=parse_value_ranges(args.val_range), iterations=args.iterations,
            seed=args.seed, runs=runs,
        )
    if getattr(args, "save_inputs", None):
        input_files.save_inputs(args.save_inputs, feeds)
    return feeds


def _reference_session(args, model):
    """A session of the command's reference backend for checking loaded inputs, or None
    when it cannot load the model (the command then reports that itself)."""
    from surgeon import backends
    from surgeon.errors import BackendError

    name = getattr(args, "ref", None) or "onnxrt"
    try:
        return backends.create(name).session(model)
    except BackendError:
        return None


# --- fix -----------------------------------------------------------------------------

def _add_fix(sub) -> None:
    p = sub.add_parser("fix", help="run a verified pass pipeline over a model and save the result")
    p.add_argument("model", help="input .onnx file (never modified)")
    p.add_argument("-o", "--output", required=True, help="output .onnx file (written atomically)")
    p.add_argument("--passes", help="comma-separated pass names (default: the default pipeline; see 'surgeon passes')")
    _add_output_args(p)
    p.add_argument("--no-verify", action="store_true", help="skip numeric verification (structural checks still run)")
    p.add_argument("--strict", action="store_true",
                   help="exit 1 when any pass was rolled back or the output could not be verified numerically")
    p.add_argument("--fix-shapes", action="store_true", help="write --input-shapes into the saved model")
    p.add_argument("--rounds", type=int, default=2, help="repeat the pipeline until nothing changes, at most this often")
    p.add_argument("--rules", nargs="+", default=[], metavar="RULES.py", help="user rule files for replace-custom-ops")
    p.add_argument("--bisect-limit", type=int, metavar="N", help="apply only the first N rewrites (opt-bisect)")
    p.add_argument("--exclude-rewrites", metavar="FILE", help="file of PASS:RULE:NODE rewrite keys not to apply")
    p.add_argument("--load-inputs", metavar="FILE",
                   help="verify on these inputs (.npz or Polygraphy JSON) instead of generated ones")
    p.add_argument("--val-range", nargs="+", default=[], metavar="NAME:[LO,HI]",
                   help="value range for generated verification inputs (overrides the inferred one)")
    p.add_argument("--target-opset", type=_opset_arg, metavar="N",
                   help="first raise the default-domain opset to N (pass upgrade-opset; never downgrades)")
    p.add_argument("--profile", action="store_true",
                   help="then time the input and the output on ONNX Runtime CPU (1 thread, 50 interleaved runs) and print the change")
    _add_common_model_args(p)
    p.set_defaults(func=_cmd_fix)


def _opset_arg(text: str) -> int:
    """``--target-opset N``: an opset onnx knows (the upgrade pass refuses downgrades itself)."""
    import onnx.defs

    latest = onnx.defs.onnx_opset_version()
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not an opset number") from None
    if not 1 <= n <= latest:
        raise argparse.ArgumentTypeError(f"opset {n} is not one onnx {onnx.__version__} knows (1..{latest})")
    return n


def _read_exclusions(path: str | None) -> frozenset[str]:
    if not path:
        return frozenset()
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise SurgeonError(f"cannot read the exclusion list '{path}': {exc.strerror}") from exc
    return frozenset(l.strip() for l in lines if l.strip() and not l.startswith("#"))


def _cmd_fix(args) -> int:
    import surgeon
    from surgeon import model as model_io
    from surgeon.input_data import parse_shape_args, parse_value_ranges
    from surgeon.errors import UsageError
    from surgeon.fix_report import render_fix

    shapes = parse_shape_args(args.input_shapes)
    value_ranges = parse_value_ranges(args.val_range)
    passes = surgeon.pipeline.registry.parse_pipeline(args.passes)
    if args.strict and args.no_verify:
        raise UsageError("--strict asks for numeric verification, which --no-verify turns off; give one of them")
    if args.target_opset is not None and "upgrade-opset" not in passes:
        passes = ["upgrade-opset", *passes]  # the opset is raised before anything else looks at the model
    model_io.check_output_path(args.model, args.output)
    if args.report:
        model_io.check_output_path(args.model, args.report)
    model = model_io.open_model(args.model)
    samples = None
    if args.load_inputs:  # data that does not fit the input model is a usage error, not a silent skip
        from surgeon import input_files
        from surgeon.input_data import check_feeds

        exported = model.export()
        samples = check_feeds(exported.skeleton, input_files.load_inputs(args.load_inputs), f"'{args.model}'",
                              session=_reference_session(args, exported))
    from surgeon.report import Progress

    with Progress("running passes") as status:
        fixed, report = surgeon.fix(
            model, passes, verify=not args.no_verify, input_shapes=shapes, samples=samples, seed=args.seed,
            value_ranges=value_ranges, atol=_tolerances(args.atol), rtol=_tolerances(args.rtol), fix_shapes=args.fix_shapes,
            rounds=args.rounds, bisect_limit=args.bisect_limit, exclude=_read_exclusions(args.exclude_rewrites),
            options={"rules": args.rules, "target_opset": args.target_opset}, progress=lambda msg: status.update(msg),
        )
    # Keep the input's layout: a model that came with external data is saved with it.
    surgeon.save(fixed, args.output, external=True if model.source_external else None)
    speed = speed_error = None
    if args.profile:  # surgeon profile's API on the two files; see _cmd_profile
        from surgeon.debug.profile import fix_summary

        with Progress("timing input and output") as status:
            try:
                speed = fix_summary(args.model, args.output, samples=samples, input_shapes=shapes, seed=args.seed,
                                    progress=lambda msg: status.update(f"timing: {msg}"))
            except SurgeonError as exc:  # the fix itself stands; only the timing could not be done
                speed_error = str(exc)
    extra = {"profile": speed.to_dict()} if speed else ({"profile": {"error": speed_error}} if speed_error else {})
    out = _emit(args, {**report.to_dict(), **extra})
    render_fix(report, out, _stderr_console())
    if speed:
        out.print(f"{speed.headline()} on ONNX Runtime CPU, 1 thread; {speed.noise_line()}", markup=False)
    if speed_error:
        print(f"surgeon: --profile: not timed: {speed_error}", file=sys.stderr)
    unproven = report.rolled_back or not report.verified
    return EXIT_FAIL if (args.strict and unproven) else EXIT_OK


# --- passes ----------------------------------------------------------------------------

def _add_passes(sub) -> None:
    p = sub.add_parser("passes", help="list the available passes")
    p.set_defaults(func=_cmd_passes)


def _cmd_passes(args) -> int:
    from surgeon.pipeline import registry
    from surgeon.report import table

    default = registry.default_pipeline()
    order = {name: i for i, name in enumerate(default)}  # pipeline order first, then the rest by name
    passes = sorted(registry.all_passes().items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0]))
    rows = [[name, "yes" if name in order else "", cls.summary] for name, cls in passes]
    _stdout_console().print(table(None, ["pass", "default", "summary"], rows))
    return EXIT_OK


# --- match (replace-custom-ops) -----------------------------------------------------

def _add_match(sub) -> None:
    p = sub.add_parser("match", help="list what replace-custom-ops rules would replace (writes nothing)")
    p.add_argument("model", help="input .onnx file")
    p.add_argument("--rules", nargs="+", default=[], metavar="RULES.py", help="user rule files (tried before the built-in packs)")
    p.add_argument("--no-builtin", action="store_true", help="leave out the built-in rule packs (contrib ops, LayerNorm)")
    _add_output_args(p)
    p.set_defaults(func=_cmd_match)


def _cmd_match(args) -> int:
    import surgeon
    from surgeon.pipeline import registry
    from surgeon.report import table
    from surgeon.rewrite import find_matches

    model = surgeon.load(args.model)
    if args.report:
        surgeon.model.check_output_path(args.model, args.report)
    rules = registry.get("replace-custom-ops").collect_rules({"rules": args.rules, "builtin_rules": not args.no_builtin})
    report = find_matches(model, rules)
    out = _emit(args, report.to_dict())
    rows = [[f.graph, f.node, f.op, f.rule, "would replace" if f.status == "replace" else f.status,
             ", ".join(f.inputs), ", ".join(f.outputs), f.reason] for f in report.findings]
    out.print(table(f"surgeon match ({len(rules)} rules)", ["graph", "node", "op", "rule", "result", "inputs", "outputs",
                                                            "reason"], rows))
    replaced = sum(f.status == "replace" for f in report.findings)
    out.print(f"{replaced} replacement(s), {len(report.findings) - replaced} refusal(s)", markup=False)
    for op, n in report.untouched.items():
        out.print(f"untouched custom op: {op} x{n}", markup=False)
    return EXIT_OK


# --- compare / doctor ---------------------------------------------------------------

def _add_backend_args(p: argparse.ArgumentParser) -> None:
    """Options of the test backend (each applies to the backends named in its help)."""
    p.add_argument("--fp16-keep", nargs="+", default=[], metavar="OPTYPE/NODE",
                   help="fp16: op types or node names kept in float32 (like TensorRT per-layer precision)")
    for flag in ("fp16", "bf16", "int8", "tf32"):
        p.add_argument(f"--{flag}", action="store_true", help=f"trt: enable {flag.upper()} in the engine")
    for which in ("min", "opt", "max"):
        p.add_argument(f"--trt-{which}-shapes", nargs="+", default=[], metavar="NAME:1x3x224x224",
                       help=f"trt: {which} shapes of the optimization profile")
    p.add_argument("--save-engine", metavar="FILE", help="trt: write the built engine")
    p.add_argument("--load-engine", metavar="FILE", help="trt: run this engine instead of building one")


def _backend_options(args, name: str | None) -> dict:
    """Keyword options for ``backends.create(name, ...)``; options for another backend are an error."""
    from surgeon import input_data
    from surgeon.errors import UsageError

    given = {"--fp16-keep": bool(args.fp16_keep), "--fp16": args.fp16, "--bf16": args.bf16, "--int8": args.int8,
             "--tf32": args.tf32, "--trt-*-shapes": bool(args.trt_min_shapes or args.trt_opt_shapes or args.trt_max_shapes),
             "--save-engine": bool(args.save_engine), "--load-engine": bool(args.load_engine)}
    allowed = {"fp16": {"--fp16-keep"}, "trt": set(given) - {"--fp16-keep"}, "trt-rtx": set(given) - {"--fp16-keep"}}
    wrong = [flag for flag, on in given.items() if on and flag not in allowed.get(name or "", set())]
    if wrong:
        raise UsageError(f"{wrong[0]} does not apply to {'--test ' + name if name else 'a comparison without --test'}")
    if name == "fp16":
        return {"keep": list(args.fp16_keep)} if args.fp16_keep else {}
    if name not in ("trt", "trt-rtx"):
        return {}
    opts: dict = {k: True for k in ("fp16", "bf16", "int8", "tf32") if getattr(args, k)}
    shapes = [input_data.parse_shape_args(getattr(args, f"trt_{w}_shapes")) for w in ("min", "opt", "max")]
    if any(shapes):
        if not all(shapes) or len({frozenset(s) for s in shapes}) != 1:
            raise UsageError("--trt-min-shapes, --trt-opt-shapes and --trt-max-shapes must all name the same inputs")
        opts["profiles"] = [{n: (shapes[0][n], shapes[1][n], shapes[2][n]) for n in shapes[0]}]
    if args.save_engine:
        opts["save_engine"] = args.save_engine
    if args.load_engine:
        opts["load_engine"] = args.load_engine
    return opts


def _check_outputs(model_path: str, *paths: str | None) -> None:
    from surgeon import model as model_io

    for path in paths:
        if path:
            model_io.check_output_path(model_path, path)


def _probe_runs(backend_name: str, model):
    """``runs(feeds)`` for input_data.make_samples: whether the reference backend accepts a feed."""
    from surgeon import backends, input_data

    return input_data.runs_on(backends.create(backend_name).session(model))


def _add_compare(sub) -> None:
    p = sub.add_parser("compare", help="run a model on two backends (or two models) and compare every output")
    p.add_argument("model", help="the .onnx model (run on --ref)")
    p.add_argument("--ref", default="onnxrt", metavar="BACKEND", help="reference backend (default onnxrt)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--test", metavar="BACKEND", help="backend under test: onnxrt-noopt, reference, fp16, trt, trt-rtx")
    which.add_argument("--against", metavar="B.onnx", help="a second model, run on the reference backend")
    _add_data_args(p)
    p.add_argument("--save-outputs", metavar="FILE", help="write both runs' outputs (.npz, or .json: Polygraphy RunResults)")
    _add_output_args(p)
    p.add_argument("--plot", metavar="DIR", help="write one PNG per mismatching output into DIR")
    _add_backend_args(p)
    p.set_defaults(func=_cmd_compare)


def _cmd_compare(args) -> int:
    import surgeon
    from surgeon import backends, input_files
    from surgeon.debug.compare_run import compare, render_compare

    _check_outputs(args.model, args.report, args.save_outputs, args.save_inputs)
    test_options = _backend_options(args, args.test)
    test_backend = backends.create(args.test, **test_options) if args.test else None
    for path, what in ((args.save_inputs, "input data"), (args.save_outputs, "output data"), (args.load_inputs, "input data")):
        if path:
            input_files.check_path(path, what)
    model = surgeon.load(args.model)
    if args.against:
        surgeon.load(args.against)  # a missing or broken second model is an input error before anything runs
    if hasattr(test_backend, "check"):
        test_backend.check(model)
    samples = _samples_from_args(args, model, runs=None if args.load_inputs else _probe_runs(args.ref, model))
    report = compare(args.model, ref=args.ref, test=test_backend, against=args.against, samples=samples,
                     atol=_tolerances(args.atol), rtol=_tolerances(args.rtol), nan_equal=args.nan_equal,
                     plot_dir=args.plot)
    report.model = args.model
    if args.save_outputs:
        runs = {f"ref:{args.ref}": report.runs.get("ref", [])}
        if "test" in report.runs:
            runs[f"test:{args.test or 'against'}"] = report.runs["test"]
        report.notes.extend(input_files.save_outputs(args.save_outputs, runs))
    render_compare(report, _emit(args, report.to_dict()))
    return EXIT_OK if report.passed else EXIT_FAIL


def _add_doctor(sub) -> None:
    p = sub.add_parser("doctor", help="fix a model, then compare the result with the original (and on --test)")
    p.add_argument("model", help="input .onnx file (never modified)")
    p.add_argument("-o", "--output", required=True, help="the fixed model (written atomically)")
    p.add_argument("--passes", help="comma-separated pass names (default: the default pipeline)")
    p.add_argument("--ref", default="onnxrt", metavar="BACKEND", help="reference backend (default onnxrt)")
    p.add_argument("--test", metavar="BACKEND", help="also run on this backend: fp16, reference, trt, ...")
    p.add_argument("--test-original", action="store_true", help="run the original model on --test, not the fixed one")
    _add_output_args(p)
    p.add_argument("--trt", action="store_true", help="also run trt-check on the original and the fixed model: "
                                                      "what the fix made TensorRT accept, and what is still not ready")
    p.add_argument("--trt-engine", default="auto", metavar="ENGINE", help="--trt: auto, trt, trt-rtx or matrix")
    p.add_argument("--target-cc", nargs="+", default=[], metavar="8.6", help="--trt with trt-rtx: build for these compute capabilities")
    _add_data_args(p)
    _add_backend_args(p)
    p.set_defaults(func=_cmd_doctor)


def _cmd_doctor(args) -> int:
    import surgeon
    from surgeon.debug.compare_run import render_compare
    from surgeon.doctor import doctor
    from surgeon.fix_report import render_fix

    _check_outputs(args.model, args.output, args.report, args.save_inputs)
    test_options = _backend_options(args, args.test)
    surgeon.pipeline.registry.parse_pipeline(args.passes)  # unknown pass names fail before any work
    if (args.trt_engine != "auto" or args.target_cc) and not args.trt:
        raise SurgeonError("--trt-engine and --target-cc apply with --trt only")
    trt = {"engine": args.trt_engine, "target_cc": args.target_cc} if args.trt else None
    model = surgeon.load(args.model)
    samples = _samples_from_args(args, model, runs=None if args.load_inputs else _probe_runs(args.ref, model))
    from surgeon.report import Progress

    with Progress("doctor") as status:
        report = doctor(args.model, args.output, passes=args.passes, ref=args.ref, test=args.test,
                        test_options=test_options, test_original=args.test_original, samples=samples,
                        input_shapes=_data_shapes(args), atol=_tolerances(args.atol), rtol=_tolerances(args.rtol),
                        nan_equal=args.nan_equal, seed=args.seed, trt=trt, progress=lambda msg: status.update(msg))
    out = _emit(args, report.to_dict())
    render_fix(report.fix, out)
    for what, comparison in report.comparisons:
        render_compare(comparison, out, title=f"surgeon doctor: {what}")
    if report.trt_after is not None:
        _render_doctor_trt(report, out)
    for suggestion in report.suggestions:
        if args.load_inputs:
            suggestion += f" --load-inputs {args.load_inputs}"
        out.print(f"the FP16 comparison fails: search the FP32 islands it needs with\n  {suggestion}", markup=False,
                  soft_wrap=True)
    verdict = "[bold green]OK[/]" if report.passed else f"[bold red]{report.verdict.upper()}[/]"
    out.print(f"doctor: {verdict}: wrote {args.output}; {len(report.comparisons)} comparison(s), "
              f"{sum(c.passed for _, c in report.comparisons)} matched")
    return EXIT_OK if report.passed else EXIT_FAIL


def _render_doctor_trt(report, out) -> None:
    """doctor --trt: what the fix changed for TensorRT, then the fixed model's trt-check."""
    from surgeon.debug import trt_check
    from surgeon.doctor import resolved_by_fix

    before, after = report.trt_before, report.trt_after
    resolved = resolved_by_fix(before, after)
    out.print(f"trt-check, original: {before.verdict} ({len(before.failures)} failure(s)); fixed: {after.verdict} "
              f"({len(after.failures)} failure(s))", markup=False)
    for item in resolved:
        out.print(f"  resolved by the fix: {item}", markup=False)
    if not after.ready:
        out.print("still not ready after the fix:", markup=False)
    trt_check.render(after, out)


def _data_shapes(args) -> dict:
    from surgeon import input_data

    return input_data.parse_shape_args(args.input_shapes)


# --- bisect / scan --------------------------------------------------------------------

def _add_bisect(sub) -> None:
    p = sub.add_parser("bisect", help="find the first node where a backend (or a second model) goes wrong and cut the model down to it")
    p.add_argument("model", help="the .onnx model (never modified)")
    p.add_argument("--json", action="store_true", help="print report.json on stdout instead of the tables")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--test", metavar="BACKEND", help="backend under test: onnxrt-noopt, reference, fp16, trt, trt-rtx")
    which.add_argument("--against", metavar="B.onnx", help="a second model, run on the reference backend; tensors matched by name")
    which.add_argument("--check", metavar="CMD",
                       help="shell command as the oracle: exit 0 = good, other = fails; '{model}' is replaced by the "
                            "candidate's path, '{inputs}' by an .npz of the reference values of its inputs; "
                            "'trt-build' = built-in: TensorRT (or TensorRT-RTX) must parse and build it")
    p.add_argument("--ref", default="onnxrt", metavar="BACKEND", help="reference backend (default onnxrt)")
    p.add_argument("-o", "--outdir", required=True, help="output folder: reduced.onnx, inputs.npz, expected.npz, report.json, REPRO.md")
    p.add_argument("--block-size", type=int, default=32, metavar="N",
                   help="tensors marked as outputs per run on a fusing backend (default 32)")
    p.add_argument("--check-timeout", type=float, default=600.0, metavar="S", help="--check: seconds before a run counts as failing")
    p.add_argument("--max-context", type=int, default=16, metavar="N",
                   help="the most upstream nodes a culprit may need to fail (default 16); a first diverging node that "
                        "needs more is reported as accumulated error, with the error growth along its path")
    p.add_argument("--trt-engine", default="auto", metavar="ENGINE", help="--check trt-build: auto, trt or trt-rtx")
    p.add_argument("--target-cc", nargs="+", default=[], metavar="8.6", help="--check trt-build with trt-rtx: build for this compute capability")
    _add_data_args(p)
    _add_backend_args(p)
    p.set_defaults(func=_cmd_bisect)


def _bisect_tolerances(args, test_backend):
    """The user's tolerances, else the looser defaults of the precision the test backend computes in."""
    atol, rtol = _tolerances(args.atol), _tolerances(args.rtol)
    if test_backend is not None and atol is None and rtol is None:
        from surgeon.comparison import DEFAULT_TOLERANCES
        from surgeon.debug.compare_run import backend_precision

        precision = backend_precision(test_backend)
        if precision in DEFAULT_TOLERANCES:
            atol, rtol = DEFAULT_TOLERANCES[precision]
    return atol, rtol


def _repro_command(args, atol, rtol) -> str:
    import shlex

    if args.check:
        return args.check.replace("{model}", "reduced.onnx").replace("{inputs}", "inputs.npz")
    parts = ["surgeon", "compare", "reduced.onnx"]
    parts += ["--test", args.test] if args.test else ["--against", "reduced_against.onnx"]
    parts += ["--ref", args.ref, "--load-inputs", "inputs.npz"]
    for flag, value in (("--atol", atol), ("--rtol", rtol)):
        if isinstance(value, (int, float)):
            parts += [flag, f"{value:g}"]
    if args.nan_equal:
        parts.append("--nan-equal")
    if args.fp16_keep:
        parts += ["--fp16-keep", *args.fp16_keep]
    return " ".join(shlex.quote(p) for p in parts)


def _cmd_bisect(args) -> int:
    import surgeon
    from surgeon import backends
    from surgeon.debug.bisect import artifacts, bisect_model, repro_text
    from surgeon.errors import UsageError

    if args.block_size < 1:
        raise UsageError("--block-size must be at least 1")
    if args.max_context < 0:
        raise UsageError("--max-context must be 0 or more")
    test_backend = backends.create(args.test, **_backend_options(args, args.test)) if args.test else None
    check = args.check
    if args.check == "trt-build":  # built-in oracle (trt-check): one TensorRT worker for the whole search
        from surgeon.debug.trt_check.bisect_oracle import TrtBuildCheck

        check = TrtBuildCheck(args.trt_engine, args.target_cc)
    elif args.trt_engine != "auto" or args.target_cc:
        raise UsageError("--trt-engine and --target-cc apply to --check trt-build only")
    model = surgeon.load(args.model)
    against = surgeon.load(args.against) if args.against else None
    ref = backends.create(args.ref)
    samples = _samples_from_args(args, model, runs=None if args.load_inputs else _probe_runs(args.ref, model))
    atol, rtol = _bisect_tolerances(args, test_backend)
    outdir = artifacts.prepare_outdir(args.outdir)
    from surgeon.report import Progress

    with Progress("bisect: starting") as status:
        result = bisect_model(model, samples, ref=ref, test=test_backend if test_backend is not None else ref,
                              against=against, against_label=args.against or "B", check=check, atol=atol,
                              rtol=rtol, nan_equal=args.nan_equal, block_size=args.block_size,
                              timeout=args.check_timeout, outdir=outdir, max_context=args.max_context,
                              progress=lambda msg: status.update(f"bisect: {msg}"))
    if hasattr(check, "close"):
        check.close()
    from surgeon.report import write_json

    out = _tables_console(args)
    report = {"model": args.model, "tolerance": {"atol": atol, "rtol": rtol}, **result.to_dict()}
    if not result.failed:
        write_json(str(outdir / "report.json"), report)
        _print_json(args, report)
        out.print(f"[bold green]no failure[/]: {result.oracle}: the full model passes ({result.confirm.detail}); nothing to bisect")
        return EXIT_OK
    command = check.repro_command() if hasattr(check, "repro_command") else _repro_command(args, atol, rtol)
    report["repro"] = command
    artifacts.write_bundle(outdir, reduced=result.reduced_model, inputs=result.inputs, expected=result.expected,
                           ref_name=args.ref, report=report, repro=repro_text(result, command, model_path=args.model),
                           against=result.reduced_against)
    _print_json(args, report)
    _render_bisect(out, result, outdir)
    return EXIT_FAIL


def _render_bisect(out, result, outdir) -> None:
    """Culprits first; for accumulated error, the growth table instead of a culprit."""
    from surgeon.debug.bisect import growth
    from surgeon.report import table

    rows = []
    for c in result.culprits:
        err = c.get("error") or {}
        prov = c.get("provenance") or {}
        short = "introduced here" if c["introduced"] else (f"with {len(c['subgraph']) - 1} upstream" if len(c["subgraph"]) < result.nodes else "not isolated")
        error = f"max abs {err['max_abs']:.3g}, {err['mismatches']}/{err['elements']} off" if "max_abs" in err else err.get("reason", "")
        rows.append([c["node"], c["op_type"], short, error, f"{prov.get('pass')} / {prov.get('rule')}" if prov.get("pass") else "-"])
    if rows:
        out.print(table("surgeon bisect: culprits", ["node", "op", "verdict", "error", "made by"], rows))
    for c in result.culprits:
        measured = [r for r in c.get("growth") or [] if r.get("compared")]
        if measured:
            peak = max(measured, key=lambda r: r["tol_ratio"])
            out.print(f"{c['node']}: along the path the error peaks at {peak['tol_ratio']:.3g}x the tolerance ('{peak['tensor']}') "
                      f"and ends at {measured[-1]['tol_ratio']:.3g}x ('{measured[-1]['tensor']}'); profile in {outdir}/REPRO.md")
    for a in result.accumulation:
        profile = a.get("growth") or []
        first = growth.first_exceeding(profile)
        cells = []
        for item in growth.condense(profile, 16):
            if item is None:
                cells.append(["…"] + [""] * (len(growth.COLUMNS) - 1))
                continue
            i, r = item
            c = growth.cells(i, r)
            if i == first:
                c[-1] = "; ".join(x for x in ("first beyond tolerance", c[-1]) if x and not x.startswith("bisect's"))
            cells.append(c)
        title = (f"error growth through {a['node']} ({a['op_type']}): passes alone, fails only with "
                 f"{a['upstream_nodes']} upstream nodes")
        if cells:
            out.print(table(title, growth.COLUMNS, cells))
        else:
            out.print(title)
    diagnosis = result.diagnosis
    if diagnosis["kind"] in ("accumulation", "mixed"):
        out.print(f"[bold yellow]accumulated error[/]: {diagnosis['message']}")
    out.print(f"[bold red]FAILS[/]: reduced {result.nodes} nodes to {len(result.reduced_nodes)} in {outdir}/reduced.onnx "
              f"({result.calls} oracle calls, {result.wall_s:.1f} s); see {outdir}/REPRO.md")


def _add_scan(sub) -> None:
    p = sub.add_parser("scan", help="a reference run and an FP16-emulated run with every tensor inspected: NaN/Inf, "
                                    "float16 overflow and underflow, scatter and division hazards")
    p.add_argument("model", help="the .onnx model (never modified)")
    p.add_argument("--ref", default="onnxrt", metavar="BACKEND", help="backend for the reference run (default onnxrt)")
    _add_output_args(p)
    p.add_argument("--near-zero", type=float, default=1e-6, metavar="EPS", help="divisor magnitude counted as near zero (default 1e-6)")
    p.add_argument("--fp16-keep", nargs="+", default=[], metavar="OPTYPE/NODE",
                   help="op types or node names the FP16 run keeps in float32 (like TensorRT per-layer precision)")
    p.add_argument("--no-fp16", action="store_true", help="skip the FP16-emulated run (only the reference run's hazards)")
    _add_data_args(p)
    p.set_defaults(func=_cmd_scan)


def _cmd_scan(args) -> int:
    import surgeon
    from surgeon import backends
    from surgeon.debug.scan import scan_model
    from surgeon.report import table

    _check_outputs(args.model, args.report)
    model = surgeon.load(args.model)
    backend = backends.create(args.ref)
    if args.fp16_keep:
        backends.create("fp16", keep=args.fp16_keep).check(model)
    samples = _samples_from_args(args, model, runs=None if args.load_inputs else _probe_runs(args.ref, model))
    report = scan_model(model, samples, backend, near_zero=args.near_zero, fp16=not args.no_fp16,
                        fp16_keep=args.fp16_keep, atol=_tolerances(args.atol), rtol=_tolerances(args.rtol))
    out = _emit(args, {"model": args.model, **report.to_dict()})
    fp16 = report.fp16
    fp16_line, bad = "", []
    if fp16:
        tol = fp16["tolerance"]
        bad = [o for o, d in fp16["outputs"].items() if not d["passed"]]
        fp16_line = (f"FP16 emulation: outputs match the reference (atol={tol['atol']}, rtol={tol['rtol']})" if not bad
                     else f"FP16 emulation: output(s) {', '.join(bad)} differ from the reference beyond atol={tol['atol']}, rtol={tol['rtol']}")
    if report.clean:
        out.print(f"[bold green]clean[/]: no NaN/Inf, nothing outside float16's range, no scatter or division hazards "
                  f"({report.tensors} tensors, {report.constants} FP16 weights, {report.samples} sample(s))")
        if bad:
            out.print(fp16_line + f"; no finding explains it: try `surgeon bisect {args.model} --test fp16`")
        return EXIT_OK
    groups = report.groups
    rows = [[g.severity, g.kind, g.where(), g.worst.message.split(": ", 1)[-1], g.consequence()] for g in groups]
    will, could = len(report.will), len(report.findings) - len(report.will)
    out.print(table(f"surgeon scan: {will} will go wrong on these inputs, {could} could ({len(groups)} group(s))",
                    ["severity", "kind", "where", "detail (worst)", "consequence"], rows))
    if fp16_line:
        explained = any(f.effect in ("nonfinite-outputs", "outputs-differ") for f in report.findings)
        out.print(fp16_line + ("" if explained or not bad else
                               f"; no finding explains it on its own: try `surgeon bisect {args.model} --test fp16`"))
    for note in report.notes:
        out.print(f"note: {note}")
    if will:
        out.print(f"[bold red]{will} finding(s) go wrong on these inputs[/] (first: {report.will[0].node}, {report.will[0].kind})")
        return EXIT_FAIL
    out.print("[bold yellow]no finding goes wrong on these inputs[/]: the 'could' findings are hazards for other inputs "
              "or engines (exit 0)")
    return EXIT_OK


# --- isolate ----------------------------------------------------------------------------

_ISOLATE_TARGETS = ("passes", "onnxrt-optimizers", "trt-tactics")


def _add_isolate(sub) -> None:
    p = sub.add_parser("isolate", help="find the minimal set of rewrites / ORT optimizers / TensorRT tactics that breaks a model")
    p.add_argument("model", help="input .onnx file (never modified)")
    p.add_argument("--json", action="store_true", help="print report.json on stdout instead of the tables")
    p.add_argument("--target", required=True, choices=_ISOLATE_TARGETS,
                   help="what to search: our own rewrite applications, ONNX Runtime optimizers, or TensorRT tactics")
    p.add_argument("-o", "--outdir", required=True, help="output folder: report.json, the oracle-call log, and the avoid-file")
    p.add_argument("--passes", help="passes target: the pipeline to search (default: the default pipeline)")
    p.add_argument("--rules", nargs="+", default=[], metavar="RULES.py", help="passes target: user rule files for replace-custom-ops")
    p.add_argument("--check", metavar="CMD",
                   help="passes target: judge each candidate with a command instead of comparing outputs; "
                        "'{model}' is replaced by the candidate's path; exit 0 = good, 125 = cannot tell, other = bad")
    p.add_argument("--reference", choices=("onnxrt-noopt", "reference"), default="onnxrt-noopt",
                   help="what the candidate is compared with (default: ONNX Runtime with optimizations off)")
    p.add_argument("--optimizers", nargs="+", metavar="NAME", help="onnxrt-optimizers target: search only these names")
    p.add_argument("--layers", nargs="+", default=[], metavar="NAME", help="trt-tactics target: layers/ONNX nodes bisect flagged")
    p.add_argument("--fp16", action="store_true", help="trt-tactics target: build with FP16 enabled")
    p.add_argument("--max-sets", type=int, default=4, help="independent culprit sets to look for at most (default 4)")
    p.add_argument("--confirm-repeats", type=int, default=2, help="times each final confirmation is re-run (default 2)")
    p.add_argument("--fresh", action="store_true", help="ignore verdicts recorded by an earlier run in OUTDIR")
    _add_data_args(p)
    p.set_defaults(func=_cmd_isolate)


class _CheckCommand:
    """An external oracle for the passes target: run CMD on each candidate model file."""

    def __init__(self, target, command: str):
        import shlex

        self.target, self.argv = target, shlex.split(command)
        if not self.argv:
            raise SurgeonError("--check is empty")
        self.name, self.choices, self.describe, self.label = target.name, target.choices, target.describe, target.label
        self.write_avoid = target.write_avoid
        self.mechanism = target.mechanism.split(",")[0] + f", judged by: {command}"

    def __call__(self, subset):
        import subprocess
        import tempfile

        from surgeon import model as model_io
        from surgeon.debug.isolate import Verdict

        model = self.target.candidate(subset)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "candidate.onnx"
            model_io.save(model, path)
            argv = [a.replace("{model}", str(path)) for a in self.argv]
            if argv == self.argv:
                argv.append(str(path))
            try:
                rc = subprocess.run(argv, capture_output=True).returncode
            except OSError as exc:
                raise SurgeonError(f"cannot run the --check command '{argv[0]}': {exc.strerror}") from exc
        return Verdict.UNRESOLVED if rc == 125 else (Verdict.PASS if rc == 0 else Verdict.FAIL)


def _cmd_isolate(args) -> int:
    import surgeon
    from surgeon.debug import isolate
    from surgeon.comparison import diff_outputs

    if args.max_sets < 1 or args.confirm_repeats < 1:
        raise SurgeonError("--max-sets and --confirm-repeats must be at least 1")
    if args.check and args.target != "passes":
        raise SurgeonError("--check is supported with --target passes only")
    for flag, value, target in (("--optimizers", args.optimizers, "onnxrt-optimizers"), ("--layers", args.layers, "trt-tactics"),
                                ("--rules", args.rules, "passes"), ("--passes", args.passes, "passes")):
        if value and args.target != target:
            raise SurgeonError(f"{flag} applies to --target {target} only")
    out = Path(args.outdir)
    if out.exists() and not out.is_dir():
        raise SurgeonError(f"output directory '{out}' exists and is not a directory")
    model = surgeon.load(args.model)
    atol, rtol = _tolerances(args.atol), _tolerances(args.rtol)
    from surgeon.report import Progress

    with Progress("preparing") as status:
        samples = _samples_from_args(args, model)
        if args.target == "passes":
            from surgeon.debug.isolate.passes_target import PassesTarget
            from surgeon.pipeline import registry

            registry.parse_pipeline(args.passes)
            status.update("first full run of the pipeline (numbering rewrite applications)")
            target = PassesTarget(model, samples, passes=args.passes, options={"rules": args.rules}, backend=args.reference,
                                  atol=atol, rtol=rtol, nan_equal=args.nan_equal)
            if args.check:
                target = _CheckCommand(target, args.check)
        elif args.target == "onnxrt-optimizers":
            from surgeon.debug.isolate.ort_optimizers import OrtOptimizersTarget

            status.update("asking ONNX Runtime which optimizers it runs on this model")
            target = OrtOptimizersTarget(model, samples, reference=args.reference, optimizers=args.optimizers,
                                         atol=atol, rtol=rtol, nan_equal=args.nan_equal)
        else:
            from surgeon import backends
            from surgeon.debug.isolate import trt_tactics

            version = trt_tactics.tensorrt_version()
            status.update(f"TensorRT {version}: {trt_tactics.mechanism_for(version)}; first build")
            session = backends.create(args.reference).session(model)
            reference = [session.run(f) for f in samples]

            def agree(ref, test):
                return all(d.passed for d in diff_outputs(ref, test, atol=atol, rtol=rtol, nan_equal=args.nan_equal))

            target = trt_tactics.TrtTacticsTarget(model, samples, reference_outputs=reference, compare=agree,
                                                  flagged=args.layers, fp16=args.fp16)
        result, report = isolate.run(target, args.outdir, max_sets=args.max_sets, confirm_repeats=args.confirm_repeats,
                                     resume=not args.fresh, progress=lambda msg: status.update(msg))
    _print_json(args, report)
    _render_isolate(report, args.outdir, _tables_console(args))
    if result.status == isolate.NO_DIVERGENCE:
        return EXIT_OK
    return EXIT_FAIL


def _render_isolate(report: dict, outdir: str, con) -> None:
    from surgeon.report import table

    con.print(f"surgeon isolate --target {report['target']}: {report['mechanism']}", markup=False)
    rows = []
    for n, cset in enumerate(report["culprit_sets"], 1):
        for c in cset:
            rows.append([str(n), c["label"]])
    if rows:
        con.print(table("culprits (minimal failing sets)", ["set", "choice"], rows))
    if report["confirmations"]:
        con.print(table("confirmation runs", ["run", "applied", "expected", "got"],
                        [[c["what"], f"{c['applied']} of {report['choices']}", c["expected"], ", ".join(c["verdicts"])]
                         for c in report["confirmations"]]))
    con.print(f"{report['status']}: {report['message']}", markup=False)
    con.print(f"{report['oracle_calls']} oracle calls over {report['choices']} choices "
              f"({report['cache_hits']} answered from cache, {report['resumed_verdicts']} resumed)", markup=False)
    if report["avoid"]:
        con.print(f"avoid them: {report['avoid']['file']}  ->  {report['avoid']['how']}", markup=False)
    con.print(f"report: {Path(outdir) / 'report.json'}", markup=False)


# --- profile ---------------------------------------------------------------------------

def _add_profile(sub) -> None:
    p = sub.add_parser("profile", help="where the time goes: per-kernel times, by op type and ONNX origin; "
                                       "or two models (--against) side by side")
    p.add_argument("model", help="the .onnx model (never modified)")
    p.add_argument("--backend", choices=("onnxrt", "onnxrt-noopt", "trt", "trt-rtx"), default="onnxrt",
                   help="ONNX Runtime CPU with or without graph optimizations, or a TensorRT engine (default onnxrt)")
    p.add_argument("--against", metavar="B.onnx", help="a second model (e.g. the output of 'surgeon fix'), run on the "
                                                        "same inputs, runs interleaved")
    data = p.add_mutually_exclusive_group()
    data.add_argument("--input-shapes", nargs="+", metavar="NAME:1x3x224x224", default=[],
                      help="shapes for inputs; dynamic dims not named get generated sizes")
    data.add_argument("--load-inputs", metavar="FILE", help="inputs from .npz or Polygraphy JSON (first sample used "
                                                            "first; several samples are used in turn)")
    p.add_argument("--seed", type=int, default=0, help="seed for generated inputs (default 0)")
    p.add_argument("--warmup", type=int, default=5, metavar="N", help="runs not counted, before measuring (default 5)")
    p.add_argument("--iterations", type=int, default=30, metavar="N", help="measured runs (default 30)")
    p.add_argument("--threads", type=int, default=0, metavar="N",
                   help="ONNX Runtime intra-op threads (default: ONNX Runtime's own choice); 1 is steadiest")
    p.add_argument("--top", type=int, default=15, metavar="K", help="rows in the kernel and op-type tables (default 15)")
    p.add_argument("--plot", metavar="DIR", help="write bar charts (top-K kernels, op types) as PNG into DIR")
    _add_output_args(p)
    p.add_argument("--trt-profile", metavar="P.json", help="read per-layer times from 'trtexec --exportProfile' "
                                                           "instead of running anything")
    p.add_argument("--trt-layers", metavar="L.json", help="with --trt-profile: 'trtexec --exportLayerInfo' "
                                                          "(--profilingVerbosity=detailed) to map layers to ONNX nodes")
    p.set_defaults(func=_cmd_profile)


def _cmd_profile(args) -> int:
    from surgeon import input_data
    from surgeon.debug import profile
    from surgeon.debug.profile.render import render_comparison, render_profile
    from surgeon.errors import UsageError

    for flag, value, low in (("--iterations", args.iterations, 1), ("--warmup", args.warmup, 0),
                             ("--threads", args.threads, 0), ("--top", args.top, 1)):
        if value < low:
            raise UsageError(f"{flag} must be at least {low}")
    if args.trt_layers and not args.trt_profile:
        raise UsageError("--trt-layers goes with --trt-profile")
    if args.trt_profile and (args.against or args.backend not in ("onnxrt", "trt")):
        raise UsageError("--trt-profile reads one trtexec profile; it does not combine with --against or --backend")
    _check_outputs(args.model, args.report)
    if args.plot and Path(args.plot).exists() and not Path(args.plot).is_dir():
        raise UsageError(f"--plot needs a folder; '{args.plot}' is a file")
    samples = None
    if args.load_inputs:
        from surgeon import input_files

        samples = input_files.load_inputs(args.load_inputs)
    shapes = input_data.parse_shape_args(args.input_shapes)
    from surgeon.report import Progress

    with Progress("profiling") as status:
        progress = lambda msg: status.update(f"profiling: {msg}")  # noqa: E731
        if args.trt_profile:
            result = profile.read_trt_profile(args.model, args.trt_profile, args.trt_layers)
        elif args.against:
            result = profile.compare_models(args.model, args.against, backend=args.backend, samples=samples,
                                            input_shapes=shapes, seed=args.seed, warmup=args.warmup,
                                            iterations=args.iterations, threads=args.threads, progress=progress)
        else:
            result = profile.profile_model(args.model, backend=args.backend, samples=samples, input_shapes=shapes,
                                           seed=args.seed, warmup=args.warmup, iterations=args.iterations,
                                           threads=args.threads, progress=progress)
    plots = []
    if args.plot:
        from surgeon.debug.profile.plot import plot_comparison, plot_profile

        plots = plot_comparison(result, args.plot, args.top) if args.against else plot_profile(result, args.plot, args.top)
    out = _emit(args, {**result.to_dict(), "plots": [str(p) for p in plots]})
    if args.against:
        render_comparison(result, out, top=args.top)
    else:
        render_profile(result, out, top=args.top)
    for path in plots:
        out.print(f"plot: {path}", markup=False)
    return EXIT_OK


# --- trt-check ----------------------------------------------------------------------------

def _add_trt_check(sub) -> None:
    p = sub.add_parser("trt-check", help="will TensorRT take this model? every failing node, why, and what to do")
    p.add_argument("model", help="the .onnx model (never modified)")
    p.add_argument("--engine", default="auto", metavar="ENGINE",
                   help="auto (default: tensorrt, else tensorrt_rtx, else matrix), trt, trt-rtx, or matrix (static)")
    p.add_argument("--input-shapes", nargs="+", default=[], metavar="NAME:1x3x224x224",
                   help="build with these fixed shapes (a one-sized profile, as asked)")
    p.add_argument("--profile", nargs="+", default=[], metavar="NAME:MIN/OPT/MAX",
                   help="optimization profile per input, e.g. x:1x3x224x224/4x3x224x224/8x3x448x448")
    p.add_argument("--no-build", action="store_true", help="parse only (no build_serialized_network)")
    p.add_argument("--target-cc", nargs="+", default=[], metavar="8.6",
                   help="trt-rtx: build ahead of time for these compute capabilities, one build each")
    p.add_argument("--matrix-version", metavar="10.15", help="matrix: the TensorRT version of the operator matrix")
    _add_output_args(p)
    p.add_argument("--seed", type=int, default=0, help="seed for the inputs that probe profile sizes (default 0)")
    p.add_argument("--timeout", type=float, default=600.0, metavar="S", help="seconds one parse or build may take (default 600)")
    p.set_defaults(func=_cmd_trt_check)


def _cmd_trt_check(args) -> int:
    import surgeon
    from surgeon import input_data
    from surgeon.debug import trt_check
    from surgeon.debug.trt_check.profiles import parse_profile_args

    if args.timeout <= 0:
        raise SurgeonError("--timeout must be a positive number of seconds")
    _check_outputs(args.model, args.report)
    shapes = input_data.parse_shape_args(args.input_shapes)
    profile = parse_profile_args(args.profile)
    model = surgeon.load(args.model)
    from surgeon.report import Progress

    with Progress("trt-check") as status:
        report = trt_check.check(model, model_path=args.model, engine=args.engine, input_shapes=shapes, profile=profile,
                                 build=not args.no_build, target_cc=args.target_cc, matrix_version=args.matrix_version,
                                 seed=args.seed, timeout=args.timeout, progress=lambda msg: status.update(f"trt-check: {msg}"))
    trt_check.render(report, _emit(args, report.to_dict()))
    return EXIT_OK if report.ready else EXIT_FAIL


# --- fp16 ---------------------------------------------------------------------------------

def _add_fp16(sub) -> None:
    p = sub.add_parser("fp16", help="write a mixed-precision (FP16/BF16) model with the fewest FP32 islands that keep the tolerance")
    p.add_argument("model", help="the FP32 .onnx model (never modified)")
    p.add_argument("-o", "--output", required=True, help="the mixed-precision model (written atomically)")
    p.add_argument("--precision", choices=("fp16", "bf16"), default="fp16", help="reduced precision (default fp16)")
    p.add_argument("--keep", nargs="+", default=[], metavar="OP_OR_NODE", help="op types or node names kept in FP32 whatever the search finds")
    p.add_argument("--keep-io-types", action="store_true", help="keep float32 graph inputs and outputs (Casts at the interface)")
    p.add_argument("--layer-precisions", metavar="FILE",
                   help="also write the decision as trtexec --layerPrecisions/--precisionConstraints and Polygraphy --layer-precisions flags")
    _add_output_args(p)
    p.add_argument("--max-oracle-calls", type=int, default=300, metavar="N",
                   help="budget of emulation runs for the search (default 300); past it the result is not proven minimal")
    p.add_argument("--no-trt-check", action="store_true", help="skip the TensorRT-RTX build of OUT (done where tensorrt_rtx is installed)")
    _add_common_model_args(p)
    p.add_argument("--val-range", nargs="+", default=[], metavar="NAME:[LO,HI]", help="value range for generated inputs")
    p.add_argument("--iterations", type=int, default=2, help="number of input samples the tolerance must hold on (default 2)")
    p.add_argument("--load-inputs", metavar="FILE", help="inputs from .npz or Polygraphy JSON (polygraphy run --save-inputs)")
    p.add_argument("--save-inputs", metavar="FILE", help="write the inputs used (.npz or .json, Polygraphy's format)")
    p.set_defaults(func=_cmd_fp16)


def _cmd_fp16(args) -> int:
    import surgeon
    from surgeon import input_files
    from surgeon.errors import UsageError
    from surgeon.precision import Fp16Options, convert_mixed_precision
    from surgeon.precision.api import output_path_checks
    from surgeon.precision.report import render

    output_path_checks(args.model, args.output, args.report, args.layer_precisions, args.save_inputs)
    if args.iterations < 1:
        raise UsageError("--iterations must be at least 1")
    for path in (args.save_inputs, args.load_inputs):
        if path:
            input_files.check_path(path, "input data")
    model = surgeon.load(args.model)
    samples = _samples_from_args(args, model, runs=None if args.load_inputs else _probe_runs("onnxrt", model))
    options = Fp16Options(precision=args.precision, keep=args.keep, keep_io_types=args.keep_io_types,
                          atol=_tolerances(args.atol), rtol=_tolerances(args.rtol), max_oracle_calls=args.max_oracle_calls,
                          trt_check=False if args.no_trt_check else None, layer_precisions=args.layer_precisions,
                          realistic=not (args.load_inputs or args.input_shapes))
    from surgeon.report import Progress

    with Progress("fp16") as status:
        report = convert_mixed_precision(args.model, args.output, samples=samples, options=options,
                                         progress=lambda msg: status.update(f"fp16: {msg}"))
    render(report, _emit(args, report.to_dict()))
    return EXIT_OK if report.passed else EXIT_FAIL


# --- shared plumbing -----------------------------------------------------------------------

def _add_output_args(p: argparse.ArgumentParser) -> None:
    """``--report FILE`` and ``--json``: the command's report as JSON, in a file and/or on stdout."""
    p.add_argument("--report", metavar="REPORT.json", help="write the report as JSON")
    p.add_argument("--json", action="store_true", help="print the report as JSON on stdout instead of the tables")


def _emit(args, data: dict):
    """Write the report where asked; returns the console the tables go to (a sink under --json)."""
    from surgeon.report import write_json

    if getattr(args, "report", None):
        write_json(args.report, data)
    _print_json(args, data)
    return _tables_console(args)


def _print_json(args, data: dict) -> None:
    if getattr(args, "json", False):
        from surgeon.report import to_json

        sys.stdout.write(to_json(data))


def _tables_console(args):
    """Where tables go: stdout, or nowhere under --json (stdout is the JSON then)."""
    if getattr(args, "json", False):
        import io

        from rich.console import Console

        return Console(file=io.StringIO())
    return _stdout_console()


def _stdout_console():
    from surgeon.report import console

    return console()


def _stderr_console():
    from surgeon.report import console

    return console(stderr=True)


def _quiet_libraries(verbose: int) -> None:
    """onnx-graphsurgeon and Polygraphy print warnings to stdout; the CLI's stdout is the report."""
    if verbose:
        return
    from polygraphy.logger import G_LOGGER

    G_LOGGER.module_severity = {"": G_LOGGER.ERROR}
    try:
        from onnx_graphsurgeon.logger import G_LOGGER as GS_LOGGER

        GS_LOGGER.severity = GS_LOGGER.ERROR
    except ImportError:
        pass


_COMMANDS = [_add_fix, _add_passes, _add_match, _add_compare, _add_doctor, _add_isolate, _add_bisect, _add_scan,
             _add_profile, _add_trt_check, _add_fp16]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("surgeon")
    except PackageNotFoundError:  # running from a source tree that was never installed
        from surgeon import __version__

        return __version__


# Options whose values are NAME:VALUE (or a bare [LO,HI]) and take several: argparse would
# give them a model path written after them. A value without ':' ends the list.
_KEYED_LISTS = frozenset({"--input-shapes", "--val-range", "--trt-min-shapes", "--trt-opt-shapes", "--trt-max-shapes"})


def _unswallow(argv: list[str], commands: set[str]) -> list[str]:
    """Move stray positionals out of a keyed list to right after the subcommand name."""
    out: list[str] = []
    stray: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        out.append(token)
        i += 1
        if token in _KEYED_LISTS:
            while i < len(argv) and not argv[i].startswith("-"):
                (out if ":" in argv[i] or argv[i].startswith("[") else stray).append(argv[i])
                i += 1
    if not stray:
        return out
    at = next((k + 1 for k, t in enumerate(out) if t in commands), len(out))
    return out[:at] + stray + out[at:]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="surgeon", description="ONNX graph surgery that proves every change, and debugging across backends.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="developer logging (-v info, -vv debug)")
    parser.add_argument("--version", action="version", version=f"surgeon {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for add in _COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    commands = {name for action in parser._subparsers._group_actions for name in getattr(action, "choices", {}) or {}}
    args = parser.parse_args(_unswallow(list(sys.argv[1:] if argv is None else argv), commands))
    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
                        format="%(levelname)s %(name)s: %(message)s")
    _quiet_libraries(args.verbose)
    try:
        return args.func(args)
    except SurgeonError as exc:
        print(f"surgeon: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("surgeon: interrupted; nothing was written", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug of ours: one line for the user, the traceback for -v and the debug log
        if args.verbose:
            raise
        logging.getLogger("surgeon").debug("internal error", exc_info=True)
        first = str(exc).splitlines()[0] if str(exc) else ""
        print(f"surgeon: internal error: {type(exc).__name__}: {first} (nothing was written; rerun with -v for the "
              "traceback and report it)", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
