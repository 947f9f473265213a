"""The sweep's files in OUT: results.jsonl, sweep.json (a baseline for the next run),
summary.md, and JUnit XML where asked; each written atomically."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_outputs(result: Any, *, junit: str | os.PathLike | None = None) -> None:
    from surgeon.files import write_text_atomic
    from surgeon.render.junit import junit_xml
    from surgeon.render.sweep import markdown
    from surgeon.report import to_json

    out: Path = result.out
    result.files = {"jsonl": str(out / "results.jsonl"), "json": str(out / "sweep.json"),
                    "markdown": str(out / "summary.md")}
    if junit:
        result.files["junit"] = str(junit)
    write_text_atomic(result.files["jsonl"], "".join(json.dumps(m.to_dict()) + "\n" for m in result.models))
    write_text_atomic(result.files["markdown"], markdown(result))
    if junit:
        write_text_atomic(str(junit), junit_xml(result))
    write_text_atomic(result.files["json"], to_json(result.to_dict()))
