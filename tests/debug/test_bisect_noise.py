"""Noise-aware bisect: a backend whose outputs move when tensors are marked (issue 18, the
imgly case) is bisected with suffix cuts, and the report names the node and gives the noise."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime
import pytest

from helpers import FIXTURES, run_cli
from surgeon import backends
from surgeon.debug.bisect import bisect_model, extract, noise
from surgeon.debug.bisect.oracle import Observation
from surgeon.debug.bisect.reduce import BisectResult
from test_bisect_cli import _repro

A = FIXTURES / "bisect" / "marking_noise.onnx"
B = FIXTURES / "bisect" / "marking_noise_split.onnx"
STRICT = ["--atol", "1e-6", "--rtol", "0"]


def _samples(n=2):
    rng = np.random.default_rng(0)
    return [{"x": rng.uniform(-2, 2, (2, 16)).astype(np.float32)} for _ in range(n)]


def _all_marked(model):
    names = [o for n in model.graph.node for o in n.output if o not in {v.name for v in model.graph.output}]
    return extract.with_outputs(model, names, extract.inferred_types(model))


@pytest.mark.parametrize("backend", ["onnxrt-noopt", "onnxrt"])
def test_the_fixture_reproduces_marking_noise_on_this_onnxruntime(backend):
    """What the fixture stands for, measured: marking moves ONNX Runtime's outputs, the pair
    differs unmarked, and marking every tensor makes the pair identical."""
    a, b = onnx.load(A), onnx.load(B)
    run = lambda m: [backends.create(backend).session(m).run(s)["y"] for s in _samples()]  # noqa: E731
    plain_a, plain_b, marked_a, marked_b = run(a), run(b), run(_all_marked(a)), run(_all_marked(b))
    why = f"onnxruntime {onnxruntime.__version__} no longer shows the behaviour the fixture reproduces"
    assert max(np.abs(x - y).max() for x, y in zip(plain_a, marked_a)) > 1e-4, why
    assert max(np.abs(x - y).max() for x, y in zip(plain_a, plain_b)) > 1e-4, why
    assert all(np.array_equal(x, y) for x, y in zip(marked_a, marked_b)), why


def test_bisect_names_the_node_and_gives_the_noise_figure(tmp_path):
    out = tmp_path / "out"
    r = run_cli("bisect", str(A), "--against", str(B), "--ref", "onnxrt-noopt", *STRICT, "--iterations", "2", "-o", str(out))
    assert r.returncode == 1, r.stderr
    report = json.loads((out / "report.json").read_text())
    # the old search marked every tensor (onnxrt-noopt does not fuse), found them all matching: "unlocalized"
    assert report["mode"] == "suffix cuts" and report["fallback"] == "marking tensors moves the outputs"
    assert report["diagnosis"]["kind"] == "within-noise"
    (c,) = report["culprits"]
    assert c["node"] == "matmul5" and c["found_by"] == "suffix cuts" and c["downstream_nodes"] == 2
    assert c["subgraph"] == ["matmul5", "clip5", "matmul6"]
    assert report["reduced"]["nodes"] == c["subgraph"] and report["reduced"]["verified"]
    rows = report["noise"]["rows"]
    test_marking = noise.worst(rows, noise.TEST, noise.MARKING)
    assert test_marking["max_abs"] > 1e-4 and test_marking["tol_ratio"] > 100  # at atol 1e-6
    assert noise.worst(rows, noise.TEST, noise.REPEAT)["changed"] == 0  # deterministic: not why it moves
    error = report["confirm"]["diffs"][0]["max_abs"]
    assert 0 < error <= noise.figure(rows, "y")
    assert f"{noise.figure(rows, 'y'):.3g}" in report["diagnosis"]["message"]
    assert "marking noise: with every tensor (17) marked" in r.stdout and "within-noise: culprit(s): matmul5" in r.stdout
    assert report["oracle_calls"] <= 12 and report["noise_calls"] == 2
    assert _repro(out).returncode == 1  # the reduced pair still differs on its own


def test_a_real_error_behind_the_noise_is_named_and_not_excused(tmp_path):
    b = onnx.load(B)
    w = next(t for t in b.graph.initializer if t.name == "w2")
    arr = onnx.numpy_helper.to_array(w).copy()
    arr[:, 4] += np.float16(1.0)  # a wrong fold in block 2, far above the noise
    w.CopyFrom(onnx.numpy_helper.from_array(arr, "w2"))
    result = bisect_model(onnx.load(A), _samples(), ref=backends.create("onnxrt-noopt"),
                          test=backends.create("onnxrt-noopt"), against=b, atol=1e-6, rtol=0.0)
    assert result.mode == "suffix cuts"
    noisy, real = result.culprits
    assert (noisy["node"], noisy["introduced"], real["node"], real["introduced"]) == ("matmul5", False, "matmul2", True)
    assert noisy["within_noise"] and not real["within_noise"]  # each judged on the outputs of the cut that named it
    assert result.within_noise is None and result.diagnosis == {
        "kind": "culprit", "message": "culprit(s): matmul5 (within marking noise), matmul2"}


def test_a_quiet_backend_keeps_marked_cuts_and_says_it_measured():
    from test_bisect_oracle import F, _samples as samples_of

    model = F.chain(40, fault=23, scale=3e5)
    result = bisect_model(model, samples_of(model), ref=backends.create("onnxrt"), test=backends.create("fp16"),
                          atol=1e-2, rtol=1e-2)
    assert result.mode == "marked cuts" and result.noise["trusted"] and result.noise_calls == 2
    assert [c["node"] for c in result.culprits] == ["n23"]


def test_noise_rows_threshold_and_within():
    before = [{"y": np.array([1.0, 2.0, np.nan], np.float32)}]
    after = [{"y": np.array([1.0, 2.001, np.nan], np.float32)}]
    (row,) = noise.shift_rows(noise.TEST, noise.MARKING, before, after, ["y"], atol=1e-2, rtol=0.0)
    assert row["changed"] == 1 and row["nonfinite"] == 0  # NaN where it was: no change
    assert row["max_abs"] == pytest.approx(1e-3, rel=1e-3) and row["tol_ratio"] == pytest.approx(0.1, rel=1e-2)
    assert not noise.noisy([row])  # a tenth of the tolerance: marked tensors are trusted
    (loud,) = noise.shift_rows(noise.TEST, noise.MARKING, before, after, ["y"], atol=1e-3, rtol=0.0)
    assert noise.noisy([loud])
    assert noise.within([{"tensor": "y", "max_abs": 5e-4}], [row]) == {"error": 5e-4, "noise": row["max_abs"], "tensor": "y"}
    assert noise.within([{"tensor": "y", "max_abs": 5e-2}], [row]) is None
    assert noise.within([{"tensor": "y", "max_abs": 1e-9, "nan_mismatches": 3}], [row]) is None
    assert noise.spread(list("abcdefgh"), 3) == ["a", "c", "f"] and noise.spread(["a"], 3) == ["a"]


def test_unlocalized_always_says_why():
    confirm = Observation(True, "x", diffs=[{"tensor": "y", "max_abs": 1e-4}])
    rows = [{"side": "test", "kind": "marking", "tensor": "y", "max_abs": 3e-4, "tol_ratio": 30.0, "changed": 5,
             "elements": 8, "nonfinite": 0}]
    result = BisectResult(True, confirm, "o", noise={"rows": rows, "summary": "s"})
    assert result.diagnosis == {"kind": "unlocalized", "message": (
        "the failure could not be pinned to a node: the divergence (max abs 0.0001 on 'y') is within the backend's own "
        "marking noise (0.0003: that output moves as much when only marked tensors change), so it is how the backend "
        "computes around this node, not necessarily a wrong result")}
    rows[0]["max_abs"] = 1e-6
    assert result.diagnosis["message"] == "the failure could not be pinned to a node: no cut reproduces it (s)"
