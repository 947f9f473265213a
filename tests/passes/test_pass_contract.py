"""Every registered pass leaves its input model untouched.

The pipeline hands passes its current model without a copy (copies of large models
cost more than most passes), so a pass that edits its input in place would corrupt the
model a rollback returns to. This checks every pass on every fixture model and on the
corpus models with subgraphs, old IR versions and custom domains.
"""

from __future__ import annotations

import pytest

import surgeon
from surgeon.pipeline import registry
from surgeon.pipeline.base import PassContext, PassLog
from helpers import CORPUS, FIXTURES

MODELS = sorted(FIXTURES.glob("**/*.onnx"))
CORPUS_MODELS = ["silero_vad_v6.onnx", "cf_loop_if_scripted_legacy_op16.onnx", "skl_rf_pipeline.onnx",
                 "tutorial_cnn_op12_dynbatch.onnx", "rnn_bilstm_gru_legacy_op13.onnx", "magika_standard_v3_3.onnx"]
MODELS += [CORPUS / name for name in CORPUS_MODELS if (CORPUS / name).is_file()]


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.name)
def test_no_pass_modifies_its_input(path):
    model = surgeon.load(path)
    before = model.SerializeToString(deterministic=True)
    options = {"rules": [str(FIXTURES / "rules" / "trt_plugin_rules.py")], "target_opset": 21}  # upgrade-opset runs too
    for name, cls in registry.all_passes().items():
        cls().run(model, PassContext(options=options, pass_name=name), PassLog())
        assert model.SerializeToString(deterministic=True) == before, f"pass {name} modified its input model"
