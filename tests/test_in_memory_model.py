"""The in-memory engine: weights opened without a copy, skeleton exports, streaming saves.

Each test builds a small model whose weights are large enough to be split off (4 KiB and
more), so every path the engine takes on a 500 MB model is taken here in milliseconds.
"""

from __future__ import annotations

import hashlib
import mmap

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from onnx import helper, numpy_helper

import surgeon
from surgeon import backends
from surgeon import model as model_io
from surgeon import weights as W
from surgeon.graph import Model
from helpers import run_cli, run_ort

RNG = np.random.default_rng(0)
W1 = RNG.standard_normal((64, 32)).astype(np.float32)  # 8 KiB: a weight
B1 = RNG.standard_normal((32,)).astype(np.float32)  # 128 B: stays in the skeleton


def _mlp(ir_version: int = 8) -> onnx.ModelProto:
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm"),
             helper.make_node("Identity", ["h"], ["hi"], name="id"),
             helper.make_node("Add", ["hi", "b1"], ["a"], name="add"),
             helper.make_node("Relu", ["a"], ["y"], name="relu")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", 1, ["N", 64])],
                          [helper.make_tensor_value_info("y", 1, ["N", 32])],
                          [numpy_helper.from_array(W1, "w1"), numpy_helper.from_array(B1, "b1")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = ir_version
    return m


def _feeds(n: int = 3) -> dict:
    return {"x": RNG.standard_normal((n, 64)).astype(np.float32)}


def test_open_maps_weights_read_only_without_reading_them(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(_mlp().SerializeToString())
    model = model_io.open_model(path)
    weights = model.export().weights
    assert len(weights) == 1  # only the 8 KiB tensor is a weight
    (array,) = weights.values()
    np.testing.assert_array_equal(array, W1)
    assert not array.flags.writeable
    base = array
    while getattr(base, "base", None) is not None:
        base = base.base
    assert isinstance(base, (mmap.mmap, memoryview)), type(base)  # a view into the mapped file, not a copy
    with pytest.raises(ValueError):
        array[0, 0] = 1.0


def test_skeleton_has_stubs_and_the_checker_reads_it(tmp_path):
    exported = Model.from_proto(_mlp()).export()
    stubs = [t for t in exported.skeleton.graph.initializer if W.stub_key(t)]
    assert [t.name for t in stubs] == ["w1"] and not stubs[0].raw_data
    assert exported.skeleton.ByteSize() < 2_000  # the graph, not the weights
    checkable = exported.for_checker()
    onnx.checker.check_model(checkable, full_check=True)
    assert "w1" in {vi.name for vi in checkable.graph.input}


@pytest.mark.parametrize("as_inputs", [True, False])
def test_onnx_runtime_gets_weights_in_memory(as_inputs, monkeypatch):
    exported = Model.from_proto(_mlp()).export()
    if not as_inputs:  # the fallback for kernels that want constant weights
        real = exported.for_ort
        monkeypatch.setattr(exported, "for_ort", lambda as_inputs=True: real(as_inputs=False))
    session = backends.create("onnxrt", optimization="disable", memory_lean=True).session(exported)
    feeds = _feeds()
    np.testing.assert_allclose(session.run(feeds)["y"], run_ort(_mlp(), feeds)["y"], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("external", [False, True])
def test_streaming_save_round_trips(tmp_path, external):
    model = Model.from_proto(_mlp())
    out = tmp_path / "o.onnx"
    model_io.save(model, out, external=external)
    assert (tmp_path / "o.onnx.data").exists() == external
    loaded = onnx.load(str(out))
    onnx.checker.check_model(loaded, full_check=True)
    got = {t.name: numpy_helper.to_array(t) for t in loaded.graph.initializer}
    np.testing.assert_array_equal(got["w1"], W1)
    np.testing.assert_array_equal(got["b1"], B1)
    feeds = _feeds()
    np.testing.assert_allclose(run_ort(loaded, feeds)["y"], run_ort(_mlp(), feeds)["y"], atol=0, rtol=0)
    if external:
        raw = onnx.load(str(out), load_external_data=False)
        offsets = [int(e.value) for t in raw.graph.initializer for e in t.external_data if e.key == "offset"]
        assert offsets and all(o % 4096 == 0 for o in offsets)  # page-aligned: mappable by readers


def test_a_weight_shared_by_two_initializers_is_written_once(tmp_path):
    m = _mlp()
    model = Model.from_proto(m)
    w = next(c for c in model.graph.tensors().values() if c.name == "w1")
    import onnx_graphsurgeon as gs

    twin = gs.Constant("w1_twin", w.values)  # the same array under a second name
    model.graph.nodes[0].inputs[1] = twin
    model_io.save(model, tmp_path / "o.onnx", external=True)
    assert (tmp_path / "o.onnx.data").stat().st_size == W1.nbytes


def test_rollback_restores_structure_and_shares_weights():
    model = Model.from_proto(_mlp())
    before = model.export()
    model.graph.nodes = model.graph.nodes[:1]
    model.restore(before)
    after = model.export()
    assert [n.op for n in model.graph.nodes] == ["MatMul", "Identity", "Add", "Relu"]
    assert {id(a) for a in after.weights.values()} == {id(a) for a in before.weights.values()}


def test_proof_covers_identity_and_dead_nodes_but_not_a_changed_constant():
    m = _mlp()
    before = Model.from_proto(m).export()
    tidy, _ = surgeon.fix(m, ["cleanup"], verify=False)
    after = Model.from_proto(tidy).export()
    # Model.from_proto made new weight arrays: same content, other identity, so no proof...
    assert before.digests() != after.digests()
    # ...but in one pipeline the arrays are shared, and the proof holds.
    model = Model.from_proto(m)
    start = model.export()
    _, report = surgeon.fix(model, ["cleanup"])
    assert report.passes[0].checked == "proof"
    end = model.export()
    assert start.digests() == end.digests()
    b1 = next(c for c in model.graph.tensors().values() if c.name == "b1")
    b1.values = b1.values + 1.0
    changed = model.export()
    assert start.digests() != changed.digests()


def test_fix_cli_keeps_a_large_model_external_and_the_input_untouched(tmp_path, monkeypatch):
    src = tmp_path / "big.onnx"
    onnx.save_model(_mlp(), str(src), save_as_external_data=True, location="big.onnx.data", size_threshold=1024)
    digests = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in tmp_path.iterdir()}
    out = tmp_path / "out.onnx"
    proc = run_cli("fix", str(src), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in tmp_path.iterdir() if p.name.startswith("big")} == digests
    raw = onnx.load(str(out), load_external_data=False)
    locations = {e.value for t in raw.graph.initializer for e in t.external_data if e.key == "location"}
    assert locations == {"out.onnx.data"}  # relative, beside the output
    feeds = _feeds()
    np.testing.assert_allclose(run_ort(onnx.load(str(out)), feeds)["y"], run_ort(_mlp(), feeds)["y"], atol=1e-6, rtol=1e-6)


def test_models_over_the_protobuf_limit_are_saved_with_external_data(tmp_path, monkeypatch):
    monkeypatch.setattr(model_io, "EXTERNAL_THRESHOLD", 4_000)  # the 8 KiB weight is "over 2 GB" here
    model_io.save(Model.from_proto(_mlp()), tmp_path / "o.onnx")
    assert (tmp_path / "o.onnx.data").stat().st_size == W1.nbytes


def _sparse(name: str, values: list[float], indices, dims: list[int]) -> onnx.SparseTensorProto:
    # numpy_helper stores both parts in raw_data, as exporters do
    return helper.make_sparse_tensor(numpy_helper.from_array(np.array(values, np.float32), name),
                                     numpy_helper.from_array(np.array(indices, np.int64), name + "_idx"), dims)


def _sparse_model(*, foldable: bool) -> onnx.ModelProto:
    nodes = [helper.make_node("Add", ["x", "w_lin"], ["a"], name="add_lin"),
             helper.make_node("Add", ["a", "w_coo"], ["y"], name="add_coo")]
    inits = []
    if foldable:  # a constant computation that reads a sparse initializer, and a duplicate of w_coo
        nodes[0].input[1] = "w_lin2"
        nodes = [helper.make_node("Mul", ["w_lin", "two"], ["w_lin2"], name="mul"), *nodes,
                 helper.make_node("Add", ["x", "w_dup"], ["z"], name="add_dup")]
        inits.append(numpy_helper.from_array(np.array(2.0, np.float32), "two"))
    outputs = [helper.make_tensor_value_info("y", 1, [2, 3])]
    if foldable:
        outputs.append(helper.make_tensor_value_info("z", 1, [2, 3]))
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", 1, [2, 3])], outputs, inits)
    g.sparse_initializer.extend([_sparse("w_lin", [1.5, -2.0], [0, 5], [2, 3]),  # [NNZ] linear indices
                                 _sparse("w_coo", [3.0, 4.0], [[0, 1], [1, 2]], [2, 3])])  # [NNZ, rank] coordinates
    if foldable:
        g.sparse_initializer.append(_sparse("w_dup", [3.0, 4.0], [1, 5], [2, 3]))  # w_coo's values, other layout
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(m)
    return m


def test_sparse_initializers_are_densified_right_and_reading_values_changes_nothing():
    # graphsurgeon 0.6.1's own SparseValues.load gives zeros for raw_data; a read used to count as a change
    model = Model.from_proto(_sparse_model(foldable=False))
    before = model.signature()
    consts = {c.name: c for c in model.graph.tensors().values() if isinstance(c, gs.Constant)}
    assert consts["w_lin"].values.tolist() == [[1.5, 0.0, 0.0], [0.0, 0.0, -2.0]]
    assert consts["w_coo"].values.tolist() == [[0.0, 3.0, 0.0], [0.0, 0.0, 4.0]]
    assert model.signature() == before
    weights = Model.from_proto(_mlp())
    before = weights.signature()
    w1 = next(c for c in weights.graph.tensors().values() if c.name == "w1")
    assert np.array_equal(w1.values, W1) and weights.signature() == before


def test_fix_with_sparse_initializers_rolls_nothing_back_and_keeps_untouched_ones_sparse():
    x = {"x": np.arange(6, dtype=np.float32).reshape(2, 3)}
    plain = _sparse_model(foldable=False)
    out, report = surgeon.fix(plain)
    assert not report.rolled_back and report.verification == "numeric"
    assert [s.values.name for s in out.graph.sparse_initializer] == ["w_lin", "w_coo"]
    folded_in = _sparse_model(foldable=True)
    folded, report = surgeon.fix(folded_in)
    assert not report.rolled_back, [(p.name, p.reason) for p in report.rolled_back]
    assert "Mul" not in {n.op_type for n in folded.graph.node}
    expected, got = run_ort(folded_in, x), run_ort(folded, x)
    assert all(np.array_equal(expected[k], got[k]) for k in expected)  # exact: an add of folded constants


def _alike_branches() -> onnx.ModelProto:
    """An If whose two branches are one graph (exporters copy them): their nodes compare equal in graphsurgeon."""
    body = helper.make_graph(
        [helper.make_node("Shape", ["x"], ["s"], name="shape"),
         helper.make_node("Reshape", ["x", "s"], ["r"], name="reshape"),
         helper.make_node("Neg", ["x"], ["n"], name="neg"),
         helper.make_node("Add", ["r", "n"], ["y_b"], name="add")],
        "branch", [], [helper.make_tensor_value_info("y_b", onnx.TensorProto.FLOAT, None)])
    graph = helper.make_graph(
        [helper.make_node("If", ["c"], ["y"], name="if", then_branch=body, else_branch=body)], "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 4]),
         helper.make_tensor_value_info("c", onnx.TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 4])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_detaching_a_node_of_one_of_two_alike_branches_leaves_the_other_linked():
    """graphsurgeon's list.remove compared nodes by structure and unlinked the sibling branch's copy."""
    model = Model.from_proto(_alike_branches())
    then, orelse = model.graph.nodes[0].attrs["then_branch"], model.graph.nodes[0].attrs["else_branch"]
    x = model.graph.inputs[0]
    then_shape = next(n for n in then.nodes if n.op == "Shape")
    else_shape = next(n for n in orelse.nodes if n.op == "Shape")
    then_shape.inputs.clear()
    assert any(n is else_shape for n in x.outputs) and not any(n is then_shape for n in x.outputs)
    then_shape.inputs.append(x)
    assert sum(n is then_shape for n in x.outputs) == 1


def test_fold_shape_chains_on_alike_branches_does_not_crash():
    """Found by bench/fuzz_fix.py: ValueError 'list.remove(x): x not in list' in the chain sweep."""
    m = _alike_branches()
    out, report = surgeon.fix(m, ["fold-shape-chains"], verify=False)
    p = report.passes[0]
    assert p.status == "applied" and p.counts.get("reshape-noop") == 2, (p.status, p.reason, p.counts)
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    for c in (True, False):
        feeds = {"x": x, "c": np.array(c)}
        np.testing.assert_array_equal(run_ort(out, feeds)["y"], run_ort(m, feeds)["y"])
