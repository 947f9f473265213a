"""onnx's ReferenceEvaluator: an independent, slow, plain-numpy implementation of ONNX.

Why it is a backend: when ONNX Runtime and another engine disagree, a third opinion that
shares no kernels with either tells which one departs from the ONNX specification. It
never fuses, so bisect may mark every intermediate tensor at once.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

import numpy as np
import onnx

from surgeon.debug.backends import Backend, Session
from surgeon.errors import BackendError

log = logging.getLogger(__name__)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


class ReferenceSession(Session):
    def __init__(self, evaluator: Any, output_names: list[str]):
        self._ev = evaluator
        self.output_names = output_names

    def run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        try:
            values = self._ev.run(None, dict(feeds))
        except Exception as exc:  # the evaluator raises whatever numpy or its op raises
            raise BackendError(f"onnx ReferenceEvaluator failed to run the model: {_first_line(exc)}") from exc
        out = {}
        for name, value in zip(self.output_names, values):
            # The evaluator may return numpy scalars or 0-d values for tensors; make them arrays.
            out[name] = np.asarray(value) if isinstance(value, (np.generic, float, int)) else value
        return out


class ReferenceBackend(Backend):
    name = "reference"
    fuses = False

    def __init__(self, check_shapes: bool = False):
        # ``check_shapes``: also fail when an output's shape contradicts the model's annotation.
        self.check_shapes = check_shapes

    def session(self, model: onnx.ModelProto) -> ReferenceSession:
        from onnx.reference import ReferenceEvaluator

        try:
            ev = ReferenceEvaluator(model, check_shape_annotations=self.check_shapes)
        except Exception as exc:
            raise BackendError(f"onnx ReferenceEvaluator cannot load the model: {_first_line(exc)}") from exc
        return ReferenceSession(ev, [o.name for o in model.graph.output])

    def describe(self) -> str:
        return "reference (onnx ReferenceEvaluator)"
