"""`surgeon fix` with the default pipeline on every real model of ../shared/corpus.

For each model: the CLI exits 0, the output computes the same outputs as the input on
the manifest's two feed sets (different dynamic sizes), the node count never grows,
and dims that were dynamic stay dynamic. Tolerance: float outputs atol=1e-4 +
rtol=1e-3 (folding BN and constants reorders float32 arithmetic); others exact.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

import surgeon
from surgeon.comparison import Tolerance, diff_values
from surgeon.graph import count_nodes
from surgeon.input_data import image_array
from helpers import CORPUS, requires_corpus, run_cli

pytestmark = requires_corpus()

ATOL, RTOL = 1e-4, 1e-3


def _manifest():
    path = CORPUS / "manifest.json"
    return json.loads(path.read_text())["models"] if path.is_file() else []


def _feed(spec: dict, rng: np.random.Generator) -> np.ndarray:
    dtype, shape, kind = np.dtype(spec["dtype"]), tuple(spec["shape"]), spec["kind"]
    if kind == "zeros":
        return np.zeros(shape, dtype)
    if kind == "const":
        return np.full(shape, spec["value"], dtype)
    if kind == "int":
        return rng.integers(0, spec["hi"], size=shape).astype(dtype)
    if kind == "uniform":
        return rng.uniform(0, 1, size=shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def _dynamic_axes(vis) -> list[tuple[str, int]]:
    out = []
    for vi in vis:
        if vi.type.WhichOneof("value") == "tensor_type":
            for axis, d in enumerate(vi.type.tensor_type.shape.dim):
                if not d.HasField("dim_value"):
                    out.append((vi.name, axis))
    return out


def _run(model: onnx.ModelProto, feeds: dict):
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds)))


@pytest.mark.parametrize("entry", _manifest(), ids=lambda e: e["file"])
def test_default_pipeline_on_corpus_model(entry, tmp_path):
    src = CORPUS / entry["file"]
    out = tmp_path / "fixed.onnx"
    rng = np.random.default_rng(0)
    feed_sets = [{name: _feed(spec, rng) for name, spec in fs.items()} for fs in entry["feeds"]]
    # Image inputs also get a page with text: on the manifest's uniform noise PP-OCRv4's
    # detector answers a constant "no text" (1e-6 at most), which verifies nothing.
    first = entry["feeds"][0]
    page = {name: image_array(np.dtype(spec["dtype"]), tuple(spec["shape"]), np.random.default_rng(1), value_range=(0, 1))
            for name, spec in first.items() if spec["kind"] == "uniform" and len(spec["shape"]) == 4}
    if page:
        feed_sets.append({**feed_sets[0], **page})
    # Verify on the manifest's feeds (Polygraphy's JSON input format): some models need
    # values no generator can guess (silero's sample rate must be 8000 or 16000).
    from polygraphy.json import save_json

    save_json(feed_sets, str(tmp_path / "inputs.json"))
    proc = run_cli("fix", str(src), "-o", str(out), "--report", str(tmp_path / "r.json"),
                   "--load-inputs", str(tmp_path / "inputs.json"))
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    # region: --verify auto found a whole-model run heavy at the manifest's sizes (PP-OCRv4 at
    # 640x640) and compared each change on its region; the report must say so.
    assert report["verification"] in ("numeric", "region")
    if report["verification"] == "region":
        assert any("the whole model was not compared" in n for n in report["notes"])
    assert not report["rolled_back"], [(p["name"], p["reason"]) for p in report["passes"] if p["reason"]]
    before, after = surgeon.load(src), surgeon.load(out)
    assert count_nodes(after) <= count_nodes(before)
    assert _dynamic_axes(after.graph.input) == _dynamic_axes(before.graph.input)
    dyn_out_before = set(_dynamic_axes(before.graph.output))
    assert dyn_out_before <= set(_dynamic_axes(after.graph.output)), "an output dim was baked in"
    for feeds in feed_sets:
        ref, got = _run(before, feeds), _run(after, feeds)
        assert list(ref) == list(got)
        for name in ref:
            dtype = ref[name].dtype if isinstance(ref[name], np.ndarray) else None
            tol = Tolerance(ATOL, RTOL) if dtype is None or dtype.kind == "f" else Tolerance(0, 0)
            d = diff_values(name, ref[name], got[name], tol)
            assert d.passed, f"{entry['file']} {name}: {d.reason}"
