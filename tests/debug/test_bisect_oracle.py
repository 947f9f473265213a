"""Extraction and oracles on real backends: what a candidate model contains and computes."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import onnx
import pytest

from helpers import FIXTURES, model_from_text, requires_corpus, run_ort
from surgeon import backends
from surgeon.debug.bisect import artifacts, bisect_model, extract
from surgeon.debug.bisect.oracle import CommandOracle, NumericOracle, Observation
from surgeon.debug.bisect.reduce import reference_values
from surgeon.debug.bisect.strategy import Candidate


def _fixtures():
    spec = importlib.util.spec_from_file_location("make_bisect_fixtures", FIXTURES / "make_bisect_fixtures.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


F = _fixtures()

DIAMOND = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[2,3] x, float[2,3] w) => (float[2,3] y, float[2,3] z) {
  c = Constant <value = float[1] {2.0}> ()
  a = Mul(x, c)
  b = Add(x, w)
  s = Sub(a, b)
  y = Relu(s)
  z = Tanh(b)
}
"""


def _samples(model, n=2):
    rng = np.random.default_rng(0)
    return [{i.name: rng.uniform(-1, 1, [d.dim_value for d in i.type.tensor_type.shape.dim]).astype(np.float32)
             for i in model.graph.input} for _ in range(n)]


def test_view_skips_constants_and_knows_the_graph():
    view = extract.GraphView(model_from_text(DIAMOND))
    assert [view.node(k).op_type for k in range(view.dag.n)] == ["Mul", "Add", "Sub", "Relu", "Tanh"]
    assert view.dag.preds[2] == frozenset({0, 1}) and view.dag.sinks == frozenset({3, 4})


def test_subgraph_with_several_inputs_and_outputs_computes_the_same_values():
    model = model_from_text(DIAMOND)
    view = extract.GraphView(model)
    samples = _samples(model)
    ref = reference_values(model, backends.create("onnxrt-noopt"), samples)
    types = extract.types_from_values(ref)
    # {Add, Sub}: inputs x, w, a (fed), outputs s (read by Relu) and b (read by Tanh); the Constant rides along
    sub, inputs, outputs = view.subgraph_model(frozenset({1, 2}), types)
    onnx.checker.check_model(sub)
    assert sorted(inputs) == ["a", "w", "x"] and sorted(outputs) == ["b", "s"]
    for r in ref:
        got = run_ort(sub, {n: r[n] for n in inputs})
        for name in outputs:
            np.testing.assert_allclose(got[name], r[name], atol=1e-6, rtol=1e-6)
    mul, ins, outs = view.subgraph_model(frozenset({0}), types)
    assert ins == ["x"] and outs == ["a"] and [n.op_type for n in mul.graph.node] == ["Constant", "Mul"]


def test_numeric_oracle_on_every_sample_not_just_the_first():
    # B differs from A only where x > 0.9, which sample 0 may miss; every sample is judged
    a = model_from_text("""<ir_version: 8, opset_import: ["" : 17]> g (float[4] x) => (float[4] y) { y = Relu(x) }""")
    b = model_from_text("""<ir_version: 8, opset_import: ["" : 17]> g (float[4] x) => (float[4] y) {
        t = Constant <value = float[1] {0.9}> ()
        y = Clip(x, , t) }""")
    samples = [{"x": np.array([0.0, 0.1, 0.2, 0.3], np.float32)}, {"x": np.array([0.1, 0.2, 0.3, 0.95], np.float32)}]
    ref = backends.create("onnxrt")
    view = extract.GraphView(a)
    values = reference_values(a, ref, samples)
    oracle = NumericOracle(view, values, extract.types_from_values(values), test=ref, against=b, atol=1e-6, rtol=0.0)
    v = oracle.judge(Candidate("mark", view.dag.sinks, "confirm"))
    assert v.failed and v.diffs[0]["sample"] == 1 and v.diffs[0]["max_abs"] == pytest.approx(0.05, abs=1e-6)


def test_against_reduces_a_perturbed_branch_to_one_node(tmp_path):
    a = F.branches(12, fault_in=None)
    b = F.perturbed(a, "a7", delta=0.25)
    ref = backends.create("onnxrt")
    result = bisect_model(a, _samples(a, 3), ref=ref, test=ref, against=b, atol=1e-5, rtol=1e-5, outdir=tmp_path)
    assert result.failed
    assert [c["node"] for c in result.culprits] == ["a7"] and result.culprits[0]["introduced"]
    assert result.culprits[0]["error"]["max_abs"] == pytest.approx(0.25, rel=1e-3)
    assert result.reduced_nodes == ["a7"] and result.reduced_verified
    assert result.reduced_against is not None and [n.name for n in result.reduced_against.graph.node] == ["a7"]


def test_fp16_overflow_is_introduced_by_the_scaling_node():
    model = F.chain(60, fault=41, scale=3e5)
    result = bisect_model(model, _samples(model), ref=backends.create("onnxrt"), test=backends.create("fp16"),
                          atol=1e-2, rtol=1e-2)
    assert [(c["node"], c["introduced"]) for c in result.culprits] == [("n41", True)]
    assert result.culprits[0]["error"]["inf_mismatches"] > 0
    assert result.calls <= 1 + 6 + 1  # confirm, ⌈log2 60⌉ cuts, alone


def test_non_fusing_backend_marks_everything_once():
    model = F.chain(40)
    b = F.perturbed(F.perturbed(model, "n9"), "n30")  # the second difference is downstream of the first: not blamed
    result = bisect_model(model, _samples(model), ref=backends.create("onnxrt"), test=backends.create("onnxrt-noopt"),
                          against=b, atol=1e-5, rtol=1e-5)
    assert result.mode == "mark all" and [c["node"] for c in result.culprits] == ["n9"]
    assert result.calls == 3


def test_clean_pair_is_not_a_failure():
    model = F.chain(20)
    ref = backends.create("onnxrt")
    result = bisect_model(model, _samples(model), ref=ref, test=backends.create("onnxrt-noopt"), atol=1e-5, rtol=1e-5)
    assert not result.failed and result.calls == 1 and not result.culprits


def test_check_command_oracle_and_resume(tmp_path):
    model = F.chain(30, fault=17, scale=2.0)
    check = (f"{sys.executable} -c \"import onnx,sys; m=onnx.load(sys.argv[1]); "
             "sys.exit(any(n.op_type == 'Mul' for n in m.graph.node))\" {model}")
    ref = backends.create("onnxrt")
    first = bisect_model(model, _samples(model), ref=ref, check=check, outdir=tmp_path)
    assert [c["node"] for c in first.culprits] == ["n17"] and first.mode == "prefixes"
    assert first.calls <= 1 + 5 + 1
    again = bisect_model(model, _samples(model), ref=ref, check=check, outdir=tmp_path)
    assert again.calls == 0 and again.resumed == first.calls
    assert [c["node"] for c in again.culprits] == ["n17"]


def test_check_command_gets_reference_inputs(tmp_path):
    model = F.chain(6)
    view = extract.GraphView(model)
    values = reference_values(model, backends.create("onnxrt"), _samples(model, 2))
    # the command fails when the inputs file holds the reference value of t2 for both samples
    expect = tmp_path / "t2.npy"
    np.save(expect, np.stack([v["t2"] for v in values]))
    check = (f"{sys.executable} -c \"import numpy as np,sys; z=np.load(sys.argv[1]); "
             f"ok=np.allclose(np.stack([z['sample0/t2'], z['sample1/t2']]), np.load('{expect}'), rtol=0, atol=0); sys.exit(1 if ok else 0)\" {{inputs}}")
    oracle = CommandOracle(view, check, values, extract.types_from_values(values))
    assert oracle.judge(Candidate("subgraph", frozenset({3}), "t")).failed
    assert oracle.calls == 1


def test_state_is_ignored_for_another_fingerprint(tmp_path):
    key = ("subgraph", frozenset({1, 2}))
    artifacts.save_state(tmp_path, "abc", {key: Observation(True, "x")})
    assert artifacts.load_state(tmp_path, "abc")[key].failed
    assert artifacts.load_state(tmp_path, "other") == {}


def test_a_crash_in_the_second_model_is_localized_with_prefixes():
    a = F.chain(12)
    b = F.chain(12)
    # B's node n6 reshapes to an impossible shape: running B crashes, there is nothing to compare
    shape = onnx.numpy_helper.from_array(np.array([3, 5], np.int64), "bad_shape")
    b.graph.initializer.append(shape)
    node = next(n for n in b.graph.node if n.name == "n6")
    node.op_type = "Reshape"
    node.input[1] = "bad_shape"
    ref = backends.create("onnxrt")
    result = bisect_model(a, _samples(a), ref=ref, test=ref, against=b, atol=1e-5, rtol=1e-5)
    assert result.failed and result.confirm.crashed and result.mode == "prefixes"
    assert [c["node"] for c in result.culprits] == ["n6"] and result.culprits[0]["introduced"]
    assert "Reshape" in result.culprits[0]["error"]["reason"] or "reshape" in result.culprits[0]["error"]["reason"].lower()


@requires_corpus("tutorial_cnn_op12_static.onnx")
def test_real_model_with_one_perturbed_conv():
    from helpers import CORPUS

    a = onnx.load(str(CORPUS / "tutorial_cnn_op12_static.onnx"))
    b = onnx.ModelProto()
    b.CopyFrom(a)
    conv = [n for n in b.graph.node if n.op_type == "Conv"][1]
    inits = {t.name: t for t in b.graph.initializer}
    w = onnx.numpy_helper.to_array(inits[conv.input[1]]).copy()
    w[0, 0, 0, 0] += 3.0
    inits[conv.input[1]].CopyFrom(onnx.numpy_helper.from_array(w, conv.input[1]))
    ref = backends.create("onnxrt")
    result = bisect_model(a, _samples(a, 2), ref=ref, test=ref, against=b, atol=1e-4, rtol=1e-3)
    assert [(c["node"], c["op_type"], c["introduced"]) for c in result.culprits] == [(conv.name, "Conv", True)]
    assert result.reduced_nodes == [conv.name] and result.reduced_verified
    assert result.calls <= 1 + 4 + 2


@requires_corpus("tutorial_cnn_op12_static.onnx")
def test_real_model_fp16_overflow_in_a_scaled_conv():
    from helpers import CORPUS

    model = onnx.load(str(CORPUS / "tutorial_cnn_op12_static.onnx"))
    conv = [n for n in model.graph.node if n.op_type == "Conv"][1]
    inits = {t.name: t for t in model.graph.initializer}
    w = onnx.numpy_helper.to_array(inits[conv.input[1]]) * np.float32(1e5)
    inits[conv.input[1]].CopyFrom(onnx.numpy_helper.from_array(w.astype(np.float32), conv.input[1]))
    samples = [{"input": np.random.default_rng(i).uniform(-1, 1, (1, 3, 32, 32)).astype(np.float32)} for i in range(2)]
    result = bisect_model(model, samples, ref=backends.create("onnxrt"), test=backends.create("fp16"), atol=1e-2, rtol=1e-2)
    assert [(c["node"], c["introduced"]) for c in result.culprits] == [(conv.name, True)]
    assert result.culprits[0]["error"]["inf_mismatches"] > 0
