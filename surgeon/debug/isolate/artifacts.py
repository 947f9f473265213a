"""The isolate output directory: report, oracle-call log (resumable), and the avoid-file.

Layout of OUTDIR:
  report.json           the whole result (status, culprits, confirmations, calls)
  calls.json            every real oracle call so far, with the choice list; a later run
                        with the same target and choices reuses these verdicts (resume)
  exclude-rewrites.txt  --target passes: keys for ``surgeon fix --exclude-rewrites``
  disabled_optimizers.txt / .json   --target onnxrt-optimizers
  timing.cache / tactics.json       --target trt-tactics
Every file is written atomically; nothing is written before the inputs are validated.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from surgeon import model as model_io
from surgeon.debug.isolate.ddmin import Call, Subset, Verdict
from surgeon.errors import UsageError
from surgeon.report import read_json, write_json

CALLS = "calls.json"
REPORT = "report.json"


class ArtifactDir:
    def __init__(self, path: str | os.PathLike, target: str, choices: Sequence[str]):
        self.path = Path(path)
        self.target = target
        self.choices = list(choices)
        self.calls: list[dict[str, Any]] = []
        if self.path.exists() and not self.path.is_dir():
            raise UsageError(f"output directory '{self.path}' exists and is not a directory")

    def create(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot create the output directory '{self.path}': {exc.strerror}") from exc

    def resume_cache(self) -> dict[Subset, Verdict]:
        """Verdicts of an earlier run on the same target and choices (search calls only)."""
        doc = read_json(self.path / CALLS)
        if doc is None or doc.get("target") != self.target or doc.get("choices") != self.choices:
            return {}
        cache: dict[Subset, Verdict] = {}
        for call in doc.get("calls", []):
            if call.get("phase") != "confirm":
                cache.setdefault(tuple(call["subset"]), Verdict(call["verdict"]))
        self.calls = [c for c in doc.get("calls", [])]
        return cache

    def record(self, call: Call) -> None:
        self.calls.append({"subset": list(call.subset), "verdict": call.verdict.value, "phase": call.phase})
        write_json(str(self.path / CALLS), {"target": self.target, "choices": self.choices, "calls": self.calls})

    def write_report(self, report: dict[str, Any]) -> Path:
        write_json(str(self.path / REPORT), report)
        return self.path / REPORT

    def write_text(self, name: str, text: str) -> Path:
        model_io.write_text_atomic(self.path / name, text)
        return self.path / name

    def write_bytes(self, name: str, payload: bytes) -> Path:
        target = self.path / name
        tmp = target.with_name(f".{name}.tmp")
        tmp.write_bytes(payload)
        os.replace(tmp, target)
        return target
