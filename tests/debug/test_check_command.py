"""The one --check contract (surgeon.debug.check_command) and its two users, bisect and isolate."""

from __future__ import annotations

import importlib.util
import json
import sys
import time

import numpy as np
import onnx
import pytest

from helpers import FIXTURES, model_from_text, run_cli
from surgeon.debug.check_command import BAD, GOOD, UNRESOLVED, CheckCommand
from surgeon.debug.isolate.check_target import CheckedTarget
from surgeon.debug.isolate.ddmin import Verdict
from surgeon.errors import UsageError

PY = sys.executable
TINY = model_from_text("""
<ir_version: 8, opset_import: ["" : 17]>
g (float[2] x) => (float[2] y) { [m] y = Mul(x, x) }""")


def test_placeholders_are_quoted_and_only_the_two_tokens_are_replaced():
    check = CheckCommand("grep -c Mul {model} && python -c 'd={1: 2}' {inputs}")
    line = check.line("/tmp/a b/m.onnx", "/tmp/i.npz")
    assert line == "grep -c Mul '/tmp/a b/m.onnx' && python -c 'd={1: 2}' /tmp/i.npz"
    assert CheckCommand("./check.sh --strict").line("/tmp/m.onnx") == "./check.sh --strict /tmp/m.onnx"  # appended
    assert CheckCommand("./check.sh {model}").repro() == "./check.sh reduced.onnx"
    with pytest.raises(UsageError, match="cannot provide"):
        CheckCommand("x {inputs}").line("/tmp/m.onnx")
    for bad in ("", "   "):
        with pytest.raises(UsageError, match="empty"):
            CheckCommand(bad)
    with pytest.raises(UsageError, match="positive"):
        CheckCommand("true", timeout=0)


@pytest.mark.parametrize("code, outcome", [(0, GOOD), (125, UNRESOLVED), (1, BAD), (3, BAD)])
def test_exit_status_meaning(code, outcome):
    result = CheckCommand(f"echo why-{code} >&2; exit {code}").run(TINY)
    assert (result.outcome, result.returncode) == (outcome, code)
    if code:
        assert f"why-{code}" in result.detail


def test_the_candidate_and_its_inputs_reach_the_command(tmp_path):
    script = tmp_path / "check.py"
    script.write_text("import sys, numpy as np, onnx\n"
                      "m = onnx.load(sys.argv[1]); z = np.load(sys.argv[2])\n"
                      "assert [n.op_type for n in m.graph.node] == ['Mul']\n"
                      "assert sorted(z.files) == ['sample0/x', 'sample1/x'] and z['sample1/x'][0] == 7\n")
    samples = [{"x": np.zeros(2, np.float32)}, {"x": np.full(2, 7, np.float32)}]
    result = CheckCommand(f"{PY} {script} {{model}} {{inputs}}").run(TINY, samples)
    assert result.outcome == GOOD, result.detail


def test_runs_in_the_callers_folder(tmp_path, monkeypatch):
    (tmp_path / "marker.txt").write_text("here")
    monkeypatch.chdir(tmp_path)
    assert CheckCommand("test -f marker.txt && true").run(TINY).outcome == GOOD


def test_a_timeout_kills_the_shell_and_its_children_and_counts_as_bad():
    t0 = time.perf_counter()
    result = CheckCommand("sleep 30 & sleep 30; true", timeout=0.5).run(TINY)
    assert result.outcome == BAD and result.returncode is None and "ran past 0.5 s" in result.detail
    assert time.perf_counter() - t0 < 10  # a child holding the pipe open would have kept us 30 s


class _Target:
    name, mechanism, choices = "fake", "fake, compared", ["a", "b"]
    samples = [{"x": np.ones(2, np.float32)}]

    def candidate(self, subset):
        return TINY

    describe = label = write_avoid = None


@pytest.mark.parametrize("code, verdict", [(0, Verdict.PASS), (125, Verdict.UNRESOLVED), (2, Verdict.FAIL)])
def test_isolate_maps_the_contract_onto_its_verdicts(code, verdict):
    target = CheckedTarget(_Target(), CheckCommand(f"exit {code}"))
    assert target(()) == verdict
    assert target.mechanism == f"fake, judged by: exit {code}"


def _isolate_fixtures():
    spec = importlib.util.spec_from_file_location("make_models", FIXTURES / "isolate" / "make_models.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _bisect_fixtures():
    spec = importlib.util.spec_from_file_location("make_bisect_fixtures", FIXTURES / "make_bisect_fixtures.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_one_command_string_works_the_same_in_bisect_and_isolate(tmp_path):
    """No '{model}' in the command: the path is appended in both tools, run by the shell ('!' negates)."""
    F = _bisect_fixtures()
    onnx.save(F.chain(20, fault=None), tmp_path / "chain.onnx")
    # bad when the candidate holds node n13 (the name is in the protobuf bytes)
    r = run_cli("bisect", str(tmp_path / "chain.onnx"), "--check", "! grep -q n13", "-o", str(tmp_path / "b"))
    assert r.returncode == 1, r.stderr
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    assert [c["node"] for c in report["culprits"]] == ["n13"] and report["mode"] == "prefixes"
    assert report["repro"] == "! grep -q n13 reduced.onnx"
    # bad when the candidate holds any Clip: every one of the 3 rewrites alone is a minimal failing set
    onnx.save(_isolate_fixtures().relu_branches(3, hot=1), tmp_path / "relus.onnx")
    r = run_cli("isolate", str(tmp_path / "relus.onnx"), "--target", "passes", "--passes", "replace-custom-ops",
                "--rules", str(FIXTURES / "rules" / "miscompile_rules.py"), "--check", "! grep -q Clip",
                "--check-timeout", "60", "--max-sets", "1", "-o", str(tmp_path / "i"))
    assert r.returncode == 1, r.stderr
    report = json.loads((tmp_path / "i" / "report.json").read_text())
    # removing it leaves the other Clips: one set found, the rest left (--max-sets 1)
    assert report["status"] == "incomplete" and [len(s) for s in report["culprit_sets"]] == [1]
    assert "judged by: ! grep -q Clip" in report["mechanism"]
