"""surgeon profile on ONNX Runtime: the trace parser, the fused-kernel mapping, statistics, the API.

Timing assertions are only about structure (counts, which kernel came from which node,
medians not above p90) or about differences far larger than any machine noise (a model
doing 40x the work); exact times are never asserted.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from helpers import CORPUS, requires_corpus
from surgeon.debug.profile import compare_models, profile_model
from surgeon.debug.profile.fusion_map import map_kernels
from surgeon.debug.profile.ort_trace import parse_trace
from surgeon.debug.profile.stats import compare, split_half_noise, summarize
from surgeon.errors import BackendError, InputDataError, UsageError


def _mlp(layers: int = 1, width: int = 16, name: str = "mlp") -> onnx.ModelProto:
    """x → (MatMul → Add → Relu) × layers, named as a PyTorch export names them."""
    rng = np.random.default_rng(0)
    nodes, inits, cur = [], [], "x"
    for i in range(layers):
        inits += [numpy_helper.from_array(rng.standard_normal((width, width)).astype(np.float32), f"w{i}"),
                  numpy_helper.from_array(rng.standard_normal(width).astype(np.float32), f"b{i}")]
        nodes += [helper.make_node("MatMul", [cur, f"w{i}"], [f"m{i}"], name=f"/l{i}/MatMul"),
                  helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"], name=f"/l{i}/Add"),
                  helper.make_node("Relu", [f"a{i}"], [f"r{i}"], name=f"/l{i}/Relu")]
        cur = f"r{i}"
    nodes.append(helper.make_node("Identity", [cur], ["y"], name="/out/Identity"))
    g = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(m)
    return m


# --- statistics ------------------------------------------------------------------------

def test_summary_and_split_half_noise():
    s = summarize([1.0, 2.0, 3.0, 4.0, 100.0])
    assert (s.median_ms, s.min_ms, s.runs) == (3.0, 1.0, 5) and s.p90_ms > s.median_ms
    assert split_half_noise([1.0, 1.0, 1.0, 1.0]) == 0.0
    # even runs 1.0, odd runs 1.2: the halves differ by 0.2 against a median of 1.1
    assert split_half_noise([1.0, 1.2] * 10) == pytest.approx(0.2 / 1.1, rel=1e-12)
    assert split_half_noise([1.0, 2.0]) is None  # too few runs to split


def test_difference_verdicts():
    rng = np.random.default_rng(1)
    a = 10 + rng.normal(0, 0.1, 40)
    assert compare(a, a * 0.5).verdict == "faster"
    assert compare(a, a * 2.0).verdict == "slower"
    same = compare(a, a[::-1].copy())
    assert same.verdict == "within noise" and same.ci_low <= 1.0 <= same.ci_high
    # a 1% change inside 5% run-to-run noise is not a result
    noisy = 10 * (1 + np.tile([0.0, 0.05], 20))
    d = compare(noisy, noisy * 0.99)
    assert d.noise == pytest.approx(0.05 / 1.025, rel=1e-9) and d.verdict == "within noise"
    with pytest.raises(ValueError):
        compare([1.0], [1.0, 2.0])


# --- the trace --------------------------------------------------------------------------

def _event(cat, name, ts, dur, **args):
    return {"cat": cat, "pid": 1, "tid": 1, "dur": dur, "ts": ts, "ph": "X", "name": name, "args": args}


def test_trace_runs_nesting_and_memory():
    """The shape ONNX Runtime writes: body kernels before their If, the If before model_run."""
    events = [_event("Session", "model_loading_uri", 0, 10), _event("Session", "session_initialization", 10, 50)]
    for r, t0 in enumerate((100, 300)):
        events += [
            _event("Node", "/mm/MatMul_kernel_time", t0 + 1, 20, op_name="MatMul", provider="CPUExecutionProvider",
                   node_index="0", mem_in_use_peak=str(1000 + r), mem_arena_held="4096"),
            _event("Node", "/then/Add_kernel_time", t0 + 25, 5, op_name="Add", provider="CPUExecutionProvider", node_index="0"),
            _event("Session", "SequentialExecutor::Execute", t0 + 24, 7),
            _event("Node", "/if/If_kernel_time", t0 + 23, 9, op_name="If", provider="CPUExecutionProvider", node_index="1"),
            _event("Node", "/out/Relu_kernel_time", t0 + 33, 2, op_name="Relu", provider="CPUExecutionProvider",
                   node_index="2"),
            _event("Session", "SequentialExecutor::Execute", t0, 36),
            _event("Session", "model_run", t0, 40),
        ]
    trace = parse_trace(events)
    assert len(trace.runs) == 2 and [r.dur_us for r in trace.runs] == [40, 40]
    ks = {k.name: k for k in trace.runs[1].kernels}
    assert set(ks) == {"/mm/MatMul", "/then/Add", "/if/If", "/out/Relu"}
    assert ks["/then/Add"].parent == "/if/If" and ks["/if/If"].parent is None and ks["/out/Relu"].parent is None
    assert ks["/mm/MatMul"].op_type == "MatMul" and ks["/mm/MatMul"].node_index == 0
    assert trace.memory == {"mem_in_use_peak": 1001, "mem_arena_held": 4096}


def test_trace_that_is_not_one():
    with pytest.raises(InputDataError, match="not an ONNX Runtime profiler trace"):
        parse_trace({"Layers": []})
    with pytest.raises(InputDataError, match="no 'model_run' events"):
        parse_trace([_event("Session", "session_initialization", 0, 5)])


# --- fused kernels back to ONNX nodes -----------------------------------------------------

def _graph(nodes, inputs=("x",), outputs=("y",), inits=()):
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in inputs],
                          [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
                          [numpy_helper.from_array(np.zeros(1, np.float32), n) for n in inits])
    return helper.make_model(g)


def test_mapping_of_layout_kernels_constants_and_added_kernels():
    """What ORT's NCHWc transformer makes of conv-bn-relu ×2 (the graph saved by optimized_model_filepath)."""
    n = helper.make_node
    original = _graph([
        n("Conv", ["x", "w1"], ["c1"], name="/conv1/Conv"), n("BatchNormalization", ["c1", "s", "b", "m", "v"], ["b1"], name="/bn1/BN"),
        n("Relu", ["b1"], ["r1"], name="/relu1/Relu"), n("Conv", ["r1", "w2"], ["c2"], name="/conv2/Conv"),
        n("Relu", ["c2"], ["r2"], name="/relu2/Relu"),
        n("Constant", [], ["shape"], name="/Constant", value=numpy_helper.from_array(np.array([1, -1], np.int64))),
        n("Reshape", ["r2", "shape"], ["y"], name="/Reshape"),
    ], inits=("w1", "w2", "s", "b", "m", "v"))
    optimized = _graph([
        n("Conv", ["x", "w1_folded"], ["reorder_token_0"], name="r1_nchwc", domain="com.microsoft.nchwc"),
        n("Conv", ["reorder_token_0", "w2"], ["reorder_token_1"], name="r2_nchwc", domain="com.microsoft.nchwc"),
        n("ReorderOutput", ["reorder_token_1"], ["r2"], name="ReorderOutput", domain="com.microsoft.nchwc"),
        n("Reshape", ["r2", "ConstantFolding_shape"], ["y"], name="/Reshape"),
    ], inits=("w1_folded", "w2", "ConstantFolding_shape"))
    o = map_kernels(original, optimized)
    assert o.origin("r1_nchwc").nodes == ("/conv1/Conv", "/bn1/BN", "/relu1/Relu")
    assert o.origin("r1_nchwc").how == "fused"
    assert o.origin("r2_nchwc").nodes == ("/conv2/Conv", "/relu2/Relu")
    assert o.origin("ReorderOutput").nodes == () and o.origin("ReorderOutput").how == "added by ONNX Runtime"
    assert o.origin("/Reshape").how == "same" and o.origin("/Reshape").nodes == ("/Reshape",)
    assert o.removed == [("/Constant", "Constant")]  # folded into an initializer, renamed on the way
    assert o.origin("nothing like it").how == "unmapped"


def test_mapping_without_optimization_and_for_unnamed_nodes():
    n = helper.make_node
    original = _graph([n("Relu", ["x"], ["a"]), n("Add", ["a", "x"], ["y"])])
    plain = map_kernels(original, None)
    assert plain.origin("Relu_0").nodes == ("Relu_0",) and plain.origin("Add_1").how == "same"
    # unnamed nodes keep no name in the saved optimized graph; ORT's trace calls them <op>_<index>
    fused = _graph([n("Relu", ["x"], ["a"]), n("Add", ["a", "x"], ["y"])])
    o = map_kernels(original, fused)
    assert o.origin("Add_1", "Add", 1).nodes == ("Add_1",) and o.origin("Add_1", "Add", 1).how == "same"


def test_real_ort_fusion_matmul_add_and_identity():
    """ONNX Runtime (ORT_ENABLE_ALL) fuses MatMul+Add into Gemm and drops Identity; the profile says so."""
    p = profile_model(_mlp(layers=2), input_shapes={"x": (4, 16)}, warmup=1, iterations=3, threads=1)
    gemms = [k for k in p.kernels if k.op_type in ("Gemm", "FusedGemm")]
    assert len(gemms) == 2, [(k.name, k.op_type) for k in p.kernels]
    origins = sorted(tuple(k.origin) for k in gemms)
    assert origins[0][:2] == ("/l0/MatMul", "/l0/Add") and origins[1][:2] == ("/l1/MatMul", "/l1/Add")
    assert all(k.how == "fused" for k in gemms)
    mapped = {n for k in p.kernels for n in k.origin}
    assert "/out/Identity" in mapped or ("/out/Identity", "Identity") in p.removed
    for k in p.kernels:
        assert 0 <= k.median_ms <= k.p90_ms and 0 <= k.share <= 1.0 + 1e-9
    assert p.latency.runs == 3 and p.profiled_latency.runs == 3 and p.overhead is not None
    assert sum(g.share for g in p.op_types) <= 1.0 + 1e-9
    assert p.memory and p.memory["arena_peak_in_use_bytes"] > 0  # ORT 1.32 writes allocator stats


def test_noopt_backend_kernels_are_the_onnx_nodes():
    p = profile_model(_mlp(layers=1), backend="onnxrt-noopt", input_shapes={"x": (2, 16)}, warmup=0, iterations=2)
    assert sorted(k.name for k in p.kernels) == ["/l0/Add", "/l0/MatMul", "/l0/Relu", "/out/Identity"]
    assert {k.how for k in p.kernels} == {"same"} and p.removed == []


def test_compare_sees_a_model_doing_forty_times_the_work():
    small, big = _mlp(layers=1, width=64), _mlp(layers=40, width=64)
    c = compare_models(small, big, input_shapes={"x": (64, 64)}, warmup=1, iterations=12, threads=1,
                       labels=("small", "big"))
    assert c.difference.verdict == "slower" and c.difference.ratio > 2  # per-run overhead keeps it below 40
    gemm = [d for d in c.op_diff if d.op_type in ("Gemm", "FusedGemm")]
    assert gemm and gemm[0].b_kernels == 40 and gemm[0].delta_ms > 0
    assert c.headline().startswith("nodes 4 → 121, latency ")
    d = c.to_dict()
    assert d["difference"]["verdict"] == "slower" and len(d["a"]["latency_runs_ms"]) == 12


def test_bad_input():
    with pytest.raises(UsageError, match="^iterations must be at least 1"):  # the library's terms; the CLI adds "--"
        profile_model(_mlp(), iterations=0)
    with pytest.raises(UsageError, match="ONNX Runtime"):
        compare_models(_mlp(), _mlp(), backend="trt")
    custom = _mlp()
    custom.graph.node[2].op_type, custom.graph.node[2].domain = "MyRelu", "my.ops"
    custom.opset_import.append(helper.make_opsetid("my.ops", 1))
    with pytest.raises(BackendError, match=r"ONNX Runtime \(onnxrt\) cannot load"):
        profile_model(custom, input_shapes={"x": (2, 16)}, iterations=1)


@requires_corpus("cf_loop_if_scripted_legacy_op16.onnx")
def test_loop_body_kernels_are_nested_under_their_parent():
    feeds = [{"x": np.ones((2, 256), np.float32), "n_steps": np.array(3, np.int64)}]
    p = profile_model(CORPUS / "cf_loop_if_scripted_legacy_op16.onnx", samples=feeds, warmup=1, iterations=2, threads=1)
    by = {k.name: k for k in p.kernels}
    assert by["/Loop"].parent is None and by["/If"].parent == "/Loop" and by["/If"].calls == 3
    assert by["/If"].origin == ["/If"]
    assert "Loop" in {g.key for g in p.op_types} and "If" not in {g.key for g in p.op_types}
    body = {g.key: g for g in p.body_op_types}
    assert "If (inside Loop)" in body and body["If (inside Loop)"].median_ms <= by["/Loop"].median_ms
    json.dumps(p.to_dict())  # the report is plain JSON
