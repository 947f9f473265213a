"""The pipeline's contract: verify each pass, roll back what breaks, keep going.

Each broken pass here is a real rewrite that really changes what the model computes
(or its interface); the pipeline must catch it with ONNX Runtime on seeded samples.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
import pytest

import surgeon
from surgeon.pipeline import GraphPass, registry
from surgeon.pipeline.runner import APPLIED, ROLLED_BACK
from helpers import model_from_text

DYN = model_from_text("""
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 4] x) => (float[N, 2, 2] y) {
    s = Shape(x)
    n = Slice<axis=0>(s, starts, ends)
    t = Concat<axis=0>(n, tail)
    r = Reshape(x, t)
    y = Relu(r)
}
""".replace("Slice<axis=0>(s, starts, ends)", "Slice(s, starts, ends)").replace(
    "g (float[N, 4] x)",
    "g (float[N, 4] x, int64[1] starts = {0}, int64[1] ends = {1}, int64[2] tail = {2, 2})"))


def _remove_inits_from_inputs(m):
    inits = {t.name for t in m.graph.initializer}
    keep = [vi for vi in m.graph.input if vi.name not in inits]
    del m.graph.input[:]
    m.graph.input.extend(keep)
    return m


DYN = _remove_inits_from_inputs(DYN)


class BakeBatch(GraphPass):
    """Wrong on purpose: replaces the Reshape target with the value it has at batch 2."""

    name = "test-bake-batch"
    summary = "bakes the batch size into a Reshape (wrong)"

    def run_on_graph(self, graph, ctx, log):
        for node in graph.nodes:
            if node.op == "Reshape" and not isinstance(node.inputs[1], gs.Constant) and ctx.permit("bake", node.name):
                node.inputs[1] = gs.Constant(f"{node.name}_baked", np.array([2, 2, 2], np.int64))
                log.count("bake")
                return True
        return False


class Silent(GraphPass):
    """Changes the model (Relu -> LeakyRelu with alpha 0, same values) without counting it."""

    name = "test-silent"
    summary = "changes without reporting"

    def run_on_graph(self, graph, ctx, log):
        for node in graph.nodes:
            if node.op == "Relu":
                node.op, node.attrs = "LeakyRelu", {"alpha": 0.0}
                return True
        return False


class RenameOutput(GraphPass):
    name = "test-rename-output"
    summary = "renames the graph output (breaks the interface)"

    def run_on_graph(self, graph, ctx, log):
        if graph.outputs and graph.outputs[0].name == "y":
            graph.outputs[0].name = "y_renamed"
            log.count("rename")
            return True
        return False


class Crash(GraphPass):
    name = "test-crash"
    summary = "raises"

    def run_on_graph(self, graph, ctx, log):
        raise RuntimeError("bug in pass")


class ReluToMax(GraphPass):
    """Correct: Relu(x) == Max(x, 0). Used to check that good passes apply and count."""

    name = "test-relu-to-max"
    summary = "Relu as Max(x, 0)"

    def run_on_graph(self, graph, ctx, log):
        changed = False
        for node in graph.nodes:
            if node.op == "Relu" and ctx.permit("relu-max", node):
                node.op = "Max"
                node.inputs.append(gs.Constant(f"{node.outputs[0].name}_zero", np.zeros((1,), np.float32)))
                log.count("relu-max")
                changed = True
        return changed


@pytest.fixture(autouse=True)
def _test_passes(monkeypatch):
    for cls in (BakeBatch, Silent, RenameOutput, Crash, ReluToMax):
        monkeypatch.setitem(registry._PASSES, cls.name, cls)


def _status(report, name):
    return next(p for p in report.passes if p.name == name)


def test_baked_batch_is_caught_at_the_second_size_and_rolled_back():
    out, report = surgeon.fix(DYN, ["test-bake-batch", "test-relu-to-max"], rounds=1)
    bake = _status(report, "test-bake-batch")
    assert bake.status == ROLLED_BACK
    assert "sample 2" in bake.reason and "x[3, 4]" in bake.reason
    # the pipeline went on: the good pass applied on the unbaked model
    assert _status(report, "test-relu-to-max").status == APPLIED
    assert [n.op_type for n in out.graph.node if n.op_type in ("Relu", "Max")] == ["Max"]
    assert not any(i.name.endswith("_baked") for i in out.graph.initializer)


def test_interface_change_rolled_back():
    out, report = surgeon.fix(DYN, ["test-rename-output"], rounds=1)
    assert _status(report, "test-rename-output").status == ROLLED_BACK
    assert "outputs changed" in _status(report, "test-rename-output").reason
    assert out.graph.output[0].name == "y"


def test_uncounted_change_is_a_contract_violation():
    out, report = surgeon.fix(DYN, ["test-silent"], rounds=1)
    p = _status(report, "test-silent")
    assert p.status == ROLLED_BACK and "reported no change" in p.reason
    assert "Relu" in [n.op_type for n in out.graph.node]


def test_crashing_pass_is_reported_and_skipped():
    out, report = surgeon.fix(DYN, ["test-crash", "test-relu-to-max"], rounds=1)
    assert _status(report, "test-crash").status == ROLLED_BACK
    assert "bug in pass" in _status(report, "test-crash").reason
    assert _status(report, "test-relu-to-max").status == APPLIED


def test_input_model_object_not_modified():
    before = DYN.SerializeToString(deterministic=True)
    surgeon.fix(DYN, ["test-relu-to-max"])
    assert DYN.SerializeToString(deterministic=True) == before


def test_unchanged_model_is_bit_identical():
    out, report = surgeon.fix(DYN, ["test-crash"], rounds=1)
    assert out.SerializeToString(deterministic=True) == DYN.SerializeToString(deterministic=True)
    assert not report.changed


def test_bisect_limit_and_exclusion_number_applications():
    two_relu = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N, 4] x) => (float[N, 4] y) { a = Relu(x)  y = Relu(a) }
    """)
    _, full = surgeon.fix(two_relu, ["test-relu-to-max"], rounds=1)
    assert [a["applied"] for a in full.applications] == [True, True]
    out, limited = surgeon.fix(two_relu, ["test-relu-to-max"], rounds=1, bisect_limit=1)
    assert [a["applied"] for a in limited.applications] == [True, False]
    assert [n.op_type for n in out.graph.node] == ["Max", "Relu"]
    key = f"test-relu-to-max:relu-max:{full.applications[0]['node']}"
    out, excluded = surgeon.fix(two_relu, ["test-relu-to-max"], rounds=1, exclude={key})
    assert [n.op_type for n in out.graph.node] == ["Relu", "Max"]


def test_no_verify_still_runs_structural_checks():
    out, report = surgeon.fix(DYN, ["test-rename-output", "test-bake-batch"], verify=False, rounds=1)
    assert _status(report, "test-rename-output").status == ROLLED_BACK  # interface check
    assert _status(report, "test-bake-batch").status == APPLIED  # numerics not checked
    assert "disabled" in report.verification


def test_pinned_shapes_are_used_for_verification_only():
    out, report = surgeon.fix(DYN, ["test-relu-to-max"], input_shapes={"x": (5, 4)})
    assert report.samples == ["x[5, 4]"]
    dim = out.graph.input[0].type.tensor_type.shape.dim[0]
    assert dim.dim_param == "N"


def test_fix_shapes_writes_pinned_shapes():
    out, report = surgeon.fix(DYN, ["test-relu-to-max"], input_shapes={"x": (5, 4)}, fix_shapes=True)
    assert [d.dim_value for d in out.graph.input[0].type.tensor_type.shape.dim] == [5, 4]


def test_unknown_pass_name():
    from surgeon.errors import UnknownPassError

    with pytest.raises(UnknownPassError, match="unknown pass 'no-such-pass'"):
        surgeon.fix(DYN, ["no-such-pass"])


def test_ort_cannot_run_model_skips_numeric_verification_with_note():
    from helpers import FIXTURES

    m = surgeon.load(FIXTURES / "custom_op.onnx")
    out, report = surgeon.fix(m, ["test-relu-to-max"])
    assert report.verification.startswith("verification skipped") and "MyActivation" in report.verification
    assert _status(report, "test-relu-to-max").status == APPLIED


class ReluToMaxOfZeros(ReluToMax):
    """Correct too, a second numeric change in the same round (Max(x, 0) with the zero doubled)."""

    name = "test-max-zero-twice"
    summary = "Max(x, 0) as Max(x, 0, 0)"

    def run_on_graph(self, graph, ctx, log):
        changed = False
        for node in graph.nodes:
            if node.op == "Max" and len(node.inputs) == 2 and ctx.permit("max-zero", node):
                node.inputs.append(gs.Constant(f"{node.outputs[0].name}_zero2", np.zeros((1,), np.float32)))
                log.count("max-zero")
                changed = True
        return changed


def test_changes_of_one_round_are_compared_once(monkeypatch):
    from surgeon.verify import Verifier

    monkeypatch.setitem(registry._PASSES, ReluToMaxOfZeros.name, ReluToMaxOfZeros)
    calls = []
    original = Verifier.compare

    def counting(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Verifier, "compare", counting)
    out, report = surgeon.fix(DYN, ["test-relu-to-max", "test-max-zero-twice"], rounds=1)
    a, b = _status(report, "test-relu-to-max"), _status(report, "test-max-zero-twice")
    assert a.status == b.status == APPLIED and a.checked == b.checked == "numeric"
    assert len(calls) == 1  # one ONNX Runtime comparison for both changes
    assert any("compared once" in n for n in a.notes)
    assert [len(n.input) for n in out.graph.node if n.op_type == "Max"] == [3]


def test_failed_batch_reruns_passes_one_by_one_without_renumbering():
    out, report = surgeon.fix(DYN, ["test-relu-to-max", "test-bake-batch"], rounds=1)
    assert _status(report, "test-relu-to-max").status == APPLIED
    assert _status(report, "test-bake-batch").status == ROLLED_BACK
    assert [p.name for p in report.passes] == ["test-relu-to-max", "test-bake-batch"]  # no duplicate reports
    keys = [(a["pass_name"], a["rule"]) for a in report.applications]
    assert keys == [("test-relu-to-max", "relu-max"), ("test-bake-batch", "bake")]  # numbered once


def test_an_output_declaration_the_simplified_graph_contradicts_is_corrected_with_a_note():
    import onnx

    m = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N, 4] x) => (float[N, 4] y) {
        s = Shape(x)
        n = Slice(s, starts, ends)
        t = Concat<axis=0>(n, tail)
        y = Reshape(x, t)
    }
    """.replace("g (float[N, 4] x)", "g (float[N, 4] x, int64[1] starts = {0}, int64[1] ends = {1}, int64[2] tail = {2, 2})"))
    m = _remove_inits_from_inputs(m)  # declared [N, 4]; the graph computes [N, 2, 2]
    out, report = surgeon.fix(m, ["fold-shape-chains"])
    assert _status(report, "fold-shape-chains").status == APPLIED  # not rolled back for the model's own wrong declaration
    assert any("declared shape of output 'y' [N, 4] contradicts" in n for n in report.notes)
    dims = [d.dim_value or d.dim_param for d in out.graph.output[0].type.tensor_type.shape.dim]
    assert len(dims) == 3 and dims[1:] == [2, 2]
    onnx.checker.check_model(out, full_check=True)
