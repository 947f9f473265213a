"""ONNX Runtime (CPU): the reference backend, with or without graph optimizations."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import onnx

from surgeon import model as model_io

if TYPE_CHECKING:
    from surgeon.graph import Exported
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


def _ort_value(array: Any) -> Any:
    """An OrtValue sharing ``array``'s memory; types numpy lacks (bfloat16, float8) by their bits."""
    import numpy as np
    import onnxruntime as ort

    if array.dtype.kind in "biufc" or array.dtype == np.bool_:
        return ort.OrtValue.ortvalue_from_numpy(array)
    from onnx import helper

    onnx_type = helper.np_dtype_to_tensor_dtype(array.dtype)
    bits = array.view(np.dtype(f"u{array.dtype.itemsize}"))
    return ort.OrtValue.ortvalue_from_numpy_with_onnx_type(bits, onnx_type)


class OrtSession(Session):
    def __init__(self, sess: Any, weights: Mapping[str, Any] | None = None):
        self._sess = sess
        self.output_names = [o.name for o in sess.get_outputs()]
        self._weights = dict(weights or {})  # fed with every run (see Exported.for_ort)

    def run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        try:
            values = self._sess.run(self.output_names, {**dict(feeds), **self._weights})
        except Exception as exc:  # onnxruntime raises its own exception types
            raise BackendError(f"ONNX Runtime failed to run the model: {_first_line(exc)}") from exc
        return dict(zip(self.output_names, values))


class OnnxRuntimeBackend(Backend):
    fuses = True

    def __init__(self, optimization: str = "all", disabled_optimizers: Sequence[str] = (), threads: int = 0,
                 name: str = "onnxrt", memory_lean: bool = False):
        if optimization not in _LEVELS:
            raise BackendError(f"unknown ONNX Runtime optimization level '{optimization}'")
        self.optimization = optimization
        self.disabled_optimizers = list(disabled_optimizers)
        self.threads = threads
        self.name = name
        self.fuses = optimization != "disable"
        # Verification builds a session per pass: pre-packing weights would copy each one
        # (time and memory in proportion to the weights) for a couple of runs.
        self.memory_lean = memory_lean

    def _options(self) -> Any:
        import onnxruntime as ort

        ort.set_default_logger_severity(4)  # errors reach the user through BackendError, not ORT's log
        so = ort.SessionOptions()
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _LEVELS[self.optimization])
        so.log_severity_level = 4
        if self.threads:
            so.intra_op_num_threads = self.threads
        if self.memory_lean:
            so.add_session_config_entry("session.disable_prepacking", "1")
            so.enable_mem_pattern = False
        return so

    def session(self, model: "onnx.ModelProto | Exported") -> OrtSession:
        """A session for a ModelProto, or for a skeleton whose weights ONNX Runtime takes in memory."""
        import onnxruntime as ort

        options = self._options()
        kwargs: dict[str, Any] = {"sess_options": options, "providers": ["CPUExecutionProvider"]}
        if self.disabled_optimizers:
            kwargs["disabled_optimizers"] = self.disabled_optimizers
        keep: list = []
        feed_weights: dict = {}
        try:
            if not isinstance(model, onnx.ModelProto):
                sess = None
                if not self.disabled_optimizers:  # ORT's optimizers see weights as inputs then: not what is asked
                    data, arrays = model.for_ort(as_inputs=True)
                    if all(a.dtype.kind in "biuf" for a in arrays.values()):
                        try:
                            sess = ort.InferenceSession(data, **kwargs)
                            feed_weights = arrays
                        except Exception as exc:  # noqa: BLE001 - a kernel that wants constant weights: initializers
                            log.debug("weights as inputs refused (%s); as initializers", _first_line(exc))
                if sess is None:
                    data, arrays = model.for_ort(as_inputs=False)
                    options = self._options()
                    kwargs["sess_options"] = options
                    if arrays:
                        keep = [_ort_value(a) for a in arrays.values()]
                        options.add_external_initializers(list(arrays), keep)
                    sess = ort.InferenceSession(data, **kwargs)
            elif model_io.needs_external_data(model):
                with model_io.materialized(model) as path:
                    sess = ort.InferenceSession(str(path), **kwargs)
            else:
                sess = ort.InferenceSession(model.SerializeToString(), **kwargs)
        except Exception as exc:
            raise BackendError(f"ONNX Runtime cannot load the model: {_first_line(exc)}") from exc
        session = OrtSession(sess, feed_weights)
        session.keep_alive = keep  # ONNX Runtime reads the weights from these buffers for the session's life
        return session

    def describe(self) -> str:
        extra = f", disabled: {', '.join(self.disabled_optimizers)}" if self.disabled_optimizers else ""
        return f"{self.name} (optimization={self.optimization}{extra})"


def no_optimization_backend(**options: Any) -> OnnxRuntimeBackend:
    options.setdefault("name", "onnxrt-noopt")
    return OnnxRuntimeBackend(optimization="disable", **options)
