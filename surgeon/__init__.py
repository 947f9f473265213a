"""surgeon: ONNX graph surgery that proves every change, and debugging across backends.

The Python API mirrors the command line, one function per command, each returning a
typed result with ``to_dict()``: ``fix``, ``compare``, ``bisect``, ``scan``, ``isolate``,
``trt_check``, ``fp16``, ``profile`` and ``sweep``; ``load``/``save`` for model files and
``backend`` for a backend by name. Everything is imported on first use: ``import surgeon``
loads no ONNX, ONNX Runtime, TensorRT or Ray (docs/api.md).
"""

from __future__ import annotations

import importlib
from typing import Any

from surgeon.errors import SurgeonError

__version__ = "0.1.0"

_API = ("fix", "compare", "bisect", "scan", "isolate", "trt_check", "fp16", "profile", "sweep")
_FROM = {"load": "surgeon.model", "save": "surgeon.model", "backend": "surgeon.backends"}
_FROM.update({name: "surgeon.api" for name in _API})

__all__ = ["SurgeonError", "backend", "load", "save", *_API]


def __getattr__(name: str) -> Any:
    """Public names and submodules (``surgeon.pipeline``, ``surgeon.debug``...) on first use."""
    where = _FROM.get(name)
    if where is not None:
        module = importlib.import_module(where)
        value = getattr(module, "create" if name == "backend" else name)
    else:
        try:
            value = importlib.import_module(f"surgeon.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"surgeon.{name}":
                raise
            raise AttributeError(f"module 'surgeon' has no attribute '{name}'") from None
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
