"""Run a model on ONNX Runtime (CPU) in a worker process: ``python -m surgeon.backends.ort_worker SPEC.json``.

Why a process: ONNX Runtime's graph optimizers can crash the process on float16 graphs
(measured here: onnxruntime 1.32 segfaults creating a session, at the default
optimization level, for the float16 conversion of the corpus's LSTM/GRU model, and loads
it with basic optimizations). A crash must become a verdict for the caller, not the end of
a search that took minutes. SPEC: ``{"model", "inputs" (.npz, one file per sample),
"outputs" (.npz per sample), "optimization"}``. Exit 0 on success, 1 with one line on
stderr on a handled failure; a crash shows up as a signal in the parent.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}


def _pack(values: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """npz cannot carry bfloat16: store it as its bits, under a marked key."""
    out = {}
    for k, v in values.items():
        v = np.asarray(v)
        if v.dtype.name == "bfloat16":
            out[f"{k}::surgeon-bf16"] = v.view(np.uint16)
        else:
            out[k] = v
    return out


def _unpack(z: Any) -> dict[str, np.ndarray]:
    out = {}
    for k in z.files:
        if k.endswith("::surgeon-bf16"):
            import ml_dtypes

            out[k[: -len("::surgeon-bf16")]] = z[k].view(ml_dtypes.bfloat16)
        else:
            out[k] = z[k]
    return out


def _run(spec: dict) -> None:
    import onnxruntime as ort

    ort.set_default_logger_severity(4)
    so = ort.SessionOptions()
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _LEVELS[spec.get("optimization", "all")])
    so.log_severity_level = 4
    sess = ort.InferenceSession(spec["model"], so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    for src, dst in zip(spec["inputs"], spec["outputs"]):
        with np.load(src, allow_pickle=False) as z:
            feeds = _unpack(z)
        values = sess.run(names, feeds)
        np.savez(dst, **_pack(dict(zip(names, values))))


def worker_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for ``python -m surgeon...`` workers: this very copy of surgeon first
    on the path (an installed copy of another version must not answer for this one)."""
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, **dict(extra or {}))
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def run_in_worker(model_path: str | os.PathLike, samples: Sequence[Mapping[str, Any]], *, optimization: str = "all",
                  timeout: float = 600.0) -> tuple[list[dict[str, Any]] | None, str]:
    """Outputs per sample, or (None, one sentence saying why not). Never raises for ORT's failures."""
    with tempfile.TemporaryDirectory(prefix="surgeon-ort-") as tmp:
        ins, outs = [], []
        for i, s in enumerate(samples):
            ins.append(str(Path(tmp) / f"in{i}.npz"))
            outs.append(str(Path(tmp) / f"out{i}.npz"))
            np.savez(ins[-1], **_pack(s))
        spec_path = Path(tmp) / "spec.json"
        spec_path.write_text(json.dumps({"model": str(model_path), "inputs": ins, "outputs": outs,
                                         "optimization": optimization}), encoding="utf-8")
        try:
            proc = subprocess.run([sys.executable, "-m", "surgeon.backends.ort_worker", str(spec_path)],
                                  capture_output=True, text=True, timeout=timeout, env=worker_env())
        except subprocess.TimeoutExpired:
            return None, f"ONNX Runtime did not finish within {timeout:g} s"
        if proc.returncode < 0:
            try:
                sig = signal.Signals(-proc.returncode).name
            except ValueError:
                sig = f"signal {-proc.returncode}"
            return None, f"ONNX Runtime crashed ({sig}) at optimization level '{optimization}'"
        if proc.returncode != 0:
            lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
            return None, lines[-1] if lines else f"the ONNX Runtime worker ended with code {proc.returncode}"
        results = []
        for dst in outs:
            with np.load(dst, allow_pickle=False) as z:
                results.append(_unpack(z))
        return results, ""


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m surgeon.backends.ort_worker SPEC.json", file=sys.stderr)
        return 2
    spec = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    try:
        _run(spec)
    except Exception as exc:  # one line for the parent
        text = str(exc).strip()
        for prefix in ("[ONNXRuntimeError] : ",):
            if prefix in text:
                text = text.split(prefix, 1)[1]
        print(f"ONNX Runtime failed: {text.splitlines()[0] if text else type(exc).__name__}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
