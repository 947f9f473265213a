"""Shared test helpers: build small models from ONNX text, run them, check equivalence.

Tolerances here are explicit per use; equivalence checks run each model at several
sizes for every dynamic dim.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import onnx
import onnx.parser
import pytest

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpus"
FIXTURES = ROOT / "fixtures"


def model_from_text(text: str, ir_version: int | None = None) -> onnx.ModelProto:
    """Parse ONNX textual syntax (``<ir_version: 8, opset_import: ["" : 17]> graph (...) {...}``)."""
    model = onnx.parser.parse_model(text)
    if ir_version is not None:
        model.ir_version = ir_version
    onnx.checker.check_model(model)
    return model


def run_ort(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> dict[str, Any]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, dict(feeds))))


def random_feeds(model: onnx.ModelProto, shapes: Mapping[str, tuple[int, ...]], seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    inits = {t.name for t in model.graph.initializer}
    feeds = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        dtype = onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
        shape = shapes[vi.name]
        if np.issubdtype(dtype, np.integer):
            feeds[vi.name] = rng.integers(1, 4, size=shape, endpoint=True).astype(dtype)
        elif dtype == np.bool_:
            feeds[vi.name] = rng.integers(0, 2, size=shape).astype(bool)
        else:
            feeds[vi.name] = rng.uniform(-1, 1, size=shape).astype(dtype)
    return feeds


def assert_equivalent(
    a: onnx.ModelProto,
    b: onnx.ModelProto,
    shape_sets: Iterable[Mapping[str, tuple[int, ...]]],
    *,
    atol: float,
    rtol: float,
) -> None:
    """Same outputs (names, order, values within atol + rtol*|ref|) for every shape set."""
    assert [o.name for o in a.graph.output] == [o.name for o in b.graph.output]
    for i, shapes in enumerate(shape_sets):
        feeds = random_feeds(a, shapes, seed=i)
        ra, rb = run_ort(a, feeds), run_ort(b, feeds)
        for name in ra:
            np.testing.assert_allclose(rb[name], ra[name], atol=atol, rtol=rtol, err_msg=f"{name} at {shapes}")


def op_types(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


def run_cli(*args: str, cwd: str | os.PathLike | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the installed console entry point as a user would (``python -m cli`` equivalent)."""
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout)


def requires_corpus(name: str | None = None):
    """Skip with a reason when ../shared/corpus (or one model in it) is absent."""
    if not CORPUS.is_dir():
        return pytest.mark.skip(reason=f"real-model corpus not found at {CORPUS} (needs ../shared beside the checkout)")
    if name and not (CORPUS / name).is_file():
        return pytest.mark.skip(reason=f"corpus model {name} not found in {CORPUS}")
    return pytest.mark.skipif(False, reason="corpus present")


def run_pass(pass_ref, model: onnx.ModelProto, *, limit: int | None = None, options: Mapping[str, Any] | None = None,
             budget=None):
    """Run one pass directly (no verification): ``(new model or None when unchanged, PassLog)``.

    ``pass_ref`` is a registered pass name or a Pass class. The pass edits an in-memory
    copy (:class:`surgeon.graph.Model`); the input ModelProto stays untouched.
    """
    from surgeon.graph import Model
    from surgeon.pipeline import registry
    from surgeon.pipeline.base import PassContext, PassLog, RewriteBudget

    cls = registry.get(pass_ref) if isinstance(pass_ref, str) else pass_ref
    ctx = PassContext(budget=budget or RewriteBudget(limit=limit), options=dict(options or {}), pass_name=cls.name)
    log = PassLog()
    work = Model.from_proto(model)
    before = work.signature()
    cls().run(work, ctx, log)
    if work.signature() == before:
        return None, log
    return work.to_proto(), log
