"""Every registered pass keeps the engine's contract on every fixture and tricky corpus model.

The pipeline lets passes edit its one in-memory model and trusts three things it checks
cheaply: a pass that says it changed nothing left the structure alone (the signature is
equal), a change is counted, and shared weights are never written (they are read-only
views of the input file; a write would raise). The model file itself is never touched.
"""

from __future__ import annotations

import hashlib

import pytest

from surgeon import model as model_io
from surgeon.pipeline import registry
from surgeon.pipeline.base import PassContext, PassLog
from helpers import CORPUS, FIXTURES

MODELS = sorted(FIXTURES.glob("**/*.onnx"))
CORPUS_MODELS = ["silero_vad_v6.onnx", "cf_loop_if_scripted_legacy_op16.onnx", "skl_rf_pipeline.onnx",
                 "tutorial_cnn_op12_dynbatch.onnx", "rnn_bilstm_gru_legacy_op13.onnx", "magika_standard_v3_3.onnx"]
MODELS += [CORPUS / name for name in CORPUS_MODELS if (CORPUS / name).is_file()]


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.name)
def test_every_pass_keeps_the_contract(path):
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    options = {"rules": [str(FIXTURES / "rules" / "trt_plugin_rules.py")], "target_opset": 21}  # upgrade-opset runs too
    for name, cls in registry.all_passes().items():
        model = model_io.open_model(path)
        weights = model.export().weights
        assert all(not a.flags.writeable for a in weights.values()), "weights must be read-only views"
        before = model.signature()
        log = PassLog()
        changed = cls().run(model, PassContext(options=options, pass_name=name), log)
        if not changed:
            assert model.signature() == before, f"pass {name} changed the graph but returned False"
        elif model.signature() != before:
            assert log.counts, f"pass {name} changed the graph without counting it"
        # A pass that changed nothing holds exactly the arrays it was given: no weight was copied.
        if model.signature() == before:
            original = {id(a) for a in weights.values()}
            assert all(id(a) in original for a in model.export().weights.values()), f"pass {name} copied a weight"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, "the model file changed"
