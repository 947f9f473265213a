"""Named backends, created lazily.

Only modules in this package import onnxruntime, polygraphy or tensorrt, and only when
a backend of that kind is created, so ``import surgeon`` stays light and never needs
TensorRT. A backend turns a ModelProto into a :class:`Session`; sessions are reused
across input samples.
"""

from __future__ import annotations

import abc
import importlib
from typing import Any, Mapping

import onnx

from surgeon.errors import BackendError, UsageError


class Session(abc.ABC):
    """A model prepared on one backend."""

    output_names: list[str]

    @abc.abstractmethod
    def run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        """Run once; outputs keyed by name in the model's output order."""


class Backend(abc.ABC):
    """A way to run models. ``fuses``: marking intermediate tensors as outputs can change
    what it computes (true for TensorRT and ONNX Runtime with graph optimizations), so
    bisect marks tensors in small blocks rather than all at once."""

    name: str = ""
    fuses: bool = True

    @abc.abstractmethod
    def session(self, model: onnx.ModelProto) -> Session:
        ...

    def describe(self) -> str:
        return self.name


# name -> "module:factory"; the factory takes keyword options and returns a Backend.
_FACTORIES: dict[str, str] = {
    "onnxrt": "surgeon.backends.onnxrt:OnnxRuntimeBackend",
    "onnxrt-noopt": "surgeon.backends.onnxrt:no_optimization_backend",
    "onnxrt-cuda": "surgeon.backends.onnxrt_cuda:create",
    "reference": "surgeon.backends.reference:ReferenceBackend",
    "fp16": "surgeon.backends.fp16:create",
    "trt": "surgeon.backends.trt:create",
    "trt-rtx": "surgeon.backends.trt:create_rtx",
}


def names() -> list[str]:
    return sorted(_FACTORIES)


def split_spec(spec: str) -> tuple[str, str]:
    """``onnxrt-cuda:tf32=0,nhwc=1`` -> ("onnxrt-cuda", "tf32=0,nhwc=1"); a plain name has no options."""
    name, _, options = spec.partition(":")
    return name.strip(), options.strip()


def create(name: str, **options: Any) -> Backend:
    """Create a backend by name; unknown names and missing libraries are clear errors.

    ``name`` may carry options after a colon, for the backends whose module parses them
    (``parse_options``): ``onnxrt-cuda:tf32=0,algo-search=heuristic``. Keyword options
    given here win over those in the name.
    """
    name, spelled = split_spec(name)
    if name not in _FACTORIES:
        raise UsageError(f"unknown backend '{name}'; known backends: {', '.join(names())}")
    module_name, attr = _FACTORIES[name].split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BackendError(f"backend '{name}' cannot be loaded: {exc}") from exc
    if spelled:
        parse = getattr(module, "parse_options", None)
        if parse is None:
            raise UsageError(f"backend '{name}' takes no options after its name ('{name}:{spelled}')")
        options = {**parse(spelled), **options}
    return getattr(module, attr)(**options)
