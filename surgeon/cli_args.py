"""The command line's grammar for values: what ``NAME:1x3x224x224``, ``NAME:[LO,HI]``,
``[OUT:]1e-3`` and ``NAME:MIN/OPT/MAX`` mean, turned into the Python values the API takes.

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
