"""Loading and saving: every bad input is one clear error; saving is atomic; inputs untouched."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import surgeon
from surgeon import model as model_io
from surgeon.errors import ModelLoadError, ModelSaveError, UsageError
from helpers import FIXTURES, run_ort


def _tiny(weight_elems: int = 4096) -> onnx.ModelProto:
    w = numpy_helper.from_array(np.arange(weight_elems, dtype=np.float32).reshape(-1, 4), "w")
    idx = numpy_helper.from_array(np.array([0, 2], np.int64), "idx")
    g = helper.make_graph([helper.make_node("Gather", ["w", "idx"], ["y"], name="g")], "t", [],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])], [w, idx])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


def _sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_missing_file(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        surgeon.load(tmp_path / "nope.onnx")


def test_not_onnx(tmp_path):
    p = tmp_path / "x.onnx"
    p.write_text("this is plainly not a protobuf, it is a sentence\n")
    with pytest.raises(ModelLoadError, match="not an ONNX model"):
        surgeon.load(p)


def test_truncated_protobuf(tmp_path):
    src = (FIXTURES / "tutorial_cnn.onnx").read_bytes()
    p = tmp_path / "t.onnx"
    p.write_bytes(src[: len(src) // 2])
    with pytest.raises(ModelLoadError):
        surgeon.load(p)


def test_checker_rejects(tmp_path):
    m = _tiny()
    m.graph.node[0].input[0] = "not_defined_anywhere"
    p = tmp_path / "bad.onnx"
    p.write_bytes(m.SerializeToString())
    with pytest.raises(ModelLoadError, match="checker rejects"):
        surgeon.load(p)


def _save_external(model, path, location):
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=location, size_threshold=0)


def test_external_data_round_trip_and_relative_location(tmp_path):
    src = tmp_path / "in" / "m.onnx"
    src.parent.mkdir()
    _save_external(_tiny(), src, "m.weights")
    before = _sha(src), _sha(src.parent / "m.weights")
    loaded = surgeon.load(src)
    out = tmp_path / "out" / "o.onnx"
    out.parent.mkdir()
    surgeon.save(loaded, out, external=True)
    assert (out.parent / "o.onnx.data").is_file()
    ref = onnx.load(str(out), load_external_data=False)
    locs = {e.value for t in ref.graph.initializer for e in t.external_data if e.key == "location"}
    assert locs == {"o.onnx.data"}
    np.testing.assert_array_equal(run_ort(surgeon.load(out), {})["y"], run_ort(loaded, {})["y"])
    assert before == (_sha(src), _sha(src.parent / "m.weights"))


def test_missing_external_data(tmp_path):
    p = tmp_path / "m.onnx"
    _save_external(_tiny(), p, "m.weights")
    os.unlink(tmp_path / "m.weights")
    with pytest.raises(ModelLoadError, match="does not exist"):
        surgeon.load(p)


def test_external_location_outside_folder(tmp_path):
    (tmp_path / "sub").mkdir()
    p = tmp_path / "sub" / "m.onnx"
    _save_external(_tiny(), p, "m.weights")
    os.replace(tmp_path / "sub" / "m.weights", tmp_path / "secret.bin")
    m = onnx.load(str(p), load_external_data=False)
    for t in m.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = "../secret.bin"
    p.write_bytes(m.SerializeToString())
    with pytest.raises(ModelLoadError, match="outside the model's folder"):
        surgeon.load(p)


def test_short_external_data_file(tmp_path):
    p = tmp_path / "m.onnx"
    _save_external(_tiny(), p, "m.weights")
    with open(tmp_path / "m.weights", "r+b") as f:
        f.truncate(100)
    with pytest.raises(ModelLoadError, match="too short"):
        surgeon.load(p)


def test_save_is_atomic_when_interrupted(tmp_path, monkeypatch):
    out = tmp_path / "o.onnx"
    out.write_bytes(b"previous content")

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(model_io.os, "replace", boom)
    with pytest.raises(ModelSaveError):
        surgeon.save(_tiny(), out)
    assert out.read_bytes() == b"previous content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.onnx"]


def test_output_equal_to_input_refused(tmp_path):
    p = tmp_path / "m.onnx"
    onnx.save(_tiny(), str(p))
    with pytest.raises(UsageError, match="is the input model"):
        model_io.check_output_path(p, tmp_path / "." / "m.onnx")


def test_output_over_input_external_data_refused(tmp_path):
    p = tmp_path / "m.onnx"
    _save_external(_tiny(), p, "o.onnx.data")
    with pytest.raises(UsageError, match="external data"):
        model_io.check_output_path(p, tmp_path / "o.onnx")


def test_large_model_saved_with_external_data(tmp_path, monkeypatch):
    # Lower the threshold instead of allocating 2 GB: the same code path decides.
    monkeypatch.setattr(model_io, "EXTERNAL_THRESHOLD", 10_000)
    m = _tiny(weight_elems=16384)
    assert model_io.needs_external_data(m)
    out = tmp_path / "big.onnx"
    surgeon.save(m, out)
    assert (tmp_path / "big.onnx.data").stat().st_size >= 16384 * 4
    assert out.stat().st_size < 10_000
    again = surgeon.load(out)
    np.testing.assert_array_equal(run_ort(again, {})["y"], run_ort(m, {})["y"])
