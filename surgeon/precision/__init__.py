"""``surgeon fp16``: a mixed-precision model that provably stays within tolerance.

Three parts, testable apart, around one shared decision of which nodes *may* compute in
reduced precision (:func:`surgeon.backends.fp16.classify`):

- :mod:`.convert` writes the real mixed-precision ONNX model for a set of FP32 nodes
  (weights and activations in FP16/BF16 elsewhere, Casts only at island borders);
- :mod:`.search` chooses that set: a prior from ``scan``'s range analysis, prefix
  bisection over a ranking and ddmin (the isolate engine) for 1-minimality, every
  verdict from :mod:`.oracle` (the FP16 emulation against the FP32 model);
- :mod:`.report` and :mod:`.layer_precisions` tell the user (tables, JSON, TensorRT
  builder flags) and :mod:`.api` ties them together for the command line.
"""

from surgeon.precision.api import Fp16Options, convert_mixed_precision

__all__ = ["Fp16Options", "convert_mixed_precision"]
