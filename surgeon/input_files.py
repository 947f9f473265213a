"""Reading and writing input samples and outputs: ``.npz`` and Polygraphy's JSON.

Why Polygraphy's JSON: people already have ``polygraphy run --save-inputs`` files, and
``polygraphy run --load-inputs`` should accept what we write, so debugging can move
between the two tools. We use Polygraphy's own ``polygraphy.json`` encoder and decoder
(imported lazily) instead of re-implementing its array encoding.

Layouts:
- JSON inputs: a list with one ``{name: array}`` dict per sample (Polygraphy's
  data-loader format). JSON outputs: Polygraphy's ``RunResults`` (``polygraphy run
  --save-outputs``), one runner per backend.
- ``.npz`` inputs: plain input names for one sample, or ``sample<i>/<name>`` keys for
  several. ``.npz`` outputs: ``<backend>/sample<i>/<name>`` keys.

Sequences and optionals (an extension: Polygraphy's data loader feeds tensors only, and
has no convention for them):
- JSON: a sequence is a JSON list of arrays (``[]`` is an empty sequence), an absent
  optional is ``null``; a present optional is its value. Polygraphy's own encoder and
  decoder carry both, so the file stays valid Polygraphy JSON.
- ``.npz``: a sequence ``NAME`` of length n is ``NAME@len`` (an int64 scalar) plus
  ``NAME@0`` .. ``NAME@<n-1>``; an absent optional is ``NAME@none`` (an empty array).
  ``NAME@<digits>`` keys are sequence elements only when ``NAME@len`` is present.
- bfloat16, float8 and int4 arrays are written by ``np.save`` as raw bytes (numpy has
  no such types); :func:`surgeon.input_data.check_feeds` reads them back as the
  model's element type.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from surgeon import model as model_io
from surgeon.errors import InputDataError, UsageError

log = logging.getLogger(__name__)

_SAMPLE_KEY = re.compile(r"^sample(\d+)/(.+)$")
_SEQ_LEN, _ABSENT = "@len", "@none"
_SEQ_ITEM = re.compile(r"^(.+)@(\d+)$")
_FORMATS = (".npz", ".json")


def _format(path: str | os.PathLike, what: str) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in _FORMATS:
        raise UsageError(f"cannot tell the format of {what} file '{path}': use a .npz or .json (Polygraphy) file name")
    return suffix


def check_path(path: str | os.PathLike, what: str = "data") -> None:
    """Refuse a file name whose format we cannot tell, before any work is done."""
    _format(path, what)


def load_inputs(path: str | os.PathLike) -> list[dict[str, np.ndarray]]:
    """Input samples from ``.npz`` or Polygraphy JSON; one sentence on any problem."""
    p = Path(path)
    if not p.is_file():
        raise InputDataError(f"input data file '{p}' does not exist")
    fmt = _format(p, "the input data")
    samples = _load_npz_inputs(p) if fmt == ".npz" else _load_json_inputs(p)
    if not samples:
        raise InputDataError(f"input data file '{p}' holds no samples")
    for i, s in enumerate(samples):
        for name, value in s.items():
            ok = value is None or isinstance(value, (np.ndarray, Mapping)) or (
                isinstance(value, list) and all(isinstance(v, np.ndarray) for v in value))
            if not ok:
                raise InputDataError(f"input '{name}' of sample {i} in '{p}' is neither an array, a list of arrays "
                                     "(a sequence) nor null (an absent optional)")
    return samples


def _decode_npz_sample(items: Mapping[str, np.ndarray], p: Path) -> dict[str, Any]:
    """One sample's keys -> values, sequences and absent optionals folded back (see the module docstring)."""
    out: dict[str, Any] = {}
    lengths = {k[: -len(_SEQ_LEN)]: v for k, v in items.items() if k.endswith(_SEQ_LEN)}
    taken: set[str] = set()
    for name, n in lengths.items():
        if n.shape != () or n.dtype.kind not in "iu" or int(n) < 0:
            raise InputDataError(f"'{name}{_SEQ_LEN}' in '{p}' must be a non-negative integer scalar (a sequence length)")
        elems = []
        for j in range(int(n)):
            key = f"{name}@{j}"
            if key not in items:
                raise InputDataError(f"sequence '{name}' in '{p}' has length {int(n)} but no element '{key}'")
            elems.append(items[key])
            taken.add(key)
        out[name] = elems
        taken.add(f"{name}{_SEQ_LEN}")
    for key, value in items.items():
        if key in taken:
            continue
        if key.endswith(_ABSENT):
            out[key[: -len(_ABSENT)]] = None
        else:
            m = _SEQ_ITEM.match(key)
            if m and m.group(1) in lengths:
                raise InputDataError(f"'{key}' in '{p}' lies beyond the length of sequence '{m.group(1)}'")
            out[key] = value
    return out


def _encode_npz_sample(sample: Mapping[str, Any], prefix: str) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    for name, value in sample.items():
        if value is None:
            arrays[f"{prefix}{name}{_ABSENT}"] = np.zeros(0, dtype=np.int8)
        elif isinstance(value, (list, tuple)):
            arrays[f"{prefix}{name}{_SEQ_LEN}"] = np.array(len(value), dtype=np.int64)
            for j, v in enumerate(value):
                arrays[f"{prefix}{name}@{j}"] = np.asarray(v)
        elif isinstance(value, Mapping):
            raise InputDataError(f"input '{name}' is a map; maps cannot be written to an input file")
        else:
            arrays[f"{prefix}{name}"] = np.asarray(value)
    return arrays


def _load_npz_inputs(p: Path) -> list[dict[str, np.ndarray]]:
    try:
        with np.load(p, allow_pickle=False) as z:
            items = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise InputDataError(f"'{p}' is not a readable .npz file: {exc}") from exc
    if items and all(_SAMPLE_KEY.match(k) for k in items):
        by_index: dict[int, dict[str, np.ndarray]] = {}
        for key, value in items.items():
            m = _SAMPLE_KEY.match(key)
            by_index.setdefault(int(m.group(1)), {})[m.group(2)] = value
        if sorted(by_index) != list(range(len(by_index))):
            raise InputDataError(f"the samples in '{p}' are not numbered sample0, sample1, ... without gaps")
        return [_decode_npz_sample(by_index[i], p) for i in range(len(by_index))]
    return [_decode_npz_sample(items, p)]


def _load_json_inputs(p: Path) -> list[dict[str, np.ndarray]]:
    from polygraphy.json import load_json

    try:
        data = load_json(str(p))
    except Exception as exc:  # Polygraphy raises plain exceptions for bad JSON / unknown classes
        raise InputDataError(f"'{p}' is not a Polygraphy JSON data file: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}") from exc
    if type(data).__name__ == "RunResults":
        raise InputDataError(f"'{p}' holds outputs (polygraphy --save-outputs), not inputs; pass a --save-inputs file")
    if isinstance(data, Mapping):
        data = [data]
    if not isinstance(data, list) or not all(isinstance(s, Mapping) for s in data):
        raise InputDataError(f"'{p}' does not hold a list of {{input name: array}} samples (Polygraphy's --save-inputs format)")
    return [{str(k): _json_value(v) for k, v in s.items()} for s in data]


def _json_value(v: Any) -> Any:
    """Polygraphy-decoded arrays stay; a list of arrays is a sequence, null an absent optional.

    A list of plain JSON numbers is a tensor written by hand.
    """
    if v is None or isinstance(v, np.ndarray):
        return v
    if isinstance(v, Mapping):
        return dict(v)
    if isinstance(v, list) and all(isinstance(x, np.ndarray) for x in v):
        return list(v)
    return np.asarray(v)


def save_inputs(path: str | os.PathLike, samples: Sequence[Mapping[str, np.ndarray]]) -> None:
    """Write samples atomically (``.npz`` or Polygraphy JSON that ``polygraphy run --load-inputs`` reads)."""
    fmt = _format(path, "the input data")
    samples = [{k: _plain(k, v) for k, v in s.items()} for s in samples]
    if fmt == ".json":
        _save_json_atomic(path, samples)
        return
    arrays: dict[str, np.ndarray] = {}
    for i, s in enumerate(samples):
        arrays.update(_encode_npz_sample(s, "" if len(samples) == 1 else f"sample{i}/"))
    _save_npz_atomic(path, arrays)


def _plain(name: str, value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return [np.asarray(v) for v in value]
    if isinstance(value, Mapping):
        raise InputDataError(f"input '{name}' is a map; maps cannot be written to an input file")
    return np.asarray(value)


def save_outputs(path: str | os.PathLike, runs: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[str]:
    """Write each backend's outputs per sample; returns notes about what could not be written.

    JSON is Polygraphy's ``RunResults`` (so ``polygraphy run --load-outputs`` reads it).
    Non-tensor outputs (sequences, maps) have no place in either format and are skipped
    with a note.
    """
    fmt = _format(path, "the output data")
    notes: list[str] = []
    clean: dict[str, list[dict[str, np.ndarray]]] = {}
    for backend, samples in runs.items():
        clean[backend] = []
        for i, outputs in enumerate(samples):
            kept = {}
            for name, value in outputs.items():
                if isinstance(value, np.ndarray):
                    kept[name] = value
                elif not any(name in n for n in notes):
                    notes.append(f"output '{name}' is not a tensor and was not saved")
            clean[backend].append(kept)
    if fmt == ".json":
        from polygraphy.comparator import IterationResult, RunResults

        results = RunResults()
        for backend, samples in clean.items():
            results.append((backend, [IterationResult(outputs=s, runner_name=backend) for s in samples]))
        _save_json_atomic(path, results)
    else:
        _save_npz_atomic(path, {f"{b}/sample{i}/{k}": v for b, ss in clean.items() for i, s in enumerate(ss) for k, v in s.items()})
    return notes


def _tmp_beside(path: str | os.PathLike, suffix: str) -> str:
    dst = Path(path)
    if not dst.resolve().parent.is_dir():
        raise UsageError(f"cannot write '{path}': its folder does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=suffix, dir=dst.resolve().parent)
    os.close(fd)
    return tmp


def _save_npz_atomic(path: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> None:
    tmp = _tmp_beside(path, ".npz")
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _save_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    from polygraphy.json import to_json

    model_io.write_text_atomic(path, to_json(obj))
