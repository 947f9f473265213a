"""trt-check with full TensorRT (written from the TensorRT 10/11 and Polygraphy documentation).

No machine this project is built on can import `tensorrt` (its wheels come from NVIDIA's
package index and want an NVIDIA GPU), so these tests skip here, saying why. They state
what onnx-tensorrt's importers say full TensorRT does differently from TensorRT-RTX.
"""

from __future__ import annotations

import onnx
import pytest

from helpers import FIXTURES
from surgeon.backends import trt as trt_backend
from surgeon.debug import trt_check

pytestmark = pytest.mark.skipif(
    not trt_backend.available("trt"),
    reason="needs full TensorRT: the 'tensorrt' package (pip install tensorrt --extra-index-url "
           "https://pypi.nvidia.com) on a machine with an NVIDIA GPU; 'import tensorrt' fails here")

TC = FIXTURES / "trt_check"


def test_full_tensorrt_answers_and_differs_from_rtx_where_documented():  # pragma: no cover - no TensorRT here
    r = trt_check.check(onnx.load(TC / "multi_fail.onnx"), engine="trt")
    assert r.engine["name"] == "trt" and r.engine["mode"] == "executed"
    failing = {f.node for f in r.failures if f.phase == "parse"}
    assert {"scatter_nd_add", "resize_aa", "fancy_in_branch"} <= failing
    # TensorRT 10 imports NonZero natively (INonZeroLayer) and ScatterElements reductions through its plugin library
    assert "nonzero" not in failing and "scatter_el_max" not in failing
    assert {f.node for f in r.failures if f.phase == "domain"} == {"custom_relu", "ms_gelu"}


def test_full_tensorrt_builds_a_ready_model():  # pragma: no cover - no TensorRT here
    r = trt_check.check(onnx.load(TC / "dynamic_ok.onnx"), engine="trt")
    assert r.ready and r.builds and r.builds[0].engine_bytes > 1000
