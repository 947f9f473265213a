"""Input/output files: .npz and Polygraphy JSON, both directions with the real polygraphy CLI."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from helpers import FIXTURES
from surgeon import input_files
from surgeon.errors import InputDataError, UsageError

POLYGRAPHY = shutil.which("polygraphy")
needs_polygraphy = pytest.mark.skipif(POLYGRAPHY is None, reason="the polygraphy command is not on PATH")


def _samples(n: int = 2) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(3)
    return [{"a": rng.uniform(-1, 1, (3, 5)).astype(np.float32), "b": rng.uniform(-1, 1, (3, 5)).astype(np.float32)}
            for _ in range(n)]


def _assert_same(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert list(g) == list(w)
        for k in w:
            assert g[k].dtype == w[k].dtype
            np.testing.assert_array_equal(g[k], w[k])


@pytest.mark.parametrize("suffix", [".npz", ".json"])
@pytest.mark.parametrize("n", [1, 3])
def test_roundtrip(tmp_path, suffix, n):
    samples = _samples(n)
    path = tmp_path / f"in{suffix}"
    input_files.save_inputs(path, samples)
    _assert_same(input_files.load_inputs(path), samples)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left behind


@needs_polygraphy
def test_polygraphy_saved_inputs_load_here(tmp_path):
    path = tmp_path / "pg_inputs.json"
    subprocess.run([POLYGRAPHY, "run", str(FIXTURES / "debug_multi_dynamic.onnx"), "--onnxrt", "--iterations", "2",
                    "--input-shapes", "a:[3,5]", "b:[3,5]", "--save-inputs", str(path)],
                   check=True, capture_output=True, text=True, timeout=120)
    samples = input_files.load_inputs(path)
    assert len(samples) == 2
    assert sorted(samples[0]) == ["a", "b"] and samples[0]["a"].shape == (3, 5) and samples[0]["a"].dtype == np.float32
    assert not np.array_equal(samples[0]["a"], samples[1]["a"])  # two different iterations


@needs_polygraphy
def test_inputs_written_here_load_in_polygraphy(tmp_path):
    samples = _samples(2)
    inputs = tmp_path / "in.json"
    outputs = tmp_path / "pg_out.json"
    input_files.save_inputs(inputs, samples)
    subprocess.run([POLYGRAPHY, "run", str(FIXTURES / "debug_multi_dynamic.onnx"), "--onnxrt",
                    "--load-inputs", str(inputs), "--save-outputs", str(outputs)],
                   check=True, capture_output=True, text=True, timeout=120)
    from polygraphy.comparator import RunResults

    results = RunResults.load(str(outputs))
    (_, iterations), = list(results.items())
    assert len(iterations) == 2
    for sample, it in zip(samples, iterations):
        np.testing.assert_allclose(it["s"], sample["a"] + sample["b"], rtol=1e-6, atol=0)


def test_outputs_json_is_polygraphy_run_results(tmp_path):
    from polygraphy.comparator import RunResults

    runs = {"ref": [{"y": np.arange(4, dtype=np.float32), "seq": [np.zeros(2)]}], "test": [{"y": np.ones(4, np.float32)}]}
    path = tmp_path / "out.json"
    notes = input_files.save_outputs(path, runs)
    assert notes == ["output 'seq' is not a tensor and was not saved"]
    results = RunResults.load(str(path))
    assert list(results.keys()) == ["ref", "test"]
    np.testing.assert_array_equal(results["ref"][0]["y"], np.arange(4, dtype=np.float32))
    npz = tmp_path / "out.npz"
    input_files.save_outputs(npz, runs)
    with np.load(npz) as z:
        assert sorted(z.files) == ["ref/sample0/y", "test/sample0/y"]


def test_bad_files(tmp_path):
    with pytest.raises(InputDataError, match="does not exist"):
        input_files.load_inputs(tmp_path / "missing.npz")
    (tmp_path / "x.txt").write_text("1 2 3")
    with pytest.raises(UsageError, match=".npz or .json"):
        input_files.load_inputs(tmp_path / "x.txt")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(InputDataError, match="not a Polygraphy JSON"):
        input_files.load_inputs(tmp_path / "bad.json")
    (tmp_path / "bad.npz").write_bytes(b"garbage")
    with pytest.raises(InputDataError, match="not a readable .npz"):
        input_files.load_inputs(tmp_path / "bad.npz")
    np.savez(tmp_path / "gap.npz", **{"sample0/a": np.zeros(1), "sample2/a": np.zeros(1)})
    with pytest.raises(InputDataError, match="without gaps"):
        input_files.load_inputs(tmp_path / "gap.npz")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(InputDataError, match="list of"):
        input_files.load_inputs(tmp_path / "list.json")
    with pytest.raises(UsageError, match="folder does not exist"):
        input_files.save_inputs(tmp_path / "nodir" / "x.npz", _samples(1))


# --- sequences, optionals and the types numpy lacks (see input_files' docstring for the layout) --------------------


def _structured_samples(n: int) -> list[dict]:
    import ml_dtypes

    rng = np.random.default_rng(7)
    out = []
    for i in range(n):
        out.append({
            "seq": [rng.uniform(-1, 1, (2, 3)).astype(np.float32) for _ in range(i + 2)],
            "empty_seq": [],
            "opt_absent": None,
            "opt_present": rng.integers(0, 9, (4,)).astype(np.int64),
            "bf": rng.uniform(-1, 1, (3,)).astype(ml_dtypes.bfloat16),
        })
    return out


def _same_value(got, want) -> None:
    if want is None:
        assert got is None
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want)
        for g, w in zip(got, want):
            _same_value(g, w)
    else:
        assert got.shape == want.shape
        assert got.tobytes() == np.ascontiguousarray(want).tobytes()  # bit for bit (bfloat16 comes back as raw bytes)


@pytest.mark.parametrize("suffix", [".npz", ".json"])
@pytest.mark.parametrize("n", [1, 2])
def test_sequences_and_optionals_round_trip(tmp_path, suffix, n):
    samples = _structured_samples(n)
    path = tmp_path / f"in{suffix}"
    input_files.save_inputs(path, samples)
    loaded = input_files.load_inputs(path)
    assert len(loaded) == n
    for got, want in zip(loaded, samples):
        assert sorted(got) == sorted(want)
        for k in want:
            _same_value(got[k], want[k])


def test_npz_keys_follow_the_documented_layout(tmp_path):
    path = tmp_path / "in.npz"
    input_files.save_inputs(path, _structured_samples(1))
    with np.load(path) as z:
        assert sorted(z.files) == ["bf", "empty_seq@len", "opt_absent@none", "opt_present", "seq@0", "seq@1", "seq@len"]
        assert int(z["seq@len"]) == 2 and int(z["empty_seq@len"]) == 0


def test_json_with_sequences_is_still_polygraphy_json(tmp_path):
    from polygraphy.json import load_json

    path = tmp_path / "in.json"
    input_files.save_inputs(path, _structured_samples(1))
    data = load_json(str(path))  # Polygraphy's own decoder reads it
    assert isinstance(data, list) and data[0]["opt_absent"] is None and len(data[0]["seq"]) == 2


def test_loaded_bfloat16_and_sequence_fit_a_model_and_run(tmp_path):
    import onnx
    from onnx import TensorProto as TP
    from onnx import helper

    from surgeon import backends, input_data

    seq = helper.make_sequence_type_proto(helper.make_tensor_type_proto(TP.FLOAT, [2, 3]))
    m = helper.make_model(helper.make_graph(
        [helper.make_node("ConcatFromSequence", ["seq"], ["c"], axis=0), helper.make_node("Cast", ["bf"], ["f"], to=TP.FLOAT)],
        "g", [helper.make_value_info("seq", seq), helper.make_tensor_value_info("bf", TP.BFLOAT16, [3])],
        [helper.make_tensor_value_info("c", TP.FLOAT, [None, 3]), helper.make_tensor_value_info("f", TP.FLOAT, [3])]),
        opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    sample = {k: v for k, v in _structured_samples(1)[0].items() if k in ("seq", "bf")}
    path = tmp_path / "in.npz"
    input_files.save_inputs(path, [sample])
    fitted = input_data.check_feeds(m, input_files.load_inputs(path), run=True)[0]
    out = backends.create("onnxrt").session(m).run(fitted)
    np.testing.assert_array_equal(out["c"], np.concatenate(sample["seq"]))
    np.testing.assert_array_equal(out["f"], sample["bf"].astype(np.float32))


def test_bad_sequence_layouts(tmp_path):
    np.savez(tmp_path / "short.npz", **{"s@len": np.array(2), "s@0": np.zeros(1)})
    with pytest.raises(InputDataError, match="has length 2 but no element 's@1'"):
        input_files.load_inputs(tmp_path / "short.npz")
    np.savez(tmp_path / "neg.npz", **{"s@len": np.array(-1)})
    with pytest.raises(InputDataError, match="non-negative integer scalar"):
        input_files.load_inputs(tmp_path / "neg.npz")
    np.savez(tmp_path / "plain.npz", **{"a@3": np.zeros(1)})  # no a@len: a tensor whose name has '@3'
    assert list(input_files.load_inputs(tmp_path / "plain.npz")[0]) == ["a@3"]
