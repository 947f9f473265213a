"""`surgeon scan`: each hazard model gives its finding, node name first, judged by the FP16
emulation's own rules (weights clamped to ±65504 or raised to 2**-24, outputs rounded
through float16), ranked "will" (exit 1) before "could" (exit 0) and grouped."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import onnx
import pytest

from helpers import FIXTURES, run_cli
from surgeon import backends
from surgeon.debug.scan import COULD, FP16_MAX, WILL, scan_model

spec = importlib.util.spec_from_file_location("make_bisect_fixtures", FIXTURES / "make_bisect_fixtures.py")
F = importlib.util.module_from_spec(spec)
spec.loader.exec_module(F)
MODELS = F.scan_models()


def _x(model, seed: int = 0):
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


def _scan(name: str, seed: int = 0, **kw):
    model = MODELS[name]
    return scan_model(model, [{"x": _x(model, seed)}], backends.create("onnxrt"), **kw)


def _by(report, kind):
    return {f.node: f for f in report.findings if f.kind == kind}


def _cli_scan(tmp_path, name, *extra):
    path = tmp_path / f"{name}.onnx"
    onnx.save(MODELS[name], path)
    report = tmp_path / f"{name}.json"
    r = run_cli("scan", str(path), "--report", str(report), *extra)
    return r, (json.loads(report.read_text()) if report.exists() else None)


def test_zero_over_zero_is_the_first_nan_with_its_inputs_ranges():
    r = _scan("nan_div")
    first = r.findings[0]
    assert (first.kind, first.severity, first.node, first.details["cause"]) == ("nan-inf", WILL, "div", "0/0")
    assert first.details["inputs"]["zero"]["min"] == 0.0 and first.details["inputs"]["zero"]["zeros"] == 8
    assert first.message.startswith("div (Div): first NaN/Inf")
    assert first.effect == "nonfinite-outputs"  # the reference output y holds the NaN
    # 'after' also holds NaN but only propagates it: not reported as the first
    assert [f.node for f in r.findings if f.kind == "nan-inf"] == ["div"]
    assert _by(r, "near-zero-division")["div"].severity == COULD


def test_log_of_zero():
    first = _scan("log_zero").findings[0]
    assert (first.kind, first.node, first.details["cause"]) == ("nan-inf", "log", "log of zero")
    assert first.details["output"]["inf"] == 8


def test_real_activation_overflow_is_a_will_finding_where_it_starts(tmp_path):
    r = _scan("act_overflow")
    over, after = r.will
    # 300 * 300 * x: both weights are in range, the Mul's product is not
    assert (over.kind, over.node, over.details["starts_here"]) == ("fp16-overflow", "scale_up", True)
    assert over.details["max_abs"] > FP16_MAX and over.details["count"] > 0
    assert over.effect == "nonfinite-outputs" and "y" in over.consequence
    # the +1 after it is beyond range in float32 too: named, as part of the chain that starts at scale_up
    assert (after.kind, after.node, after.details["role"], after.details["chain_starts"]) == (
        "fp16-beyond-range", "shift", "continues", ["scale_up"])
    assert r.pin == ["scale_up", "shift"] and r.pin_check["verified"]
    assert not _by(r, "fp16-clamped") and r.fp16["outputs_match"] is False
    cli, data = _cli_scan(tmp_path, "act_overflow")
    assert cli.returncode == 1, cli.stderr
    assert data["will"] == 2 and data["findings"][0]["node"] == "scale_up"
    assert list(data["findings"][0])[:3] == ["node", "op_type", "severity"]


def test_an_overflow_the_outputs_absorb_is_listed_as_harmless():
    r = _scan("act_overflow_absorbed")
    assert r.will == [] and r.fp16["outputs_match"] is True  # tanh(Inf) == tanh(9e4) == 1
    (over,) = [f for f in r.findings if f.kind == "fp16-overflow"]
    assert over.node == "scale_up" and over.severity == COULD and over.effect == "absorbed"
    (chain,) = r.chains
    assert chain.harmless and chain.path() == "scale_up (→ tanh)" and r.pin == []


def test_minus_1e9_attention_mask_agrees_with_the_emulation_and_exits_0(tmp_path):
    r = _scan("attention_mask")
    assert r.will == []
    clamp = _by(r, "fp16-clamped")["causal_mask"]
    assert clamp.severity == COULD and clamp.details["count"] == 6
    assert clamp.effect == "none"  # the Softmax gives the same probabilities with -65504
    # scores below -16 plus the clamped -65504 round to -Inf: carried from the mask, not an overflow
    sat = _by(r, "fp16-saturated")["add_mask"]
    assert sat.severity == COULD and sat.details["carried_from"] == ["mask"] and sat.effect == "absorbed"
    assert not _by(r, "fp16-overflow")
    assert not any("become Inf" in f.message or "becomes Inf" in f.message for f in r.findings)
    cli, data = _cli_scan(tmp_path, "attention_mask")
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert data["will"] == 0 and data["fp16"]["outputs_match"] is True
    compare = run_cli("compare", str(tmp_path / "attention_mask.onnx"), "--test", "fp16")
    assert compare.returncode == 0 and "MATCH" in compare.stdout  # the same verdict, twice


def test_subnormal_weights_are_kept_and_tiny_ones_follow_the_emulation():
    r = _scan("tiny_values")
    assert r.will == [] and r.fp16["outputs_match"] is True
    weights = {f.tensor: f for f in r.findings if f.kind in ("fp16-raised", "fp16-clamped")}
    # 1e-5 .. 1e-7 are float16 subnormals: FP16 keeps them, no weight finding, no weight "becomes 0"
    assert "sub_w" not in weights and not any("sub_w" in f.message for f in r.findings)
    # 1e-9 is below the smallest subnormal: the emulation (like TensorRT) raises it to 2**-24
    assert weights["tiny_w"].kind == "fp16-raised" and weights["tiny_w"].details["count"] == 1
    assert "raised" in weights["tiny_w"].message and weights["tiny_w"].effect == "none"
    # an activation of ~1e-9 (x * 1e-4 * 1e-5) does flush to 0 in the FP16 run
    flush = _by(r, "fp16-underflow")["small_b"]
    assert flush.details["flushed"] == 8 and "become 0" in flush.message
    # x * 1e-5 .. x * 1e-7 are tiny activations: subnormal in FP16 (those below 3e-8 flush)
    act = next(f for f in r.findings if f.node == "mul_subnormal")
    assert act.kind in ("fp16-subnormal", "fp16-underflow") and act.severity == COULD
    assert act.details["subnormal"] + act.details.get("flushed", 0) == 8


def test_clamped_constant_that_changes_the_output_is_will_and_ranked_first():
    r = _scan("const_overflow")
    clamped = _by(r, "fp16-clamped")["huge_const"]
    assert (clamped.severity, clamped.op_type) == (WILL, "Constant")
    assert clamped.details["max_abs"] == pytest.approx(70000.0)
    assert clamped.effect == "outputs-differ" and "y" in clamped.consequence  # 70000 - 65504 is far beyond tolerance
    # t - 70000 is itself beyond range in float32: keeping that Sub in float32 (it then reads 70000) fixes it
    sub = _by(r, "fp16-beyond-range")["sub_k"]
    assert sub.severity == WILL and r.pin == ["sub_k"] and r.pin_check["verified"]
    assert {f.node for f in r.findings[:2]} == {"huge_const", "sub_k"}
    raised = _by(r, "fp16-raised")["tiny_w"]
    assert raised.severity == COULD and raised.effect == "none"
    assert [f.severity for f in r.findings] == sorted((f.severity for f in r.findings), key=lambda s: s != WILL)


def test_repeated_findings_are_grouped_with_counts(tmp_path):
    r = _scan("repeated")
    groups = [(g.severity, g.kind, g.pattern, g.count) for g in r.groups]
    # 24 overflows start at branch*_b; the weight Mul after each and the Sum joining them stay beyond range
    assert groups == [(WILL, "fp16-overflow", "Mul", 24), (WILL, "fp16-beyond-range", "Sum", 1),
                      (WILL, "fp16-beyond-range", "Mul", 24), (COULD, "fp16-raised", "Mul input", 24)]
    assert r.groups[0].where().startswith("24× Mul: branch")
    (chain,) = r.chains
    assert chain.path().startswith("24 starts (branch0_b, branch1_b, branch2_b, …), 49 nodes beyond range, last sum")
    assert len(r.pin) == 49 and r.pin_check["verified"]
    cli, data = _cli_scan(tmp_path, "repeated")
    assert cli.returncode == 1
    assert [g["count"] for g in data["groups"]] == [24, 1, 24, 24] and len(data["findings"]) == 73
    assert "24×" in cli.stdout and "4 group(s)" in cli.stdout


def test_duplicate_scatternd_indices_writing_equal_values_could():
    r = _scan("scatter_dup")
    (f,) = [f for f in r.findings if f.kind == "scatter-duplicates"]
    assert f.node == "scatter" and f.details["duplicates"] == 1 and f.details["writes"] == 3
    assert f.details["conflicting"] == 0 and f.severity == COULD


def test_scatter_elements_duplicates_only_along_the_axis_and_conflicting_values_will():
    text = """<ir_version: 8, opset_import: ["" : 17]>
    g (float[3,2] x) => (float[3,2] y) {
      idx = Constant <value = int64[2,2] {0, 1, 0, 2}> ()
      upd = Constant <value = float[2,2] {1, 2, 3, 4}> ()
      y = ScatterElements <axis = 0> (x, idx, upd)
    }"""
    model = onnx.parser.parse_model(text)
    x = np.zeros([3, 2], np.float32)
    r = scan_model(model, [{"x": x}], backends.create("onnxrt"))
    # column 0 writes row 0 twice (values 1 and 3); column 1 writes rows 1 and 2 once each
    (f,) = [f for f in r.findings if f.kind == "scatter-duplicates"]
    assert f.details["duplicates"] == 1 and f.details["conflicting"] == 1 and f.severity == WILL


def test_division_by_a_value_near_zero():
    r = _scan("div_near_zero")
    (f,) = [f for f in r.findings if f.kind == "near-zero-division"]
    assert f.node == "div_small" and f.details["min_abs"] == pytest.approx(1e-8, rel=1e-3)
    # in FP16 the 1e-8 is raised to 6e-8 and x / 6e-8 overflows: that is the will finding
    assert _by(r, "fp16-overflow")["div_small"].severity == WILL


def test_no_fp16_leaves_only_the_reference_hazards():
    r = _scan("act_overflow", fp16=False)
    assert r.findings == [] and r.fp16 == {} and "FP16 checks skipped" in r.notes[0]


def test_fp16_keep_keeps_the_overflowing_node_in_float32():
    r = _scan("act_overflow", fp16_keep=["scale_up", "shift"])
    assert r.will == [] and r.fp16["outputs_match"] is True


def test_clean_model_says_so_in_one_line(tmp_path):
    report = tmp_path / "r.json"
    r = run_cli("scan", str(FIXTURES / "bisect" / "scan_clean.onnx"), "--report", str(report))
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.strip().splitlines()) <= 2 and "clean" in r.stdout  # one line (may wrap at 80 columns)
    assert json.loads(report.read_text())["clean"] is True


def test_cli_findings_exit_1_with_node_first(tmp_path):
    report = tmp_path / "r.json"
    r = run_cli("scan", str(FIXTURES / "bisect" / "scan_nan_div.onnx"), "--report", str(report))
    assert r.returncode == 1, r.stderr
    data = json.loads(report.read_text())
    assert list(data["findings"][0])[:2] == ["node", "op_type"] and data["findings"][0]["node"] == "div"


@pytest.mark.parametrize("args, needle", [([], "is not an ONNX model"), (["--fp16-keep", "NoSuchOp"], "NoSuchOp")])
def test_cli_bad_input_is_exit_2(tmp_path, args, needle):
    bad = tmp_path / "x.onnx"
    bad.write_bytes(b"not a model")
    path = str(bad) if not args else str(FIXTURES / "bisect" / "scan_clean.onnx")
    r = run_cli("scan", path, *args)
    assert r.returncode == 2 and "Traceback" not in r.stderr and needle in r.stderr


# --- values beyond float16's range: every node, in chains, and what to keep in float32 ---------

def test_exp_add_log_names_every_overflowing_node_and_pinning_them_passes():
    """Issue 18: on Exp → Add(1) → Log, scan named the Exp only; keeping only it in FP32 fails."""
    model = MODELS["softplus_overflow"]
    samples = [{"x": _x(model, seed)} for seed in range(2)]
    r = scan_model(model, samples, backends.create("onnxrt"))
    (chain,) = r.chains
    assert [(n["node"], n["role"]) for n in chain.nodes] == [("exp", "starts"), ("add_one", "continues"), ("log", "reads")]
    assert chain.path() == "exp → add_one (→ log)" and chain.harmless is False
    over = {f.node: f for f in r.will}
    assert set(over) == {"exp", "add_one"} and over["add_one"].details["chain_starts"] == ["exp"]
    assert all(f.details["max_abs"] > FP16_MAX for f in over.values())
    assert r.pin == ["exp", "add_one", "log"] and r.pin_check["verified"]

    ref = backends.create("onnxrt").session(model)

    def emulation_passes(keep):
        sess = backends.create("fp16", keep=keep).session(model)
        return all(np.allclose(sess.run(s)["y"], ref.run(s)["y"], atol=1e-2, rtol=1e-2) for s in samples)  # fp16 defaults

    assert emulation_passes(r.pin)  # through the emulation backend's keep-in-FP32
    assert not emulation_passes(["exp"])  # the old answer
    assert not emulation_passes(["exp", "add_one"])  # the Log would read ±Inf


def test_pinning_through_surgeon_fp16_keep(tmp_path):
    src = tmp_path / "softplus.onnx"
    onnx.save(MODELS["softplus_overflow"], src)
    r, data = _cli_scan(tmp_path, "softplus_overflow")
    assert r.returncode == 1 and "exp → add_one (→ log)" in r.stdout
    pin = data["fp16_range"]["pin"]
    assert "--fp16-keep " + " ".join(pin) in r.stdout
    out = tmp_path / "half.onnx"
    fp16 = run_cli("fp16", str(src), "-o", str(out), "--keep", *pin, "--no-trt-check", "--json")
    assert fp16.returncode == 0, fp16.stdout + fp16.stderr
    report = json.loads(fp16.stdout)
    # with scan's set requested, everything else in float16 already passes: no island left to search
    assert report["fp32_nodes"] == {"searched": [], "requested": pin}
    assert report["errors"]["full_reduced_precision"]["passed"] and report["errors"]["mixed_emulation"]["passed"]


def test_a_masked_minus_1e9_is_listed_as_harmless():
    r = _scan("attention_mask")
    (chain,) = r.chains
    assert [(n["node"], n["role"]) for n in chain.nodes] == [("add_mask", "starts"), ("softmax", "reads")]
    assert chain.harmless is True and "harmless" in chain.why and r.pin == [] and r.will == []


def test_a_value_that_only_feeds_a_comparison_is_harmless_once_checked():
    text = """<ir_version: 8, opset_import: ["" : 17]>
    g (float[2,4] x) => (float[2,4] y, bool[2,4] big) {
      k = Constant <value = float[1] {300.0}> ()
      a = Mul(x, k)
      b = Mul(a, k)
      one = Constant <value = float[1] {1.0}> ()
      big = Greater(b, one)
      y = Exp(x)
    }"""
    model = onnx.parser.parse_model(text)
    x = np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 4)
    r = scan_model(model, [{"x": x}], backends.create("onnxrt"))
    (chain,) = r.chains
    assert chain.starts and chain.nodes[-1]["op_type"] == "Greater" and chain.nodes[-1]["role"] == "reads"
    assert chain.harmless is True and r.pin == []


def test_a_harmless_chain_is_let_go_while_a_needed_one_stays_pinned():
    """Two chains, one absorbed by a comparison and one reaching the output: only the second is pinned,
    and the FP16 run with that pin is checked to match."""
    text = """<ir_version: 8, opset_import: ["" : 17]>
    g (float[2,4] x) => (float[2,4] y, bool[2,4] big) {
      k = Constant <value = float[1] {300.0}> ()
      a = Mul(x, k)
      b = Mul(a, k)
      one = Constant <value = float[1] {1.0}> ()
      big = Greater(b, one)
      ax = Abs(x)
      lift = Add(ax, one)
      c = Mul(lift, k)
      d = Mul(c, k)
      y = Sqrt(d)
    }"""
    model = onnx.parser.parse_model(text)
    x = np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 4)
    r = scan_model(model, [{"x": x}], backends.create("onnxrt"))
    harmless = [c for c in r.chains if c.harmless]
    needed = [c for c in r.chains if c.harmless is False]
    assert len(harmless) == 1 and len(needed) == 1
    assert harmless[0].nodes[-1]["op_type"] == "Greater"
    assert r.pin == needed[0].pin and needed[0].nodes[-1]["op_type"] == "Sqrt"
    assert r.pin_check == {"verified": True, "runs": 3, "detail": r.pin_check["detail"]}
