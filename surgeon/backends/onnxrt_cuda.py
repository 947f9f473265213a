"""ONNX Runtime's CUDA execution provider (``onnxrt-cuda``): a real GPU engine, with the choices
that change its numbers.

Why these options and no others: on a GPU the same model gives different numbers depending on
a few provider choices, the way a TensorRT engine does with tactics and TF32 (measured by a
user on an H100 with onnxruntime-gpu 1.31, PP-OCRv4 det at 640x640: max error against the CPU
3.5e-5 with TF32 and 1.8e-7 without; a different algorithm search or layout gives another
error again). They are spelled after the backend name, comma-separated, in every command that
takes a backend (``--test onnxrt-cuda:tf32=0,algo-search=heuristic``):

- ``tf32`` (1/0, default 1, ONNX Runtime's own default): TensorFloat-32 for Conv, MatMul and
  Gemm on Ampere and later: inputs rounded to a 10-bit mantissa, float32 accumulation;
- ``algo-search`` (exhaustive | heuristic | default; default exhaustive, ONNX Runtime's
  default): how cuDNN picks each convolution's algorithm. ``default`` does no search at all
  and was measured about 25x slower than ``exhaustive`` on PP-OCRv4 det on an H100 (81.6 against
  3.21 ms and 99.8 against 3.92 ms in two runs of bench/gpu_run.py; the issue's user saw 120
  against 5.6, every Conv "running in Fallback mode"), so asking for it logs a warning;
- ``nhwc`` (1/0, default 0): ``prefer_nhwc``, channels-last kernels where ONNX Runtime has them;
- ``device`` (default 0): the CUDA device id;
- ``opt`` (disable | basic | extended | all; default all): ONNX Runtime's graph optimization
  level (its fusions run on CUDA too).

What this backend promises: a result is a GPU result. A CPU-only onnxruntime has no CUDA
provider (refused before anything runs, one sentence, exit 2); an onnxruntime-gpu that cannot
start CUDA (no driver, a missing cuDNN) silently falls back to the CPU, so every session is
created without ONNX Runtime's fallback and checked with ``get_providers()`` afterwards, and a
session that did not get the CUDA provider is refused with ONNX Runtime's own reason. Nodes
ONNX Runtime places on the CPU anyway (shape computations, ops without a CUDA kernel) are
read from its verbose placement log and kept on the session (``placement``).

onnxruntime is imported lazily, only when a session is made; nothing here needs the GPU build
at import time.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
import warnings
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping, Sequence

from surgeon.backends.onnxrt import _LEVELS, OnnxRuntimeBackend, OrtSession, _first_line
from surgeon.errors import BackendError, BackendUnavailableError, UsageError

log = logging.getLogger(__name__)

NAME = "onnxrt-cuda"
PROVIDER = "CUDAExecutionProvider"
ALGO_SEARCH = ("exhaustive", "heuristic", "default")
SLOW_ALGO_WARNING = ("algo-search=default makes cuDNN run every convolution with one fixed algorithm and no search; "
                     "measured about 25x slower than 'exhaustive' on an H100 (PP-OCRv4 det): "
                     "use it to rule the search out, not to time anything")

_TRUE = {"1", "on", "true", "yes"}
_FALSE = {"0", "off", "false", "no"}


def install_sentence(detail: str = "") -> str:
    """The one-sentence refusal when this onnxruntime has no CUDA provider."""
    what = f"ONNX Runtime here has no CUDA execution provider{f' ({detail})' if detail else ''}"
    return (f"{what}; install the GPU build in place of the CPU one with 'pip uninstall -y onnxruntime && pip "
            "install onnxruntime-gpu' on a machine with an NVIDIA GPU and driver, together with the CUDA and cuDNN "
            "libraries that onnxruntime-gpu version needs (for example 'pip install \"onnxruntime-gpu[cuda,cudnn]\"', "
            "or the ones a CUDA build of PyTorch brings), or use '--test fp16' to emulate FP16 on the CPU")


@dataclass(frozen=True)
class CudaOptions:
    """The provider choices of one ``onnxrt-cuda`` configuration (see the module docstring)."""

    tf32: bool = True
    algo_search: str = "exhaustive"
    nhwc: bool = False
    device: int = 0
    optimization: str = "all"

    def __post_init__(self):
        if self.algo_search not in ALGO_SEARCH:
            raise UsageError(f"onnxrt-cuda: algo-search '{self.algo_search}' is not one of {', '.join(ALGO_SEARCH)}")
        if self.optimization not in _LEVELS:
            raise UsageError(f"onnxrt-cuda: opt '{self.optimization}' is not one of {', '.join(_LEVELS)}")
        if self.device < 0:
            raise UsageError(f"onnxrt-cuda: device {self.device} is not a CUDA device id")

    def provider_options(self) -> dict[str, str]:
        """The CUDA provider's own option names and values, as ONNX Runtime documents them."""
        return {"device_id": str(self.device), "cudnn_conv_algo_search": self.algo_search.upper(),
                "use_tf32": "1" if self.tf32 else "0", "prefer_nhwc": "1" if self.nhwc else "0"}

    def spec(self) -> str:
        """Every option spelled as on the command line: ``tf32=1,algo-search=exhaustive,...``."""
        return (f"tf32={int(self.tf32)},algo-search={self.algo_search},nhwc={int(self.nhwc)},"
                f"device={self.device},opt={self.optimization}")

    def label(self) -> str:
        return (f"TF32 {'on' if self.tf32 else 'off'}, cuDNN algo search {self.algo_search.upper()}, "
                f"NHWC {'on' if self.nhwc else 'off'}, device {self.device}, optimization={self.optimization}")

    def with_changes(self, **changes: Any) -> "CudaOptions":
        return replace(self, **changes)


# option spelled on the command line -> (field, converter)
def _flag(key: str, text: Any) -> bool:
    if isinstance(text, bool):
        return text
    value = str(text).strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise UsageError(f"onnxrt-cuda: {key}={text} is not a switch; use {key}=1 or {key}=0")


def _int(key: str, text: Any) -> int:
    try:
        return int(text)
    except (TypeError, ValueError):
        raise UsageError(f"onnxrt-cuda: {key}={text} is not a whole number") from None


_KEYS: dict[str, tuple[str, Callable[[str, Any], Any]]] = {
    "tf32": ("tf32", _flag),
    "algo-search": ("algo_search", lambda k, v: str(v).strip().lower()),
    "nhwc": ("nhwc", _flag),
    "device": ("device", _int),
    "opt": ("optimization", lambda k, v: str(v).strip().lower()),
}


def parse_options(text: str) -> dict[str, Any]:
    """``tf32=0,algo-search=heuristic`` -> keyword options; unknown or malformed keys are usage errors."""
    out: dict[str, Any] = {}
    for item in (p.strip() for p in text.split(",")):
        if not item:
            continue
        key, eq, value = item.partition("=")
        key = key.strip().lower().replace("_", "-")
        if not eq or not value.strip():
            raise UsageError(f"onnxrt-cuda option '{item}' needs a value (KEY=VALUE; keys: {', '.join(_KEYS)})")
        if key not in _KEYS:
            raise UsageError(f"onnxrt-cuda has no option '{key}'; its options are {', '.join(_KEYS)}")
        field, convert = _KEYS[key]
        out[field] = convert(key, value.strip())
    return out


def options_from(values: Mapping[str, Any]) -> CudaOptions:
    """A :class:`CudaOptions` from keyword options (from :func:`parse_options` or the Python API)."""
    fields = {f for f, _ in _KEYS.values()}
    unknown = [k for k in values if k not in fields]
    if unknown:
        raise UsageError(f"onnxrt-cuda has no option '{unknown[0]}'; its options are {', '.join(_KEYS)}")
    converted = {}
    for key, (field, convert) in _KEYS.items():
        if field in values:
            converted[field] = convert(key, values[field])
    return CudaOptions(**converted)


def unavailable_reason() -> str | None:
    """None when this onnxruntime lists the CUDA provider, else the one-sentence refusal."""
    try:
        import onnxruntime as ort
    except ImportError:
        return install_sentence("onnxruntime is not installed")
    providers = list(ort.get_available_providers())
    if PROVIDER in providers:
        return None
    return install_sentence(f"onnxruntime {ort.__version__}, providers: {', '.join(providers)}")


# --- ONNX Runtime's own log: placement and the reason a provider did not start -------------------

_PLACED = re.compile(r"(?:Node\(s\)|All nodes) placed on \[(\w+)\]\. Number of nodes: (\d+)")
_NODE_LINE = re.compile(r"VerifyEachNodeIsAssignedToAnEp\]\s{3,}(\S+) \((.*)\)\s*$")


def parse_placement(text: str) -> dict[str, dict[str, Any]]:
    """Provider -> {"nodes": count, "ops": [(op_type, node name), ...]} from ONNX Runtime's verbose
    ``VerifyEachNodeIsAssignedToAnEp`` lines ("All nodes placed on [X]" lists no nodes)."""
    out: dict[str, dict[str, Any]] = {}
    current: str | None = None
    for line in text.splitlines():
        m = _PLACED.search(line)
        if m:
            current = m.group(1)
            out[current] = {"nodes": int(m.group(2)), "ops": []}
            continue
        n = _NODE_LINE.search(line)
        if n and current is not None:
            out[current]["ops"].append((n.group(1), n.group(2)))
        elif "VerifyEachNodeIsAssignedToAnEp" not in line:
            current = None if "placed on" not in line else current
    return out


def _reason(text: str) -> str:
    """The line of ONNX Runtime's log that says why CUDA did not start (or '')."""
    keys = ("CUDAExecutionProvider", "libcudnn", "libcublas", "libcudart", "CUDA", "cuda", ".so")
    for line in text.splitlines():
        if any(k in line for k in keys) and ("fail" in line.lower() or "error" in line.lower() or "not" in line.lower()):
            return line.split("] ", 1)[-1].strip()[:300]
    return ""


def _captured(fn: Callable[[], Any]) -> tuple[Any, str, Exception | None]:
    """Run ``fn`` with file descriptor 2 (where ONNX Runtime's C++ logger writes) sent to a
    temporary file; returns (result, what was written, the exception fn raised)."""
    sys.stderr.flush()
    saved = os.dup(2)
    result, error = None, None
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    result = fn()
                except Exception as exc:  # noqa: BLE001 - returned to the caller, which decides
                    error = exc
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        text = tmp.read().decode("utf-8", errors="replace")
    text += "".join(f"\nPython warning: {w.message}" for w in caught)
    return result, text, error


class _QuietRuns:
    """An ONNX Runtime session whose runs log at error level only: the session itself was created
    at verbose level (for its placement log), which would otherwise go on into every run."""

    def __init__(self, sess: Any):
        import onnxruntime as ort

        self._inner = sess
        self._ro = ort.RunOptions()
        self._ro.log_severity_level = 3

    def run(self, output_names: Any, feeds: Any, run_options: Any = None) -> Any:
        return self._inner.run(output_names, feeds, run_options or self._ro)

    def run_with_ort_values(self, output_names: Any, feeds: Any, run_options: Any = None) -> Any:
        return self._inner.run_with_ort_values(output_names, feeds, run_options or self._ro)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class CudaSession(OrtSession):
    """An ONNX Runtime session that runs on the CUDA provider (checked), with what ORT reported."""

    providers: list[str]
    provider_options: dict[str, str]
    log: str
    placement: dict[str, dict[str, Any]]
    on_gpu: bool

    def cpu_nodes(self) -> list[tuple[str, str]]:
        """(op type, name) of the nodes ONNX Runtime placed on the CPU, as its log names them."""
        return list(self.placement.get("CPUExecutionProvider", {}).get("ops", []))


class OnnxRuntimeCudaBackend(OnnxRuntimeBackend):
    """ONNX Runtime with the CUDA provider first (CPU for the nodes CUDA has no kernel for).

    ``cpu_stand_in=True`` runs the same code with the CPU provider instead of CUDA, for
    exercising every path on a machine without a GPU (``bench/gpu_run.py --cpu``); such a
    backend describes itself as a CPU stand-in and its sessions say ``on_gpu = False``. It is
    not reachable from the command line.
    """

    name = NAME
    weights_as_inputs = False  # fed weights would be copied to the GPU on every run

    def __init__(self, *, tf32: Any = True, algo_search: str = "exhaustive", nhwc: Any = False, device: Any = 0,
                 optimization: str = "all", disabled_optimizers: Sequence[str] = (), threads: int = 0,
                 cpu_stand_in: bool = False, options: CudaOptions | None = None, warn_slow: bool = True):
        self.options = options or options_from({"tf32": tf32, "algo_search": algo_search, "nhwc": nhwc,
                                                "device": device, "optimization": optimization})
        super().__init__(optimization=self.options.optimization, disabled_optimizers=disabled_optimizers,
                         threads=threads, name=NAME)
        self.cpu_stand_in = cpu_stand_in
        if not cpu_stand_in:
            missing = unavailable_reason()
            if missing:
                raise BackendUnavailableError(missing)
        if self.options.algo_search == "default" and warn_slow:
            log.warning("onnxrt-cuda: %s", SLOW_ALGO_WARNING)

    # the settings other code reads (compare's TF32 follow-up, isolate)
    @property
    def tf32(self) -> bool:
        return self.options.tf32

    def with_options(self, **changes: Any) -> "OnnxRuntimeCudaBackend":
        """The same backend with some options changed (``with_options(tf32=False)``)."""
        return OnnxRuntimeCudaBackend(options=self.options.with_changes(**changes),
                                      disabled_optimizers=self.disabled_optimizers, threads=self.threads,
                                      cpu_stand_in=self.cpu_stand_in)

    def spec(self) -> str:
        """The ``--test`` value that recreates this backend."""
        return f"{NAME}:{self.options.spec()}"

    def _providers(self) -> list:
        if self.cpu_stand_in:
            return ["CPUExecutionProvider"]
        return [(PROVIDER, self.options.provider_options()), "CPUExecutionProvider"]

    def _create(self, what: Any, **kwargs: Any) -> Any:
        """Create without ONNX Runtime's silent CPU fallback, with its log captured; refuse a
        session that did not get the CUDA provider."""
        import onnxruntime as ort

        options = kwargs["sess_options"]
        if not options.enable_profiling:  # a profiled session would log its end at this level, uncaptured
            options.log_severity_level = 0  # verbose: the node placement lines
        kwargs["enable_fallback"] = 0

        def create():
            ort.set_default_logger_severity(2)  # the environment's logger says why a provider did not start
            try:
                return ort.InferenceSession(what, **kwargs)
            finally:
                ort.set_default_logger_severity(4)

        sess, text, error = _captured(create)
        if error is not None:
            message = _first_line(error)
            lower = message.lower()
            if not self.cpu_stand_in and ("cuda" in lower or "cudnn" in lower) and ("load" in lower or "driver" in lower):
                raise BackendUnavailableError(f"ONNX Runtime could not start its CUDA execution provider: {message}")
            raise error
        got = list(sess.get_providers())
        if not self.cpu_stand_in and PROVIDER not in got:
            why = _reason(text) or "it gave no reason"
            raise BackendUnavailableError(
                f"ONNX Runtime did not start its CUDA execution provider ({why}); the session would run on "
                f"{', '.join(got)}, and a CPU run is never reported as a GPU run: check the GPU driver and the CUDA "
                "and cuDNN libraries onnxruntime-gpu needs")
        sess._surgeon_log = text  # read by session() and the profiler's placement note
        return sess if options.enable_profiling else _QuietRuns(sess)

    def ort_session(self, source: Any, configure: Callable[[Any], None] | None = None) -> Any:
        """A checked ``onnxruntime.InferenceSession`` of ``source`` (a path, or serialized bytes)
        with this backend's options, ``configure(session_options)`` applied first (profiling,
        an optimized-model path): for callers that need ONNX Runtime's own session."""
        so = self._options()
        if configure is not None:
            configure(so)
        kwargs: dict[str, Any] = {"sess_options": so, "providers": self._providers()}
        if self.disabled_optimizers:
            kwargs["disabled_optimizers"] = self.disabled_optimizers
        try:
            return self._create(source, **kwargs)
        except BackendError:
            raise
        except Exception as exc:  # onnxruntime raises its own exception types
            raise BackendError(f"ONNX Runtime ({NAME}) cannot load the model: {_first_line(exc)}") from exc

    def session(self, model: Any) -> CudaSession:
        if self.cpu_stand_in and self.options.tf32:
            model = emulate_tf32(model)
        base = super().session(model)
        sess = base._sess
        session = CudaSession.__new__(CudaSession)
        session.__dict__.update(base.__dict__)
        text = getattr(sess, "_surgeon_log", "")
        session.providers = list(sess.get_providers())
        session.provider_options = dict(sess.get_provider_options().get(PROVIDER, {}))
        session.log = text  # ONNX Runtime's verbose log of creating it (transformers that fired, placement)
        session.placement = parse_placement(text)
        session.on_gpu = PROVIDER in session.providers
        return session

    def describe(self) -> str:
        extra = f", disabled: {', '.join(self.disabled_optimizers)}" if self.disabled_optimizers else ""
        what = f"{NAME} ({self.options.label()}{extra})"
        if self.cpu_stand_in:
            return f"{what} [CPU STAND-IN: CPUExecutionProvider, not a GPU run]"
        return what


def create(**options: Any) -> OnnxRuntimeCudaBackend:
    return OnnxRuntimeCudaBackend(**options)


def cuda_runs() -> tuple[bool, str]:
    """Whether a CUDA session really starts here (for tests that need a GPU): (yes, why not)."""
    missing = unavailable_reason()
    if missing:
        return False, missing
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    try:
        create().session(model)
    except BackendError as exc:
        return False, str(exc)
    return True, ""


TF32_OPS = {"Conv": (0, 1), "ConvTranspose": (0, 1), "MatMul": (0, 1), "Gemm": (0, 1)}
_VELTKAMP = 8193.0  # 2^13 + 1: splitting a float32 (24-bit significand) keeps 11 bits, TF32's 1 + 10


def emulate_tf32(model: Any) -> Any:
    """A copy of ``model`` whose Conv/ConvTranspose/MatMul/Gemm float32 inputs are rounded to
    TF32's 10-bit mantissa first (Veltkamp's split: ``c = 8193 x; x' = c - (c - x)``, round to
    nearest), accumulation staying float32: what TF32 does to the numbers, on a CPU.

    Only the CPU stand-in uses it (``cpu_stand_in=True`` with ``tf32`` on), so that a run
    without a GPU exercises the paths a TF32 difference takes (compare's follow-up, bisect,
    isolate); it is never presented as a GPU result. Main graph only; tensors whose type shape
    inference cannot tell are left alone.
    """
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if not isinstance(model, onnx.ModelProto):
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    try:
        inferred = onnx.shape_inference.infer_shapes(out)
        types = {vi.name: vi.type.tensor_type.elem_type for vi in (*inferred.graph.value_info, *inferred.graph.input,
                                                                   *inferred.graph.output)}
    except Exception:  # noqa: BLE001 - an uninferable model: only what the graph declares
        types = {vi.name: vi.type.tensor_type.elem_type for vi in (*g.input, *g.output, *g.value_info)}
    types.update({t.name: t.data_type for t in g.initializer})
    taken = {n for node in g.node for n in (*node.input, *node.output)} | set(types)
    k_name = "surgeon_tf32_split"
    while k_name in taken:
        k_name += "_"
    g.initializer.append(numpy_helper.from_array(np.array(_VELTKAMP, dtype=np.float32), k_name))
    rounded: dict[str, str] = {}
    nodes = []
    for node in g.node:
        slots = TF32_OPS.get(node.op_type) if node.domain in ("", "ai.onnx") else None
        for i in slots or ():
            if i >= len(node.input) or not node.input[i] or types.get(node.input[i]) != TensorProto.FLOAT:
                continue
            src = node.input[i]
            if src not in rounded:
                base = f"{src}__tf32"
                c, d, r = f"{base}_c", f"{base}_d", f"{base}"
                nodes += [helper.make_node("Mul", [src, k_name], [c], name=f"{base}_mul"),
                          helper.make_node("Sub", [c, src], [d], name=f"{base}_sub1"),
                          helper.make_node("Sub", [c, d], [r], name=f"{base}_sub2")]
                rounded[src] = r
            node.input[i] = rounded[src]
        nodes.append(node)
    del g.node[:]
    g.node.extend(nodes)
    return out
