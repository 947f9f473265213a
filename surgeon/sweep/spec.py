"""What to sweep: model paths, folders and manifests turned into one :class:`ModelSpec` each.

Everything here runs before any work, so that a missing model, an unreadable manifest, an
unknown step or a misspelt option is one sentence (exit 2) and not a failure found an hour
into a sweep. A manifest is YAML (or JSON, a subset of it): YAML because the per-model
options are nested mappings that people edit by hand and comment, and pyyaml is small
and everywhere.

Manifest::

    steps: [fix, trt-check]            # default steps (else --steps)
    defaults: {timeout: 600, memory: 4G, trt-check: {engine: matrix}}
    models:
      - path: models/resnet.onnx       # relative to the manifest
        input_shapes: {input: [1, 3, 224, 224]}
        load_inputs: inputs/resnet.npz
        atol: 1.0e-4
        steps: [fix, trt-check, fp16]
        fp16: {keep: [Softmax]}
        expect: {trt-check: not-ready} # a known failure: passes while it stays so
      - dir: more_models/              # every .onnx below it, with these options
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from surgeon.errors import UsageError
from surgeon.sweep.results import STEPS, VERDICTS

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
DEFAULT_TIMEOUT = 1800.0

# Options each step takes from a manifest (the API keywords of surgeon.<step>).
STEP_OPTIONS: dict[str, frozenset[str]] = {
    "fix": frozenset({"passes", "rounds", "verify", "strict", "rules", "target_opset", "fix_shapes"}),
    "trt-check": frozenset({"engine", "build", "target_cc", "matrix_version", "profile", "timeout"}),
    "scan": frozenset({"ref", "fp16", "fp16_keep", "near_zero", "iterations", "value_ranges"}),
    "fp16": frozenset({"precision", "keep", "keep_io_types", "max_oracle_calls", "trt_check", "iterations",
                       "value_ranges"}),
    "profile": frozenset({"backend", "warmup", "iterations", "threads"}),
}
# Options of the model that every step taking them gets.
COMMON = frozenset({"input_shapes", "load_inputs", "atol", "rtol", "seed"})
TAKES_COMMON: dict[str, frozenset[str]] = {
    "fix": COMMON,
    "trt-check": frozenset({"input_shapes", "seed"}),
    "scan": COMMON,
    "fp16": COMMON,
    "profile": frozenset({"input_shapes", "load_inputs", "seed"}),
}
MODEL_KEYS = frozenset({"path", "dir", "name", "steps", "expect", "timeout", "memory"}) | COMMON | set(STEPS)
PATH_OPTIONS = frozenset({"load_inputs", "rules"})


@dataclass
class ModelSpec:
    """One model's job: which steps, with which options, under which limits."""

    name: str
    path: str  # absolute
    steps: list[str]
    options: dict[str, dict[str, Any]] = field(default_factory=dict)  # step -> API keywords (common ones merged)
    expect: dict[str, list[str]] = field(default_factory=dict)  # step -> verdicts that pass
    timeout: float = DEFAULT_TIMEOUT
    memory: int | None = None  # bytes of resident anonymous memory; None: the sweep's default

    def to_dict(self) -> dict:
        return {"name": self.name, "path": self.path, "steps": self.steps, "options": self.options,
                "expect": self.expect, "timeout": self.timeout, "memory": self.memory}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ModelSpec":
        return cls(**dict(d))


def parse_steps(text: str | Sequence[str], where: str | None = None) -> list[str]:
    """``"fix,trt-check"`` → validated step names, in the order given (duplicates dropped).

    ``where``: the manifest entry they come from (None: the ``steps`` argument)."""
    at, options = (where, ()) if where is not None else ("{0}", ("steps",))
    names = [s.strip() for s in (text.split(",") if isinstance(text, str) else text)]
    names = [n for n in names if n]
    if not names:
        raise UsageError(f"{at}: no steps given; choose from {', '.join(STEPS)}", *options)
    for n in names:
        if n not in STEPS:
            raise UsageError(f"{at}: unknown step '{n}'; choose from {', '.join(STEPS)}", *options)
    return list(dict.fromkeys(names))


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*$", re.I)


def parse_size(value: Any, where: str | None = None) -> int:
    """``4G``, ``500M``, ``1.5GiB`` or a number of bytes (``where``: the manifest entry, None: the argument)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return int(value)
    m = _SIZE.match(str(value))
    if not m or float(m.group(1)) <= 0:
        at, options = (where, ()) if where is not None else ("{0}", ("memory",))
        raise UsageError(f"{at}: '{value}' is not a memory size like 4G or 500M", *options)
    return int(float(m.group(1)) * 1024 ** "BKMGT".index((m.group(2) or "B").upper()))


def _shapes(value: Any, where: str) -> dict[str, tuple[int, ...]]:
    if not isinstance(value, Mapping):
        raise UsageError(f"{where}: input_shapes must map input names to shapes, like {{x: [1, 3, 224, 224]}}")
    out = {}
    for name, dims in value.items():
        if isinstance(dims, str):
            dims = [d for d in re.split(r"[x,\[\]\s]+", dims) if d]
        try:
            out[str(name)] = tuple(int(d) for d in dims)
        except (TypeError, ValueError):
            raise UsageError(f"{where}: input_shapes '{name}': '{dims}' is not a shape of whole numbers") from None
    return out


def _options(raw: Any, known: frozenset[str], where: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise UsageError(f"{where}: expected a mapping of options, got {type(raw).__name__}")
    out = {}
    for key, value in raw.items():
        k = str(key).replace("-", "_")
        if k not in known:
            raise UsageError(f"{where}: unknown option '{key}' (known: {', '.join(sorted(known))})")
        out[k] = value
    return out


def _resolve_paths(options: dict[str, Any], base: Path, where: str) -> None:
    for k in PATH_OPTIONS & set(options):
        value = options[k]
        paths = [value] if isinstance(value, (str, os.PathLike)) else list(value or [])
        resolved = [str((base / p).resolve()) for p in paths]
        for p in resolved:
            if not Path(p).is_file():
                raise UsageError(f"{where}: {k} '{p}' does not exist")
        options[k] = resolved[0] if isinstance(value, (str, os.PathLike)) else resolved


def _entry(raw: Mapping[str, Any], base: Path, where: str, default_steps: list[str]) -> dict[str, Any]:
    """Check one manifest entry (or the defaults) and normalise its keys and values."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        k = str(key).replace("_", "-") if str(key).replace("_", "-") in STEPS else str(key).replace("-", "_")
        if k not in MODEL_KEYS:
            raise UsageError(f"{where}: unknown key '{key}' (known: {', '.join(sorted(MODEL_KEYS))})")
        if k in STEPS:
            out[k] = _options(value, STEP_OPTIONS[k], f"{where}: {k}")
            _resolve_paths(out[k], base, f"{where}: {k}")
        elif k == "steps":
            out[k] = parse_steps(value if isinstance(value, (str, list)) else [], f"{where}: steps")
        elif k == "input_shapes":
            out[k] = _shapes(value, where)
        elif k == "memory":
            out[k] = parse_size(value, f"{where}: memory")
        elif k == "timeout":
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise UsageError(f"{where}: timeout must be a positive number of seconds")
            out[k] = float(value)
        elif k == "expect":
            out[k] = _expect(value, where)
        elif k in ("atol", "rtol"):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise UsageError(f"{where}: {k} must be a non-negative number")
            out[k] = float(value)
        else:
            out[k] = value
    if "load_inputs" in out:
        common = {"load_inputs": out["load_inputs"]}
        _resolve_paths(common, base, where)
        out["load_inputs"] = common["load_inputs"]
    return out


def _expect(value: Any, where: str) -> dict[str, list[str]]:
    if not isinstance(value, Mapping):
        raise UsageError(f"{where}: expect must map steps to verdicts, like {{trt-check: not-ready}}")
    out = {}
    for step, verdicts in value.items():
        if step not in STEPS:
            raise UsageError(f"{where}: expect: unknown step '{step}'; choose from {', '.join(STEPS)}")
        names = [verdicts] if isinstance(verdicts, str) else list(verdicts)
        for v in names:
            if v not in VERDICTS[step]:
                raise UsageError(f"{where}: expect: {step} has no verdict '{v}' (its verdicts: {', '.join(VERDICTS[step])})")
        out[step] = names
    return out


def _models_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.onnx") if p.is_file())


def _load_manifest(path: Path) -> Mapping[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read the manifest '{path}': {exc.strerror}") from exc
    if path.suffix == ".json":
        import json

        try:
            data = json.loads(text)
        except ValueError as exc:
            raise UsageError(f"the manifest '{path}' is not valid JSON: {exc}") from exc
    else:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            at = f" at line {mark.line + 1}" if mark is not None else ""
            raise UsageError(f"the manifest '{path}' is not valid YAML{at}: "
                             f"{getattr(exc, 'problem', None) or exc}") from exc
    if not isinstance(data, Mapping) or not isinstance(data.get("models"), list):
        raise UsageError(f"the manifest '{path}' needs a 'models' list")
    unknown = set(data) - {"models", "defaults", "steps"}
    if unknown:
        raise UsageError(f"the manifest '{path}' has an unknown top-level key '{sorted(unknown)[0]}' "
                         "(known: defaults, models, steps)")
    return data


def _spec(path: Path, name: str, entry: Mapping[str, Any], steps: list[str], timeout: float,
          memory: int | None) -> ModelSpec:
    steps = list(entry.get("steps") or steps)
    options: dict[str, dict[str, Any]] = {}
    for step in steps:
        opts = {k: v for k, v in entry.items() if k in TAKES_COMMON[step]}
        opts.update(entry.get(step, {}))
        options[step] = opts
    expect = {s: v for s, v in (entry.get("expect") or {}).items() if s in steps}
    return ModelSpec(name=name, path=str(path.resolve()), steps=steps, options=options, expect=expect,
                     timeout=float(entry.get("timeout", timeout)), memory=entry.get("memory", memory))


def _name(path: Path, root: Path | None) -> str:
    """A model's name: its path below the folder it was found in (or its stem), without .onnx."""
    rel = path.relative_to(root) if root is not None else Path(path.name)
    return rel.with_suffix("").as_posix()


def collect(sources: Iterable[str | os.PathLike], *, steps: Sequence[str], timeout: float = DEFAULT_TIMEOUT,
            memory: int | None = None) -> list[ModelSpec]:
    """Every model named by ``sources`` (files, folders, manifests), checked before any work."""
    specs: list[ModelSpec] = []
    default_steps = list(steps)
    for source in sources:
        p = Path(source)
        if p.suffix.lower() in MANIFEST_SUFFIXES:
            if not p.is_file():
                raise UsageError(f"the manifest '{p}' does not exist")
            data = _load_manifest(p)
            base = p.resolve().parent
            top_steps = parse_steps(data["steps"], f"{p}: steps") if data.get("steps") else default_steps
            defaults = _entry(data.get("defaults") or {}, base, f"{p}: defaults", top_steps)
            for k in ("path", "dir", "name"):
                if k in defaults:
                    raise UsageError(f"{p}: defaults: '{k}' belongs to a model entry")
            for i, raw in enumerate(data["models"]):
                where = f"{p}: models[{i}]"
                if isinstance(raw, str):
                    raw = {"path": raw}
                if not isinstance(raw, Mapping):
                    raise UsageError(f"{where}: expected a path or a mapping with 'path'")
                entry = {**defaults, **_entry(raw, base, where, top_steps)}
                for step in STEPS:  # per-step options merge with the defaults' rather than replace them
                    if step in defaults and step in raw:
                        entry[step] = {**defaults[step], **entry[step]}
                if ("path" in entry) == ("dir" in entry):
                    raise UsageError(f"{where}: give one of 'path' or 'dir'")
                if "dir" in entry:
                    folder = (base / str(entry["dir"])).resolve()
                    if not folder.is_dir():
                        raise UsageError(f"{where}: the folder '{folder}' does not exist")
                    found = _models_in(folder)
                    if not found:
                        raise UsageError(f"{where}: no .onnx model in '{folder}'")
                    specs += [_spec(m, _name(m, folder), entry, top_steps, timeout, memory) for m in found]
                    continue
                model = (base / str(entry["path"])).resolve()
                if not model.is_file():
                    raise UsageError(f"{where}: the model '{model}' does not exist")
                specs.append(_spec(model, str(entry.get("name") or _name(model, None)), entry, top_steps, timeout,
                                   memory))
        elif p.is_dir():
            found = _models_in(p)
            if not found:
                raise UsageError(f"no .onnx model in the folder '{p}'")
            specs += [_spec(m, _name(m, p), {}, default_steps, timeout, memory) for m in found]
        elif p.is_file():
            specs.append(_spec(p, _name(p, None), {}, default_steps, timeout, memory))
        else:
            raise UsageError(f"the model '{p}' does not exist")
    if not specs:
        raise UsageError("nothing to sweep: give models, folders or a manifest")
    seen: dict[str, str] = {}
    for s in specs:
        if s.name in seen:
            raise UsageError(f"two models are named '{s.name}' ({seen[s.name]} and {s.path}); "
                             "give them names in a manifest")
        seen[s.name] = s.path
    return specs
