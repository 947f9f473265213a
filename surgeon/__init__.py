"""surgeon: ONNX graph surgery that proves every change, and debugging across backends.

The Python API mirrors the command line: ``load``/``save`` for model files, ``fix`` for
the verified pass pipeline, and (from ``surgeon.debug``) compare, bisect, scan, isolate.
"""

from surgeon.errors import SurgeonError
from surgeon.model import load, save
from surgeon.pipeline import fix

__all__ = ["SurgeonError", "fix", "load", "save"]
__version__ = "0.1.0"
