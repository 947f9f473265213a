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


# ONNX Runtime's names for the element types numpy lacks, and their ONNX numbers. Its
# numpy bridge refuses these (bfloat16, most float8) or hands back raw bytes under the
# wrong dtype (float8e4m3fn as uint8), so they travel as OrtValues both ways.
_EXOTIC = {"bfloat16": onnx.TensorProto.BFLOAT16, "float8e4m3fn": onnx.TensorProto.FLOAT8E4M3FN,
           "float8e4m3fnuz": onnx.TensorProto.FLOAT8E4M3FNUZ, "float8e5m2": onnx.TensorProto.FLOAT8E5M2,
           "float8e5m2fnuz": onnx.TensorProto.FLOAT8E5M2FNUZ, "uint4": onnx.TensorProto.UINT4,
           "int4": onnx.TensorProto.INT4}
for _name in ("FLOAT4E2M1", "FLOAT8E8M0", "UINT2", "INT2"):
    if hasattr(onnx.TensorProto, _name):
        _EXOTIC[_name.lower()] = getattr(onnx.TensorProto, _name)
_PACKED = {"uint4", "int4", "float4e2m1", "uint2", "int2"}  # several elements per byte


def _ort_elem(type_str: str) -> str:
    """'tensor(bfloat16)' -> 'bfloat16'; 'optional(tensor(int4))' -> 'int4'."""
    return type_str.rsplit("(", 1)[-1].rstrip(")")


_EXOTIC_NUMPY_NAMES = frozenset({"bfloat16", "float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz",
                                  "int4", "uint4", "float4_e2m1fn", "float8_e8m0fnu", "int2", "uint2"})


def _is_exotic_array(value: Any) -> bool:
    """An ml_dtypes array (their numpy kinds vary: 'V' for most, 'f' for float8_e5m2)."""
    import numpy as np

    return isinstance(value, np.ndarray) and value.dtype.name in _EXOTIC_NUMPY_NAMES


def _to_ortvalue(value: Any, keep: list) -> Any:
    """A numpy array (ml_dtypes for bfloat16/float8/int4) as an OrtValue of its ONNX element type."""
    import numpy as np
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    if isinstance(value, (list, tuple, dict)):
        raise BackendError("sequence and map inputs cannot be fed to a model with bfloat16/float8/int4 outputs "
                           "(ONNX Runtime's Python API builds no sequence OrtValue)")
    arr = np.ascontiguousarray(value)
    if not _is_exotic_array(arr):
        return ort.OrtValue.ortvalue_from_numpy(arr)
    elem = helper.np_dtype_to_tensor_dtype(arr.dtype)
    if elem in {v for k, v in _EXOTIC.items() if k in _PACKED}:
        # ORT holds these packed, two (or four) to a byte: pack with onnx's own packer, then copy in.
        import ctypes

        raw = numpy_helper.from_array(arr).raw_data
        ov = ort.OrtValue.ortvalue_from_shape_and_type(list(arr.shape), elem)
        if len(raw) != ov.tensor_size_in_bytes():
            raise BackendError(f"cannot pack a {arr.dtype} tensor of shape {list(arr.shape)} for ONNX Runtime")
        ctypes.memmove(ov.data_ptr(), raw, len(raw))
        return ov
    bits = arr.view(np.dtype(f"u{arr.dtype.itemsize}"))
    keep.append(bits)  # the OrtValue borrows this buffer
    return ort.OrtValue.ortvalue_from_numpy_with_onnx_type(bits, elem)


def _from_ortvalue(ov: Any) -> Any:
    """An output OrtValue as numpy: ml_dtypes arrays for the types numpy lacks, None when absent."""
    import ctypes

    from onnx import numpy_helper

    if not ov.has_value():
        return None
    if not ov.is_tensor():
        raise BackendError(f"ONNX Runtime returned a {ov.data_type()} next to bfloat16/float8/int4 data; "
                           "its Python API cannot hand that back")
    elem = _ort_elem(ov.data_type())
    if elem not in _EXOTIC:
        return ov.numpy()
    raw = ctypes.string_at(ov.data_ptr(), ov.tensor_size_in_bytes())
    return numpy_helper.to_array(onnx.TensorProto(data_type=_EXOTIC[elem], dims=ov.shape(), raw_data=raw))


class OrtSession(Session):
    def __init__(self, sess: Any, weights: Mapping[str, Any] | None = None):
        from surgeon import weights as W

        self._sess = sess
        self.output_names = [o.name for o in sess.get_outputs()]
        # Fed with every run (see Exported.for_ort); derived weights are computed once for the
        # session's life and dropped with it.
        self._weights = {name: W.resident(a) for name, a in (weights or {}).items()}
        self._exotic_outputs = any(_ort_elem(o.type) in _EXOTIC for o in sess.get_outputs())

    def run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        """Tensors of numpy's own types, lists (sequences), None (absent optionals) and dicts
        (maps) go to ORT as they are, bfloat16/float8/int4 arrays as OrtValues. A model with
        outputs of those types runs through ``run_with_ort_values`` (its outputs would not
        convert to numpy otherwise), where an absent optional is left out of the feed."""
        feeds = {**dict(feeds), **self._weights}
        keep: list = []
        try:
            if not self._exotic_outputs:
                # ORT's run() takes OrtValues beside arrays and lists; only its outputs need numpy types.
                fed = {k: _to_ortvalue(v, keep) if _is_exotic_array(v) else v for k, v in feeds.items()}
                values = self._sess.run(self.output_names, fed)
            else:
                ort_feeds = {k: _to_ortvalue(v, keep) for k, v in feeds.items() if v is not None}
                values = [_from_ortvalue(v) for v in self._sess.run_with_ort_values(self.output_names, ort_feeds)]
        except BackendError:
            raise
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
        # (time and memory in proportion to the weights) for a couple of runs. Its CPU
        # arena is off too: buffers ONNX Runtime makes per run (a float16 weight cast to
        # float32 for a kernel, 2x its bytes) would otherwise stay after the session is
        # gone (measured with ONNX Runtime 1.32: a sliced run of an 8.8 GB float16 decoder
        # kept 7.8 GB; without the arena, 0.1 GB).
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
            so.enable_cpu_mem_arena = False
        return so

    # What subclasses for other execution providers change (see onnxrt_cuda): the provider
    # list, how a session is created (and checked), and whether weights may be fed as
    # inputs with every run (on a GPU that is a host-to-device copy of every weight per run).
    weights_as_inputs = True

    def _providers(self) -> list:
        return ["CPUExecutionProvider"]

    def _create(self, what: Any, **kwargs: Any) -> Any:
        import onnxruntime as ort

        return ort.InferenceSession(what, **kwargs)

    def session(self, model: "onnx.ModelProto | Exported") -> OrtSession:
        """A session for a ModelProto, or for a skeleton whose weights ONNX Runtime takes in memory."""
        options = self._options()
        kwargs: dict[str, Any] = {"sess_options": options, "providers": self._providers()}
        if self.disabled_optimizers:
            kwargs["disabled_optimizers"] = self.disabled_optimizers
        keep: list = []
        feed_weights: dict = {}
        try:
            if not isinstance(model, onnx.ModelProto):
                sess = None
                if not self.disabled_optimizers and self.weights_as_inputs:  # ORT's optimizers see weights as inputs then
                    data, arrays = model.for_ort(as_inputs=True)
                    if all(a.dtype.kind in "biuf" for a in arrays.values()):
                        try:
                            sess = self._create(data, **kwargs)
                            feed_weights = arrays
                        except BackendError:
                            raise
                        except Exception as exc:  # noqa: BLE001 - a kernel that wants constant weights: initializers
                            log.debug("weights as inputs refused (%s); as initializers", _first_line(exc))
                if sess is None:
                    data, arrays = model.for_ort(as_inputs=False)
                    options = self._options()
                    kwargs["sess_options"] = options
                    if arrays:
                        from surgeon import weights as W

                        keep = [_ort_value(W.resident(a)) for a in arrays.values()]
                        options.add_external_initializers(list(arrays), keep)
                    sess = self._create(data, **kwargs)
            elif model_io.needs_external_data(model):
                with model_io.materialized(model) as path:
                    sess = self._create(str(path), **kwargs)
            else:
                sess = self._create(model.SerializeToString(), **kwargs)
        except BackendError:
            raise
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
