"""trt-check without TensorRT: the static onnx-tensorrt matrix, profiles, remedies and bad input (runs everywhere)."""

from __future__ import annotations

import json
import re

import onnx
import pytest

from helpers import FIXTURES, ROOT, model_from_text, run_cli
from surgeon.backends import trt as trt_backend
from surgeon.cli_args import parse_profile_args
from surgeon.debug import trt_check
from surgeon.debug.trt_check import matrix, profiles
from surgeon.errors import InputDataError

TC = FIXTURES / "trt_check"


def _static(name: str, **kw):
    return trt_check.check(onnx.load(TC / name), model_path=name, engine="matrix", **kw)


def test_matrix_data_names_its_sources_and_dates():
    data = matrix.data()
    assert set(matrix.versions()) >= {"10.1", "10.15"} and data["default_version"] == "10.15"
    for version in matrix.versions():
        tab = matrix.table(version)
        assert tab["source_url"].startswith("https://github.com/onnx/onnx-tensorrt/")
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", tab["date"])
        assert len(tab["ops"]) > 150 and tab["ops"]["Conv"]["supported"] and not tab["ops"]["Unique"]["supported"]
    assert "onnxOpCheckers.cpp" in data["attribute_rules_source"]
    # the matrix knows what changed between versions: STFT arrived after 10.1
    assert not matrix.table("10.1")["ops"]["STFT"]["supported"] and matrix.table("10.15")["ops"]["STFT"]["supported"]


def test_matrix_is_package_data():
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = conf["tool"]["setuptools"]["package-data"]["surgeon.debug.trt_check"]
    assert any((ROOT / "surgeon" / "debug" / "trt_check").glob(g) for g in globs)
    assert (ROOT / "surgeon/debug/trt_check/data" / matrix.DATA_FILE).is_file()


def test_static_check_of_multi_fail_names_each_node_and_the_domain_trap():
    report = _static("multi_fail.onnx")
    assert report.engine["mode"] == "static" and report.engine["name"] == "matrix" and not report.ready
    by_node = {f.node: f for f in report.failures}
    # what the published matrix and checker rules can see without TensorRT
    assert by_node["scatter_nd_add"].phase == "static" and "reduction" in by_node["scatter_nd_add"].message
    # full TensorRT imports a ScatterElements reduction through its plugin library; TensorRT-RTX has none (a note)
    assert "scatter_el_max" not in by_node and any(n.startswith("scatter_el_max (ScatterElements)") for n in report.notes)
    assert "antialias" in by_node["resize_aa"].message
    assert by_node["fancy_in_branch"].path == "if_custom.then_branch"
    assert by_node["custom_relu"].phase == "domain" and by_node["custom_relu"].code == "DOMAIN_IGNORED"
    assert by_node["ms_gelu"].remedy.kind == "rule-pack"  # the built-in com.microsoft pack matches it
    # NonZero is in the published matrix: only an executed TensorRT-RTX shows it failing
    assert "nonzero" not in by_node and "scatter_el_plain" not in by_node
    assert report.build_skipped and "static" in report.build_skipped


def test_static_check_passes_a_clean_model_and_says_nothing_ran():
    report = _static("dynamic_ok.onnx")
    assert report.ready and report.failures == [] and report.builds == []
    assert any("published matrix" in n for n in report.notes)


def test_static_check_flags_same_named_dims():
    report = _static("same_named_dims.onnx")
    assert any("'?'" in n and "x[2]" in n and "x[3]" in n for n in report.notes)


def test_matrix_version_changes_the_answer():
    text = """<ir_version: 8, opset_import: ["" : 17]>
    g (float[16] x) => (float[9,2] y) { fs = Constant<value=int64 {4}>()
      y = STFT(x, fs) }"""
    model = onnx.parser.parse_model(text)
    old = trt_check.check(model, engine="matrix", matrix_version="10.1")
    new = trt_check.check(model, engine="matrix", matrix_version="10.15")
    assert [f.op for f in old.failures] == ["STFT"] and new.failures == []


def test_opset_outside_the_matrix_is_reported_with_an_upgrade_remedy():
    model = model_from_text('<ir_version: 3, opset_import: ["" : 7]> g (float[2] x) => (float[2] y) { y = Relu(x) }')
    report = trt_check.check(model, engine="matrix")
    assert report.failures[0].label == "(model)" and "opset 7" in report.failures[0].message
    remedy = report.failures[0].remedy
    low = int(report.failures[0].message.split("covers opsets ")[1].split()[0])
    assert remedy.exists and "upgrade-opset" in remedy.text and remedy.command.endswith(f"--target-opset {low}")
    assert remedy.verified and "passes the static checks with the static matrix" in remedy.check  # run in memory


# --- profiles -------------------------------------------------------------------------


def _runs_always(_feeds):
    return True


def test_profile_is_probed_at_two_sizes_and_never_one_sized_silently():
    model = onnx.load(TC / "dynamic_ok.onnx")
    prof = profiles.build_profile(model, runs=_runs_always)
    lo, opt, hi = prof.inputs["x"]
    assert lo != hi and lo[1] == 3 and not prof.one_sized and prof.source.startswith("probed")
    # height and width are different symbols: different sizes (not forced equal)
    assert opt[2] != opt[3]


def test_question_mark_dims_are_not_forced_equal_and_are_flagged():
    model = onnx.load(TC / "same_named_dims.onnx")
    prof = profiles.build_profile(model, runs=_runs_always)
    _lo, opt, _hi = prof.inputs["x"]
    assert opt[2] != opt[3]
    groups = profiles.same_named_dims(model, prof)
    assert groups == [{"dim_param": "?", "dims": ["x[2]", "x[3]"], "sizes": groups[0]["sizes"]}]
    renamed = profiles.with_distinct_dim_names(model, groups)
    dims = [d.dim_param for d in renamed.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["N", "", "x_dim2", "x_dim3"]
    assert model.graph.input[0].type.tensor_type.shape.dim[2].dim_param == "?"  # the input model is untouched


def test_one_sized_profile_is_said_out_loud():
    model = onnx.load(TC / "dynamic_ok.onnx")
    only_small = lambda feeds: feeds["x"].shape[0] == 2 and feeds["x"].shape[2] <= 64  # noqa: E731
    prof = profiles.build_profile(model, runs=only_small)
    assert prof.one_sized and any("one-sized" in n for n in prof.notes)


def test_unverified_sizes_are_said_out_loud():
    model = onnx.load(TC / "dynamic_ok.onnx")
    prof = profiles.build_profile(model, runs=None)
    assert "guessed" in prof.source and any("not confirmed" in n for n in prof.notes)


def test_given_profile_and_pins_are_used_as_given():
    model = onnx.load(TC / "dynamic_ok.onnx")
    given = parse_profile_args(["x:1x3x32x32/2x3x64x64/4x3x128x128"])
    prof = profiles.build_profile(model, profile=given, runs=None)
    assert prof.inputs["x"] == ((1, 3, 32, 32), (2, 3, 64, 64), (4, 3, 128, 128)) and prof.source == "--profile"
    pinned = profiles.build_profile(model, input_shapes={"x": (1, 3, 48, 64)}, runs=None)
    assert pinned.inputs["x"] == ((1, 3, 48, 64),) * 3 and pinned.one_sized and not pinned.notes


@pytest.mark.parametrize("arg", ["x:1x3x32x32/2x3x64x64", "x:1x3/1x3x4x4/1x3x4x4", "x:4x3x8x8/2x3x8x8/8x3x8x8", "x1x3"])
def test_bad_profiles_are_input_errors(arg):
    with pytest.raises(InputDataError):
        parse_profile_args([arg])


# --- CLI ------------------------------------------------------------------------------


def test_cli_static_exit_codes_and_report(tmp_path):
    rep = tmp_path / "r.json"
    res = run_cli("trt-check", str(TC / "multi_fail.onnx"), "--engine", "matrix", "--report", str(rep))
    assert res.returncode == 1, res.stderr
    text = " ".join(res.stdout.split())  # rich wraps lines at the terminal width
    assert "NOT READY" in text and "static data, nothing executed" in text
    data = json.loads(rep.read_text())
    assert data["engine"]["mode"] == "static" and data["verdict"] == "not ready"
    assert {f["node"] for f in data["failures"]} >= {"custom_relu", "scatter_nd_add", "resize_aa"}
    assert all(f["remedy"]["text"] for f in data["failures"])
    res = run_cli("trt-check", str(TC / "dynamic_ok.onnx"), "--engine", "matrix")
    assert res.returncode == 0 and "READY" in res.stdout


@pytest.mark.parametrize("args,needle", [
    (["missing.onnx"], "does not exist"),
    (["DYN", "--engine", "tensorrt9"], "unknown engine"),
    (["DYN", "--input-shapes", "x:1,3"], "cannot parse input shape"),
    (["DYN", "--input-shapes", "nope:1x3x8x8"], "not an input"),
    (["DYN", "--profile", "x:1x3x8x8/1x3x8x8"], "MIN/OPT/MAX"),
    (["DYN", "--engine", "matrix", "--target-cc", "8.6"], "--target-cc needs --engine trt-rtx"),
    (["DYN", "--engine", "matrix", "--matrix-version", "7.0"], "no operator matrix for TensorRT 7.0"),
    (["DYN", "--report", "DYN"], "input model"),
])
def test_cli_bad_input_is_one_line_exit_2(tmp_path, args, needle):
    dyn = str(TC / "dynamic_ok.onnx")
    res = run_cli("trt-check", *[dyn if a == "DYN" else a for a in args], cwd=tmp_path)
    assert res.returncode == 2 and needle in res.stderr, res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_cli_engine_trt_without_tensorrt_says_what_is_missing():
    if trt_backend.available("trt"):
        pytest.skip("the 'tensorrt' package is installed here; the missing-TensorRT sentence cannot be shown")
    res = run_cli("trt-check", str(TC / "dynamic_ok.onnx"), "--engine", "trt")
    assert res.returncode == 2 and "TensorRT is not installed" in res.stderr and "pip install tensorrt" in res.stderr
    assert "--engine matrix" in res.stderr and len(res.stderr.strip().splitlines()) == 1


# --- build messages, remedies and the bisect oracle's signature (no TensorRT needed) ---------

GRAPHSCOPE = ("[graphScope.cpp::analyze::471] Error Code 2: Internal Error (Assertion tScope.getType() != "
              "ScopeType::kUNDEFINED failed.  In analyze at /_src/optimizer/common/graphScope.cpp:471)")
NO_RUNNER = ("[tacticSupply.cpp::getSupportedFormats::48] Error Code 2: Internal Error (Assertion !layerImpls.empty() "
             "failed. nms_0 has no runners that implement it In getSupportedFormats at /_src/optimizer/builder/tacticSupply.cpp:48)")
NEGATIVE = ("IBuilder::buildSerializedNetwork: Error Code 4: API Usage Error (IConvolutionLayer Conv_2: Conv_2: spatial "
            "dimension of convolution/deconvolution output cannot be negative (build-time output dimension of axis 2 is -3))")


def _index(text):
    from surgeon.debug.trt_check import graph_edit

    m = model_from_text(text)
    return graph_edit.NodeIndex(m, graph_edit.assign_unique_names(m))


def test_build_messages_are_classified_and_located():
    from surgeon.debug.trt_check import build_step

    index = _index("""<ir_version: 8, opset_import: ["" : 17]>
    g (float[1,6,4] b, float[1,1,6] s, float[1,1,8] x, float[2,1,3] w) => (float[1,2,6] c, float[1,1,8] y) {
      c = Conv <auto_pad="SAME_UPPER">(x, w)
      y = Relu(x)
    }""")
    index.refs = {("nms" if r.op_type == "Relu" else "Conv_2"): r for r in index.refs.values()}
    assert build_step.classify(GRAPHSCOPE) == "build" and build_step.code_of(GRAPHSCOPE) == "INTERNAL_ERROR (2)"
    assert build_step.classify(NEGATIVE) == "profile" and build_step.code_of(NEGATIVE) == "API_USAGE_ERROR (4)"
    assert build_step.locate(NO_RUNNER, index).op_type == "Relu"  # layer nms_0 is node nms
    assert build_step.locate(NEGATIVE, index).op_type == "Conv"
    assert build_step.locate(GRAPHSCOPE, index) is None


def test_build_failures_come_in_graph_order_whatever_order_the_builder_meets_them():
    """The builder reports one failing node per build; which independent one comes first is its choice (it
    differed between this machine and CI). A scripted builder that names the later node first."""
    from surgeon.debug.trt_check import build_step, graph_edit

    model = onnx.load(FIXTURES / "trt_check" / "nms.onnx")
    index = graph_edit.NodeIndex(model, graph_edit.assign_unique_names(model))
    calls: list[list[str]] = []

    def build(m, _profile, _target):
        names = {n.name for n in m.graph.node}
        calls.append(sorted(names))
        for name in ("nms_again", "nms"):  # the later node first
            if name in names:
                return {"built": False, "messages": [(4, f"Error Code 10: Internal Error ({name}_0 has no runners)")]}
        return {"built": True}

    prof = profiles.Profile(inputs={"boxes": ((1, 6, 4), (2, 6, 4), (4, 6, 4)),
                                    "scores": ((1, 1, 6), (2, 1, 6), (4, 1, 6))})
    _, failures, notes = build_step.run_builds(model, index, prof, [], build,
                                               shapes_of=lambda outs: [{o: [3, 3] for o in outs}] * 3)
    assert len(calls) == 3  # the whole model, one node cut, both cut
    assert [(f.node, f.phase, f.downstream_of_cut) for f in failures] == [("nms", "build", False),
                                                                         ("nms_again", "build", False)]
    assert notes == ["with the 2 failing node(s) cut out, the rest of the model builds"]


def test_remedies_name_passes_rule_packs_and_what_does_not_exist_yet():
    from surgeon.debug.trt_check.remedies import remedy_for
    from surgeon.debug.trt_check.report import Failure

    def f(**kw):
        base = dict(node="n", working_name="n", op="Relu", domain="", path="main graph", phase="parse", code="UNSUPPORTED_NODE",
                    message="")
        return Failure(**{**base, **kw})

    assert remedy_for(f(op="Squeeze", message="`axes` must be an initializer"), engine="trt-rtx").command.endswith(
        "--passes fold-constants,fold-shape-chains")
    assert remedy_for(f(op="Foo", domain="com.x", code="INVALID_NODE"), engine="trt").kind == "plugin-rule"
    assert remedy_for(f(op="Scaler", domain="ai.onnx.ml"), engine="trt").kind == "keep-on-ort"
    assert remedy_for(f(working_name="g", domain="com.microsoft", op="Gelu"), engine="trt", replaceable={"g"}).kind == "rule-pack"
    build = remedy_for(f(node="", working_name="", phase="build", message=GRAPHSCOPE), engine="trt-rtx", model_path="m.onnx")
    assert build.kind == "bisect" and build.command == "surgeon bisect m.onnx --check trt-build -o trt-build-repro"
    opset = remedy_for(f(node="", working_name="", phase="static", message="the model uses opset 7"), engine="matrix")
    assert opset.command.endswith("--target-opset N") and opset.fix is None and "upgrade-opset" in opset.text
    opset = remedy_for(f(node="", working_name="", phase="static", message="the model uses opset 7; the TensorRT 10.15 "
                         "matrix covers opsets 9 to 22"), engine="matrix", model_path="m.onnx")
    assert opset.fix == {"passes": None, "target_opset": 9} and opset.command == "surgeon fix m.onnx -o FIXED.onnx --target-opset 9"


def test_bisect_oracle_counts_only_the_same_failure():
    from surgeon.debug.trt_check.bisect_oracle import signature

    base = {"parsed": True, "built": False, "messages": [["ERROR", GRAPHSCOPE]]}
    shrunk = {"parsed": True, "built": False, "messages": [["ERROR", GRAPHSCOPE.replace("471", "480")]]}  # other line
    other = {"parsed": True, "built": False, "messages": [["ERROR", NO_RUNNER]]}
    parse = {"parsed": False, "parse_errors": [{"code": "UNSUPPORTED_NODE", "func": "importNonZero"}]}
    assert signature(base) == signature(shrunk) == ("build", "INTERNAL_ERROR (2)", "graphScope.cpp")
    assert signature(other) != signature(base) and signature(parse) == ("parse", "UNSUPPORTED_NODE", "importNonZero")


def test_bisect_trt_build_without_any_tensorrt_is_one_sentence(monkeypatch):
    from surgeon.debug.trt_check.bisect_oracle import TrtBuildCheck
    from surgeon.errors import BackendUnavailableError

    monkeypatch.setattr(trt_backend, "available", lambda name="trt": False)
    with pytest.raises(BackendUnavailableError, match="TensorRT-RTX is not installed here.*pip install tensorrt-rtx"):
        TrtBuildCheck("auto")
