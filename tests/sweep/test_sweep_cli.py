"""surgeon sweep on small models: outputs (table, JSON lines, JUnit, markdown, per-model
reports), the cache (a second run with nothing changed starts no job), and bad input
(one line, exit 2, before any work)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from zoo import conv_relu, manifest, matmul, results, steps_by_model, sweep_cli


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """One sweep of two models with fix and trt-check, then the same sweep again."""
    tmp = tmp_path_factory.mktemp("sweep")
    conv_relu(tmp / "models" / "conv.onnx")
    matmul(tmp / "models" / "sub" / "mm.onnx")
    zoo = manifest(tmp / "zoo.yaml", [{"dir": "models"}])
    out = tmp / "out"
    first = sweep_cli(zoo, "--out", out, "--jobs", "2", "--junit", tmp / "junit.xml")
    first_json = results(out)
    second = sweep_cli(zoo, "--out", out, "--jobs", "2", "--json")
    return tmp, out, first, first_json, second


def test_first_run_table_and_per_model_reports(swept):
    tmp, out, first, data, _ = swept
    assert first.returncode == 0, first.stdout + first.stderr
    assert "surgeon sweep" in first.stdout and "conv" in first.stdout and "sub/mm" in first.stdout
    by = steps_by_model(out)
    assert set(by) == {"conv", "sub/mm"}
    fix = by["conv"]["fix"]
    assert fix["status"] == "ok" and fix["verdict"] == "verified" and fix["passed"]
    assert fix["metrics"]["nodes_before"] == 3 and fix["metrics"]["nodes_after"] == 2  # the BN is folded
    trt = by["conv"]["trt-check"]
    assert trt["verdict"] == "ready" and trt["input"] == "fixed"  # trt-check ran on the fixed model
    # each model's own reports, as the single commands write them
    fix_report = json.loads((out / "conv" / "fix.json").read_text())
    assert fix_report["nodes_after"] == 2 and (out / "conv" / "fixed.onnx").is_file()
    assert json.loads((out / "conv" / "trt-check.json").read_text())["verdict"] == "ready"
    assert "surgeon fix" in (out / "conv" / "fix.txt").read_text()
    assert data["summary"]["passed"] == 4 and data["started_jobs"] == 2 and not data["failed"]
    lines = (out / "results.jsonl").read_text().splitlines()
    assert [json.loads(l)["model"] for l in lines] == ["conv", "sub/mm"]


def test_junit_one_case_per_model_and_step(swept):
    tmp = swept[0]
    root = ET.parse(tmp / "junit.xml").getroot()
    cases = root.findall(".//testcase")
    assert {(c.get("classname"), c.get("name")) for c in cases} == {
        ("surgeon.sweep.conv", "fix"), ("surgeon.sweep.conv", "trt-check"),
        ("surgeon.sweep.sub/mm", "fix"), ("surgeon.sweep.sub/mm", "trt-check")}
    assert root.get("tests") == "4" and root.get("failures") == "0" and root.get("errors") == "0"


def test_markdown_summary(swept):
    out = swept[1]
    md = (out / "summary.md").read_text()
    assert md.startswith("### surgeon sweep: ✅ ok")
    assert "| model | fix | trt-check |" in md and "| `conv` | ✅ verified 3→2 | ✅ ready |" in md


def test_second_run_redoes_nothing(swept):
    first_json, second = swept[3], swept[4]
    assert second.returncode == 0, second.stderr
    lines = [json.loads(l) for l in second.stdout.splitlines()]
    models, summary = lines[:-1], lines[-1]["summary"]
    assert summary["started_jobs"] == 0 and summary["summary"]["cached"] == 4
    assert all(s["cached"] for m in models for s in m["steps"])
    strip = lambda d: [{k: v for k, v in s.items() if k not in ("seconds", "cached")} for m in d for s in m["steps"]]  # noqa: E731
    assert strip(models) == strip(first_json["models"])


def test_changed_model_is_recomputed_alone(tmp_path):
    conv_relu(tmp_path / "a.onnx")
    matmul(tmp_path / "b.onnx")
    zoo = manifest(tmp_path / "zoo.json", [{"path": "a.onnx"}, {"path": "b.onnx"}])
    out = tmp_path / "out"
    assert sweep_cli(zoo, "--out", out, "--jobs", "1", "--steps", "fix").returncode == 0
    conv_relu(tmp_path / "a.onnx", extra_sin=True)
    again = sweep_cli(zoo, "--out", out, "--jobs", "1", "--steps", "fix", "--json")
    summary = json.loads(again.stdout.splitlines()[-1])["summary"]
    assert summary["started_jobs"] == 1
    by = steps_by_model(out)
    assert not by["a"]["fix"]["cached"] and by["b"]["fix"]["cached"]
    assert by["a"]["fix"]["metrics"]["nodes_after"] == 3


def test_resume_continues_the_recorded_sweep(tmp_path):
    conv_relu(tmp_path / "a.onnx")
    out = tmp_path / "out"
    assert sweep_cli(tmp_path / "a.onnx", "--out", out, "--steps", "fix").returncode == 0
    again = sweep_cli("--resume", "--out", out, "--json")
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout.splitlines()[-1])["summary"]
    assert summary["steps"] == ["fix"] and summary["started_jobs"] == 0


def test_manifest_options_and_expected_verdicts(tmp_path):
    matmul(tmp_path / "u.onnx", unique=True)
    conv_relu(tmp_path / "c.onnx")
    zoo = manifest(tmp_path / "zoo.yaml", [
        {"path": "u.onnx", "expect": {"trt-check": "not-ready"}},  # a known failure passes while it stays so
        {"path": "c.onnx", "name": "conv", "steps": ["fix"], "fix": {"passes": "cleanup"}}])
    out = tmp_path / "out"
    res = sweep_cli(zoo, "--out", out, "--steps", "fix,trt-check")
    assert res.returncode == 0, res.stdout + res.stderr
    by = steps_by_model(out)
    assert by["u"]["trt-check"]["verdict"] == "not-ready" and by["u"]["trt-check"]["passed"]
    assert by["u"]["trt-check"]["metrics"]["failures"][0]["op"] == "Unique"
    assert set(by["conv"]) == {"fix"} and by["conv"]["fix"]["metrics"]["nodes_after"] == 3  # cleanup alone keeps BN


def test_failing_step_is_a_row_and_exit_1(tmp_path):
    matmul(tmp_path / "u.onnx", unique=True)
    (tmp_path / "bad.npz").write_bytes(b"not an npz")
    conv_relu(tmp_path / "c.onnx")
    zoo = manifest(tmp_path / "zoo.yaml", [{"path": "u.onnx"}, {"path": "c.onnx", "load_inputs": "bad.npz"}])
    out = tmp_path / "out"
    res = sweep_cli(zoo, "--out", out, "--steps", "fix,trt-check", "--junit", tmp_path / "j.xml")
    assert res.returncode == 1 and "Traceback" not in res.stderr + res.stdout
    by = steps_by_model(out)
    assert by["u"]["trt-check"]["verdict"] == "not-ready" and not by["u"]["trt-check"]["passed"]
    assert by["c"]["fix"]["status"] == "error" and "bad.npz" in by["c"]["fix"]["message"]
    root = ET.parse(tmp_path / "j.xml").getroot()
    assert root.get("failures") == "1" and root.get("errors") == "1"


@pytest.mark.parametrize("args, message", [
    (["{tmp}/missing.onnx"], "the model '{tmp}/missing.onnx' does not exist"),
    (["{tmp}/a.onnx", "--steps", "fix,fold"], "--steps: unknown step 'fold'"),
    (["{tmp}/broken.yaml"], "is not valid YAML at line"),
    (["{tmp}/typo.yaml"], "models[0]: unknown key 'stpes'"),
    (["{tmp}/nomodels.yaml"], "needs a 'models' list"),
    (["{tmp}/a.onnx", "--baseline", "{tmp}/a.onnx"], "the baseline '{tmp}/a.onnx' is not JSON"),
    (["{tmp}/a.onnx", "--ray-address", "x:1"], "--ray-address applies to --engine ray only"),
])
def test_bad_input_one_line_exit_2_before_any_work(tmp_path, args, message):
    conv_relu(tmp_path / "a.onnx")
    (tmp_path / "broken.yaml").write_text("models:\n  - path: a.onnx\n   bad: [\n")
    (tmp_path / "typo.yaml").write_text("models:\n  - path: a.onnx\n    stpes: [fix]\n")
    (tmp_path / "nomodels.yaml").write_text("steps: [fix]\n")
    out = tmp_path / "out"
    res = sweep_cli(*[a.format(tmp=tmp_path) for a in args], "--out", out)
    assert res.returncode == 2, res.stdout + res.stderr
    assert message.format(tmp=tmp_path) in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not out.exists()  # nothing was started


def test_all_five_steps(tmp_path):
    conv_relu(tmp_path / "c.onnx")
    zoo = manifest(tmp_path / "zoo.yaml", [{"path": "c.onnx", "profile": {"iterations": 8, "warmup": 1},
                                            "fp16": {"trt_check": False}}])
    out = tmp_path / "out"
    res = sweep_cli(zoo, "--out", out, "--steps", "fix,trt-check,scan,fp16,profile")
    assert res.returncode == 0, res.stdout + res.stderr
    steps = steps_by_model(out)["c"]
    assert [s["verdict"] for s in steps.values()] == ["verified", "ready", "clean", "passed", "measured"]
    assert all(s["input"] == "fixed" for name, s in steps.items() if name != "fix")
    assert steps["fp16"]["metrics"]["fp32_nodes"] == 0 and (out / "c" / "fp16.onnx").is_file()
    lat = steps["profile"]["metrics"]["latency_ms"]
    assert lat["runs"] == 8 and lat["ci_low"] <= lat["median"] <= lat["ci_high"]
    assert json.loads((out / "c" / "scan.json").read_text())["clean"]
