"""The speed shortcuts must not change what the pipeline and the passes decide.

Each shortcut answers "would the slow path find anything?" from a cheap look at the graph,
or skips a pass run that would see the same model again; these tests compare the shortcut
with the slow path on small models built to hit each branch (and to miss it).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

import surgeon
import passes.cleanup as cleanup_mod
from passes.fold_conv_bn import FoldConvBN
from passes.fold_shape_chains import FoldShapeChains
from passes.replace_custom_ops import ReplaceCustomOps
from surgeon import model as model_io
from surgeon.pipeline.base import PassContext, PassLog
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
    from surgeon.graph import Model
    from surgeon.pipeline.base import RewriteBudget

    work = Model.from_proto(model)
    before = work.signature()
    log = PassLog()
    pass_cls().run(work, PassContext(budget=RewriteBudget(), pass_name=pass_cls.name, options=options), log)
    return (None if work.signature() == before else work), log


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


def test_passes_without_candidates_do_not_export_or_infer(monkeypatch):
    from surgeon.graph import Model

    def no_export(*args, **kwargs):
        raise AssertionError("exported a model it has nothing to do in")

    model = _named(model_io.copy(CLEAN))
    monkeypatch.setattr(Model, "export", no_export)
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
