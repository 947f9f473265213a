"""The bisect OUTDIR: a repro bundle, and the verdicts that make a rerun resumable.

Layout::

    OUTDIR/reduced.onnx           the minimal failing subgraph (inputs = its boundary tensors)
    OUTDIR/reduced_against.onnx   (--against only) the second model's matching part
    OUTDIR/inputs.npz             reference values of reduced.onnx's inputs, one entry per sample
    OUTDIR/expected.npz           reference values of its outputs (``<ref>/sample<i>/<name>``)
    OUTDIR/report.json            culprits first, then the search log
    OUTDIR/REPRO.md               the exact command that reproduces the failure
    OUTDIR/bisect-state.json      every verdict so far, keyed by candidate

Why resumable: an oracle call can take minutes (a TensorRT build), and a bisect that
dies at call 15 of 20 should not start over. The state file is rewritten atomically
after each verdict and is used only when its fingerprint (model bytes, oracle, inputs,
tolerances) matches the current run.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import onnx

from surgeon import model as model_io
from surgeon.debug.bisect.oracle import Observation
from surgeon.errors import UsageError
from surgeon.report import read_json, write_json

STATE = "bisect-state.json"


def prepare_outdir(path: str | Path) -> Path:
    """Create OUTDIR (its parent must exist); refuse a path that is a file."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UsageError(f"the output folder '{p}' is a file; give a folder with -o")
    if not p.resolve().parent.is_dir():
        raise UsageError(f"the parent folder of '{p}' does not exist")
    p.mkdir(exist_ok=True)
    return p


def fingerprint(model: onnx.ModelProto, oracle: str, samples: Sequence[Mapping[str, Any]], extra: str = "") -> str:
    h = hashlib.sha256()
    h.update(model.SerializeToString(deterministic=True))
    h.update(oracle.encode())
    h.update(extra.encode())
    for s in samples:
        for k in sorted(s):
            v = np.ascontiguousarray(s[k])
            h.update(k.encode())
            h.update(str(v.dtype).encode() + str(v.shape).encode())
            h.update(v.tobytes())
    return h.hexdigest()


def _key(kind: str, nodes: frozenset[int]) -> str:
    return f"{kind}:" + ",".join(map(str, sorted(nodes)))


def load_state(outdir: Path, fp: str) -> dict[tuple[str, frozenset[int]], Observation]:
    """Verdicts of an earlier run with the same fingerprint (empty otherwise)."""
    data = read_json(outdir / STATE)
    if data is None or data.get("fingerprint") != fp:
        return {}
    out = {}
    for key, v in data.get("verdicts", {}).items():
        kind, _, nodes = key.partition(":")
        out[(kind, frozenset(int(x) for x in nodes.split(",") if x))] = Observation.from_dict(v)
    return out


def save_state(outdir: Path, fp: str, verdicts: Mapping[tuple[str, frozenset[int]], Observation]) -> None:
    write_json(str(outdir / STATE), {"fingerprint": fp, "verdicts": {_key(k, n): v.to_dict() for (k, n), v in verdicts.items()}})


def write_bundle(outdir: Path, *, reduced: onnx.ModelProto, inputs: Sequence[Mapping[str, Any]],
                 expected: Sequence[Mapping[str, Any]], ref_name: str, report: Mapping[str, Any], repro: str,
                 against: onnx.ModelProto | None = None) -> list[str]:
    """Write the repro bundle; returns the file names written."""
    from surgeon import input_files

    written = []
    model_io.save(reduced, outdir / "reduced.onnx")
    written.append("reduced.onnx")
    if against is not None:
        model_io.save(against, outdir / "reduced_against.onnx")
        written.append("reduced_against.onnx")
    if inputs and any(inputs):
        input_files.save_inputs(outdir / "inputs.npz", inputs)
        written.append("inputs.npz")
    input_files.save_outputs(outdir / "expected.npz", {ref_name: list(expected)})
    written.append("expected.npz")
    write_json(str(outdir / "report.json"), dict(report))
    written.append("report.json")
    model_io.write_text_atomic(outdir / "REPRO.md", repro)
    written.append("REPRO.md")
    return written
