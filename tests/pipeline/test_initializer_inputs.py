"""The interface is a contract: an initializer listed as a graph input (IR >= 4) is an input with a default.

Input and expectations in one place: each model is written out in ONNX text; the
assertions are on the interface (names and types of every input), on the outputs for
the default *and* for an overriding feed (ONNX Runtime, optimizations off, float32
atol 1e-5 rtol 1e-5), and, with ``freeze_initializer_inputs``, on what was folded.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnx_graphsurgeon as gs

import surgeon
from helpers import model_from_text, run_cli, run_ort
from surgeon.pipeline import registry
from surgeon.pipeline.base import Pass
from surgeon.pipeline.runner import APPLIED, ROLLED_BACK
from surgeon.verify import io_problem

TOL = dict(atol=1e-5, rtol=1e-5)

# x.view(N, *target): the case, a reshape target that concatenates an overridable input
RESHAPE_TARGET = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N,2,6,4] x, int64[2] target) => (float[N,?,?] y)
  <int64[2] target = {2, 24}> {
  s = Shape <start: int = 0, end: int = 1> (x)
  t = Concat <axis: int = 0> (s, target)
  r = Reshape (x, t)
  y = Relu (r)
}"""

# looks neutral (x + 0, x * 1) and is not: both are defaults a user may feed
NEUTRAL_DEFAULTS = """
<ir_version: 7, opset_import: ["" : 13]>
g (float[N,4] x, float[4] bias, float[1] scale) => (float[N,4] y)
  <float[4] bias = {0.0, 0.0, 0.0, 0.0}, float[1] scale = {1.0}> {
  a = Add (x, bias)
  m = Mul (a, scale)
  y = Neg (m)
}"""


def _inputs(model: onnx.ModelProto) -> list[tuple[str, bytes]]:
    return [(vi.name, vi.type.SerializeToString(deterministic=True)) for vi in model.graph.input]


def _x(n: int, shape=(2, 6, 4), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (n, *shape)).astype(np.float32)


def _assert_same(a: onnx.ModelProto, b: onnx.ModelProto, feeds: dict) -> None:
    ra, rb = run_ort(a, feeds), run_ort(b, feeds)
    assert list(ra) == list(rb)
    for name in ra:
        assert ra[name].shape == rb[name].shape, name
        np.testing.assert_allclose(rb[name], ra[name], err_msg=name, **TOL)


def test_overridable_reshape_target_is_kept_and_overridable():
    m = model_from_text(RESHAPE_TARGET)
    out, report = surgeon.fix(m)
    assert _inputs(out) == _inputs(m)
    assert any(i.name == "target" for i in out.graph.initializer)  # the default stays with it
    assert not report.rolled_back
    for n in (1, 3):
        _assert_same(m, out, {"x": _x(n)})  # the default
        _assert_same(m, out, {"x": _x(n), "target": np.array([12, 4], np.int64)})  # overridden
    assert run_ort(out, {"x": _x(3), "target": np.array([12, 4], np.int64)})["y"].shape == (3, 12, 4)


def test_freeze_initializer_inputs_folds_them_and_says_so():
    m = model_from_text(RESHAPE_TARGET)
    out, report = surgeon.fix(m, freeze_initializer_inputs=True)
    assert [vi.name for vi in out.graph.input] == ["x"]
    assert report.frozen_inputs == ["target"]
    assert any("frozen" in n and "target" in n for n in report.notes)
    # the chain is folded now: the Reshape target is a constant [0, 2, 24] (dim 0 copied)
    reshape = next(n for n in out.graph.node if n.op_type == "Reshape")
    target = next(i for i in out.graph.initializer if i.name == reshape.input[1])
    assert onnx.numpy_helper.to_array(target).tolist() == [0, 2, 24]
    assert "Shape" not in [n.op_type for n in out.graph.node]
    for n in (1, 3):
        _assert_same(m, out, {"x": _x(n)})


def test_neutral_looking_defaults_are_not_eliminated():
    m = model_from_text(NEUTRAL_DEFAULTS)
    out, report = surgeon.fix(m)
    assert _inputs(out) == _inputs(m)
    assert [n.op_type for n in out.graph.node] == ["Add", "Mul", "Neg"]
    x = _x(3, (4,))
    override = {"x": x, "bias": np.array([1, 2, 3, 4], np.float32), "scale": np.array([0.5], np.float32)}
    _assert_same(m, out, override)
    np.testing.assert_allclose(run_ort(out, override)["y"], -(x + [1, 2, 3, 4]) * 0.5, **TOL)
    frozen, _ = surgeon.fix(m, freeze_initializer_inputs=True)
    assert [n.op_type for n in frozen.graph.node] == ["Neg"]
    _assert_same(m, frozen, {"x": x})


def test_unread_default_stays_an_input():
    """An overridable input no node reads was refused ('the declared type of input would change')."""
    m = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N,4] x, float[4] unused) => (float[N,4] y) <float[4] unused = {1.0, 2.0, 3.0, 4.0}> {
      y = Relu (x)
    }""")
    out, report = surgeon.fix(m)
    assert _inputs(out) == _inputs(m)
    assert [i.name for i in out.graph.initializer] == ["unused"]
    frozen, report = surgeon.fix(m, freeze_initializer_inputs=True)
    assert [vi.name for vi in frozen.graph.input] == ["x"] and not frozen.graph.initializer
    assert any(p.name == "cleanup" and p.counts.get("unused initializer removed") for p in report.passes)


def test_default_that_a_pass_stops_reading_stays_an_input():
    """A dead node that read a default goes; the default stays in the interface."""
    m = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N,4] x, float[4] b) => (float[N,4] y) <float[4] b = {1.0, 2.0, 3.0, 4.0}> {
      dead = Add (x, b)
      y = Relu (x)
    }""")
    out, report = surgeon.fix(m, ["cleanup"])
    assert report.passes[0].status == APPLIED and report.passes[0].counts.get("dead node removed") == 1
    assert _inputs(out) == _inputs(m)
    assert [i.name for i in out.graph.initializer] == ["b"]


def test_legacy_ir_listings_are_not_an_interface():
    """IR 3: every initializer must be listed, so they are not overridable and may be folded."""
    m = model_from_text("""
    <ir_version: 3, opset_import: ["" : 8]>
    g (float[2,4] x, float[4] b, float[1] two) => (float[2,4] y) <float[4] b = {1.0, 2.0, 3.0, 4.0}, float[1] two = {2.0}> {
      c = Mul (b, two)
      y = Add (x, c)
    }""")
    out, report = surgeon.fix(m)
    assert "Mul" not in [n.op_type for n in out.graph.node]  # folded: b is not a user's default here
    names = [vi.name for vi in out.graph.input]
    assert names[0] == "x" and set(names[1:]) == {i.name for i in out.graph.initializer}
    _assert_same(m, out, {"x": _x(2, (4,))[0:2].reshape(2, 4)})


def test_io_problem_counts_initializer_backed_inputs():
    m = model_from_text(NEUTRAL_DEFAULTS)
    dropped = onnx.ModelProto()
    dropped.CopyFrom(m)
    del dropped.graph.input[1]  # 'bias' becomes a plain initializer
    assert io_problem(m, m) is None
    assert "graph inputs changed" in io_problem(m, dropped)
    legacy, legacy_dropped = onnx.ModelProto(), onnx.ModelProto()
    legacy.CopyFrom(m)
    legacy_dropped.CopyFrom(dropped)
    legacy.ir_version = legacy_dropped.ir_version = 3
    assert io_problem(legacy, legacy_dropped) is None


class FoldsDefaults(Pass):
    """Wrong on purpose: reads the default of ``bias`` as if it were a constant (x + 0 → x)."""

    name = "test-folds-defaults"
    summary = "x + default zeros removed"

    def run(self, model, ctx, log):
        for node in model.graph.nodes:
            if node.op == "Add" and isinstance(node.inputs[1], gs.Constant) and not np.any(node.inputs[1].values):
                node.op = "Identity"
                del node.inputs[1]
                log.count("fold-default")
                return True
        return False


def test_verification_overrides_defaults_and_catches_a_pass_that_folds_one(monkeypatch):
    monkeypatch.setitem(registry._PASSES, FoldsDefaults.name, FoldsDefaults)
    m = model_from_text(NEUTRAL_DEFAULTS)
    out, report = surgeon.fix(m, [FoldsDefaults.name], rounds=1)
    p = report.passes[0]
    assert p.status == ROLLED_BACK and "differs" in p.reason
    assert "x[3, 4], bias[4], scale[1]" in report.samples  # the sample that overrides them
    assert [n.op_type for n in out.graph.node] == ["Add", "Mul", "Neg"]


def test_cli_freeze_initializer_inputs(tmp_path):
    src = tmp_path / "in.onnx"
    onnx.save(model_from_text(RESHAPE_TARGET), src)
    kept, frozen = tmp_path / "kept.onnx", tmp_path / "frozen.onnx"
    r = run_cli("fix", str(src), "-o", str(kept), "--report", str(tmp_path / "kept.json"))
    assert r.returncode == 0, r.stderr
    assert [vi.name for vi in onnx.load(kept).graph.input] == ["x", "target"]
    r = run_cli("fix", str(src), "-o", str(frozen), "--freeze-initializer-inputs", "--report", str(tmp_path / "r.json"))
    assert r.returncode == 0, r.stderr
    assert [vi.name for vi in onnx.load(frozen).graph.input] == ["x"]
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["frozen_inputs"] == ["target"]
    assert "frozen" in r.stdout and "target" in r.stdout


def test_a_scalar_default_is_overridden_too():
    """Found by bench/fuzz_fix.py --verify: a 0-d default (a LayerNorm epsilon) was offered as a numpy
    scalar, which ONNX Runtime refuses, so no sample overrode it and a fold of it went unnoticed."""
    m = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[2,4] x, float eps) => (float[2,4] y) <float eps = {1e-5}> {
      v = Mul (x, x)
      a = Add (v, eps)
      y = Sqrt (a)
    }""")
    out, report = surgeon.fix(m, ["cleanup"])
    assert "x[2, 4], eps[]" in report.samples
    assert _inputs(out) == _inputs(m)
