"""surgeon: ONNX graph surgery that proves every change, and debugging across backends.

The Python API mirrors the command line: ``load``/``save`` for model files, ``fix`` for
the verified pass pipeline, and (from ``surgeon.debug``) compare, bisect, scan, isolate.
"""

from surgeon.errors import SurgeonError
from surgeon.model import load, save
from surgeon.pipeline import fix



# --- compare / backend (H5): thin wrappers so `import surgeon` stays light ---
def compare(model, **options):
    """Run a model on two backends (or two models) and judge every output; see surgeon.debug.compare_run.compare."""
    from surgeon.debug.compare_run import compare as _compare

    return _compare(model, **options)


def backend(name: str, **options):
    """A backend by name (``backend("fp16", keep=["Softmax"])``); see surgeon.backends.create."""
    from surgeon.backends import create

    return create(name, **options)


__all__ = ["SurgeonError", "backend", "compare", "fix", "load", "save"]
__version__ = "0.1.0"
