"""Which engine answers: full TensorRT, TensorRT-RTX, or the static matrix.

``auto`` takes full TensorRT where ``tensorrt`` imports (the deployment target), else
TensorRT-RTX where ``tensorrt_rtx`` imports (a real parser and builder that run on a CPU),
else the static matrix. An engine named explicitly that is not installed is a usage
error with one sentence saying what is missing and how to install it.

:class:`ExecutedEngine` is the adapter over the worker process
(:class:`surgeon.backends.trt.TrtWorker`): candidates are written to the workspace and
parsed/built out of process, so a TensorRT abort costs one answer, not the session.
"""

from __future__ import annotations

import re
from typing import Any

import onnx

from surgeon.backends import trt as trt_backend
from surgeon.debug.trt_check.parse_loop import ParseOutcome
from surgeon.debug.trt_check.workspace import Workspace
from surgeon.errors import BackendUnavailableError, UsageError

ENGINES = ("auto", "trt", "trt-rtx", "matrix")
_CC = re.compile(r"^(\d+)\.(\d+)$")


def resolve(engine: str) -> str:
    if engine not in ENGINES:
        raise UsageError(f"unknown engine '{engine}'; choose one of {', '.join(ENGINES)}")
    if engine == "auto":
        for name in ("trt", "trt-rtx"):
            if trt_backend.available(name):
                return name
        return "matrix"
    if engine in ("trt", "trt-rtx") and not trt_backend.available(engine):
        raise BackendUnavailableError(trt_backend.missing_sentence(
            engine, "use '--engine matrix' for the published operator matrix (static, nothing executed)"))
    return engine


def parse_target_cc(values: list[str] | None, engine: str) -> list[tuple[int, int]]:
    """``8.6`` -> (8, 6); ahead-of-time targets exist in TensorRT-RTX only."""
    out = []
    for v in values or []:
        m = _CC.match(v.strip())
        if not m:
            raise UsageError(f"--target-cc '{v}' is not a compute capability like 8.6")
        out.append((int(m.group(1)), int(m.group(2))))
    if out and engine != "trt-rtx":
        raise UsageError("--target-cc needs --engine trt-rtx (TensorRT-RTX builds ahead of time for named GPUs; "
                         "full TensorRT builds for the GPU it runs on)")
    return out


class ExecutedEngine:
    """Parse and build through a worker process; one instance per check."""

    def __init__(self, name: str, workspace: Workspace | None = None, *, timeout: float = 600.0):
        self.name = name
        self.workspace = workspace  # set before the first parse or build
        self.worker = trt_backend.TrtWorker(name, timeout=timeout).start()
        self._info: dict[str, Any] | None = None
        self.supports_ops: list[str] = []

    def close(self) -> None:
        self.worker.close()

    def info(self) -> dict[str, Any]:
        if self._info is None:
            self._info = self.worker.request("info")
        return self._info

    def describe(self) -> dict[str, Any]:
        info = self.info()
        what = ("ONNX parser + builder (build_serialized_network), CPU-only: no engine is run" if self.name == "trt-rtx"
                else "ONNX parser + builder through Polygraphy")
        return {"name": self.name, "label": trt_backend.label(self.name), "version": info.get("version", ""),
                "mode": "executed", "what": what, "parser_version": info.get("parser_version"),
                "compute_capabilities": info.get("compute_capabilities", [])}

    def check_targets(self, targets: list[tuple[int, int]]) -> None:
        known = self.info().get("compute_capabilities", [])
        for major, minor in targets:
            if f"SM{major}{minor}" not in known:
                names = ", ".join(f"{c[2:-1]}.{c[-1]}" for c in sorted(known) if c[2:].isdigit())
                raise UsageError(f"--target-cc {major}.{minor}: this TensorRT-RTX cannot build for it (it can for: {names})")

    def parse(self, model: onnx.ModelProto) -> ParseOutcome:
        from surgeon.backends.trt import WorkerCrash

        path = self.workspace.write(model, "parse")
        try:
            r = self.worker.request("parse", model=str(path), ops=self.supports_ops)
        except WorkerCrash as exc:
            return ParseOutcome(False, [{"code": "CRASH", "node": -1, "node_name": "", "op": "", "desc": str(exc), "func": ""}])
        finally:
            path.unlink(missing_ok=True)
        return ParseOutcome(r["ok"], r["errors"], r["seconds"], r.get("supports", {}))

    def build(self, model: onnx.ModelProto, profiles: list[dict], target: tuple[int, int] | None) -> dict:
        from surgeon.backends.trt import WorkerCrash

        path = self.workspace.write(model, "build")
        try:
            return self.worker.request("build", model=str(path), profiles=profiles,
                                       compute_capabilities=[list(target)] if target else [])
        except WorkerCrash as exc:
            return {"parsed": True, "parse_errors": [], "built": False, "messages": [["CRASH", str(exc)]],
                    "build_seconds": 0.0, "engine_bytes": 0}
        finally:
            path.unlink(missing_ok=True)
