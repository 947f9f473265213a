"""The sweep's cache: a step's result, keyed by what it depends on.

A key covers the model's bytes and its external data files, the step, the step's options
(with the content of every file an option names, such as ``load_inputs`` or a rules file)
and the surgeon version; a step that runs on the fixed model is keyed by the fix step's key,
since the fixed model is a function of exactly that. So a second run with nothing changed
finds every step and starts no worker, and a changed model, option or release recomputes
only what it touches. Results of a lost process (crash, timeout, out of memory) are never
stored: the next run tries them again.

Hashing a large zoo on every run would cost more than a small sweep, so file hashes are
remembered by (path, size, modification time) in ``hashes.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping

from surgeon.files import write_text_atomic
from surgeon.sweep.results import Status, StepResult

_CHUNK = 1 << 20


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def external_data_files(path: Path) -> list[Path]:
    """Files a model's initializers point to (``location``), read from the protobuf without its weights."""
    from surgeon import model as model_io

    try:
        return sorted(Path(p) for p in model_io.external_data_paths(path))
    except Exception:  # an unreadable model is the step's problem to report, not the cache's
        return []


class Cache:
    """Step results under ``folder`` (``OUT/.cache``), one JSON file per key."""

    def __init__(self, folder: str | os.PathLike, version: str, enabled: bool = True):
        self.folder = Path(folder)
        self.version = version
        self.enabled = enabled
        self._hashes_path = self.folder / "hashes.json"
        self._hashes: dict[str, list] = {}
        if self._hashes_path.is_file():
            try:
                self._hashes = json.loads(self._hashes_path.read_text(encoding="utf-8"))
            except ValueError:
                self._hashes = {}
        self._dirty = False

    def file_hash(self, path: str | os.PathLike) -> str:
        p = Path(path).resolve()
        st = p.stat()
        stamp = [st.st_size, st.st_mtime_ns]
        known = self._hashes.get(str(p))
        if known and known[:2] == stamp:
            return known[2]
        digest = _sha256_file(p)
        self._hashes[str(p)] = [*stamp, digest]
        self._dirty = True
        return digest

    def model_hash(self, path: str | os.PathLike) -> str:
        """The model file and its external data files, in one digest.

        The list of data files is remembered with the model's hash, so that an unchanged
        model is not parsed (nor onnx imported) to find them again."""
        p = Path(path).resolve()
        digest = self.file_hash(p)
        entry = self._hashes[str(p)]
        if len(entry) < 4:
            entry.append([str(d) for d in external_data_files(p)])
            self._dirty = True
        h = hashlib.sha256(digest.encode())
        for data in map(Path, entry[3]):
            if data.is_file():
                h.update(f"{data.name}:{self.file_hash(data)}".encode())
        return h.hexdigest()

    def _canonical(self, options: Mapping[str, Any]) -> Any:
        """Options with each file they name replaced by the file's digest."""
        out = {}
        for k, v in sorted(options.items()):
            if k in ("load_inputs", "rules") and v:
                paths = [v] if isinstance(v, str) else list(v)
                out[k] = [self.file_hash(p) for p in paths]
            elif isinstance(v, Mapping):
                out[k] = {str(a): list(b) if isinstance(b, tuple) else b for a, b in sorted(v.items())}
            else:
                out[k] = list(v) if isinstance(v, tuple) else v
        return out

    def step_key(self, step: str, options: Mapping[str, Any], input_key: str) -> str:
        blob = json.dumps({"surgeon": self.version, "step": step, "options": self._canonical(options),
                           "input": input_key}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()

    def get(self, key: str, out_dir: Path) -> StepResult | None:
        """The stored result, when every report it names is still in ``out_dir``."""
        if not self.enabled:
            return None
        path = self.folder / f"{key}.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        result = StepResult.from_dict(data)
        if not all((out_dir / r).exists() for r in result.reports):
            return None
        result.cached = True
        return result

    def put(self, key: str, result: StepResult) -> None:
        if result.status not in (Status.OK, Status.ERROR):  # a lost process is tried again next time
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        write_text_atomic(str(self.folder / f"{key}.json"), json.dumps(result.to_dict()))

    def save_hashes(self) -> None:
        if self._dirty:
            self.folder.mkdir(parents=True, exist_ok=True)
            write_text_atomic(str(self._hashes_path), json.dumps(self._hashes))
            self._dirty = False
