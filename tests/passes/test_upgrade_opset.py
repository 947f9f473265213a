"""upgrade-opset: onnx's version converter as a verified, refusing, provenance-keeping pass.

Conversions are exact rewrites (attributes moved to inputs, ops renamed), so converted
models must give the same outputs: atol 1e-6 / rtol 1e-6 for float32.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnx.parser
import pytest
from onnx import TensorProto, helper, numpy_helper

import surgeon
from helpers import CORPUS, FIXTURES, assert_equivalent, model_from_text, requires_corpus, run_cli, run_ort, run_pass
from passes.upgrade_opset import upgrade
from surgeon import graph as G

TOL = dict(atol=1e-6, rtol=1e-6)
GRID = FIXTURES / "grid_sample_contrib_op11.onnx"


def _meta(node) -> dict:
    return {p.key: p.value for p in node.metadata_props}


def _opsets(model) -> dict:
    return {o.domain: o.version for o in model.opset_import}


def _old_model() -> onnx.ModelProto:
    """Opset 11: attribute-form Squeeze/Unsqueeze/ReduceSum in the main graph and in If branches,
    a custom-domain opset import, node and model metadata, and one large initializer."""
    m = onnx.parser.parse_model('''<ir_version: 6, opset_import: ["" : 11, "custom.domain" : 3]>
    g (float[N,1,4] x, bool c) => (float[N,4] y, float[N] s) {
      [sq] a = Squeeze<axes = [1]>(x)
      [mm] b = MatMul(a, w)
      [red] s = ReduceSum<axes = [1], keepdims = 0>(b)
      [branch] y = If(c) <
        then_branch = t () => (float[N,4] ty) { [then_u] u = Unsqueeze<axes = [0]>(b)  [then_s] ty = Squeeze<axes = [0]>(u) },
        else_branch = e () => (float[N,4] ey) { [else_n] ey = Neg(b) }>
    }''')
    w = numpy_helper.from_array(np.random.default_rng(0).normal(size=(4, 4)).astype(np.float32), "w")
    big = numpy_helper.from_array(np.arange(4096, dtype=np.float32), "unused_big")
    m.graph.initializer.extend([w, big])
    for node, origin in ((m.graph.node[0], "export.squeeze"), (m.graph.node[3].attribute[0].g.node[0], "export.then")):
        entry = node.metadata_props.add()
        entry.key, entry.value = "origin", origin
    m.metadata_props.add(key="author", value="fixture")
    onnx.checker.check_model(m)
    return m


SHAPES = [{"x": (2, 1, 4), "c": ()}, {"x": (5, 1, 4), "c": ()}]


def _equivalent(a, b):
    for c in (True, False):
        for i, shapes in enumerate(SHAPES):
            rng = np.random.default_rng(i)
            feeds = {"x": rng.normal(size=shapes["x"]).astype(np.float32), "c": np.array(c)}
            ra, rb = run_ort(a, feeds), run_ort(b, feeds)
            for k in ra:
                np.testing.assert_allclose(rb[k], ra[k], err_msg=k, **TOL)


@pytest.mark.parametrize("target", [13, 18, 21])
def test_upgrade_keeps_function_metadata_and_custom_domains(target):
    m = _old_model()
    before = m.SerializeToString(deterministic=True)
    out, notes = upgrade(m, target)
    assert m.SerializeToString(deterministic=True) == before, "the input model was modified"
    assert out is not None
    onnx.checker.check_model(out, full_check=True)
    assert _opsets(out) == {"": target, "custom.domain": 3}
    assert out.ir_version >= helper.find_min_ir_version_for([helper.make_opsetid("", target)])
    assert [(p.key, p.value) for p in out.metadata_props] == [("author", "fixture")]
    nodes = {n.name: n for n in G.iter_proto_nodes(out)}
    assert _meta(nodes["sq"]) == {"origin": "export.squeeze"}
    assert _meta(nodes["then_u"]) == {"origin": "export.then"}  # a node inside an If branch
    # Squeeze/Unsqueeze take axes as an input from 13 (ReduceSum from 13 too): the converter adds
    # Constant nodes, each stamped with this pass as its provenance.
    created = [n for n in G.iter_proto_nodes(out) if _meta(n).get(G.PROVENANCE_PASS) == "upgrade-opset"]
    assert len(created) >= 3 and all(_meta(n)[G.PROVENANCE_RULE] == "convert-version" for n in created)
    assert any(_meta(n)[G.PROVENANCE_FROM] == "sq" for n in created)
    assert {n.name for n in G.iter_proto_nodes(out) if n.op_type == "Squeeze" and len(n.input) == 2} == {"sq", "then_s"}
    # weights are the original tensors, bit for bit
    assert {t.name: t.SerializeToString() for t in out.graph.initializer} == \
        {t.name: t.SerializeToString() for t in m.graph.initializer}
    assert len(notes) == 1 and notes[0].startswith(f"opset 11 -> {target}: ") and "Squeeze x2 (v11 -> v" in notes[0]
    _equivalent(m, out)


def test_refusals_before_converting():
    m = _old_model()
    assert upgrade(m, 11) == (None, [])
    out, notes = upgrade(m, 9)
    assert out is None and notes == ["the model is already at opset 11; upgrade-opset does not downgrade to 9"]
    latest = onnx.defs.onnx_opset_version()
    out, notes = upgrade(m, latest + 1)
    assert out is None and f"target opset {latest + 1} is newer than onnx" in notes[0]


def test_local_functions_refused():
    m = model_from_text('''<ir_version: 8, opset_import: ["" : 11, "local" : 1]>
    g (float[1,3] x) => (float[1,1,3] y) { y = local.F(x) }
    <domain: "local", opset_import: ["" : 11]>
    F (a) => (b) { b = Unsqueeze<axes = [0]>(a) }''')
    out, notes = upgrade(m, 13)
    assert out is None and notes == ["the model has local functions (F), which onnx's version converter drops; "
                                     "the model keeps opset 11"]


def _scan8_with_sequence_lens() -> onnx.ModelProto:
    body = helper.make_graph(
        [helper.make_node("Add", ["acc_in", "x_t"], ["acc_out"])], "body",
        [helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, [2]),
         helper.make_tensor_value_info("x_t", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, [2])])
    scan = helper.make_node("Scan", ["lens", "init", "xs"], ["final"], name="accumulate", body=body, num_scan_inputs=1)
    graph = helper.make_graph(
        [scan], "g",
        [helper.make_tensor_value_info("lens", TensorProto.INT32, [1]),
         helper.make_tensor_value_info("init", TensorProto.FLOAT, [1, 2]),
         helper.make_tensor_value_info("xs", TensorProto.FLOAT, [1, 3, 2])],
        [helper.make_tensor_value_info("final", TensorProto.FLOAT, [1, 2])])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 8)])
    m.ir_version = 4
    onnx.checker.check_model(m)
    return m


def test_converter_failure_names_the_op():
    """Scan-8 with sequence_lens has no opset-9 form: the refusal names Scan, the model is untouched."""
    m = _scan8_with_sequence_lens()
    out, notes = upgrade(m, 11)
    assert out is None and len(notes) == 1
    assert notes[0].startswith("onnx's version converter cannot take Scan from opset 8 to 11: ")
    assert notes[0].endswith("the model keeps opset 8")
    assert "/project/" not in notes[0]  # no C++ source path in a user-facing sentence


def test_checker_rejection_refused(monkeypatch):
    """A converted model the checker rejects (where the input passes) is refused with the checker's words."""
    def broken(model, target):
        out = onnx.ModelProto()
        out.CopyFrom(model)
        out.opset_import[0].version = target
        out.graph.node[0].input[0] = "no_such_tensor"
        return out
    monkeypatch.setattr(onnx.version_converter, "convert_version", broken)
    out, notes = upgrade(_old_model(), 13)
    assert out is None and len(notes) == 1
    assert notes[0].startswith("the ONNX checker rejects the model converted from opset 11 to 13: ")
    assert "no_such_tensor" in notes[0]


def test_pass_needs_a_target_and_asks_permission():
    m = _old_model()
    out, log = run_pass("upgrade-opset", m)
    assert out is None and log.notes == ["no target opset given (surgeon fix --target-opset N); nothing to do"]
    out, log = run_pass("upgrade-opset", m, options={"target_opset": 13}, limit=0)
    assert out is None and not log.counts
    out, log = run_pass("upgrade-opset", m, options={"target_opset": 13})
    assert _opsets(out)[""] == 13 and log.counts == {"convert-version": 1}
    out, log = run_pass("upgrade-opset", m, options={"target_opset": 10})
    assert out is None and not log.counts and "does not downgrade" in log.notes[0]


def test_not_in_default_pipeline():
    from surgeon.pipeline import registry

    assert "upgrade-opset" in registry.all_passes()
    assert "upgrade-opset" not in registry.default_pipeline()


@pytest.mark.parametrize("target,mode", [(16, b"bilinear"), (20, b"linear")])
def test_contrib_grid_sample_becomes_standard_after_upgrade(target, mode):
    """The issue's example: com.microsoft::GridSample at opset 11 → standard GridSample, verified."""
    m = surgeon.load(GRID)
    out, report = surgeon.fix(m, ["upgrade-opset", "replace-custom-ops"], options={"target_opset": target},
                              atol=1e-5, rtol=1e-5)
    assert report.verification == "numeric" and not report.rolled_back
    assert [p.counts for p in report.passes if p.status == "applied"] == [{"convert-version": 1}, {"ms-grid-sample": 1}]
    assert _opsets(out) == {"": target, "com.microsoft": 1}
    hist = G.op_histogram(out)
    assert hist["GridSample"] == 1 and "com.microsoft::GridSample" not in hist
    grid = next(n for n in out.graph.node if n.op_type == "GridSample")
    assert {a.name: helper.get_attribute_value(a) for a in grid.attribute}["mode"] == mode
    assert _meta(next(n for n in out.graph.node if n.name == "conv")) == {"origin": "encoder.conv"}
    assert_equivalent(m, out, [{"x": (2, 2, 8, 8), "grid": (2, 6, 6, 2)}, {"x": (3, 2, 8, 8), "grid": (3, 6, 6, 2)}], **TOL)


def test_without_upgrade_grid_sample_is_refused_with_the_opset_it_needs():
    out, report = surgeon.fix(surgeon.load(GRID), ["replace-custom-ops"])
    entry = report.passes[0]
    assert out.SerializeToString() == surgeon.load(GRID).SerializeToString()
    assert any("try --target-opset 16" in n for n in entry.notes), entry.notes


def test_cli_target_opset(tmp_path):
    out_path, report_path = tmp_path / "out.onnx", tmp_path / "report.json"
    r = run_cli("fix", str(GRID), "-o", str(out_path), "--target-opset", "17", "--passes", "replace-custom-ops",
                "--report", str(report_path))
    assert r.returncode == 0, r.stderr
    out = onnx.load(out_path)
    assert _opsets(out)[""] == 17 and "GridSample" in G.op_histogram(out)
    report = json.loads(report_path.read_text())
    assert report["passes"][0]["name"] == "upgrade-opset" and report["passes"][0]["status"] == "applied"

    r = run_cli("fix", str(GRID), "-o", str(tmp_path / "x.onnx"), "--target-opset", "99")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "opset 99 is not one onnx" in r.stderr
    assert not (tmp_path / "x.onnx").exists()

    r = run_cli("fix", str(GRID), "-o", str(tmp_path / "down.onnx"), "--target-opset", "9", "--passes", "cleanup",
                "--report", str(report_path))
    assert r.returncode == 0, r.stderr
    assert _opsets(onnx.load(tmp_path / "down.onnx"))[""] == 11
    notes = json.loads(report_path.read_text())["passes"][0]["notes"]
    assert notes == ["the model is already at opset 11; upgrade-opset does not downgrade to 9"]


@requires_corpus("rnn_bilstm_gru_legacy_op13.onnx")
def test_corpus_rnn_upgraded_and_verified():
    m = surgeon.load(CORPUS / "rnn_bilstm_gru_legacy_op13.onnx")
    out, report = surgeon.fix(m, ["upgrade-opset"], options={"target_opset": 21}, atol=1e-5, rtol=1e-5)
    assert report.passes[0].status == "applied" and report.verification == "numeric"
    assert _opsets(out)[""] == 21 and out.ir_version >= 10
    assert G.count_nodes(out) == G.count_nodes(m)


def test_converter_failure_without_an_op_in_the_message_is_isolated(monkeypatch):
    """When the converter's message names no op, the nodes whose op changes are converted one by one."""
    real = onnx.version_converter.convert_version

    def picky(model, target):
        if any(n.op_type == "Squeeze" for n in model.graph.node):
            raise RuntimeError("Assertion failed: something deep inside")
        return real(model, target)
    monkeypatch.setattr(onnx.version_converter, "convert_version", picky)
    out, notes = upgrade(_old_model(), 13)
    assert out is None
    assert notes == ["onnx's version converter cannot take Squeeze (node 'sq') from opset 11 to 13: "
                     "Assertion failed: something deep inside; the model keeps opset 11"]


def test_declared_dynamic_dims_stay_dynamic():
    """Found by bench/fuzz_fix.py (--passes upgrade-opset, target 21: 35 of 600 rolled back): the
    converter wrote inferred static dims over the outputs' declared dynamic ones."""
    m = model_from_text("""
    <ir_version: 7, opset_import: ["" : 12]>
    g (float[2,4] x) => (float[a,b] y) {
      y = Relu (x)
    }""")
    out, notes = upgrade(m, 17)
    assert out is not None and _opsets(out)[""] == 17, notes
    assert [d.dim_param for d in out.graph.output[0].type.tensor_type.shape.dim] == ["a", "b"]
    fixed, report = surgeon.fix(m, ["upgrade-opset"], options={"target_opset": 17}, verify=False)
    assert report.passes[0].status == "applied", report.passes[0].reason
