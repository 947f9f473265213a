"""The surgeon command line: parse arguments, call surgeon's API, print, exit.

Exit codes: 0 success / match, 1 a verdict of failure (mismatch, or a rolled-back pass
under --strict), 2 usage or input error (one sentence on stderr, never a traceback).
Each subcommand has an ``_add_<name>`` function that builds its parser and a ``_cmd_<name>``
function that runs it.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from surgeon.errors import SurgeonError

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


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
    """The input samples a debug command runs on: loaded from a file, or generated and seeded."""
    from surgeon.debug import data

    if getattr(args, "load_inputs", None):
        from surgeon.debug import inputs_io

        samples = inputs_io.load_inputs(args.load_inputs)
    else:
        samples = data.make_samples(
            model, input_shapes=data.parse_shape_args(args.input_shapes),
            value_ranges=data.parse_value_ranges(args.val_range), iterations=args.iterations,
            seed=args.seed, runs=runs,
        )
    if getattr(args, "save_inputs", None):
        from surgeon.debug import inputs_io

        inputs_io.save_inputs(args.save_inputs, samples)
    return samples


# --- fix -----------------------------------------------------------------------------

def _add_fix(sub) -> None:
    p = sub.add_parser("fix", help="run a verified pass pipeline over a model and save the result")
    p.add_argument("model", help="input .onnx file (never modified)")
    p.add_argument("-o", "--output", required=True, help="output .onnx file (written atomically)")
    p.add_argument("--passes", help="comma-separated pass names (default: the default pipeline; see 'surgeon passes')")
    p.add_argument("--report", metavar="REPORT.json", help="write the report as JSON")
    p.add_argument("--no-verify", action="store_true", help="skip numeric verification (structural checks still run)")
    p.add_argument("--strict", action="store_true", help="exit 1 when any pass was rolled back")
    p.add_argument("--fix-shapes", action="store_true", help="write --input-shapes into the saved model")
    p.add_argument("--rounds", type=int, default=2, help="repeat the pipeline until nothing changes, at most this often")
    p.add_argument("--rules", nargs="+", default=[], metavar="RULES.py", help="user rule files for replace-custom-ops")
    p.add_argument("--bisect-limit", type=int, metavar="N", help="apply only the first N rewrites (opt-bisect)")
    p.add_argument("--exclude-rewrites", metavar="FILE", help="file of PASS:RULE:NODE rewrite keys not to apply")
    p.add_argument("--load-inputs", metavar="FILE",
                   help="verify on these inputs (.npz or Polygraphy JSON) instead of generated ones")
    _add_common_model_args(p)
    p.set_defaults(func=_cmd_fix)


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
    from surgeon.debug import data
    from surgeon.fix_report import render_fix

    shapes = data.parse_shape_args(args.input_shapes)
    passes = surgeon.pipeline.registry.parse_pipeline(args.passes)
    model = surgeon.load(args.model)
    model_io.check_output_path(args.model, args.output)
    if args.report:
        model_io.check_output_path(args.model, args.report)
    samples = None
    if args.load_inputs:
        from surgeon.debug import inputs_io

        samples = inputs_io.load_inputs(args.load_inputs)
    from rich.status import Status

    with Status("running passes", console=_stderr_console()) as status:
        new_model, report = surgeon.fix(
            model, passes, verify=not args.no_verify, input_shapes=shapes, samples=samples, seed=args.seed,
            atol=_tolerances(args.atol), rtol=_tolerances(args.rtol), fix_shapes=args.fix_shapes,
            rounds=args.rounds, bisect_limit=args.bisect_limit, exclude=_read_exclusions(args.exclude_rewrites),
            options={"rules": args.rules}, progress=lambda msg: status.update(msg),
        )
    # Keep the input's layout: a model that came with external data is saved with it.
    surgeon.save(new_model, args.output, external=True if model_io.external_data_paths(args.model) else None)
    if args.report:
        from surgeon.report import write_json

        write_json(args.report, report.to_dict())
    render_fix(report, _stdout_console())
    return EXIT_FAIL if (args.strict and report.rolled_back) else EXIT_OK


# --- passes ----------------------------------------------------------------------------

def _add_passes(sub) -> None:
    p = sub.add_parser("passes", help="list the available passes")
    p.set_defaults(func=_cmd_passes)


def _cmd_passes(args) -> int:
    from surgeon.pipeline import registry
    from surgeon.report import table

    default = registry.default_pipeline()
    rows = [[name, "yes" if name in default else "", cls.summary] for name, cls in registry.all_passes().items()]
    _stdout_console().print(table(None, ["pass", "default", "summary"], rows))
    return EXIT_OK


# --- match (replace-custom-ops) -----------------------------------------------------

# --- compare / doctor ---------------------------------------------------------------

# --- bisect / scan --------------------------------------------------------------------

# --- isolate ----------------------------------------------------------------------------

# --- shared plumbing -----------------------------------------------------------------------

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


_COMMANDS = [_add_fix, _add_passes]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="surgeon", description="ONNX graph surgery that proves every change, and debugging across backends.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="developer logging (-v info, -vv debug)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for add in _COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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


if __name__ == "__main__":
    sys.exit(main())
