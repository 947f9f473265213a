"""A small CI subset of bench/mutation.py: wrong rewrites planted in fixtures must be rolled back.

The full run (corpus and fixture exports, two mutants of each kind per model) is
``python bench/mutation.py``; this subset takes one affine (y -> 1.25 y + 0.25) and one
op-swap mutant per model on three small fixtures, a few seconds in all. Equivalence on
realistic inputs uses the verifier's rule (float32 atol 1e-4, rtol 1e-3).
"""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import onnx
import pytest

from helpers import FIXTURES, ROOT
from surgeon.pipeline import registry


@pytest.fixture(scope="module")
def mutation():
    spec = importlib.util.spec_from_file_location("bench_mutation", ROOT / "bench" / "mutation.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["tutorial_cnn.onnx", "evidence_t5_mask.onnx", "evidence_if_branch.onnx"])
def test_planted_errors_that_change_outputs_are_rolled_back(mutation, name):
    mutants = mutation.evaluate(FIXTURES / name, {}, 1, ("affine", "swap"), 0, progress=lambda _line: None)
    assert len(mutants) == 2 and all(m.equivalent is not None for m in mutants)
    s = mutation.score(mutants)
    assert not s.errors, s.errors
    assert s.changing >= 1  # the realistic inputs see the planted error
    assert s.killed == s.changing, (s.survived, s.unverified)
    assert "plant-mutant" not in registry.all_passes()  # the bench pass never leaks into pass lists


def test_an_equivalent_mutant_is_told_apart_from_a_caught_one(mutation):
    """The realistic inputs decide equivalence on their own: an If branch they never take is equivalent."""
    model = onnx.load(str(FIXTURES / "evidence_if_unreachable.onnx"))
    then = mutation.Mutant("unreachable", "affine", "then_y", "Add", onnx.TensorProto.FLOAT, True)
    inputs = [{"x": np.full((2, 4), 0.5, np.float32)}]
    assert mutation.equivalent(model, mutation.mutate(model, then), inputs)[0]
    other = mutation.Mutant("unreachable", "swap", "th", "Tanh", onnx.TensorProto.FLOAT, True)
    assert not mutation.equivalent(model, mutation.mutate(model, other), inputs)[0]
