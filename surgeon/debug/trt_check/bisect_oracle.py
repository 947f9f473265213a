"""``surgeon bisect --check trt-build``: a built-in oracle that asks TensorRT to parse and build.

Why built in rather than ``--check "surgeon trt-check {model}"``: a shell oracle starts
a process (and imports TensorRT) per candidate and only sees an exit status. This
oracle keeps one TensorRT worker for the whole search and compares *how* a candidate
fails: a candidate only counts as failing when it fails the way the full model does
(same phase, same error code, same source location in TensorRT's message), so the
reduction cannot slide from the builder's internal error onto some other failure.

Candidates are built at the shapes of the reference sample (a one-sized profile for
inputs that are still dynamic): that is where bisect has values for every tensor.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import onnx

from surgeon import model as model_io
from surgeon.backends import trt as trt_backend
from surgeon.debug.bisect.oracle import Observation
from surgeon.debug.trt_check import build_step, engines

NAME = "trt-build"
_WHERE = re.compile(r"\[?([A-Za-z_]+\.(?:cpp|cu|h|hpp))(?:::\w+)?(?::+\d+)?")


def signature(result: Mapping[str, Any]) -> tuple:
    """How a build request failed, without node names or numbers that change as the model shrinks."""
    if not result.get("parsed", True):
        errs = result.get("parse_errors") or [{}]
        return ("parse", errs[0].get("code", ""), errs[0].get("func", ""))
    msgs = [m for _s, m in result.get("messages", [])]
    first = msgs[0] if msgs else ""
    where = _WHERE.search(first)
    return (build_step.classify(first), build_step.code_of(first), where.group(1) if where else "")


def _describe_failure(result: Mapping[str, Any], engine: str) -> str:
    if not result.get("parsed", True):
        return trt_backend.describe_parse_errors(result.get("parse_errors", []), engine)
    msgs = [m for _s, m in result.get("messages", [])]
    return f"build failed: {' '.join(msgs[0].split())[:240]}" if msgs else "build failed without a message"


class TrtBuildOracle:
    """Bisect oracle (``judge(candidate) -> Observation``) over a TensorRT worker; see the module docstring."""

    can_mark = False
    mark_all = False

    def __init__(self, view, ref_values: Sequence[Mapping[str, Any]], types: Mapping[str, onnx.TypeProto], *,
                 engine: str, timeout: float | None = None, target: tuple[int, int] | None = None):
        self.view, self.ref, self.types = view, ref_values, types
        self.engine, self.target = engine, target
        self.worker = trt_backend.TrtWorker(engine, timeout=timeout or 600.0)
        self.calls = 0
        self.signature: tuple | None = None
        self._dir = tempfile.TemporaryDirectory(prefix="surgeon-trt-build-")

    def describe(self) -> str:
        cc = f" for sm{self.target[0]}{self.target[1]}" if self.target else ""
        return f"built-in trt-build: {trt_backend.label(self.engine)} parse + build_serialized_network{cc}"

    def _profile(self, model: onnx.ModelProto) -> list[dict]:
        prof = {}
        inits = {t.name for t in model.graph.initializer}
        for vi in model.graph.input:
            if vi.name in inits or vi.type.WhichOneof("value") != "tensor_type":
                continue
            dims = vi.type.tensor_type.shape.dim
            if any(not d.HasField("dim_value") for d in dims) and vi.name in self.ref[0]:
                shape = [int(x) for x in np.shape(self.ref[0][vi.name])]
                prof[vi.name] = [shape, shape, shape]
        return [prof] if prof else []

    def judge(self, cand) -> Observation:
        model, _inputs, _outputs = self.view.subgraph_model(cand.nodes, self.types)
        path = Path(self._dir.name) / f"candidate{self.calls}.onnx"
        model_io.save(model, path)
        self.calls += 1
        try:
            result = self.worker.request("build", model=str(path), profiles=self._profile(model),
                                         compute_capabilities=[list(self.target)] if self.target else [])
        except trt_backend.WorkerCrash as exc:
            result = {"parsed": True, "built": False, "messages": [["CRASH", str(exc)]]}
        finally:
            for p in path.parent.glob(f"{path.name}*"):
                p.unlink(missing_ok=True)
        failed = not (result.get("parsed", True) and result.get("built"))
        if not failed:
            return Observation(False, "parses and builds")
        sig = signature(result)
        if self.signature is None:
            self.signature = sig  # the first question bisect asks is the whole model
        elif sig != self.signature:
            return Observation(False, f"fails differently ({' / '.join(s for s in sig if s)}): {_describe_failure(result, self.engine)}")
        return Observation(True, _describe_failure(result, self.engine), crashed=True)

    def close(self) -> None:
        self.worker.close()
        self._dir.cleanup()


class TrtBuildCheck:
    """What ``bisect --check trt-build`` passes to the bisect driver: a factory that remembers its oracle."""

    def __init__(self, engine: str = "auto", target_cc: list[str] | None = None):
        name = engines.resolve(engine)
        if name == "matrix":
            from surgeon.errors import BackendUnavailableError

            raise BackendUnavailableError(trt_backend.missing_sentence(
                "trt-rtx", "use '--check \"CMD {model}\"' with a checker of your own (trt-build needs a real builder)"))
        self.engine = name
        targets = engines.parse_target_cc(target_cc, name)
        self.target = targets[0] if targets else None
        self.oracle: TrtBuildOracle | None = None

    def __call__(self, view, ref_values, types, *, timeout: float | None = None) -> TrtBuildOracle:
        self.oracle = TrtBuildOracle(view, ref_values, types, engine=self.engine, timeout=timeout, target=self.target)
        return self.oracle

    def repro_command(self) -> str:
        cc = f" --target-cc {self.target[0]}.{self.target[1]}" if self.target else ""
        return f"surgeon trt-check reduced.onnx --engine {self.engine}{cc}"

    def close(self) -> None:
        if self.oracle is not None:
            self.oracle.close()
