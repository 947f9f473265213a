"""Regressions against a baseline: the planted ones are named and exit 1; no change exits 0.
Plus the rules one by one on recorded results (fp16 FP32 nodes, latency beyond its noise,
verified to unverified, a step lost)."""

from __future__ import annotations

import json

from surgeon.sweep.baseline import regressions
from surgeon.sweep.results import ModelResult, Status, StepResult
from zoo import conv_relu, manifest, matmul, sweep_cli


def test_planted_regressions_named_and_no_change_passes(tmp_path):
    conv_relu(tmp_path / "conv.onnx")
    matmul(tmp_path / "mm.onnx")
    zoo = manifest(tmp_path / "zoo.yaml", [{"path": "conv.onnx"}, {"path": "mm.onnx"}])
    base_out, out = tmp_path / "base", tmp_path / "out"
    first = sweep_cli(zoo, "--out", base_out, "--jobs", "2")
    assert first.returncode == 0, first.stdout + first.stderr
    baseline = base_out / "sweep.json"

    same = sweep_cli(zoo, "--out", base_out, "--baseline", baseline)
    assert same.returncode == 0 and "0 regression(s)" in same.stdout, same.stdout

    conv_relu(tmp_path / "conv.onnx", extra_sin=True)  # re-exported with an op nothing fuses away
    matmul(tmp_path / "mm.onnx", unique=True)  # and one with an op TensorRT does not take
    worse = sweep_cli(zoo, "--out", out, "--baseline", baseline, "--junit", tmp_path / "j.xml")
    assert worse.returncode == 1, worse.stdout + worse.stderr
    assert "regression conv / fix: node count after fix rose from 2 to 3" in worse.stdout
    assert "regression mm / trt-check: 1 new TensorRT failure(s): unique (Unique" in worse.stdout
    data = json.loads((out / "sweep.json").read_text())
    # the Unique also adds a node that fix cannot remove: mm's node count rose too
    assert sorted((r["model"], r["kind"]) for r in data["regressions"]) == [
        ("conv", "node-count"), ("mm", "node-count"), ("mm", "trt-failures")]
    assert "node count after fix rose" in (out / "summary.md").read_text()
    assert 'type="regression"' in (tmp_path / "j.xml").read_text()


def _model(name: str, *steps: StepResult) -> ModelResult:
    return ModelResult(name, f"{name}.onnx", list(steps))


def _step(step: str, verdict: str | None, passed: bool = True, status: Status = Status.OK, **metrics) -> StepResult:
    return StepResult(step, status, verdict, passed, metrics=metrics)


def test_regression_rules():
    latency = lambda m, lo, hi: {"median": m, "ci_low": lo, "ci_high": hi, "runs": 30}  # noqa: E731
    base = {"a": _model("a", _step("fix", "verified", nodes_after=10), _step("fp16", "passed", fp32_nodes=2),
                        _step("profile", "measured", latency_ms=latency(1.0, 0.95, 1.05))),
            "b": _model("b", _step("fix", "verified", nodes_after=5), _step("profile", "measured",
                                                                            latency_ms=latency(1.0, 0.9, 1.1))),
            "c": _model("c", _step("trt-check", "ready", failures=[]))}
    now = [_model("a", _step("fix", "unverified", nodes_after=10), _step("fp16", "passed", fp32_nodes=3),
                  _step("profile", "measured", latency_ms=latency(1.2, 1.1, 1.3))),
           _model("b", _step("fix", "verified", nodes_after=4),  # fewer nodes: better, not a regression
                  _step("profile", "measured", latency_ms=latency(1.08, 1.0, 1.15))),  # overlapping: noise
           _model("c", _step("trt-check", None, False, Status.CRASHED)),
           _model("d", _step("fix", "verified"))]
    found, notes = regressions(base, now)
    assert sorted((r.model, r.kind) for r in found) == [("a", "fp32-nodes"), ("a", "latency"), ("a", "verification"),
                                                        ("c", "step-failed")]
    assert notes == ["d: not in the baseline"]
