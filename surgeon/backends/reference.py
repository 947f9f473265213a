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

from surgeon.backends import Backend, Session
from surgeon.errors import BackendError

log = logging.getLogger(__name__)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _fixed_ops() -> list[type]:
    """Corrections to onnx's evaluator, passed as ``new_ops``.

    BatchNormalization: onnx 1.23's ``BatchNormalization_9`` treats the mere presence of
    the ``momentum`` attribute (which PyTorch always exports) as training mode and
    normalizes with batch statistics; opsets 9-13 have no training mode, so every
    PyTorch-exported BN model below opset 14 came out wrong (we measured 0.12 abs error on
    the corpus' tutorial CNN). This version follows the spec: inference statistics unless
    ``training_mode=1`` (opset 14+).
    """
    from onnx.reference.op_run import OpRun
    from onnx.reference.ops import op_batch_normalization as bn

    class BatchNormalization(OpRun):
        op_domain = ""

        def _run(self, x, scale, bias, mean, var, epsilon=None, momentum=None, training_mode=None,
                 is_test=None, spatial=None):  # noqa: ARG002 (attributes of older opsets)
            eps = 1e-5 if epsilon is None else epsilon
            if training_mode:
                res = bn._batchnorm_training_mode(x, scale, bias, mean, var, momentum=0.9 if momentum is None else momentum,
                                                  epsilon=eps)
                return tuple(res[: max(1, len(self.output))])
            return (bn._batchnorm_test_mode(x, scale, bias, mean, var, epsilon=eps).astype(x.dtype),)

    return [BatchNormalization]


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
            ev = ReferenceEvaluator(model, check_shape_annotations=self.check_shapes, new_ops=_fixed_ops())
        except Exception as exc:
            raise BackendError(f"onnx ReferenceEvaluator cannot load the model: {_first_line(exc)}") from exc
        return ReferenceSession(ev, [o.name for o in model.graph.output])

    def describe(self) -> str:
        return "reference (onnx ReferenceEvaluator)"
