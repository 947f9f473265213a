"""isolate --target passes: a real miscompile in the real pipeline, judged by real ONNX Runtime.

Two forms of the same wrong rewrite (Relu -> Clip(0, 6), wrong only above 6) on a model
with 60 Relu nodes where only relu_37 sees values above 6: a test-only GraphPass, and the
user rule file fixtures/rules/miscompile_rules.py through replace-custom-ops.
"""

import importlib.util

import numpy as np
import onnx_graphsurgeon as gs
import pytest

from helpers import FIXTURES, run_cli, run_ort
from surgeon import input_data
from surgeon.debug.isolate import run
from surgeon.debug.isolate.ddmin import CULPRITS
from surgeon.debug.isolate.passes_target import PassesTarget
from surgeon.pipeline import GraphPass, fix, registry

_spec = importlib.util.spec_from_file_location("isolate_models", FIXTURES / "isolate" / "make_models.py")
models = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(models)

RULES = str(FIXTURES / "rules" / "miscompile_rules.py")


class _ReluAsClip6(GraphPass):
    name = "test-relu-as-clip6"
    summary = "test only: rewrites Relu as Clip(0, 6), which is wrong above 6"

    def run_on_graph(self, graph, ctx, log):
        changed = False
        for node in list(graph.nodes):
            if node.op != "Relu" or not ctx.permit("relu-as-clip6", node.name):
                continue
            node.op = "Clip"
            node.inputs.extend([gs.Constant(f"{node.name}_lo", np.array(0, np.float32)),
                                gs.Constant(f"{node.name}_hi", np.array(6, np.float32))])
            log.count("relu-as-clip6")
            changed = True
        return changed


@pytest.fixture(autouse=True)
def _registered(monkeypatch):
    """Register the test-only pass for this module's tests only (the registry is global)."""
    monkeypatch.setitem(registry._PASSES, _ReluAsClip6.name, _ReluAsClip6)


@pytest.fixture(scope="module")
def model():
    return models.relu_branches()


def test_isolates_the_one_wrong_application_among_60(model, tmp_path):
    samples = input_data.make_samples(model, seed=0)
    target = PassesTarget(model, samples, passes="test-relu-as-clip6", atol=1e-6, rtol=1e-6)
    assert len(target.choices) == 60
    result, report = run(target, str(tmp_path / "out"))
    assert result.status == CULPRITS
    assert [[c["node"] for c in s] for s in report["culprit_sets"]] == [["relu_37"]]
    assert report["culprit_sets"][0][0]["rule"] == "relu-as-clip6"
    assert result.oracle_calls < 60  # cheaper than trying each application alone
    assert all(c["ok"] for c in report["confirmations"])
    excluded = (tmp_path / "out" / "exclude-rewrites.txt").read_text().split("\n")
    assert "test-relu-as-clip6:relu-as-clip6:relu_37" in excluded


def test_exclusion_list_makes_fix_correct_and_keeps_the_other_59(model, tmp_path):
    samples = input_data.make_samples(model, seed=0)
    keys = {"test-relu-as-clip6:relu-as-clip6:relu_37"}
    fixed, report = fix(model, "test-relu-as-clip6", verify=False, exclude=keys)
    ops = [n.op_type for n in fixed.graph.node]
    assert ops.count("Clip") == 59 and ops.count("Relu") == 1
    ref, out = run_ort(model, samples[0]), run_ort(fixed, samples[0])
    np.testing.assert_allclose(out["y"], ref["y"], atol=1e-6, rtol=1e-6)
    broken, _ = fix(model, "test-relu-as-clip6", verify=False)
    assert not np.allclose(run_ort(broken, samples[0])["y"], ref["y"], atol=1e-6, rtol=1e-6)


def test_nothing_to_isolate_when_every_application_is_right(tmp_path):
    model = models.relu_branches(n=10, hot=-1)  # no branch exceeds 6
    target = PassesTarget(model, input_data.make_samples(model), passes="test-relu-as-clip6", atol=1e-6, rtol=1e-6)
    result, report = run(target, str(tmp_path / "out"))
    assert result.status == "no-divergence" and report["avoid"] is None


def test_cli_isolates_wrong_rule_from_a_rule_file(tmp_path):
    out = tmp_path / "iso"
    proc = run_cli("isolate", str(FIXTURES / "isolate" / "relu_branches.onnx"), "--target", "passes",
                   "--passes", "replace-custom-ops", "--rules", RULES, "-o", str(out))
    assert proc.returncode == 1, proc.stderr
    assert "relu_37" in proc.stdout
    assert (out / "exclude-rewrites.txt").read_text().splitlines()[1:] == ["replace-custom-ops:relu-as-clip6:relu_37"]
    fixed = tmp_path / "fixed.onnx"
    proc = run_cli("fix", str(FIXTURES / "isolate" / "relu_branches.onnx"), "-o", str(fixed), "--passes", "replace-custom-ops",
                   "--rules", RULES, "--exclude-rewrites", str(out / "exclude-rewrites.txt"), "--strict")
    assert proc.returncode == 0, proc.stdout + proc.stderr  # with the culprit excluded nothing is rolled back
