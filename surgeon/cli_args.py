"""The command line's grammar: what ``NAME:1x3x224x224``, ``NAME:[LO,HI]``, ``[OUT:]1e-3``
and ``NAME:MIN/OPT/MAX`` mean, turned into the Python values the API takes; the option groups
several commands share (input data, tolerances, test-backend flags, report output); and the
flag an API keyword is worded as in an error message.

Why here and not in the library: the API takes shape mappings, ranges and numbers; only the
command line reads them from strings, so the library never imports this module (cli.py does).
A string that does not parse is one sentence and exit 2, like every input error.
"""

from __future__ import annotations

import argparse
import re

from surgeon.errors import InputDataError


_SHAPE_RE = re.compile(r"^(?P<name>.+):(?P<dims>\[[^\]]*\]|\d+(?:x\d+)*|)$")


def parse_shape_args(items: list[str] | None) -> dict[str, tuple[int, ...]]:
    """Parse ``NAME:1x3x224x224`` or ``NAME:[1,3,224,224]`` (scalar: ``NAME:[]``).

    Input names may themselves contain ':'; the shape is taken after the last one.
    Anything else is an error; nothing is guessed.
    """
    out: dict[str, tuple[int, ...]] = {}
    for item in items or []:
        m = _SHAPE_RE.match(item.strip())
        if not m or not m.group("name"):
            raise InputDataError(
                f"cannot parse input shape '{item}': expected NAME:1x3x224x224 or NAME:[1,3,224,224]"
            )
        text = m.group("dims")
        if text.startswith("["):
            inner = text[1:-1].strip()
            parts = [p.strip() for p in inner.split(",")] if inner else []
        else:
            parts = text.split("x") if text else []
        try:
            dims = tuple(int(p) for p in parts)
        except ValueError:
            raise InputDataError(f"cannot parse input shape '{item}': dimensions must be whole numbers") from None
        if any(d < 0 for d in dims):
            raise InputDataError(f"input shape '{item}' has a negative dimension")
        out[m.group("name")] = dims
    return out


def parse_value_ranges(items: list[str] | None) -> dict[str, tuple[float, float]]:
    """``NAME:[lo,hi]`` → {NAME: (lo, hi)}; a bare ``[lo,hi]`` applies to every input (key '')."""
    out: dict[str, tuple[float, float]] = {}
    for item in items or []:
        name, sep, rng = item.rpartition(":") if not item.startswith("[") else ("", "", item)
        rng = rng.strip()
        try:
            if not (rng.startswith("[") and rng.endswith("]")):
                raise ValueError
            lo_s, hi_s = rng[1:-1].split(",")
            lo, hi = float(lo_s), float(hi_s)
        except ValueError:
            raise InputDataError(f"cannot parse value range '{item}': expected NAME:[LOW,HIGH]") from None
        if lo > hi:
            raise InputDataError(f"value range '{item}' has LOW above HIGH")
        out[name] = (lo, hi)
    return out


def parse_profile_args(items: list[str] | None) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """``NAME:1x3x32x32/2x3x64x64/4x3x128x128`` (min/opt/max) -> {NAME: (min, opt, max)}."""
    out = {}
    for item in items or []:
        name, sep, shapes = item.rpartition(":")
        parts = shapes.split("/")
        if not sep or not name or len(parts) != 3:
            raise InputDataError(f"cannot parse profile '{item}': expected NAME:MIN/OPT/MAX, e.g. x:1x3x32x32/2x3x64x64/4x3x128x128")
        dims = [parse_shape_args([f"{name}:{p}"])[name] for p in parts]
        lo, opt, hi = dims
        if not (len(lo) == len(opt) == len(hi)):
            raise InputDataError(f"profile '{item}': MIN, OPT and MAX must have the same rank")
        if any(not (a <= b <= c) for a, b, c in zip(lo, opt, hi)):
            raise InputDataError(f"profile '{item}': each dim must satisfy MIN <= OPT <= MAX")
        out[name] = (lo, opt, hi)
    return out


def tol_arg(text: str) -> tuple[str | None, float]:
    """``1e-3`` (global) or ``NAME:1e-3`` (one output)."""
    name, _, value = text.rpartition(":")
    try:
        v = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a tolerance (NUMBER or OUTPUT:NUMBER)") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"tolerance '{text}' is negative")
    return (name or None), v


def tolerances(values: list[tuple[str | None, float]] | None) -> float | dict[str, float] | None:
    """Global value, or per-output dict; a global given with per-output ones fills the rest."""
    if not values:
        return None
    glob = [v for n, v in values if n is None]
    per = {n: v for n, v in values if n is not None}
    if not per:
        return glob[-1]
    return PerOutput(per, glob[-1] if glob else None)


class PerOutput(dict):
    """Per-output tolerances with a fallback used for outputs not named."""

    def __init__(self, values: dict[str, float], default: float | None):
        super().__init__(values)
        self.default = default

    def get(self, key, default=None):  # type: ignore[override]
        return super().get(key, self.default if default is None else default)


def opset_arg(text: str) -> int:
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


def attach_pass_edits(argv: list[str]) -> list[str]:
    """``--passes -merge-duplicates`` → ``--passes=-merge-duplicates``: argparse would take a
    value starting with '-' for an option (a pass name is never a one-letter flag)."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] == "--passes" and i + 1 < len(argv) and re.fullmatch(r"-[a-z][a-z0-9-]+(,.*)?", argv[i + 1]):
            out.append(f"--passes={argv[i + 1]}")
            i += 2
            continue
        out.append(argv[i])
        i += 1
    return out


# API keywords whose flag is not "--" + the keyword with dashes (library errors name keywords).
FLAGS = {"value_ranges": "--val-range", "plot_dir": "--plot", "exclude_file": "--exclude-rewrites",
          "verify=False": "--no-verify"}


def flag_for(option: str) -> str:
    """The flag for an API keyword in an error message (``block_size`` -> ``--block-size``,
    ``target=passes`` -> ``--target passes``)."""
    if option in FLAGS:
        return FLAGS[option]
    name, eq, value = option.partition("=")
    flag = "--" + name.replace("_", "-")
    return f"{flag} {value}" if eq else flag


# Options whose values are NAME:VALUE (or a bare [LO,HI]) and take several: argparse would
# give them a model path written after them. A value without ':' ends the list.
_KEYED_LISTS = frozenset({"--input-shapes", "--val-range", "--trt-min-shapes", "--trt-opt-shapes", "--trt-max-shapes"})


def unswallow_keyed_lists(argv: list[str], commands: set[str]) -> list[str]:
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


# --- option groups several commands share ------------------------------------------------

def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input-shapes", nargs="+", metavar="NAME:1x3x224x224", default=[],
                   help="shapes for inputs (also NAME:[1,3,224,224]); dynamic dims not named get generated sizes")
    p.add_argument("--atol", type=tol_arg, action="append", metavar="[OUT:]A", help="absolute tolerance, global or per output")
    p.add_argument("--rtol", type=tol_arg, action="append", metavar="[OUT:]R", help="relative tolerance, global or per output")
    p.add_argument("--seed", type=int, default=0, help="seed for generated inputs (default 0)")


def add_data_args(p: argparse.ArgumentParser) -> None:
    """Input-data and tolerance options shared by compare, doctor, bisect, scan and isolate."""
    add_model_args(p)
    p.add_argument("--val-range", nargs="+", default=[], metavar="NAME:[LO,HI]", help="value range for generated inputs")
    p.add_argument("--iterations", type=int, default=1, help="number of input samples (default 1)")
    p.add_argument("--load-inputs", metavar="FILE", help="inputs from .npz or Polygraphy JSON (polygraphy run --save-inputs)")
    p.add_argument("--save-inputs", metavar="FILE", help="write the inputs used (.npz or .json, Polygraphy's format)")
    p.add_argument("--nan-equal", action="store_true", help="count NaN in both runs at the same place as a match")


def data_options(args) -> dict:
    """The API's input-data keywords from the options _add_data_args defines."""
    return {"load_inputs": args.load_inputs, "save_inputs": args.save_inputs,
            "input_shapes": parse_shape_args(args.input_shapes), "value_ranges": parse_value_ranges(args.val_range),
            "iterations": args.iterations, "seed": args.seed, "atol": tolerances(args.atol),
            "rtol": tolerances(args.rtol)}


def add_backend_args(p: argparse.ArgumentParser) -> None:
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


def backend_options(args, name: str | None) -> dict:
    """Keyword options for ``backends.create(name, ...)``; options for another backend are an error."""
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
    shapes = [parse_shape_args(getattr(args, f"trt_{w}_shapes")) for w in ("min", "opt", "max")]
    if any(shapes):
        if not all(shapes) or len({frozenset(s) for s in shapes}) != 1:
            raise UsageError("--trt-min-shapes, --trt-opt-shapes and --trt-max-shapes must all name the same inputs")
        opts["profiles"] = [{n: (shapes[0][n], shapes[1][n], shapes[2][n]) for n in shapes[0]}]
    if args.save_engine:
        opts["save_engine"] = args.save_engine
    if args.load_engine:
        opts["load_engine"] = args.load_engine
    return opts


def add_output_args(p: argparse.ArgumentParser) -> None:
    """``--report FILE`` and ``--json``: the command's report as JSON, in a file and/or on stdout."""
    p.add_argument("--report", metavar="REPORT.json", help="write the report as JSON")
    p.add_argument("--json", action="store_true", help="print the report as JSON on stdout instead of the tables")
