"""trt-check, bisect --check trt-build, compare and doctor against the real TensorRT-RTX parser and builder.

TensorRT-RTX's parser and builder run on a CPU-only machine (only running an engine
needs a GPU). The `test` extra installs `tensorrt-rtx` on Linux x86_64, so these run in
CI; elsewhere they skip, saying why.
"""

from __future__ import annotations

import json

import onnx
import pytest

from helpers import FIXTURES, run_cli
from surgeon.backends import trt as trt_backend
from surgeon.debug import trt_check

pytestmark = pytest.mark.skipif(
    not trt_backend.available("trt-rtx"),
    reason="needs the 'tensorrt-rtx' package (pip install '.[test]' on Linux x86_64, or pip install tensorrt-rtx)")

TC = FIXTURES / "trt_check"


def _check(name: str, **kw):
    return trt_check.check(onnx.load(TC / name), model_path=name, engine="trt-rtx", **kw)


@pytest.fixture(scope="module")
def multi_fail():
    return _check("multi_fail.onnx")


def test_every_failing_node_is_found_not_only_the_first(multi_fail):
    r = multi_fail
    assert r.engine["name"] == "trt-rtx" and r.engine["mode"] == "executed" and r.engine["version"].startswith("1.")
    parse = {f.node: f for f in r.failures if f.phase == "parse"}
    assert set(parse) == {"nonzero", "scatter_nd_add", "scatter_el_max", "resize_aa", "fancy_in_branch"}
    assert r.first_parse_failures == 1 and r.parses > len(parse)  # one parse shows one; the loop shows five
    assert parse["fancy_in_branch"].path == "if_custom.then_branch" and parse["fancy_in_branch"].domain == "com.example"
    assert parse["resize_aa"].code == "UNSUPPORTED_NODE_ATTR" and "ntialias" in parse["resize_aa"].message
    # reported by the parser as node -1 with no name; located by isolation, the plain scatter is not blamed
    assert parse["scatter_el_max"].func == "importScatterElements" and "scatter_el_plain" not in parse
    assert not r.ready and r.parse_ok is False and r.build_skipped
    assert any("rest of the model parses" in n for n in r.notes)


def test_domain_trap_is_our_own_finding(multi_fail):
    trap = {f.node: f for f in multi_fail.failures if f.phase == "domain"}
    assert set(trap) == {"custom_relu", "ms_gelu"}
    assert "ignores the domain" in trap["custom_relu"].message and trap["custom_relu"].code == "DOMAIN_IGNORED"
    assert trap["ms_gelu"].remedy.kind == "rule-pack" and "replace-custom-ops" in trap["ms_gelu"].remedy.command
    assert trap["custom_relu"].remedy.kind == "rename-domain"


def test_a_custom_relu_alone_parses_and_builds_as_relu():
    """The parser really accepts com.example::Relu: the trap is not a parse failure."""
    g = onnx.helper.make_graph([onnx.helper.make_node("Relu", ["x"], ["y"], domain="com.example", name="mine")], "g",
                               [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [4])],
                               [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [4])])
    m = onnx.helper.make_model(g, opset_imports=[onnx.helper.make_opsetid("", 17), onnx.helper.make_opsetid("com.example", 1)])
    r = trt_check.check(m, engine="trt-rtx")
    assert r.parse_ok and r.build_ok and [f.phase for f in r.failures] == ["domain"] and not r.ready


def test_remedies_are_concrete(multi_fail):
    rem = {f.node: f.remedy for f in multi_fail.failures}
    assert rem["fancy_in_branch"].kind == "plugin-rule" and "FancyAct" in rem["fancy_in_branch"].text
    assert rem["nonzero"].kind == "keep-on-ort" and "full TensorRT" in rem["nonzero"].text
    assert rem["resize_aa"].kind == "export"


def test_build_phase_internal_error_points_to_bisect():
    r = _check("if_lstm_build_error.onnx")
    assert r.parse_ok and r.build_attempted and r.build_ok is False and not r.ready
    (f,) = r.failures
    assert f.phase == "build" and f.code.startswith("INTERNAL_ERROR") and "graphScope.cpp" in f.message
    assert f.remedy.kind == "bisect" and "--check trt-build" in f.remedy.command


def test_build_failures_are_located_and_all_found():
    r = _check("nms.onnx")
    assert [(f.node, f.op, f.phase, f.downstream_of_cut) for f in r.failures] == [
        ("nms", "NonMaxSuppression", "build", False), ("nms_again", "NonMaxSuppression", "build", False)]
    assert all("no runners" in f.message and f.remedy.kind == "keep-on-ort" for f in r.failures)
    assert any("the rest of the model builds" in n for n in r.notes)  # after cutting both (sized by ONNX Runtime)


def test_same_named_dims_fail_a_shape_and_renaming_them_is_checked():
    r = _check("same_named_dims.onnx")
    (f,) = r.failures
    assert f.phase == "profile" and f.code == "SAME_NAMED_DIMS" and "x[2] and x[3]" in f.message
    assert f.remedy.verified and f.remedy.exists is False and "x_dim2" in f.remedy.text
    lo, opt, hi = (tuple(r.profile["inputs"]["x"][k]) for k in ("min", "opt", "max"))
    assert lo != hi and opt[2] != opt[3]  # probed at two sizes, '?' dims not forced equal


def test_ready_model_builds_ahead_of_time_per_compute_capability():
    r = _check("dynamic_ok.onnx", target_cc=["8.6", "12.0"])
    assert r.ready and [b.target for b in r.builds] == ["sm86", "sm120"] and all(b.engine_bytes > 1000 for b in r.builds)
    assert r.profile["source"].startswith("probed") and not r.profile["one_sized"]


def test_cli_unknown_compute_capability_is_a_usage_error(tmp_path):
    res = run_cli("trt-check", str(TC / "dynamic_ok.onnx"), "--engine", "trt-rtx", "--target-cc", "9.9", cwd=tmp_path)
    assert res.returncode == 2 and "cannot build for it" in res.stderr and "8.6" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_cli_report_says_which_engine_answered(tmp_path):
    rep = tmp_path / "r.json"
    res = run_cli("trt-check", str(TC / "dynamic_ok.onnx"), "--no-build", "--report", str(rep))
    assert res.returncode == 0, res.stdout + res.stderr
    data = json.loads(rep.read_text())
    assert data["engine"]["mode"] == "executed" and data["build"]["skipped"] == "--no-build" and data["ready"]


def test_bisect_trt_build_reduces_the_if_lstm_failure(tmp_path):
    out = tmp_path / "repro"
    res = run_cli("bisect", str(TC / "if_lstm_build_error.onnx"), "--check", "trt-build", "-o", str(out))
    assert res.returncode == 1, res.stdout + res.stderr
    report = json.loads((out / "report.json").read_text())
    assert [c["node"] for c in report["culprits"]] == ["pick_lstm"] and report["reduced"]["nodes"] == ["pick_lstm"]
    assert "graphScope" in report["culprits"][0]["error"]["reason"]
    repro = (out / "REPRO.md").read_text()
    assert "surgeon trt-check reduced.onnx --engine trt-rtx" in repro
    again = run_cli("trt-check", "reduced.onnx", "--engine", "trt-rtx", "--report", str(tmp_path / "again.json"), cwd=out)
    assert again.returncode == 1 and "graphScope" in json.loads((tmp_path / "again.json").read_text())["failures"][0]["message"]


def test_compare_trt_rtx_reports_parser_nodes_and_missing_driver(tmp_path):
    res = run_cli("compare", str(TC / "fixable.onnx"), "--test", "trt-rtx", "--report", str(tmp_path / "a.json"))
    text = json.loads((tmp_path / "a.json").read_text())
    blob = json.dumps(text)
    assert res.returncode == 1 and "node 'skip_ln' (SkipLayerNormalization): INVALID_NODE" in blob
    res = run_cli("compare", str(TC / "dynamic_ok.onnx"), "--test", "trt-rtx", "--input-shapes", "x:1x3x16x16",
                  "--report", str(tmp_path / "b.json"))
    blob = json.dumps(json.loads((tmp_path / "b.json").read_text()))
    assert res.returncode == 1
    assert "engine run failed: no CUDA driver or GPU is available" in blob or "max_abs" in blob  # a GPU machine runs it


def test_doctor_trt_says_what_the_fix_resolved_and_what_is_left(tmp_path):
    out, rep = tmp_path / "fixed.onnx", tmp_path / "doctor.json"
    res = run_cli("doctor", str(TC / "fixable.onnx"), "-o", str(out), "--trt", "--report", str(rep))
    assert res.returncode == 1, res.stdout + res.stderr
    data = json.loads(rep.read_text())
    assert data["verdict"] == "not ready for TensorRT"
    assert {f["node"] for f in data["trt"]["original"]["failures"]} == {"skip_ln", "fast_gelu", "nonzero"}
    assert [f["node"] for f in data["trt"]["fixed"]["failures"]] == ["nonzero"]
    assert len(data["trt"]["resolved_by_fix"]) == 2
    assert "still not ready after the fix" in res.stdout


def test_a_dead_worker_costs_one_answer_not_the_check(monkeypatch):
    """A crash inside TensorRT (here: the worker killed mid-parse) becomes a failure record, not a dead session."""
    real = trt_backend.TrtWorker._read_line
    killed, answered = [], []

    def dies_once(self, proc):
        if answered and not killed:  # the first answer is the worker's "info"; die during the parse after it
            killed.append(proc.pid)
            proc.kill()
            proc.wait()
            return None, False
        answered.append(True)
        return real(self, proc)

    monkeypatch.setattr(trt_backend.TrtWorker, "_read_line", dies_once)
    r = _check("dynamic_ok.onnx", build=False)
    assert killed and [f.code for f in r.failures] == ["CRASH"]
    assert "crashed during the parse (SIGKILL)" in r.failures[0].message and not r.ready
