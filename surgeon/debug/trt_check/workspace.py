"""A private folder where the model's weights are written once and candidates are small files.

Why: the parser runs in a worker process and reads files. A check parses the model
several times (each time with more failing nodes cut out) and may build it several
times; writing the weights for every candidate would make the cost grow with the
weights, not with the graph (DESIGN.md). So the working copy's tensors (initializers
and Constant/attribute tensors, in bodies too) go to one external data file once, and
every candidate is a small protobuf that points at it.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import onnx
from onnx import external_data_helper

from surgeon import model as model_io

WEIGHTS_FILE = "weights.bin"


class Workspace:
    def __init__(self, model: onnx.ModelProto, *, prefix: str = "surgeon-trt-check-"):
        self.dir = Path(tempfile.mkdtemp(prefix=prefix))
        self._count = 0
        skeleton = model_io.copy(model)  # the one copy of the weights this check makes
        external_data_helper.convert_model_to_external_data(
            skeleton, all_tensors_to_one_file=True, location=WEIGHTS_FILE, size_threshold=model_io.EXTERNAL_MIN_BYTES,
            convert_attribute=True)
        external_data_helper.write_external_data_tensors(skeleton, str(self.dir))
        self.skeleton = skeleton  # tensors now only reference weights.bin: cheap to copy and edit

    def write(self, model: onnx.ModelProto, stem: str = "candidate") -> Path:
        """Save a skeleton-derived model next to the weights; returns its path."""
        self._count += 1
        path = self.dir / f"{stem}-{self._count}.onnx"
        path.write_bytes(model.SerializeToString())
        return path

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "Workspace":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
