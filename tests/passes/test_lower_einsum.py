"""lower-einsum: Einsum equations lowered to Transpose/Reshape/MatMul/ReduceSum/Mul, checked against ORT's Einsum.

Every equation runs with static dims and with every dim symbolic (each subscript its
own dim name, run at two sets of sizes), at opset 12 (axes as attributes) and 17 (axes
as inputs). Tolerance: float32 sums over at most ~100 products reordered, atol 1e-5 /
rtol 1e-5.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import surgeon
from helpers import FIXTURES, run_ort, run_pass
from passes.lower_einsum import plan
from surgeon import graph as G

TOL = dict(atol=1e-5, rtol=1e-5)

# equation, operand shapes (first size set), expected op histogram of the static lowering
EQUATIONS = [
    ("bhid,bhjd->bhij", [(2, 3, 4, 5), (2, 3, 6, 5)], {"Transpose": 1, "MatMul": 1}),    # attention scores
    ("bhij,bhjd->bhid", [(2, 3, 4, 6), (2, 3, 6, 5)], {"MatMul": 1}),                    # attention context
    ("bn,anm,bm->ba", [(3, 4), (2, 4, 5), (3, 5)], None),                                # bilinear (nn.Bilinear)
    ("ij,jk->ik", [(3, 4), (4, 5)], {"MatMul": 1}),
    ("bld,hd->blh", [(2, 3, 4), (5, 4)], {"Transpose": 1, "MatMul": 1}),                 # linear layer
    ("ij->ji", [(3, 4)], {"Transpose": 1}),
    ("ij->i", [(3, 4)], {"ReduceSum": 1}),
    ("ij->", [(3, 4)], {"ReduceSum": 1}),
    ("ij->ij", [(3, 4)], {"Identity": 1}),
    ("ij,ij->ij", [(3, 4), (3, 4)], {"Mul": 1}),                                         # elementwise
    ("ij,ij->", [(3, 4), (3, 4)], {"Mul": 1, "ReduceSum": 1}),
    ("i,j->ij", [(3,), (4,)], {"Unsqueeze": 2, "Mul": 1}),                               # outer product
    ("bi,bj->bij", [(2, 3), (2, 4)], {"Unsqueeze": 2, "Mul": 1}),
    ("i,i->", [(4,), (4,)], {"Mul": 1, "ReduceSum": 1}),
    ("ij,j->i", [(3, 4), (4,)], {"MatMul": 1}),
    ("j,jk->k", [(4,), (4, 5)], {"MatMul": 1}),
    ("bhd,bd->bh", [(2, 3, 4), (2, 4)], None),
    ("ij,ik->jk", [(5, 3), (5, 4)], {"Transpose": 1, "MatMul": 1}),
    ("abcd,cdef->abef", [(2, 3, 4, 5), (4, 5, 6, 7)], None),                             # several dims per group
    ("abc,cde->abde", [(2, 3, 4), (4, 5, 6)], None),
    ("abc,bc->a", [(2, 3, 4), (3, 4)], None),
    ("bij,bjk", [(2, 3, 4), (2, 4, 5)], None),                                           # implicit output: ik
    ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)], {"MatMul": 1}),
    ("ijk,ikl,ilm->ijm", [(2, 3, 4), (2, 4, 5), (2, 5, 6)], {"MatMul": 2}),              # three operands
    ("...ij,...jk->...ik", [(2, 3, 4), (2, 4, 5)], {"MatMul": 1}),
    ("...ij,...jk->...ik", [(2, 1, 3, 4), (1, 5, 4, 6)], {"MatMul": 1}),                 # broadcast batch
    ("b...d,bd->b...", [(2, 3, 4, 5), (2, 5)], None),
    ("...d->...", [(2, 3, 4)], {"ReduceSum": 1}),
    ("bqhd,bkhd->bhqk", [(2, 3, 2, 4), (2, 5, 2, 4)], {"Transpose": 2, "MatMul": 1}),    # layout [b, seq, heads, d]
    ("bhqk,bkhd->bqhd", [(2, 2, 3, 5), (2, 5, 2, 4)], None),
    ("ab,ab,ab->a", [(3, 4), (3, 4), (3, 4)], None),
    ("ABc,cD->ABD", [(2, 3, 4), (4, 5)], None),                                          # upper-case subscripts
]


def _sizes(eq, shapes, scale):
    """Per-subscript sizes of the first shape set, scaled (a second, different set of sizes)."""
    return [tuple(d if d == 1 else d + scale for d in s) for s in shapes]


def _dynamic_dims(term: str, shape: tuple) -> list:
    """Symbolic dims: one name per subscript, one per ellipsis position (counted from the right); 1 stays 1."""
    head, _, tail = term.partition("...")
    if "..." not in term:
        return [f"d_{c}" for c in term]
    width = len(shape) - len(head) - len(tail)
    ell = [1 if shape[len(head) + i] == 1 else f"e_{width - i}" for i in range(width)]
    return [f"d_{c}" for c in head] + ell + [f"d_{c}" for c in tail]


def _model(eq, shapes, opset, dynamic):
    lhs = eq.split("->")[0].split(",")
    inputs = [helper.make_tensor_value_info(f"x{k}", TensorProto.FLOAT,
                                            _dynamic_dims(term, shape) if dynamic else list(shape))
              for k, (term, shape) in enumerate(zip(lhs, shapes))]
    node = helper.make_node("Einsum", [f"x{k}" for k in range(len(shapes))], ["y"], equation=eq, name="einsum")
    try:
        out_shape = list(np.einsum(eq, *[np.zeros(s, np.float32) for s in shapes]).shape)
    except ValueError:  # an equation numpy refuses too (refusal tests): any declared output will do
        out_shape, dynamic = [1], True
    y_dims = [f"y{i}" for i in range(len(out_shape))] if dynamic else out_shape
    graph = helper.make_graph([node], "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_dims)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _compare(m, out, shape_sets):
    for i, shapes in enumerate(shape_sets):
        rng = np.random.default_rng(i)
        feeds = {f"x{k}": rng.normal(size=s).astype(np.float32) for k, s in enumerate(shapes)}
        want, got = run_ort(m, feeds)["y"], run_ort(out, feeds)["y"]
        assert got.shape == want.shape, (got.shape, want.shape)
        np.testing.assert_allclose(got, want, err_msg=str(shapes), **TOL)


@pytest.mark.parametrize("opset", [12, 17])
@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
@pytest.mark.parametrize("eq,shapes,expected", EQUATIONS, ids=[f"{e[0]}|{len(e[1][0])}" for e in EQUATIONS])
def test_lowering_matches_ort_einsum(eq, shapes, expected, dynamic, opset):
    m = _model(eq, shapes, opset, dynamic)
    out, log = run_pass("lower-einsum", m)
    assert out is not None, log.notes
    onnx.checker.check_model(out)
    assert log.counts == {"lower-einsum": 1}
    hist = G.op_histogram(out)
    assert "Einsum" not in hist
    assert set(hist) <= {"Transpose", "Reshape", "MatMul", "ReduceSum", "Mul", "Unsqueeze", "Squeeze", "Identity",
                         "Shape", "Slice", "ReduceProd", "Concat"}, hist
    if expected is not None and not dynamic:
        assert dict(hist) == expected
    assert [o.name for o in out.graph.output] == ["y"]
    for node in out.graph.node:
        meta = {p.key: p.value for p in node.metadata_props}
        assert meta[G.PROVENANCE_PASS] == "lower-einsum" and meta[G.PROVENANCE_FROM] == "einsum"
    sets = [shapes] + ([_sizes(eq, shapes, 2)] if dynamic else [])
    _compare(m, out, sets)


def test_two_unknown_groups_use_a_shape_computed_target():
    """Both merged groups dynamic: the Reshape target comes from Shape, and the batch stays dynamic."""
    m = _model("abcd,cdef->abef", [(2, 3, 4, 5), (4, 5, 6, 7)], 17, dynamic=True)
    out, _ = run_pass("lower-einsum", m)
    hist = G.op_histogram(out)
    assert hist["Shape"] >= 1 and hist["Concat"] >= 1 and hist["MatMul"] == 1
    _compare(m, out, [[(2, 3, 4, 5), (4, 5, 6, 7)], [(1, 2, 3, 2), (3, 2, 2, 3)], [(4, 1, 2, 6), (2, 6, 1, 5)]])


@pytest.mark.parametrize("eq,shapes,reason", [
    ("ii->i", [(3, 3)], "subscript 'i' repeats in operand 0 of 'ii->i' (a diagonal or trace; not lowered)"),
    ("ii->", [(3, 3)], "(a diagonal or trace; not lowered)"),
    ("bii,bj->bj", [(2, 3, 3), (2, 4)], "subscript 'i' repeats in operand 0"),
    ("...ij,...jk->ik", [(2, 3, 4), (2, 4, 5)], "sums broadcast (ellipsis) dims across operands"),
    ("Ab,bc", [(2, 3), (3, 4)], "mixes upper- and lower-case subscripts"),
    ("ij,jk->ik", [(3, 4, 1), (4, 5)], "operand 0 has rank 3 but 'ij,jk->ik' names 2 dims"),
])
def test_refusals(eq, shapes, reason):
    m = _model(eq, shapes, 17, dynamic=False)  # a rank that contradicts the equation is refused too
    out, log = run_pass("lower-einsum", m)
    assert out is None and not log.counts
    assert any(reason in n for n in log.notes), log.notes


def test_ellipsis_with_unknown_rank_refused():
    m = _model("...ij,jk->...ik", [(2, 3, 4), (4, 5)], 17, dynamic=False)
    m.graph.input[0].type.tensor_type.ClearField("shape")
    out, log = run_pass("lower-einsum", m)
    assert out is None and any("operand 0 of '...ij,jk->...ik' has an ellipsis and an unknown rank" in n
                               for n in log.notes), log.notes


def test_unknown_rank_without_ellipsis_is_fine():
    m = _model("bhid,bhjd->bhij", [(2, 3, 4, 5), (2, 3, 6, 5)], 17, dynamic=False)
    for vi in m.graph.input:
        vi.type.tensor_type.ClearField("shape")
    out, _ = run_pass("lower-einsum", m)
    assert out is not None
    _compare(m, out, [[(2, 3, 4, 5), (2, 3, 6, 5)], [(1, 2, 3, 4), (1, 2, 5, 4)]])


def test_plan_is_pure_parsing():
    p = plan("b...d,bd->b...", [(2, 3, 4, 5), (2, 5)])
    assert p.inputs == (("b", "\u20260", "\u20261", "d"), ("b", "d")) and p.output == ("b", "\u20260", "\u20261")
    assert p.dims == ((2, 3, 4, 5), (2, 5))
    assert plan("ij,jk", [None, None]).output == ("i", "k")
    assert "names 2 operands" in plan("ij,jk->ik", [None])


def test_inside_if_branch_and_through_the_pipeline():
    """An Einsum in an If branch reading an outer tensor is lowered; the pipeline verifies it at two batch sizes."""
    then_g = helper.make_graph(
        [helper.make_node("Einsum", ["q", "k"], ["s"], equation="bhid,bhjd->bhij", name="scores")], "then", [],
        [helper.make_tensor_value_info("s", TensorProto.FLOAT, ["B", 2, 3, 3])])
    else_g = helper.make_graph(
        [helper.make_node("Einsum", ["k", "q"], ["s2"], equation="bhid,bhjd->bhij", name="scores_t")], "else", [],
        [helper.make_tensor_value_info("s2", TensorProto.FLOAT, ["B", 2, 3, 3])])
    graph = helper.make_graph(
        [helper.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g, name="branch")], "g",
        [helper.make_tensor_value_info("q", TensorProto.FLOAT, ["B", 2, 3, 4]),
         helper.make_tensor_value_info("k", TensorProto.FLOAT, ["B", 2, 3, 4]),
         helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", 2, 3, 3])])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    out, report = surgeon.fix(m, ["lower-einsum"], atol=1e-5, rtol=1e-5)
    entry = report.passes[0]
    assert entry.status == "applied" and entry.counts == {"lower-einsum": 2}
    assert "Einsum" not in G.op_histogram(out) and G.op_histogram(out)["MatMul"] == 2
    for c in (True, False):
        rng = np.random.default_rng(int(c))
        feeds = {"q": rng.normal(size=(3, 2, 3, 4)).astype(np.float32),
                 "k": rng.normal(size=(3, 2, 3, 4)).astype(np.float32), "c": np.array(c)}
        np.testing.assert_allclose(run_ort(out, feeds)["y"], run_ort(m, feeds)["y"], **TOL)


def test_not_in_default_pipeline_and_no_einsum_no_change():
    from surgeon.pipeline import registry

    assert "lower-einsum" not in registry.default_pipeline()
    m = _model("ij->ji", [(3, 4)], 17, dynamic=False)
    m.graph.node[0].op_type = "Transpose"
    del m.graph.node[0].attribute[:]
    out, log = run_pass("lower-einsum", m)
    assert out is None and not log.counts and not log.notes


ATTENTION = FIXTURES / "einsum_attention_legacy_op14.onnx"


def test_exported_attention_fixture():
    """torch.einsum attention + nn.Bilinear, legacy export with dynamic batch/sequence: no Einsum left, verified."""
    m = surgeon.load(ATTENTION)
    assert G.op_histogram(m)["Einsum"] >= 3
    out, report = surgeon.fix(m, ["lower-einsum"], atol=1e-5, rtol=1e-5)
    assert report.passes[0].status == "applied" and report.verification == "numeric"
    assert "Einsum" not in G.op_histogram(out)
    rng = np.random.default_rng(0)
    for batch, seq in ((2, 5), (3, 7)):
        feeds = {"x": rng.normal(size=(batch, seq, 8)).astype(np.float32)}
        got, want = run_ort(out, feeds), run_ort(m, feeds)
        for k in want:
            np.testing.assert_allclose(got[k], want[k], **TOL)


def test_element_type_without_matmul_refused():
    m = _model("ij,jk->ik", [(3, 4), (4, 5)], 17, dynamic=False)
    for vi in list(m.graph.input) + list(m.graph.output):
        vi.type.tensor_type.elem_type = TensorProto.INT8
    out, log = run_pass("lower-einsum", m)
    assert out is None and any("element type int8 has no MatMul/ReduceSum kernel" in n for n in log.notes), log.notes
