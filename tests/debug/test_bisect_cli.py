"""`surgeon bisect` end to end: real backends, the OUTDIR bundle, REPRO.md, exit codes."""

from __future__ import annotations

import importlib.util
import json
import shlex
import subprocess
import sys

import numpy as np
import onnx
import pytest

from helpers import FIXTURES, ROOT, run_cli

spec = importlib.util.spec_from_file_location("make_bisect_fixtures", FIXTURES / "make_bisect_fixtures.py")
F = importlib.util.module_from_spec(spec)
spec.loader.exec_module(F)


def _repro(outdir) -> subprocess.CompletedProcess:
    text = (outdir / "REPRO.md").read_text()
    command = text.split("```sh\n", 1)[1].split("\n```", 1)[0]
    if command.startswith("surgeon "):
        command = f"{shlex.quote(sys.executable)} {shlex.quote(str(ROOT / 'cli.py'))}" + command[len("surgeon"):]
    return subprocess.run(command, shell=True, cwd=outdir, capture_output=True, text=True, timeout=120)


def test_against_perturbed_copy_writes_a_reproducing_bundle(tmp_path):
    a = F.branches(8, fault_in=None, two_outputs=True)
    b = F.perturbed(a, "b5", delta=0.3)
    # provenance on B's node: the report names the pass and rule that made it
    node = next(n for n in b.graph.node if n.name == "b5")
    for k, v in (("surgeon.pass", "fold-things"), ("surgeon.rule", "add-chain"), ("surgeon.from", "b5")):
        e = node.metadata_props.add()
        e.key, e.value = k, v
    onnx.save(a, tmp_path / "a.onnx")
    onnx.save(b, tmp_path / "b.onnx")
    out = tmp_path / "out"
    r = run_cli("bisect", str(tmp_path / "a.onnx"), "--against", str(tmp_path / "b.onnx"), "-o", str(out),
                "--iterations", "2", "--atol", "1e-5", "--rtol", "1e-5")
    assert r.returncode == 1, r.stderr
    assert "b5" in r.stdout and "introduced here" in r.stdout and "fold-things" in r.stdout
    report = json.loads((out / "report.json").read_text())
    first = report["culprits"][0]
    assert (first["node"], first["op_type"], first["introduced"]) == ("b5", "Add", True)
    assert first["provenance"] == {"pass": "fold-things", "rule": "add-chain", "from": "b5"}
    assert first["error"]["max_abs"] == pytest.approx(0.3, rel=1e-3)
    assert report["reduced"]["nodes"] == ["b5"] and report["samples"] == 2
    reduced = onnx.load(out / "reduced.onnx")
    assert [n.name for n in reduced.graph.node] == ["b5"]
    inputs = np.load(out / "inputs.npz")
    assert sorted(inputs.files) == ["sample0/b4_out", "sample1/b4_out"]
    rep = _repro(out)
    assert rep.returncode == 1, rep.stdout + rep.stderr


def test_fp16_against_onnxrt_on_an_overflowing_layer(tmp_path):
    onnx.save(F.chain(80, fault=53, scale=2e5), tmp_path / "m.onnx")
    out = tmp_path / "out"
    r = run_cli("bisect", str(tmp_path / "m.onnx"), "--test", "fp16", "-o", str(out))
    assert r.returncode == 1, r.stderr
    report = json.loads((out / "report.json").read_text())
    assert [c["node"] for c in report["culprits"]] == ["n53"]
    assert report["culprits"][0]["error"]["inf_mismatches"] > 0
    assert report["oracle_calls"] <= 1 + 7 + 1
    assert report["tolerance"] == {"atol": 1e-2, "rtol": 1e-2}  # the float16 defaults, stated
    assert _repro(out).returncode == 1


def test_check_shell_command(tmp_path):
    onnx.save(F.chain(25, fault=11, scale=3.0), tmp_path / "m.onnx")
    out = tmp_path / "out"
    # "crashes" whenever the candidate contains a Mul: a stand-in for a parser that rejects one layer
    check = "grep -q Mul {model} && exit 3 || exit 0"
    r = run_cli("bisect", str(tmp_path / "m.onnx"), "--check", check, "-o", str(out))
    assert r.returncode == 1, r.stderr
    report = json.loads((out / "report.json").read_text())
    assert [c["node"] for c in report["culprits"]] == ["n11"] and report["mode"] == "prefixes"
    assert "exit status 3" in report["culprits"][0]["error"]["reason"]
    assert "grep -q Mul reduced.onnx" in (out / "REPRO.md").read_text()
    assert _repro(out).returncode != 0


def test_model_that_does_not_fail_exits_0(tmp_path):
    out = tmp_path / "out"
    r = run_cli("bisect", str(FIXTURES / "bisect" / "branches.onnx"), "--test", "onnxrt-noopt", "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert "no failure" in r.stdout
    assert not (out / "reduced.onnx").exists()


@pytest.mark.parametrize("args, needle", [
    (["--test", "nope"], "unknown backend"),
    (["--test", "fp16", "--block-size", "0"], "--block-size"),
    (["--against", "missing.onnx"], "does not exist"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, needle):
    out = tmp_path / "out"
    r = run_cli("bisect", str(FIXTURES / "bisect" / "branches.onnx"), *args, "-o", str(out))
    assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_oracle_is_required(tmp_path):
    r = run_cli("bisect", str(FIXTURES / "bisect" / "branches.onnx"), "-o", str(tmp_path / "o"))
    assert r.returncode == 2 and "one of the arguments" in r.stderr


def test_small_blocks_and_a_resumed_run(tmp_path):
    a = F.branches(6, fault_in=None, two_outputs=True)
    onnx.save(a, tmp_path / "a.onnx")
    onnx.save(F.perturbed(a, "a3"), tmp_path / "b.onnx")
    out = tmp_path / "out"
    argv = ["bisect", str(tmp_path / "a.onnx"), "--against", str(tmp_path / "b.onnx"), "-o", str(out), "--block-size", "1"]
    r = run_cli(*argv)
    assert r.returncode == 1, r.stderr
    first = json.loads((out / "report.json").read_text())
    assert [c["node"] for c in first["culprits"]] == ["a3"] and first["mode"] == "marked cuts"
    marks = [s for s in first["steps"] if s["kind"] == "mark"]
    assert any(s["nodes"] > 1 for s in marks)  # cuts across both branches: one run per marked tensor
    assert first["oracle_calls"] > len([s for s in first["steps"] if s["kind"] != "noise"])
    assert first["noise"]["trusted"] and first["noise_calls"] == 2  # measured once, and ONNX Runtime is quiet here
    r = run_cli(*argv)  # same inputs, same oracle: every verdict comes from bisect-state.json
    again = json.loads((out / "report.json").read_text())
    assert r.returncode == 1 and again["oracle_calls"] == 0 and again["verdicts_resumed"] == len(first["steps"])
    assert again["noise_calls"] == 0 and again["noise"] == first["noise"]
    assert again["culprits"] == first["culprits"]
