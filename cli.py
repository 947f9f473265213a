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

from surgeon.cli_args import (add_backend_args, add_data_args, add_model_args, add_output_args, attach_pass_edits,
                              backend_options, data_options, flag_for, opset_arg, parse_profile_args, parse_shape_args,
                              parse_value_ranges, tolerances, unswallow_keyed_lists)
from surgeon.errors import SurgeonError

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit code 2 (no usage dump)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"surgeon: error: {message} (see '{self.prog} --help')\n")


# --- fix -----------------------------------------------------------------------------

def _add_fix(sub) -> None:
    p = sub.add_parser("fix", help="run a verified pass pipeline over a model and save the result")
    p.add_argument("model", help="input .onnx file (never modified)")
    p.add_argument("-o", "--output", required=True, help="output .onnx file (written atomically)")
    p.add_argument("--passes", help="comma-separated pass names, or +NAME,-NAME edits of the default pipeline "
                                    "(default: the default pipeline; see 'surgeon passes')")
    add_output_args(p)
    how = p.add_mutually_exclusive_group()
    how.add_argument("--no-verify", action="store_true", help="skip numeric verification (structural checks still run)")
    how.add_argument("--verify", choices=("auto", "whole", "local"), default="auto",
                     help="how changes are compared: the whole model after each, each on the region it changed "
                          "(on values recorded from the input model), or auto: regions where a whole-model run "
                          "would not fit in memory or is heavy (docs/large-models.md)")
    p.add_argument("--strict", action="store_true",
                   help="exit 1 when any pass was rolled back or the output could not be verified numerically")
    p.add_argument("--fix-shapes", action="store_true", help="write --input-shapes into the saved model")
    p.add_argument("--freeze-initializer-inputs", action="store_true",
                   help="treat initializers listed as graph inputs (defaults a user may override) as constants: "
                        "they leave the inputs and may be folded")
    p.add_argument("--rounds", type=int, default=2, help="repeat the pipeline until nothing changes, at most this often")
    p.add_argument("--rules", nargs="+", default=[], metavar="RULES.py", help="user rule files for replace-custom-ops")
    p.add_argument("--bisect-limit", type=int, metavar="N", help="apply only the first N rewrites (opt-bisect)")
    p.add_argument("--exclude-rewrites", metavar="FILE", help="file of PASS:RULE:NODE rewrite keys not to apply")
    p.add_argument("--load-inputs", metavar="FILE",
                   help="verify on these inputs (.npz or Polygraphy JSON) instead of generated ones")
    p.add_argument("--val-range", nargs="+", default=[], metavar="NAME:[LO,HI]",
                   help="value range for generated verification inputs (overrides the inferred one)")
    p.add_argument("--target-opset", type=opset_arg, metavar="N",
                   help="first raise the default-domain opset to N (pass upgrade-opset; never downgrades)")
    p.add_argument("--profile", action="store_true",
                   help="then time the input and the output on ONNX Runtime CPU (1 thread, 50 interleaved runs) and print the change")
    p.add_argument("--profile-on", type=_profile_backend_arg, metavar="BACKEND",
                   help="with --profile: time them on this backend instead, e.g. onnxrt-cuda[:OPTIONS] (see docs/gpu.md)")
    add_model_args(p)
    p.set_defaults(func=_cmd_fix)


def _cmd_fix(args) -> int:
    import surgeon
    from surgeon.render.fix import render_fix_result
    from surgeon.report import Progress

    with Progress("running passes") as status:
        result = surgeon.fix(
            args.model, args.passes, output=args.output, report=args.report,
            verify=False if args.no_verify else args.verify,
            strict=args.strict, input_shapes=parse_shape_args(args.input_shapes), load_inputs=args.load_inputs,
            seed=args.seed, atol=tolerances(args.atol), rtol=tolerances(args.rtol), fix_shapes=args.fix_shapes,
            value_ranges=parse_value_ranges(args.val_range), freeze_initializer_inputs=args.freeze_initializer_inputs,
            rounds=args.rounds, bisect_limit=args.bisect_limit, exclude_file=args.exclude_rewrites, rules=args.rules,
            target_opset=args.target_opset, profile=args.profile, profile_on=args.profile_on, progress=status.update,
        )
    _print_json(args, result.to_dict())
    render_fix_result(result, _tables(args), _console(stderr=True))
    return EXIT_FAIL if (args.strict and result.unproven) else EXIT_OK


# --- passes ----------------------------------------------------------------------------

def _add_passes(sub) -> None:
    p = sub.add_parser("passes", help="list the available passes")
    p.set_defaults(func=_cmd_passes)


def _cmd_passes(args) -> int:
    from surgeon.api import pass_table
    from surgeon.render.passes import render_passes

    render_passes(pass_table(), _console())
    return EXIT_OK


# --- match (replace-custom-ops) -----------------------------------------------------

def _add_match(sub) -> None:
    p = sub.add_parser("match", help="list what replace-custom-ops rules would replace (writes nothing)")
    p.add_argument("model", help="input .onnx file")
    p.add_argument("--rules", nargs="+", default=[], metavar="RULES.py", help="user rule files (tried before the built-in packs)")
    p.add_argument("--no-builtin", action="store_true", help="leave out the built-in rule packs (contrib ops, LayerNorm)")
    add_output_args(p)
    p.set_defaults(func=_cmd_match)


def _cmd_match(args) -> int:
    from surgeon.api import match
    from surgeon.render.match import render_match

    report = match(args.model, rules=args.rules, builtin=not args.no_builtin, report=args.report)
    _print_json(args, report.to_dict())
    render_match(report, _tables(args))
    return EXIT_OK


# --- compare / doctor ---------------------------------------------------------------

def _add_compare(sub) -> None:
    p = sub.add_parser("compare", help="run a model on two backends (or two models) and compare every output")
    p.add_argument("model", help="the .onnx model (run on --ref)")
    p.add_argument("--ref", default="onnxrt", metavar="BACKEND", help="reference backend (default onnxrt)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--test", metavar="BACKEND", help="backend under test: onnxrt-noopt, reference, fp16, trt, trt-rtx, onnxrt-cuda[:OPTIONS] (e.g. onnxrt-cuda:tf32=0,algo-search=heuristic; see docs/gpu.md)")
    which.add_argument("--against", metavar="B.onnx", help="a second model, run on the reference backend")
    add_data_args(p)
    p.add_argument("--save-outputs", metavar="FILE", help="write both runs' outputs (.npz, or .json: Polygraphy RunResults)")
    add_output_args(p)
    p.add_argument("--plot", metavar="DIR", help="write one PNG per mismatching output into DIR")
    add_backend_args(p)
    p.set_defaults(func=_cmd_compare)


def _cmd_compare(args) -> int:
    import surgeon
    from surgeon.debug.compare_run import render_compare

    report = surgeon.compare(
        args.model, test=args.test, against=args.against, ref=args.ref, test_options=backend_options(args, args.test),
        **data_options(args), save_outputs=args.save_outputs, nan_equal=args.nan_equal, plot_dir=args.plot,
        report=args.report,
    )
    _print_json(args, report.to_dict())
    render_compare(report, _tables(args))
    return EXIT_OK if report.passed else EXIT_FAIL


def _add_doctor(sub) -> None:
    p = sub.add_parser("doctor", help="fix a model, then compare the result with the original (and on --test)")
    p.add_argument("model", help="input .onnx file (never modified)")
    p.add_argument("-o", "--output", required=True, help="the fixed model (written atomically)")
    p.add_argument("--passes", help="comma-separated pass names (default: the default pipeline)")
    p.add_argument("--ref", default="onnxrt", metavar="BACKEND", help="reference backend (default onnxrt)")
    p.add_argument("--test", metavar="BACKEND", help="also run on this backend: fp16, reference, trt, onnxrt-cuda[:OPTIONS], ...")
    p.add_argument("--test-original", action="store_true", help="run the original model on --test, not the fixed one")
    add_output_args(p)
    p.add_argument("--trt", action="store_true", help="also run trt-check on the original and the fixed model: "
                                                      "what the fix made TensorRT accept, and what is still not ready")
    p.add_argument("--trt-engine", default="auto", metavar="ENGINE", help="--trt: auto, trt, trt-rtx or matrix")
    p.add_argument("--target-cc", nargs="+", default=[], metavar="8.6", help="--trt with trt-rtx: build for these compute capabilities")
    add_data_args(p)
    add_backend_args(p)
    p.set_defaults(func=_cmd_doctor)


def _cmd_doctor(args) -> int:
    from surgeon import api
    from surgeon.render.doctor import render_doctor
    from surgeon.report import Progress

    test_options = backend_options(args, args.test)
    with Progress("doctor") as status:
        report = api.doctor(args.model, args.output, passes=args.passes, ref=args.ref, test=args.test,
                            test_options=test_options, test_original=args.test_original, **data_options(args),
                            nan_equal=args.nan_equal, trt=args.trt, trt_engine=args.trt_engine,
                            target_cc=args.target_cc, report=args.report, progress=status.update)
    _print_json(args, report.to_dict())
    render_doctor(report, _tables(args), load_inputs=args.load_inputs)
    return EXIT_OK if report.passed else EXIT_FAIL


# --- bisect / scan --------------------------------------------------------------------

def _add_bisect(sub) -> None:
    from surgeon.debug import check_command

    p = sub.add_parser("bisect", help="find the first node where a backend (or a second model) goes wrong and cut the model down to it")
    p.add_argument("model", help="the .onnx model (never modified)")
    p.add_argument("--json", action="store_true", help="print report.json on stdout instead of the tables")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--test", metavar="BACKEND", help="backend under test: onnxrt-noopt, reference, fp16, trt, trt-rtx, onnxrt-cuda[:OPTIONS] (e.g. onnxrt-cuda:tf32=0,algo-search=heuristic; see docs/gpu.md)")
    which.add_argument("--against", metavar="B.onnx", help="a second model, run on the reference backend; tensors matched by name")
    which.add_argument("--check", metavar="CMD", help=check_command.HELP + "; 'trt-build' = built-in: TensorRT "
                                                                          "(or TensorRT-RTX) must parse and build it")
    p.add_argument("--ref", default="onnxrt", metavar="BACKEND", help="reference backend (default onnxrt)")
    p.add_argument("-o", "--outdir", required=True, help="output folder: reduced.onnx, inputs.npz, expected.npz, report.json, REPRO.md")
    p.add_argument("--block-size", type=int, default=32, metavar="N",
                   help="tensors marked as outputs per run on a fusing backend (default 32)")
    p.add_argument("--check-timeout", type=float, default=check_command.DEFAULT_TIMEOUT, metavar="S",
                   help=check_command.TIMEOUT_HELP)
    p.add_argument("--max-context", type=int, default=16, metavar="N",
                   help="the most upstream nodes a culprit may need to fail (default 16); a first diverging node that "
                        "needs more is reported as accumulated error, with the error growth along its path")
    p.add_argument("--trt-engine", default="auto", metavar="ENGINE", help="--check trt-build: auto, trt or trt-rtx")
    p.add_argument("--target-cc", nargs="+", default=[], metavar="8.6", help="--check trt-build with trt-rtx: build for this compute capability")
    add_data_args(p)
    add_backend_args(p)
    p.set_defaults(func=_cmd_bisect)


def _cmd_bisect(args) -> int:
    from surgeon import api
    from surgeon.render.bisect import render_bisect
    from surgeon.report import Progress

    test_options = backend_options(args, args.test)
    with Progress("bisect: starting") as status:
        outcome = api.bisect(
            args.model, outdir=args.outdir, test=args.test, against=args.against, check=args.check, ref=args.ref,
            test_options=test_options, **data_options(args), nan_equal=args.nan_equal, block_size=args.block_size,
            check_timeout=args.check_timeout, max_context=args.max_context, trt_engine=args.trt_engine,
            target_cc=args.target_cc, progress=lambda msg: status.update(f"bisect: {msg}"),
        )
    _print_json(args, outcome.to_dict())
    render_bisect(outcome, _tables(args))
    return EXIT_FAIL if outcome.failed else EXIT_OK


def _add_scan(sub) -> None:
    p = sub.add_parser("scan", help="a reference run and an FP16-emulated run with every tensor inspected: NaN/Inf, "
                                    "float16 overflow and underflow, scatter and division hazards")
    p.add_argument("model", help="the .onnx model (never modified)")
    p.add_argument("--ref", default="onnxrt", metavar="BACKEND", help="backend for the reference run (default onnxrt)")
    add_output_args(p)
    p.add_argument("--near-zero", type=float, default=1e-6, metavar="EPS", help="divisor magnitude counted as near zero (default 1e-6)")
    p.add_argument("--fp16-keep", nargs="+", default=[], metavar="OPTYPE/NODE",
                   help="op types or node names the FP16 run keeps in float32 (like TensorRT per-layer precision)")
    p.add_argument("--no-fp16", action="store_true", help="skip the FP16-emulated run (only the reference run's hazards)")
    add_data_args(p)
    p.set_defaults(func=_cmd_scan)


def _cmd_scan(args) -> int:
    from surgeon import api
    from surgeon.render.scan import render_scan

    result = api.scan(args.model, ref=args.ref, near_zero=args.near_zero, fp16=not args.no_fp16,
                      fp16_keep=args.fp16_keep, **data_options(args), report=args.report)
    _print_json(args, result.to_dict())
    render_scan(result, _tables(args))
    return EXIT_FAIL if result.failed else EXIT_OK


# --- isolate ----------------------------------------------------------------------------

_ISOLATE_TARGETS = ("passes", "onnxrt-optimizers", "trt-tactics", "cuda-options")


def _add_isolate(sub) -> None:
    from surgeon.debug import check_command

    p = sub.add_parser("isolate", help="find the minimal set of rewrites / ORT optimizers / TensorRT tactics that breaks a model")
    p.add_argument("model", help="input .onnx file (never modified)")
    p.add_argument("--json", action="store_true", help="print report.json on stdout instead of the tables")
    p.add_argument("--target", required=True, choices=_ISOLATE_TARGETS,
                   help="what to search: our own rewrite applications, ONNX Runtime optimizers, TensorRT tactics, "
                        "or ONNX Runtime CUDA provider choices (TF32, algorithm search, layout, optimizers on CUDA)")
    p.add_argument("-o", "--outdir", required=True, help="output folder: report.json, the oracle-call log, and the avoid-file")
    p.add_argument("--passes", help="passes target: the pipeline to search (default: the default pipeline)")
    p.add_argument("--rules", nargs="+", default=[], metavar="RULES.py", help="passes target: user rule files for replace-custom-ops")
    p.add_argument("--check", metavar="CMD", help="passes target: judge each candidate with a command instead of "
                                                   "comparing outputs; " + check_command.HELP)
    p.add_argument("--check-timeout", type=float, default=check_command.DEFAULT_TIMEOUT, metavar="S",
                   help=check_command.TIMEOUT_HELP)
    p.add_argument("--reference", choices=("onnxrt-noopt", "reference"), default="onnxrt-noopt",
                   help="what the candidate is compared with (default: ONNX Runtime with optimizations off)")
    p.add_argument("--optimizers", nargs="+", metavar="NAME",
                   help="onnxrt-optimizers and cuda-options targets: search only these optimizer names")
    p.add_argument("--test", metavar="BACKEND", default=None,
                   help="cuda-options target: the configuration whose choices are searched (default onnxrt-cuda, "
                        "ONNX Runtime's CUDA defaults; e.g. onnxrt-cuda:nhwc=1)")
    p.add_argument("--layers", nargs="+", default=[], metavar="NAME", help="trt-tactics target: layers/ONNX nodes bisect flagged")
    p.add_argument("--fp16", action="store_true", help="trt-tactics target: build with FP16 enabled")
    p.add_argument("--max-sets", type=int, default=4, help="independent culprit sets to look for at most (default 4)")
    p.add_argument("--confirm-repeats", type=int, default=2, help="times each final confirmation is re-run (default 2)")
    p.add_argument("--fresh", action="store_true", help="ignore verdicts recorded by an earlier run in OUTDIR")
    add_data_args(p)
    p.set_defaults(func=_cmd_isolate)


def _cmd_isolate(args) -> int:
    from surgeon import api
    from surgeon.render.isolate import render_isolate
    from surgeon.report import Progress

    with Progress("preparing") as status:
        outcome = api.isolate(
            args.model, target=args.target, outdir=args.outdir, passes=args.passes, rules=args.rules, check=args.check,
            check_timeout=args.check_timeout, reference=args.reference, optimizers=args.optimizers, layers=args.layers, fp16=args.fp16, test=args.test,
            max_sets=args.max_sets, confirm_repeats=args.confirm_repeats, fresh=args.fresh, **data_options(args),
            nan_equal=args.nan_equal, progress=status.update,
        )
    _print_json(args, outcome.to_dict())
    render_isolate(outcome.report, args.outdir, _tables(args))
    return EXIT_FAIL if outcome.diverges else EXIT_OK


# --- profile ---------------------------------------------------------------------------

def _add_profile(sub) -> None:
    p = sub.add_parser("profile", help="where the time goes: per-kernel times, by op type and ONNX origin; "
                                       "or two models (--against) side by side")
    p.add_argument("model", help="the .onnx model (never modified)")
    p.add_argument("--backend", type=_profile_backend_arg, default="onnxrt", metavar="BACKEND",
                   help="onnxrt or onnxrt-noopt (ONNX Runtime CPU with or without graph optimizations), "
                        "onnxrt-cuda[:OPTIONS] (its CUDA provider), trt or trt-rtx (a TensorRT engine); default onnxrt")
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
    add_output_args(p)
    p.add_argument("--trt-profile", metavar="P.json", help="read per-layer times from 'trtexec --exportProfile' "
                                                           "instead of running anything")
    p.add_argument("--trt-layers", metavar="L.json", help="with --trt-profile: 'trtexec --exportLayerInfo' "
                                                          "(--profilingVerbosity=detailed) to map layers to ONNX nodes")
    p.set_defaults(func=_cmd_profile)


def _profile_backend_arg(text: str) -> str:
    from surgeon.debug.profile import check_backend

    try:
        return check_backend(text)
    except SurgeonError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _cmd_profile(args) -> int:
    from surgeon import api
    from surgeon.debug.profile.render import render_comparison, render_profile
    from surgeon.report import Progress

    with Progress("profiling") as status:
        result = api.profile(
            args.model, against=args.against, backend=args.backend, input_shapes=parse_shape_args(args.input_shapes),
            load_inputs=args.load_inputs, seed=args.seed, warmup=args.warmup, iterations=args.iterations,
            threads=args.threads, top=args.top, plot_dir=args.plot, trt_profile=args.trt_profile,
            trt_layers=args.trt_layers, report=args.report, progress=lambda msg: status.update(f"profiling: {msg}"),
        )
    _print_json(args, result.to_dict())
    out = _tables(args)
    if args.against:
        render_comparison(result.result, out, top=args.top)
    else:
        render_profile(result.result, out, top=args.top)
    for path in result.plots:
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
    add_output_args(p)
    p.add_argument("--seed", type=int, default=0, help="seed for the inputs that probe profile sizes (default 0)")
    p.add_argument("--timeout", type=float, default=600.0, metavar="S", help="seconds one parse or build may take (default 600)")
    p.set_defaults(func=_cmd_trt_check)


def _cmd_trt_check(args) -> int:
    from surgeon import api
    from surgeon.debug import trt_check
    from surgeon.report import Progress

    with Progress("trt-check") as status:
        report = api.trt_check(
            args.model, engine=args.engine, input_shapes=parse_shape_args(args.input_shapes),
            profile=parse_profile_args(args.profile), build=not args.no_build, target_cc=args.target_cc,
            matrix_version=args.matrix_version, seed=args.seed, timeout=args.timeout, report=args.report,
            progress=lambda msg: status.update(f"trt-check: {msg}"),
        )
    _print_json(args, report.to_dict())
    trt_check.render(report, _tables(args))
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
    add_output_args(p)
    p.add_argument("--max-oracle-calls", type=int, default=300, metavar="N",
                   help="budget of emulation runs for the search (default 300); past it the result is not proven minimal")
    p.add_argument("--no-trt-check", action="store_true", help="skip the TensorRT-RTX build of OUT (done where tensorrt_rtx is installed)")
    add_model_args(p)
    p.add_argument("--val-range", nargs="+", default=[], metavar="NAME:[LO,HI]", help="value range for generated inputs")
    p.add_argument("--iterations", type=int, default=2, help="number of input samples the tolerance must hold on (default 2)")
    p.add_argument("--load-inputs", metavar="FILE", help="inputs from .npz or Polygraphy JSON (polygraphy run --save-inputs)")
    p.add_argument("--save-inputs", metavar="FILE", help="write the inputs used (.npz or .json, Polygraphy's format)")
    p.set_defaults(func=_cmd_fp16)


def _cmd_fp16(args) -> int:
    from surgeon import api
    from surgeon.precision.report import render
    from surgeon.report import Progress

    with Progress("fp16") as status:
        report = api.fp16(
            args.model, args.output, precision=args.precision, keep=args.keep, keep_io_types=args.keep_io_types,
            layer_precisions=args.layer_precisions, max_oracle_calls=args.max_oracle_calls,
            trt_check=False if args.no_trt_check else None, **data_options(args), report=args.report,
            progress=lambda msg: status.update(f"fp16: {msg}"),
        )
    _print_json(args, report.to_dict())
    render(report, _tables(args))
    return EXIT_OK if report.passed else EXIT_FAIL


# --- sweep ------------------------------------------------------------------------------------

def _add_sweep(sub) -> None:
    p = sub.add_parser("sweep", help="a zoo of models through fix, trt-check, scan, fp16 and profile, each in its own "
                                     "process, cached; on this machine or a Ray cluster")
    p.add_argument("models", nargs="*", metavar="MODEL|DIR|ZOO.yaml",
                   help="model files, folders of them (every .onnx below), or manifests with per-model options")
    p.add_argument("--steps", default="fix,trt-check", metavar="STEPS",
                   help="comma-separated: fix, trt-check, scan, fp16, profile (default fix,trt-check); steps after "
                        "fix run on the fixed model")
    p.add_argument("--out", required=True, metavar="DIR", help="each model's reports, the cache, results.jsonl, "
                                                              "sweep.json and summary.md")
    p.add_argument("--jobs", type=int, metavar="N", help="models at once (default: the CPU count)")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local: a process pool here (default); ray: Ray tasks (pip install \"surgeon[ray]\")")
    p.add_argument("--ray-address", metavar="ADDR", help="--engine ray: an existing cluster (default: start a local one)")
    p.add_argument("--resume", action="store_true", help="continue the sweep recorded in --out (no MODELS needed)")
    p.add_argument("--no-cache", action="store_true", help="recompute steps the cache in --out already holds")
    p.add_argument("--baseline", metavar="PREVIOUS.json", help="an earlier sweep.json: exit 1 naming each regression")
    p.add_argument("--junit", metavar="RESULTS.xml", help="write JUnit XML (one test case per model and step)")
    p.add_argument("--json", action="store_true", help="print JSON lines (one per model, then the summary) instead "
                                                       "of the table")
    p.add_argument("--timeout", type=float, default=1800.0, metavar="S", help="seconds one model's job may take "
                                                                              "(default 1800)")
    p.add_argument("--memory", metavar="SIZE", help="anonymous resident memory one job may use, e.g. 4G (default: a "
                                                    "--jobs-th of 80%% of the machine's)")
    p.set_defaults(func=_cmd_sweep, quiet_libraries=False)  # the libraries load (and log) in the jobs only


def _cmd_sweep(args) -> int:
    from surgeon import api
    from surgeon.render.sweep import render_sweep
    from surgeon.sweep.progress import SweepProgress

    with SweepProgress(quiet=args.json) as bar:
        result = api.sweep(args.models, out=args.out, steps=args.steps, jobs=args.jobs, engine=args.engine,
                           ray_address=args.ray_address, resume=args.resume, cache=not args.no_cache,
                           baseline=args.baseline, junit=args.junit, timeout=args.timeout, memory=args.memory,
                           progress=bar.update)
    if args.json:
        from surgeon.render.sweep import json_lines

        sys.stdout.write(json_lines(result))
    else:
        render_sweep(result, _console())
    return EXIT_FAIL if result.failed else EXIT_OK


# --- shared plumbing -----------------------------------------------------------------------

def _print_json(args, data: dict) -> None:
    if getattr(args, "json", False):
        from surgeon.report import to_json

        sys.stdout.write(to_json(data))


def _tables(args):
    """The console for a command's tables: stdout, or nowhere under --json (stdout is the JSON then)."""
    from surgeon.report import tables_console

    return tables_console(args.json)


def _console(stderr: bool = False):
    from surgeon.report import console  # rich loads only when a command prints

    return console(stderr=stderr)


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
             _add_profile, _add_trt_check, _add_fp16, _add_sweep]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("surgeon")
    except PackageNotFoundError:  # running from a source tree that was never installed
        from surgeon import __version__

        return __version__


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
    args = parser.parse_args(unswallow_keyed_lists(attach_pass_edits(list(sys.argv[1:] if argv is None else argv)), commands))
    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
                        format="%(levelname)s %(name)s: %(message)s")
    if getattr(args, "quiet_libraries", True):
        _quiet_libraries(args.verbose)
    try:
        return args.func(args)
    except SurgeonError as exc:
        print(f"surgeon: error: {exc.worded(flag_for)}", file=sys.stderr)
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
