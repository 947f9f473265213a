"""isolate --target onnxrt-optimizers on real ONNX Runtime: a strict tolerance makes the
rounding change of real fusions (LayerNorm, GELU) count; the default tolerance does not."""

import importlib.util

import pytest

from helpers import FIXTURES, run_cli
from surgeon import input_data
from surgeon.debug.isolate import run
from surgeon.debug.isolate.ort_optimizers import (KNOWN_RULES, OrtOptimizersTarget, discover, parse_transformer_log,
                                                  validate_names)
from surgeon.errors import UsageError

_spec = importlib.util.spec_from_file_location("isolate_models", FIXTURES / "isolate" / "make_models.py")
models = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(models)


@pytest.fixture(scope="module")
def model():
    return models.ort_fusions()


def test_discovers_optimizer_names_from_ort_itself(model):
    inv = discover(model)
    assert "ConstantFolding" in inv.transformers
    assert any(n.startswith("LayerNormFusion") for n in inv.fired)
    assert any(n.startswith("GeluFusion") for n in inv.fired)


def test_strict_tolerance_isolates_the_fusions(model, tmp_path):
    samples = input_data.make_samples(model, seed=0)
    target = OrtOptimizersTarget(model, samples, atol=0.0, rtol=0.0)
    result, report = run(target, str(tmp_path / "o"))
    assert result.status == "culprits"
    names = sorted(c["optimizer"] for s in report["culprit_sets"] for c in s)
    assert any(n.startswith("LayerNormFusion") for n in names) and any(n.startswith("GeluFusion") for n in names)
    assert all(len(s) == 1 for s in report["culprit_sets"])
    assert all(c["ok"] for c in report["confirmations"])
    assert sorted((tmp_path / "o" / "disabled_optimizers.txt").read_text().split()) == names


def test_default_tolerance_sees_no_divergence(model, tmp_path):
    target = OrtOptimizersTarget(model, input_data.make_samples(model), atol=1e-4, rtol=1e-3)
    result, _ = run(target, str(tmp_path / "o"))
    assert result.status == "no-divergence"


def test_unknown_optimizer_name_is_a_usage_error(model):
    inv = discover(model)
    validate_names(["ConvBNFusion", inv.transformers[0]], inv)
    with pytest.raises(UsageError, match="not an ONNX Runtime optimizer name"):
        validate_names(["ConvBnFusion"], inv)


def test_log_parser_on_ort_verbose_lines():
    text = ("2026-01-01 [I:onnxruntime:, graph_transformer.cc:15 Apply] GraphTransformer ConstantFolding modified: 0 with status: OK\n"
            "2026-01-01 [I:onnxruntime:, graph_transformer.cc:15 Apply] GraphTransformer Level1_RuleBasedTransformer modified: 1 with status: OK\n"
            "2026-01-01 [I:onnxruntime:, graph_transformer.cc:15 Apply] GraphTransformer ConstantFolding modified: 1 with status: OK\n")
    inv = parse_transformer_log(text)
    assert inv.transformers == ("ConstantFolding", "Level1_RuleBasedTransformer")
    assert inv.fired == ("ConstantFolding", "Level1_RuleBasedTransformer")
    assert "ConvBNFusion" in inv.candidates() and "ConvBNFusion" in KNOWN_RULES


def test_cli_exit_codes_and_nothing_written_on_bad_input(tmp_path):
    model = str(FIXTURES / "isolate" / "ort_fusions.onnx")
    out = tmp_path / "o"
    proc = run_cli("isolate", model, "--target", "onnxrt-optimizers", "-o", str(out), "--atol", "0", "--rtol", "0")
    assert proc.returncode == 1, proc.stderr
    assert (out / "report.json").is_file() and (out / "disabled_optimizers.txt").is_file()
    proc = run_cli("isolate", model, "--target", "onnxrt-optimizers", "-o", str(tmp_path / "p"))
    assert proc.returncode == 0, proc.stderr
    bad = tmp_path / "bad"
    proc = run_cli("isolate", model, "--target", "onnxrt-optimizers", "-o", str(bad), "--optimizers", "GeluFusionXYZ")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert not bad.exists()
    proc = run_cli("isolate", model, "--target", "onnxrt-optimizers", "-o", str(bad), "--rules", "x.py")
    assert proc.returncode == 2 and not bad.exists()
