"""ONNX Runtime (CPU): the reference backend, with or without graph optimizations."""

from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

import onnx

from surgeon import model as model_io
from surgeon.backends import Backend, Session
from surgeon.errors import BackendError

log = logging.getLogger(__name__)

_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    for prefix in ("[ONNXRuntimeError] : ",):
        if prefix in text:
            text = text.split(prefix, 1)[1]
    return text.splitlines()[0] if text else type(exc).__name__


class OrtSession(Session):
    def __init__(self, sess: Any):
        self._sess = sess
        self.output_names = [o.name for o in sess.get_outputs()]

    def run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        try:
            values = self._sess.run(self.output_names, dict(feeds))
        except Exception as exc:  # onnxruntime raises its own exception types
            raise BackendError(f"ONNX Runtime failed to run the model: {_first_line(exc)}") from exc
        return dict(zip(self.output_names, values))


class OnnxRuntimeBackend(Backend):
    fuses = True

    def __init__(self, optimization: str = "all", disabled_optimizers: Sequence[str] = (), threads: int = 0, name: str = "onnxrt"):
        if optimization not in _LEVELS:
            raise BackendError(f"unknown ONNX Runtime optimization level '{optimization}'")
        self.optimization = optimization
        self.disabled_optimizers = list(disabled_optimizers)
        self.threads = threads
        self.name = name
        self.fuses = optimization != "disable"

    def _options(self) -> Any:
        import onnxruntime as ort

        ort.set_default_logger_severity(4)  # errors reach the user through BackendError, not ORT's log
        so = ort.SessionOptions()
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _LEVELS[self.optimization])
        so.log_severity_level = 4
        if self.threads:
            so.intra_op_num_threads = self.threads
        return so

    def session(self, model: onnx.ModelProto) -> OrtSession:
        import onnxruntime as ort

        kwargs: dict[str, Any] = {"sess_options": self._options(), "providers": ["CPUExecutionProvider"]}
        if self.disabled_optimizers:
            kwargs["disabled_optimizers"] = self.disabled_optimizers
        try:
            if model_io.needs_external_data(model):
                with model_io.materialized(model) as path:
                    sess = ort.InferenceSession(str(path), **kwargs)
            else:
                sess = ort.InferenceSession(model.SerializeToString(), **kwargs)
        except Exception as exc:
            raise BackendError(f"ONNX Runtime cannot load the model: {_first_line(exc)}") from exc
        return OrtSession(sess)

    def describe(self) -> str:
        extra = f", disabled: {', '.join(self.disabled_optimizers)}" if self.disabled_optimizers else ""
        return f"{self.name} (optimization={self.optimization}{extra})"


def no_optimization_backend(**options: Any) -> OnnxRuntimeBackend:
    options.setdefault("name", "onnxrt-noopt")
    return OnnxRuntimeBackend(optimization="disable", **options)
