"""The prior and ranking (scan's range analysis + measured error growth), and the ONNX Runtime
float16 check run in a worker process."""

from __future__ import annotations

import onnx

from helpers import CORPUS, FIXTURES, requires_corpus
from surgeon import input_data
from surgeon.backends.fp16 import classify
from surgeon.precision.analysis import analyse
from surgeon.precision.api import name_nodes, reference_outputs, run_on_ort
from surgeon.precision.convert import convert
from surgeon.precision.oracle import resolve_tolerances


def test_prior_is_the_overflowing_tensors_producer_and_reader_and_leads_the_ranking():
    model = onnx.load(FIXTURES / "fp16" / "branches_overflow.onnx")
    cls = classify(model)
    samples = input_data.make_samples(model, iterations=2, seed=0)
    a = analyse(model, cls, samples)
    assert set(a.prior) == {"b5_scale2", "b5_down"}
    assert "reaches" in a.prior["b5_scale2"] and "reads 'b5_big'" in a.prior["b5_down"]
    assert set(a.ranking[:2]) == {"b5_scale2", "b5_down"} and sorted(a.ranking) == sorted(cls.candidates)
    assert a.max_abs["b5_big"] > 65504 and a.ort_runs == 2 + 2 * len(samples)


@requires_corpus("rnn_bilstm_gru_legacy_op13.onnx")
def test_ort_check_survives_an_onnxruntime_crash_and_says_which_level_ran():
    """onnxruntime 1.32 segfaults creating a session for this float16 LSTM/GRU model at its default
    optimization level (measured); the check runs in a worker, so that is a note, not our death."""
    named, _, _ = name_nodes(onnx.load(CORPUS / "rnn_bilstm_gru_legacy_op13.onnx"))
    cls = classify(named)
    conv = convert(named, cls, set())
    samples = input_data.make_samples(named, input_shapes={"tokens": (1, 16), "h0": (4, 1, 256), "c0": (4, 1, 256)})
    reference, _ = reference_outputs(named, samples)
    tolerances = resolve_tolerances(reference[0], 1e-2, 1e-2, "fp16")
    verdict, note, runs = run_on_ort(conv.model, samples, reference, tolerances)
    assert verdict is not None and verdict.passed and runs == 1
    if note:  # this onnxruntime crashed at level 'all' (a later one may not)
        assert "crashed" in note and "ran at optimization level" in note
