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
A parser rejection is reported node by node (name, op, the parser's error code and
text), and a run on a machine without a CUDA driver says exactly that.

:class:`TrtWorker` is the same isolation for many small requests: one long-lived worker
process answering parse/build requests (``surgeon trt-check``'s repeated parses,
``bisect --check trt-build``), restarted after a crash, killed after a timeout.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import onnx

from surgeon import model as model_io
from surgeon.backends import Backend, Session
from surgeon.errors import BackendError, BackendUnavailableError, UsageError

log = logging.getLogger(__name__)

_MISSING = {
    "trt": ("tensorrt", "TensorRT is not installed here; install it with "
            "'pip install tensorrt --extra-index-url https://pypi.nvidia.com' on a machine with an NVIDIA GPU"),
    "trt-rtx": ("tensorrt_rtx", "TensorRT-RTX is not installed here; install it with 'pip install tensorrt-rtx' "
                "(its parser and builder also run without a GPU)"),
}
_INSTALL = {
    "trt": (_MISSING["trt"][0], _MISSING["trt"][1] + ", or use '--test fp16' to emulate an FP16 engine's overflow "
            "and rounding on the CPU"),
    "trt-rtx": (_MISSING["trt-rtx"][0], _MISSING["trt-rtx"][1] + ", or use '--test fp16' to emulate FP16 on the CPU"),
}


def missing_sentence(name: str, alternative: str) -> str:
    """What is missing and how to install it, then what else the user can do, as one sentence."""
    return f"{_MISSING[name][1]}, or {alternative}"

Shape = tuple[int, ...]

_PHASE = {"build": "engine build", "infer": "engine run (deserialize + inference)"}

# What TensorRT and the CUDA runtime print when there is no usable driver or GPU.
_CUDA_MISSING = ("cudaError 35", "cudaError 100", "CUDA driver version is insufficient", "no CUDA-capable device",
                 "CUDA initialization failure", "libcuda.so")


def label(name: str) -> str:
    return "TensorRT-RTX" if name == "trt-rtx" else "TensorRT"


def worker_env(name: str) -> dict[str, str]:
    """The worker's environment: Polygraphy picks TensorRT-RTX by this variable, as it documents."""
    env = dict(os.environ)
    if name == "trt-rtx":
        env["POLYGRAPHY_USE_TENSORRT_RTX"] = "1"
    else:
        env.pop("POLYGRAPHY_USE_TENSORRT_RTX", None)
    return env


def cuda_missing(text: str) -> bool:
    return any(marker in text for marker in _CUDA_MISSING)


_BARE = re.compile(r"^\s*(?:false|0|true|1|nullptr|)\s*$", re.I)
_FUNC_OP = re.compile(r"^(?:import|check)([A-Z][A-Za-z0-9_]*)$")


def parser_error_text(err: Mapping[str, Any], op: str = "") -> str:
    """The parser's own reason for rejecting a node, never just ``false``.

    Some of the parser's checkers assert a bare ``false`` (``checkDynamicQuantizeLinear``,
    ``checkMatMulInteger`` in TensorRT-RTX 1.7: the op is refused whatever its inputs); the
    record then says nothing else, and the logger repeats it. The function, file and line
    are the reason then, so they are said.
    """
    desc = (err.get("desc") or "").strip()
    if not _BARE.match(desc):
        return desc
    where = err.get("func") or "the parser"
    if err.get("file"):
        line = err.get("line", -1)
        where += f" ({err['file']}" + (f":{line}" if line not in (-1, None) else "") + ")"
    m = _FUNC_OP.match(err.get("func") or "")
    what = op or err.get("op") or (m.group(1) if m else "") or "this node"
    return (f"{where} refuses {what} unconditionally (the parser's own text is only '{desc or 'empty'}'): "
            f"this parser has no importer for {what} in this form")


def builder_reason(messages: list[str]) -> str:
    """The builder's own reason for a failed build: its first error, with the next ones when
    that says too little; a failure with no message at all says so (never an empty text)."""
    msgs = [m.strip() for m in messages if m and m.strip()]
    if not msgs:
        return "the builder returned no engine and logged no error or warning (TensorRT gave no reason)"
    if len(msgs[0]) < 24 and len(msgs) > 1:
        return f"{msgs[0]} ({'; '.join(msgs[1:3])})"
    return msgs[0]


def describe_parse_errors(errors: Sequence[Mapping[str, Any]], engine: str = "trt") -> str:
    """One sentence naming every node the parser rejected (name, op, code, first line of its text)."""
    parts = []
    for e in errors:
        where = f"node '{e['node_name']}'" if e.get("node_name") else (f"node #{e['node']}" if e.get("node", -1) >= 0 else "a node")
        op = f" ({e['op']})" if e.get("op") else ""
        text = parser_error_text(e).splitlines()
        parts.append(f"{where}{op}: {e.get('code', 'UNKNOWN')}: {text[0][:200] if text else ''}")
    return f"the {label(engine)} ONNX parser rejected {'; '.join(parts) or 'the model'}"


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
    """The worker runs as a script by path: the very code next to this module, and no ``import surgeon``
    (the worker imports nothing of ours; that saves about a second per worker start)."""
    return [sys.executable, str(Path(__file__).resolve().with_name("trt_worker.py"))]


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
        result_path = Path(self._dir) / f"{action}.result.json"
        result_path.unlink(missing_ok=True)
        spec_path.write_text(json.dumps({**spec, "result": str(result_path)}), encoding="utf-8")
        cmd = [*_worker_command(), action, str(spec_path)]
        name = label(self._backend.name)
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, env=worker_env(self._backend.name),
                                  timeout=self._backend.timeout)
        except subprocess.TimeoutExpired as exc:
            raise BackendError(f"{name} {_PHASE[action]} did not finish within {self._backend.timeout:g} s") from exc
        if proc.returncode < 0:
            raise BackendError(f"the {name} worker crashed during the {_PHASE[action]} ({_signal_name(proc.returncode)})")
        if proc.returncode == 0:
            return
        record = json.loads(result_path.read_text(encoding="utf-8")) if result_path.is_file() else {}
        if record.get("phase") == "parse":
            raise BackendError(describe_parse_errors(record.get("errors", []), self._backend.name))
        if record.get("phase") == "build":
            msgs = [m for _, m in record.get("messages", [])]
            raise BackendError(f"{name} engine build failed: {builder_reason(msgs)[:300]}")
        output = f"{proc.stdout}\n{proc.stderr}"
        if action == "infer" and cuda_missing(output):
            raise BackendError(f"{name} engine run failed: no CUDA driver or GPU is available here (the engine was "
                               "built; building needs no GPU, running an engine does)")
        lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
        raise BackendError(f"{name} {_PHASE[action]} failed: {lines[-1] if lines else f'exit code {proc.returncode}'}")


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


class TrtWorker:
    """One long-lived worker process answering parse/build requests (see the module docstring).

    Why not one process per request: a parse takes about a millisecond, importing
    TensorRT a few hundred; repeated parses and bisect oracles ask hundreds of questions.
    A crash (abort, segfault inside TensorRT) or a timeout ends only the worker: the
    request raises :class:`WorkerCrash` and the next request starts a fresh worker.
    """

    def __init__(self, name: str = "trt-rtx", *, timeout: float = 600.0):
        if name not in _INSTALL:
            raise UsageError(f"unknown TensorRT engine '{name}'")
        if not available(name):
            raise BackendUnavailableError(_INSTALL[name][1])
        self.name, self.timeout = name, timeout
        self._proc: subprocess.Popen | None = None
        self._log: Any = None
        self.requests = 0
        self.restarts = 0

    def __enter__(self) -> "TrtWorker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> "TrtWorker":
        """Start the process now (importing TensorRT takes a while; the caller can prepare meanwhile)."""
        self._start()
        return self

    def _start(self) -> subprocess.Popen:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        if self._proc is not None:
            self.restarts += 1
        if self._log is None:
            self._log = tempfile.TemporaryFile(mode="w+b")
        self._proc = subprocess.Popen([*_worker_command(), "serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=self._log, env=worker_env(self.name))
        return self._proc

    def _stderr_tail(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(0, os.SEEK_END)
        size = self._log.tell()
        self._log.seek(max(0, size - 4000))
        lines = [l for l in self._log.read().decode("utf-8", "replace").splitlines() if l.strip() and "Node name:" not in l]
        return lines[-1][:300] if lines else ""

    def request(self, action: str, **payload: Any) -> dict:
        """Send one request; the answer's ``result``, or :class:`WorkerCrash` / :class:`BackendError`."""
        proc = self._start()
        self.requests += 1
        try:
            proc.stdin.write((json.dumps({"action": action, **payload}) + "\n").encode("utf-8"))
            proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass  # reported below as a crash
        line, timed_out = self._read_line(proc)
        if line is None:
            raise WorkerCrash(self._crash_text(proc, action, timed_out))
        answer = json.loads(line)
        if not answer.get("ok"):
            raise BackendError(f"the {label(self.name)} worker could not {action}: {answer.get('error')}")
        return answer["result"]

    def _read_line(self, proc: subprocess.Popen) -> tuple[str | None, bool]:
        """(the answer line or None when the worker died, whether it ran past the timeout and was killed)."""
        deadline = time.monotonic() + self.timeout
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    proc.kill()
                    proc.wait()
                    return None, True
                if sel.select(timeout=min(left, 1.0)):
                    line = proc.stdout.readline()
                    return (line.decode("utf-8") if line else None), False

    def _crash_text(self, proc: subprocess.Popen, action: str, timed_out: bool) -> str:
        if timed_out:
            return f"{label(self.name)} did not finish the {action} within {self.timeout:g} s"
        code = proc.wait()
        how = _signal_name(code) if code < 0 else f"exit code {code}"
        tail = self._stderr_tail()
        return f"the {label(self.name)} worker crashed during the {action} ({how})" + (f": {tail}" if tail else "")

    def close(self) -> None:
        if self._proc is not None:
            try:
                self._proc.stdin.close()
                self._proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None


class WorkerCrash(BackendError):
    """The worker process died (or ran past its timeout) while answering a request."""


def create(**options: Any) -> TrtBackend:
    return TrtBackend(**options)


def create_rtx(**options: Any) -> TrtBackend:
    return TrtBackend(rtx=True, **options)
