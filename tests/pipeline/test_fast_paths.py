"""The speed shortcuts must not change what the pipeline and the passes decide.

Each shortcut answers "would the slow path find anything?" from the protobuf, or skips a
pass run that would see the same model again; these tests compare the shortcut with the
slow path on small models built to hit each branch (and to miss it).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import surgeon
import passes.cleanup as cleanup_mod
import passes.fold_constants as fold_mod
from passes.fold_conv_bn import FoldConvBN
from passes.fold_shape_chains import FoldShapeChains
from passes.replace_custom_ops import ReplaceCustomOps
from surgeon import model as model_io
from surgeon.pipeline.base import PassContext, PassLog
from surgeon.pipeline.runner import _same_bytes
from helpers import model_from_text

# An Identity for cleanup to remove, then a BatchNormalization that cannot be folded
# (nothing before it), which fold-conv-bn notes in every round.
BN_NOTE = model_from_text("""
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 2, 3, 3] x, float[2] s, float[2] b, float[2] m, float[2] v) => (float[N, 2, 3, 3] y) {
    i = Identity(x)
    y = BatchNormalization(i, s, b, m, v)
}
""")

CLEAN = model_from_text("""
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 4] x, float[N, 4] unused) => (float[N, 4] y) {
    y = Relu(x)
}
""")


def _named(model: onnx.ModelProto) -> onnx.ModelProto:
    for i, n in enumerate(model.graph.node):
        n.name = n.name or f"n{i}"
    return model


def _run(pass_cls, model, **options):
    log = PassLog()
    out = pass_cls().run(model_io.copy(model), PassContext(pass_name=pass_cls.name, options=options), log)
    return out, log


def test_same_model_is_not_run_twice_and_its_notes_are_replayed(monkeypatch):
    calls = []
    original = FoldConvBN.run

    def counting(self, model, ctx, log):
        calls.append(1)
        return original(self, model, ctx, log)

    monkeypatch.setattr(FoldConvBN, "run", counting)
    _, report = surgeon.fix(BN_NOTE, "cleanup,fold-conv-bn", verify=False)
    # Round 1: cleanup removes the Identity, fold-conv-bn notes the BN. Round 2: cleanup
    # finds nothing, so fold-conv-bn would see the very model it already declined.
    assert len(calls) == 1
    bn = [p for p in report.passes if p.name == "fold-conv-bn"]
    assert [p.round for p in bn] == [1, 2]
    assert bn[0].notes == bn[1].notes and bn[0].notes
    assert [a["pass_name"] for a in report.applications].count("fold-conv-bn") == 0


def test_replay_keeps_rewrite_numbering_under_a_bisect_limit():
    _, full = surgeon.fix(BN_NOTE, "cleanup,fold-conv-bn,cleanup", verify=False)
    _, limited = surgeon.fix(BN_NOTE, "cleanup,fold-conv-bn,cleanup", verify=False, bisect_limit=0)
    assert [a["applied"] for a in limited.applications] == [False] * len(limited.applications)
    assert [(a["pass_name"], a["rule"], a["node"]) for a in full.applications][:1] == \
        [(a["pass_name"], a["rule"], a["node"]) for a in limited.applications][:1]


def test_same_bytes_compares_nodes_before_serializing():
    a = _named(model_io.copy(CLEAN))
    b = model_io.copy(a)
    assert _same_bytes(a, b)
    b.graph.node[0].name = "other"
    assert not _same_bytes(a, b)
    c = model_io.copy(a)
    c.graph.doc_string = "changed outside the nodes"
    assert not _same_bytes(a, c)


def test_payload_size_matches_the_raw_bytes():
    m = model_io.copy(CLEAN)
    arrays = [np.ones((3, 5), np.float32), np.arange(7, dtype=np.int64), np.zeros((2, 2), np.float16)]
    m.graph.initializer.extend(numpy_helper.from_array(a, f"w{i}") for i, a in enumerate(arrays))
    assert model_io.payload_size(m) == sum(len(t.raw_data) for t in m.graph.initializer)


def test_shape_only_copy_infers_the_same_shapes_and_leaves_the_input_alone():
    h = onnx.helper
    graph = h.make_graph(
        [h.make_node("MatMul", ["x", "w"], ["t"]), h.make_node("Reshape", ["t", "shape"], ["y"])], "g",
        [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 2048])],
        [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.ones((2048, 2048), np.float32), "w"),
         numpy_helper.from_array(np.array([-1, 64, 32], np.int64), "shape")])
    m = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], ir_version=8)
    before = m.SerializeToString()
    light = model_io.shape_only_copy(m)
    assert m.SerializeToString() == before
    assert light.ByteSize() < 10_000 and list(light.graph.initializer[0].dims) == [2048, 2048]
    full = onnx.shape_inference.infer_shapes(m, data_prop=True)
    fast = onnx.shape_inference.infer_shapes(light, data_prop=True)
    assert list(full.graph.value_info) == list(fast.graph.value_info) and full.graph.value_info


@pytest.mark.parametrize("model, clean", [
    (_named(model_io.copy(CLEAN)), True),
    (model_io.copy(CLEAN), False),  # unnamed node
    (_named(model_io.copy(BN_NOTE)), False),  # Identity
])
def test_cleanup_fast_path_agrees_with_the_graph_path(model, clean, monkeypatch):
    assert cleanup_mod._already_clean(model) is clean
    fast, fast_log = _run(cleanup_mod.Cleanup, model)
    monkeypatch.setattr(cleanup_mod, "_already_clean", lambda m: False)
    slow, slow_log = _run(cleanup_mod.Cleanup, model)
    assert (fast is None) == (slow is None) == clean
    assert fast_log.notes == slow_log.notes
    if clean:
        assert any("'unused'" in n for n in fast_log.notes)


def test_cleanup_fast_path_sees_dead_nodes_and_unused_initializers():
    dead = _named(model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[2] x) => (float[2] y) {
        y = Relu(x)
        z = Neg(x)
    }
    """))
    assert not cleanup_mod._already_clean(dead)
    unused = _named(model_io.copy(CLEAN))
    unused.graph.initializer.append(numpy_helper.from_array(np.ones(2, np.float32), "w"))
    assert not cleanup_mod._already_clean(unused)


def test_graphsurgeon_work_predicate():
    relu = _named(model_io.copy(CLEAN))
    assert not fold_mod.graphsurgeon_has_work(relu)
    static_shape = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[2, 3] x) => (int64[2] y) {
        y = Shape(x)
    }
    """)
    assert fold_mod.graphsurgeon_has_work(static_shape)
    dynamic_shape = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N, 3] x, int64[1] i = {0}) => (int64[1] y) {
        s = Shape(x)
        y = Gather(s, i)
    }
    """)
    del dynamic_shape.graph.input[1:]  # i: an initializer, not an input
    assert not fold_mod.graphsurgeon_has_work(dynamic_shape)  # dim 0 is dynamic: nothing to fold
    dynamic_shape.graph.initializer[0].CopyFrom(numpy_helper.from_array(np.array([1], np.int64), "i"))
    assert fold_mod.graphsurgeon_has_work(dynamic_shape)  # dim 1 is 3
    const_input = _named(model_io.copy(CLEAN))
    const_input.graph.node[0].input[0] = "c"
    const_input.graph.initializer.append(numpy_helper.from_array(np.ones((1, 4), np.float32), "c"))
    assert fold_mod.graphsurgeon_has_work(const_input)


def test_fold_constants_skips_graphsurgeon_without_changing_the_result(monkeypatch):
    model = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N, 4] x) => (float[N, 4] y) {
        a = Relu(x)
        y = Neg(a)
    }
    """)
    fast, fast_log = _run(fold_mod.FoldConstants, model)
    monkeypatch.setattr(fold_mod, "graphsurgeon_has_work", lambda m: True)
    slow, slow_log = _run(fold_mod.FoldConstants, model)
    assert dict(fast_log.counts) == dict(slow_log.counts) and fast_log.notes == slow_log.notes
    assert (fast is None) == (slow is None)
    if fast is not None:
        assert fold_mod._structure(fast) == fold_mod._structure(slow)


def test_passes_without_candidates_return_none_before_importing(monkeypatch):
    import surgeon.graph as G

    def no_import(*args, **kwargs):
        raise AssertionError("imported a model it has nothing to do in")

    model = _named(model_io.copy(CLEAN))
    monkeypatch.setattr(G, "import_graph", no_import)
    for pass_cls in (FoldShapeChains, FoldConvBN, ReplaceCustomOps, cleanup_mod.Cleanup):
        out, _ = _run(pass_cls, model)
        assert out is None, pass_cls.name


def test_replace_custom_ops_prefilter_still_lists_untouched_custom_ops(monkeypatch):
    model = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17, "my.domain" : 1]>
    g (float[2] x) => (float[2] y) {
        y = my.domain.Foo(x)
    }
    """)
    fast, fast_log = _run(ReplaceCustomOps, model)
    import surgeon.rewrite.engine as engine

    monkeypatch.setattr(engine, "_may_match", lambda m, rules: True)
    slow, slow_log = _run(ReplaceCustomOps, model)
    assert fast is None and slow is None
    assert fast_log.notes == slow_log.notes == ["untouched custom op: my.domain::Foo x1"]
