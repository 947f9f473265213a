"""TensorRT and TensorRT-RTX through Polygraphy, run in a worker subprocess.

Why a subprocess: a TensorRT build or run can abort the process (CUDA errors, plugin
crashes, out-of-memory); in a worker that becomes a :class:`BackendError` verdict for the
caller instead of a dead debugging session. The worker (``trt_worker.py``) uses only
Polygraphy's public loaders and runner (``NetworkFromOnnxPath``, ``CreateConfig``,
``Profile``, ``EngineFromNetwork``/``EngineFromBytes``, ``TrtRunner``) and works with
TensorRT 10 and 11. TensorRT-RTX is selected the way Polygraphy documents it, with
``POLYGRAPHY_USE_TENSORRT_RTX=1`` in the worker's environment.

Written from the documentation: no machine this project is built on has TensorRT, so
this module is exercised only up to "TensorRT is not installed" here (see the README).

Engines: built on the first run for the input shapes of that run, unless optimization
profiles are given (``profiles=[{"x": ((1,3,8,8), (4,3,8,8), (8,3,8,8))}]``); a loaded
engine (``load_engine=``) is used as it is; ``save_engine=`` writes the built engine.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import onnx

from surgeon import model as model_io
from surgeon.backends import Backend, Session
from surgeon.errors import BackendError, BackendUnavailableError, UsageError

log = logging.getLogger(__name__)

_INSTALL = {
    "trt": ("tensorrt", "TensorRT is not installed here; install it with "
            "'pip install tensorrt --extra-index-url https://pypi.nvidia.com' on a machine with an NVIDIA GPU, "
            "or use '--test fp16' to emulate an FP16 engine's overflow and rounding on the CPU"),
    "trt-rtx": ("tensorrt_rtx", "TensorRT-RTX is not installed here; install it with 'pip install tensorrt-rtx' "
                "on a machine with a supported NVIDIA GPU, or use '--test fp16' to emulate FP16 on the CPU"),
}

Shape = tuple[int, ...]

_PHASE = {"build": "engine build", "infer": "engine run (deserialize + inference)"}


def available(name: str = "trt") -> bool:
    """Whether the TensorRT Python package can be found (without importing it)."""
    module = _INSTALL[name][0]
    return importlib.util.find_spec(module) is not None and importlib.util.find_spec("polygraphy") is not None


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


def _worker_command() -> list[str]:
    return [sys.executable, "-m", "surgeon.backends.trt_worker"]


class TrtSession(Session):
    """One model materialized in a private folder; engines cached per input-shape set."""

    def __init__(self, backend: "TrtBackend", model: onnx.ModelProto):
        self._backend = backend
        self._dir = tempfile.mkdtemp(prefix="surgeon-trt-")
        self._model_path = Path(self._dir) / "model.onnx"
        with model_io.materialized(model) as path:
            shutil.copyfile(path, self._model_path)
            data = Path(str(path) + ".data")
            if data.exists():
                shutil.copyfile(data, Path(self._dir) / data.name)
        self.output_names = [o.name for o in model.graph.output]
        self._engines: dict[tuple, Path] = {}
        if backend.load_engine:
            self._engines[()] = Path(backend.load_engine)

    def close(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)

    def __del__(self):  # the folder holds engines that can be large
        self.close()

    def _engine_for(self, feeds: Mapping[str, np.ndarray]) -> Path:
        if () in self._engines:
            return self._engines[()]
        key = () if self._backend.profiles else tuple(sorted((k, tuple(np.shape(v))) for k, v in feeds.items()))
        if key in self._engines:
            return self._engines[key]
        engine = Path(self._dir) / f"engine{len(self._engines)}.plan"
        profiles = self._backend.profiles or [{k: (tuple(np.shape(v)),) * 3 for k, v in feeds.items()}]
        spec = {"model": str(self._model_path), "engine": str(engine), "precision": self._backend.precision(),
                "profiles": [{k: [list(s) for s in v] for k, v in p.items()} for p in profiles]}
        self._worker("build", spec)
        if self._backend.save_engine:
            shutil.copyfile(engine, self._backend.save_engine)
        self._engines[key] = engine
        return engine

    def run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        engine = self._engine_for(feeds)
        inputs = Path(self._dir) / "inputs.npz"
        outputs = Path(self._dir) / "outputs.npz"
        np.savez(inputs, **{k: np.asarray(v) for k, v in feeds.items()})
        self._worker("infer", {"engine": str(engine), "inputs": str(inputs), "outputs": str(outputs)})
        with np.load(outputs, allow_pickle=False) as z:
            got = {k: z[k] for k in z.files}
        missing = [n for n in self.output_names if n not in got]
        if missing:
            raise BackendError(f"the TensorRT engine did not return output '{missing[0]}'")
        return {n: got[n] for n in self.output_names}

    def _worker(self, action: str, spec: dict) -> None:
        spec_path = Path(self._dir) / f"{action}.json"
        spec_path.write_text(json.dumps(spec), encoding="utf-8")
        env = dict(os.environ)
        if self._backend.rtx:
            env["POLYGRAPHY_USE_TENSORRT_RTX"] = "1"
        cmd = [*_worker_command(), action, str(spec_path)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=self._backend.timeout)
        except subprocess.TimeoutExpired as exc:
            raise BackendError(f"TensorRT {_PHASE[action]} did not finish within {self._backend.timeout:g} s") from exc
        if proc.returncode < 0:
            raise BackendError(f"the TensorRT worker crashed during the {_PHASE[action]} ({_signal_name(proc.returncode)})")
        if proc.returncode != 0:
            lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
            raise BackendError(f"TensorRT {_PHASE[action]} failed: {lines[-1] if lines else f'exit code {proc.returncode}'}")


class TrtBackend(Backend):
    fuses = True

    def __init__(self, fp16: bool = False, bf16: bool = False, int8: bool = False, tf32: bool = False,
                 profiles: Sequence[Mapping[str, tuple[Shape, Shape, Shape]]] = (), save_engine: str | None = None,
                 load_engine: str | None = None, timeout: float = 1800.0, rtx: bool = False):
        self.rtx = rtx
        self.name = "trt-rtx" if rtx else "trt"
        if not available(self.name):
            raise BackendUnavailableError(_INSTALL[self.name][1])
        if rtx and (fp16 or bf16 or int8 or tf32):
            raise UsageError("TensorRT-RTX builds strongly typed networks; precision flags do not apply (convert the model instead)")
        if load_engine and not Path(load_engine).is_file():
            raise UsageError(f"engine file '{load_engine}' does not exist")
        self.fp16, self.bf16, self.int8, self.tf32 = fp16, bf16, int8, tf32
        self.profiles = [dict(p) for p in profiles]
        self.save_engine, self.load_engine, self.timeout = save_engine, load_engine, timeout

    def precision(self) -> dict[str, bool]:
        return {"fp16": self.fp16, "bf16": self.bf16, "int8": self.int8, "tf32": self.tf32}

    def session(self, model: onnx.ModelProto) -> TrtSession:
        return TrtSession(self, model)

    def describe(self) -> str:
        flags = [k for k, v in self.precision().items() if v]
        return f"{self.name} (Polygraphy{', ' + ', '.join(flags) if flags else ''})"


def create(**options: Any) -> TrtBackend:
    return TrtBackend(**options)


def create_rtx(**options: Any) -> TrtBackend:
    return TrtBackend(rtx=True, **options)
