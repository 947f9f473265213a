"""Region checks and sliced runs: each change compared on what it changed, honestly reported."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import surgeon
from helpers import FIXTURES, model_from_text, run_cli, run_ort
from surgeon import backends, staged
from surgeon import verify_mode as VM
from surgeon import verify_region as VR
from surgeon.graph import Model
from surgeon.pipeline.runner import APPLIED

RULES_WRONG = (  # a wrong rewrite, in a user rule file as --rules takes it: Relu is not Abs
    "from surgeon.rewrite import Op, rule\n"
    "RULES = [rule('relu-is-abs', Op('Relu'), lambda m, b: [b.op('Abs', [m.inputs[0]])])]\n")


def _conv_bn_chain(spatial: int = 8, channels: int = 32) -> onnx.ModelProto:
    """Conv+BN+Relu, then x.view(x.size(0), -1) as the exporter writes it (a shape chain), dynamic batch."""
    rng = np.random.default_rng(0)
    c = channels
    inits = [numpy_helper.from_array(rng.standard_normal((c, 3, 3, 3)).astype(np.float32) * 0.3, "w"),
             numpy_helper.from_array(rng.uniform(0.5, 1.5, c).astype(np.float32), "gamma"),
             numpy_helper.from_array(rng.normal(0, 0.1, c).astype(np.float32), "beta"),
             numpy_helper.from_array(rng.normal(0, 0.1, c).astype(np.float32), "mean"),
             numpy_helper.from_array(rng.uniform(0.5, 1.5, c).astype(np.float32), "var"),
             numpy_helper.from_array(np.array(0, np.int64), "zero"),
             numpy_helper.from_array(np.array([0], np.int64), "axes"),
             numpy_helper.from_array(np.array([-1], np.int64), "minus_one")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "gamma", "beta", "mean", "var"], ["b"], name="bn"),
             helper.make_node("Relu", ["b"], ["r"], name="relu"),
             helper.make_node("Shape", ["r"], ["s"], name="shape"),
             helper.make_node("Gather", ["s", "zero"], ["n"], name="gather", axis=0),
             helper.make_node("Unsqueeze", ["n", "axes"], ["n1"], name="unsqueeze"),
             helper.make_node("Concat", ["n1", "minus_one"], ["target"], name="concat", axis=0),
             helper.make_node("Reshape", ["r", "target"], ["y"], name="reshape")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, spatial, spatial])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", c * spatial * spatial])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


# --- the pipeline with region checks ------------------------------------------------------

def test_local_verification_checks_each_change_on_its_region_and_says_so():
    m = _conv_bn_chain()
    result = surgeon.fix(m, verify="local")
    out, report = result
    applied = [p for p in report.passes if p.status == APPLIED]
    assert {p.checked for p in applied} <= {"region", "proof"} and any(p.checked == "region" for p in applied)
    assert report.verification == "region" and report.verified
    assert result.verification == "region" and result.verify_mode == "local"
    assert report.verify_mode_reason == "asked for (--verify local)"
    note = next(n for n in report.notes if n.startswith("verification: region"))
    assert "the whole model was not compared" in note and "its reference run and 1 run(s) of parts of it" in note
    assert "BatchNormalization" not in [n.op_type for n in out.graph.node]
    for batch in (1, 3):
        x = np.random.default_rng(batch).standard_normal((batch, 3, 8, 8)).astype(np.float32)
        np.testing.assert_allclose(run_ort(out, {"x": x})["y"], run_ort(m, {"x": x})["y"], atol=1e-4, rtol=1e-3)


def test_whole_verification_stays_the_default_for_a_light_model():
    result = surgeon.fix(_conv_bn_chain())
    report = result.report
    assert report.verification == "numeric" and result.verify_mode == "whole"
    assert surgeon.fix(_conv_bn_chain(), verify=False).verify_mode is None
    assert all(p.checked in ("numeric", "proof") for p in report.passes if p.status == APPLIED)


def test_a_wrong_rewrite_is_caught_on_its_region_and_rolled_back(tmp_path):
    rules = tmp_path / "wrong.py"
    rules.write_text(RULES_WRONG)
    m = _conv_bn_chain()
    out, report = surgeon.fix(m, "replace-custom-ops", verify="local", options={"rules": [str(rules)]})
    rolled = [p for p in report.passes if p.status == "rolled-back"]
    assert rolled and "differs" in rolled[0].reason
    assert "Abs" not in [n.op_type for n in out.graph.node]


def test_region_of_a_constant_fold_reads_no_recorded_value():
    m = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N,4] x) => (float[N,4] y) <float[4] w = {1.0, 2.0, 3.0, 4.0}, float[4] c = {1.0, 1.0, 1.0, 1.0}> {
      s = Add(w, c)
      y = Mul(x, s)
    }""")
    work = Model.from_proto(m)
    before = work.export()
    from helpers import run_pass

    folded, _ = run_pass("fold-constants", m)
    after = Model.from_proto(folded).export()
    region = VR.find_region(before, after)
    assert not isinstance(region, str)
    assert region.inputs == []  # the folded Add reads constants only: nothing to record
    assert region.outputs == ["s"]


def test_region_grows_back_past_a_value_no_recording_stands_for():
    m = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N,4] x) => (float[N,4] y) {
      a = Relu(x)
      b = Neg(a)
      y = Abs(b)
    }""")
    before = Model.from_proto(m).export()
    changed = onnx.ModelProto()
    changed.CopyFrom(m)
    changed.graph.node[2].op_type = "Identity"  # the change: y = b
    after = Model.from_proto(changed).export()
    plain = VR.find_region(before, after)
    assert plain.inputs == ["b"]
    grown = VR.find_region(before, after, unverified={"b"})  # b was computed by an earlier, unchecked change
    assert grown.inputs == ["a"] and len(grown.before) == 2


def test_a_change_inside_a_body_is_compared_on_the_whole_model():
    m = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (bool c, float[2] x) => (float[2] y) {
      y = If(c) <then_branch = t () => (float[2] o) { o = Relu(x) }, else_branch = e () => (float[2] o) { o = Neg(x) }>
    }""")
    changed = onnx.ModelProto()
    changed.CopyFrom(m)
    changed.graph.node[0].attribute[1].g.node[0].op_type = "Abs"
    reason = VR.find_region(Model.from_proto(m).export(), Model.from_proto(changed).export())
    assert isinstance(reason, str) and "body" in reason


def test_auto_checks_regions_where_a_run_computes_too_much():
    big = _conv_bn_chain(spatial=1024, channels=64)  # each activation 256 MB per sample: a heavy run
    exported = Model.from_proto(big).export()
    sample = {"x": np.zeros((1, 3, 1024, 1024), np.float32)}
    choice = VM.choose("auto", exported, [sample])
    assert choice.mode == "local" and "GB of values per sample" in choice.why
    small = Model.from_proto(_conv_bn_chain()).export()
    assert VM.choose("auto", small, [{"x": np.zeros((1, 3, 8, 8), np.float32)}]).mode == "whole"
    assert VM.choose("local", small, []).mode == "local" and VM.choose("whole", exported, []).mode == "whole"


def test_auto_checks_regions_where_the_weights_do_not_fit(monkeypatch):
    exported = Model.from_proto(_conv_bn_chain()).export()
    monkeypatch.setattr(VM, "available_memory", lambda: 1000)  # bytes
    choice = VM.choose("auto", exported, [{"x": np.zeros((1, 3, 8, 8), np.float32)}])
    assert choice.mode == "local" and "available" in choice.why


# --- sliced runs --------------------------------------------------------------------------

def _mlp(layers: int = 6, width: int = 64) -> onnx.ModelProto:
    rng = np.random.default_rng(5)
    nodes, inits, x = [], [], "x"
    for i in range(layers):
        inits.append(numpy_helper.from_array(rng.standard_normal((width, width)).astype(np.float32) / 8, f"w{i}"))
        nodes.append(helper.make_node("MatMul", [x, f"w{i}"], [f"h{i}"]))
        nodes.append(helper.make_node("Tanh", [f"h{i}"], [f"t{i}"]))
        x = f"t{i}"
    nodes.append(helper.make_node("Shape", ["h0"], ["s"]))
    g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", width])],
                          [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["n", width]),
                           helper.make_tensor_value_info("s", TensorProto.INT64, [2])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_a_sliced_run_computes_what_the_whole_run_does():
    m = _mlp()
    exported = Model.from_proto(m).export()
    cuts = staged.slices(exported, budget=2 * 64 * 64 * 4)
    assert len(cuts) == 3  # two weights per slice
    backend = backends.create("onnxrt", optimization="basic", memory_lean=True)
    samples = [{"x": np.random.default_rng(i).standard_normal((i + 1, 64)).astype(np.float32)} for i in range(2)]
    sliced = staged.run(backend, exported, samples, budget=2 * 64 * 64 * 4, whole=0)
    whole = staged.run(backend, exported, samples)
    for a, b in zip(sliced, whole):
        assert a.keys() == b.keys()
        for name in a:
            np.testing.assert_allclose(a[name], b[name], atol=1e-6, rtol=1e-6)
    inner = staged.run(backend, exported, samples, outputs=["h2"], budget=64 * 64 * 4, whole=0)  # an intermediate
    assert inner[1]["h2"].shape == (2, 64)


def test_unsorted_nodes_run_whole():
    m = _mlp(layers=2)
    nodes = list(m.graph.node)
    del m.graph.node[:]
    m.graph.node.extend(nodes[::-1])
    assert staged.slices(Model.from_proto(m).export(), budget=1) is None


# --- the command line ---------------------------------------------------------------------

def test_cli_verify_local_reports_region_and_strict_accepts_it(tmp_path):
    src = tmp_path / "m.onnx"
    onnx.save(_conv_bn_chain(), str(src))
    report = tmp_path / "r.json"
    r = run_cli("fix", str(src), "-o", str(tmp_path / "out.onnx"), "--verify", "local", "--strict", "--report",
                str(report))
    assert r.returncode == 0, r.stderr
    assert "verification: region" in r.stdout and "the whole model was not compared" in r.stdout
    data = json.loads(report.read_text())
    assert data["verification"] == "region"
    assert any(p["checked"] == "region" for p in data["passes"])


def test_cli_unknown_verify_mode_is_one_line_exit_2(tmp_path):
    r = run_cli("fix", str(FIXTURES / "tutorial_cnn.onnx"), "-o", str(tmp_path / "o.onnx"), "--verify", "sometimes")
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "sometimes" in r.stderr
    assert not (tmp_path / "o.onnx").exists()


def test_api_unknown_verify_mode_and_cli_verify_with_no_verify_are_usage_errors(tmp_path):
    from surgeon.errors import UsageError

    with pytest.raises(UsageError, match="verify is one of auto, whole, local"):
        surgeon.fix(_conv_bn_chain(), verify="sometimes")
    r = run_cli("fix", str(FIXTURES / "tutorial_cnn.onnx"), "-o", str(tmp_path / "o.onnx"), "--verify", "local",
                "--no-verify")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "--no-verify" in r.stderr
    assert not (tmp_path / "o.onnx").exists()


def test_a_change_with_no_region_of_its_own_is_compared_whole_and_says_why():
    m = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (bool c, float[N,2] x) => (float[N,2] y) {
      y = If(c) <then_branch = t () => (float[N,2] o) { z = Constant<value = float[1] {0.0}>()
                                                         r = Relu(x)
                                                         o = Add(r, z) },
                 else_branch = e () => (float[N,2] o) { o = Neg(x) }>
    }""")
    out, report = surgeon.fix(m, verify="local")
    whole = [p for p in report.passes if any("compared on the whole model" in n and "body" in n for n in p.notes)]
    assert whole and all(p.status == APPLIED and p.checked == "numeric" for p in whole)  # the whole model
    assert "Add" not in [n.op_type for n in out.graph.node[0].attribute[0].g.node]
    assert report.verification == "numeric"  # no change was checked on a region alone
    x = np.random.default_rng(0).standard_normal((3, 2)).astype(np.float32)
    for c in (True, False):
        feeds = {"c": np.array(c), "x": x}
        np.testing.assert_allclose(run_ort(out, feeds)["y"], run_ort(m, feeds)["y"], atol=0, rtol=0)


def test_probe_outputs_of_a_probed_feed_are_not_run_again():
    """The verifier's reference run on the samples its probes chose reuses the probes' outputs."""
    from surgeon.errors import BackendError

    calls = []

    def run_one(feeds):
        calls.append(feeds)
        if feeds["x"].shape[0] > 2:
            raise BackendError("too big")
        return {"y": feeds["x"] * 2}

    probe = staged.Probe(run_one)
    a, b, big = ({"x": np.ones((n, 2), np.float32)} for n in (1, 2, 3))
    assert probe(a) and probe(b) and not probe(big)
    assert len(calls) == 3
    assert probe.outputs(a)["y"].tolist() == [[2.0, 2.0]] and probe.outputs(b)["y"].shape == (2, 2)
    assert len(calls) == 3  # no run: both were probed
    again = {"x": np.ones((1, 2), np.float32)}  # equal values, another feed: run
    assert probe.outputs(again)["y"].shape == (1, 2) and len(calls) == 4
    with pytest.raises(BackendError):
        probe.outputs(big)


def test_loaded_inputs_are_run_once_for_the_check_and_the_reference(tmp_path, monkeypatch):
    """fix's check of --load-inputs runs the input model on them; the verifier takes those outputs
    as its reference instead of running the model again (each run of a multi-GB model reads every weight)."""
    from surgeon import verify as V

    m = _conv_bn_chain()
    src = tmp_path / "m.onnx"
    onnx.save(m, src)
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "in.npz", x=x)
    reference_runs = []
    real = V.staged.run

    def spy(backend, exported, samples, *args, **kwargs):
        if exported.skeleton.graph.node[0].op_type == "Conv" and any(n.op_type == "BatchNormalization"
                                                                     for n in exported.skeleton.graph.node):
            reference_runs.append(len(samples))
        return real(backend, exported, samples, *args, **kwargs)

    monkeypatch.setattr(V.staged, "run", spy)
    result = surgeon.fix(str(src), output=tmp_path / "o.onnx", load_inputs=tmp_path / "in.npz")
    assert result.verification == "numeric" and result.verify_mode == "whole"
    assert reference_runs == [1]  # the input model (with its BatchNormalization) ran once: the check's run
    out = onnx.load(tmp_path / "o.onnx")
    np.testing.assert_allclose(run_ort(out, {"x": x})["y"], run_ort(m, {"x": x})["y"], atol=1e-4, rtol=1e-3)
