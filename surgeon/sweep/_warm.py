"""Imported once by the forkserver the sweep's jobs are forked from (see isolation.py):
everything a step needs, so that no job pays the import cost again."""

import onnx  # noqa: F401
import onnx_graphsurgeon  # noqa: F401
import onnxruntime  # noqa: F401
import polygraphy  # noqa: F401

import surgeon.api._fix  # noqa: F401
import surgeon.api._fp16  # noqa: F401
import surgeon.api._profile  # noqa: F401
import surgeon.api._scan  # noqa: F401
import surgeon.api._trt_check  # noqa: F401
import surgeon.debug.profile  # noqa: F401
import surgeon.debug.scan  # noqa: F401
import surgeon.debug.trt_check  # noqa: F401
import surgeon.fix_report  # noqa: F401
import surgeon.pipeline.runner  # noqa: F401
import surgeon.precision  # noqa: F401
import surgeon.sweep.job  # noqa: F401
from surgeon.pipeline import registry

registry.all_passes()  # loads the pass packages (entry points)
