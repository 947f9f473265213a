"""replace-custom-ops: contrib-op lowering, LayerNorm fusion, user plugin rules, pipeline, CLI.

ONNX Runtime runs the com.microsoft contrib kernels, so every lowering is checked
numerically against them, at several batch sizes. Tolerances: float32 formulas that
reorder a few operations agree to ~1e-6; FastGelu's kernel uses a tanh approximation,
so it gets atol 1e-5.
"""

import json

import numpy as np
import onnx
import pytest

import helpers
import surgeon
from helpers import CORPUS, FIXTURES, model_from_text, requires_corpus, run_cli, run_ort
from passes.replace_custom_ops import ReplaceCustomOps
from surgeon import graph as G

SIZES = (1, 3, 6)


def _run(model, **options):
    return helpers.run_pass(ReplaceCustomOps, model, options=options)


def _feeds(model, batch, seed, scale=3.0):
    rng = np.random.default_rng(seed)
    feeds = {}
    for vi in model.graph.input:
        dims = [batch if d.dim_param else d.dim_value for d in vi.type.tensor_type.shape.dim]
        feeds[vi.name] = (rng.uniform(-1, 1, dims) * scale).astype(np.float32)
    return feeds


def _equal(a, b, atol, rtol):
    for i, n in enumerate(SIZES):
        feeds = _feeds(a, n, i)
        ra, rb = run_ort(a, feeds), run_ort(b, feeds)
        assert list(ra) == list(rb)
        for k in ra:
            np.testing.assert_allclose(rb[k], ra[k], atol=atol, rtol=rtol, err_msg=f"{k} at batch {n}")


def _ms(opset, body, inputs="float[N,8] x", outputs="float[N,8] y"):
    return model_from_text(f'''<ir_version: 9, opset_import: ["" : {opset}, "com.microsoft" : 1]>
    g ({inputs}) => ({outputs}) {{ {body} }}''')


CONTRIB = [
    # (name, body, extra inputs, expected standard ops at opset 17, at opset 20, atol)
    ("gelu", "y = com.microsoft.Gelu(x)", "", {"Erf"}, {"Gelu"}, 1e-6),
    ("bias-gelu", "y = com.microsoft.BiasGelu(x, b)", ", float[8] b", {"Erf"}, {"Gelu"}, 1e-6),
    ("fast-gelu", "y = com.microsoft.FastGelu(x, b)", ", float[8] b", {"Tanh"}, {"Gelu"}, 1e-5),
    ("fast-gelu-nobias", "y = com.microsoft.FastGelu(x)", "", {"Tanh"}, {"Gelu"}, 1e-5),
    ("quick-gelu", "y = com.microsoft.QuickGelu<alpha=1.5>(x)", "", {"Sigmoid"}, {"Sigmoid"}, 1e-6),
]


@pytest.mark.parametrize("opset", [17, 20])
@pytest.mark.parametrize("name,body,extra,ops17,ops20,atol", CONTRIB, ids=[c[0] for c in CONTRIB])
def test_contrib_lowering_matches_ort_kernels(opset, name, body, extra, ops17, ops20, atol):
    m = _ms(opset, body, "float[N,8] x" + extra)
    out, log = _run(m)
    assert out is not None and sum(log.counts.values()) == 1
    ops = set(G.op_histogram(out))
    assert not any("::" in o for o in ops), ops
    assert (ops17 if opset < 20 else ops20) <= ops
    if name.startswith("fast-gelu"):
        assert "Erf" not in ops  # FastGelu is the tanh formula
        if opset >= 20:
            assert [a.s for n in out.graph.node if n.op_type == "Gelu" for a in n.attribute] == [b"tanh"]
    onnx.checker.check_model(out, full_check=True)
    _equal(m, out, atol=atol, rtol=1e-5)


def test_bias_add_against_its_definition():
    # ORT has no CPU kernel for BiasAdd: check against the documented formula X + bias + skip
    m = _ms(17, "y = com.microsoft.BiasAdd(x, b, s)", "float[N,4,8] x, float[8] b, float[N,4,8] s", "float[N,4,8] y")
    out, log = _run(m)
    assert log.counts == {"ms-bias-add": 1}
    for i, n in enumerate(SIZES):
        f = _feeds(m, n, i)
        np.testing.assert_allclose(run_ort(out, f)["y"], f["x"] + f["b"] + f["s"], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("act,params,opset", [
    ("Relu", None, 17), ("Sigmoid", None, 17), ("Tanh", None, 17), ("LeakyRelu", [0.2], 17),
    ("HardSigmoid", [0.3, 0.4], 17), ("Clip", [-0.5, 0.6], 17), ("Clip", [-0.5, 0.6], 10), (None, None, 17),
])
def test_fused_conv(act, params, opset):
    attrs = [f'activation = "{act}"'] if act else []
    if params:
        attrs.append(f"activation_params = [{', '.join(str(p) for p in params)}]")
    attrs.append("pads = [1, 1, 1, 1]")
    m = model_from_text(f'''<ir_version: 8, opset_import: ["" : {opset}, "com.microsoft" : 1]>
    g (float[N,2,5,5] x, float[3,2,3,3] w, float[3] b) => (float[N,3,5,5] y) {{
      y = com.microsoft.FusedConv<{", ".join(attrs)}>(x, w, b)
    }}''')
    out, log = _run(m)
    assert log.counts == {"ms-fused-conv": 1}
    assert [n.op_type for n in out.graph.node] == ["Conv"] + ([act] if act else [])
    _equal(m, out, atol=1e-5, rtol=1e-5)


def test_fused_conv_with_sum_input_z():
    m = model_from_text('''<ir_version: 8, opset_import: ["" : 17, "com.microsoft" : 1]>
    g (float[N,2,5,5] x, float[3,2,3,3] w, float[3] b, float[N,3,3,3] z) => (float[N,3,3,3] y) {
      y = com.microsoft.FusedConv<activation = "Relu">(x, w, b, z)
    }''')
    out, _ = _run(m)
    assert [n.op_type for n in out.graph.node] == ["Conv", "Add", "Relu"]
    _equal(m, out, atol=1e-5, rtol=1e-5)


def test_fused_conv_unknown_activation_refused():
    m = model_from_text('''<ir_version: 8, opset_import: ["" : 17, "com.microsoft" : 1]>
    g (float[N,2,5,5] x, float[3,2,3,3] w) => (float[N,3,3,3] y) {
      y = com.microsoft.FusedConv<activation = "Swish">(x, w)
    }''')
    out, log = _run(m)
    assert out is None
    assert any("activation 'Swish' has no standard-op lowering" in n for n in log.notes)
    assert "untouched custom op: com.microsoft::FusedConv x1" in log.notes


SLN = '''y, m, v, s = com.microsoft.SkipLayerNormalization<epsilon = 1e-5>(x, skip, gamma, beta{bias})'''


@pytest.mark.parametrize("opset,fused", [(16, False), (17, True)])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("use_sum", [False, True])
def test_skip_layer_norm(opset, fused, with_bias, use_sum):
    outs = "float[N,4,8] y" + (", float[N,4,8] s" if use_sum else "")
    body = SLN.format(bias=", bias" if with_bias else "").replace("y, m, v, s", "y, m, v, s" if use_sum else "y")
    m = _ms(opset, body, "float[N,4,8] x, float[N,4,8] skip, float[8] gamma, float[8] beta"
            + (", float[8] bias" if with_bias else ""), outs)
    out, log = _run(m)
    assert log.counts == {"ms-skip-layer-norm": 1}
    ops = G.op_histogram(out)
    assert ("LayerNormalization" in ops) == fused and ("ReduceMean" in ops) == (not fused)
    assert [o.name for o in out.graph.output] == [o.name for o in m.graph.output]
    _equal(m, out, atol=2e-5, rtol=1e-5)


def test_skip_layer_norm_statistics_output_refused():
    m = _ms(17, "y, mean = com.microsoft.SkipLayerNormalization(x, skip, gamma)",
            "float[N,4,8] x, float[N,4,8] skip, float[8] gamma", "float[N,4,8] y, float[N,4,1] mean")
    out, log = _run(m)
    assert out is None and any("uses output 1 (mean)" in n for n in log.notes)


def _decomposed_ln(opset, axis=-1, rank_dims="N,4,8", gamma_shape="8", pow_exp="2.0"):
    axes_attr = opset < 18
    rm = (f"ReduceMean<axes = [{axis}]>" if axes_attr else "ReduceMean")
    ax = "" if axes_attr else ", axes"
    init = "" if axes_attr else f", int64[1] axes = {{{axis}}}"
    g = ", ".join(["1"] * (len(gamma_shape.split(",")) - 1) + [gamma_shape.split(",")[-1]])
    return model_from_text(f'''<ir_version: 9, opset_import: ["" : {opset}]>
    g (float[{rank_dims}] x) => (float[{rank_dims}] y)
      <float e = {{1e-5}}, float p = {{{pow_exp}}}, float[{g}] gamma = {{{", ".join(["1.5"] * int(g.split(",")[-1]))}}},
       float[{g}] beta = {{{", ".join(["0.25"] * int(g.split(",")[-1]))}}}{init}> {{
      mean = {rm}(x{ax})
      d = Sub(x, mean)
      sq = Pow(d, p)
      var = {rm}(sq{ax})
      ve = Add(var, e)
      std = Sqrt(ve)
      n = Div(d, std)
      sc = Mul(n, gamma)
      y = Add(sc, beta)
    }}''')


@pytest.mark.parametrize("opset", [17, 18, 21])
@pytest.mark.parametrize("axis", [-1, 2])
def test_layer_norm_fused_over_last_axis(opset, axis):
    m = _decomposed_ln(opset, axis)
    out, log = _run(m)
    assert log.counts == {"fuse-layer-norm": 1}
    assert [n.op_type for n in out.graph.node] == ["LayerNormalization"]
    node = out.graph.node[0]
    assert list(node.input[:1]) == ["x"] and list(node.output) == ["y"]
    assert {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}["axis"] == -1
    assert not [i for i in out.graph.initializer if i.name in ("p", "e", "axes")]
    _equal(m, out, atol=1e-5, rtol=1e-5)


def _gamma_over_axis_1():
    m = _decomposed_ln(17, rank_dims="N,8,4", gamma_shape="4")
    gamma = [i for i in m.graph.initializer if i.name == "gamma"][0]
    gamma.CopyFrom(onnx.numpy_helper.from_array(np.linspace(0.5, 1.5, 8, dtype=np.float32).reshape(8, 1), "gamma"))
    return m


@pytest.mark.parametrize("model,reason", [
    (lambda: _decomposed_ln(16), "opset 16 has no LayerNormalization"),
    (lambda: _decomposed_ln(17, axis=1), "reduces over axis 1, not the last axis of a rank-3 input"),
    (lambda: _decomposed_ln(18, axis=1), "reduces over axis 1, not the last axis"),
    (lambda: _decomposed_ln(17, pow_exp="3.0"), "exponent is not the constant 2"),
    (lambda: _gamma_over_axis_1(), "must vary over the last axis only"),
])
def test_layer_norm_not_fused(model, reason):
    m = model()
    out, log = _run(m)
    assert out is None
    assert any(reason in n for n in log.notes), log.notes


def test_quantized_structure_left_intact():
    m = model_from_text('''<ir_version: 8, opset_import: ["" : 17, "com.microsoft" : 1]>
    g (float[N,8] x) => (float[N,8] y) <float s = {0.05}, uint8 z = {128}> {
      q = QuantizeLinear(x, s, z)
      dq = DequantizeLinear(q, s, z)
      g = com.microsoft.Gelu(dq)
      q2 = QuantizeLinear(g, s, z)
      y = DequantizeLinear(q2, s, z)
    }''')
    out, _ = _run(m)
    ops = G.op_histogram(out)
    assert ops["QuantizeLinear"] == 2 and ops["DequantizeLinear"] == 2 and "com.microsoft::Gelu" not in ops
    qdq = [(n.op_type, list(n.input), list(n.output)) for n in out.graph.node if "Linear" in n.op_type]
    assert qdq == [(n.op_type, list(n.input), list(n.output)) for n in m.graph.node if "Linear" in n.op_type]
    _equal(m, out, atol=1e-6, rtol=0)


def test_builtin_packs_can_be_turned_off():
    m = _ms(17, "y = com.microsoft.Gelu(x)")
    out, log = _run(m, builtin_rules=False)
    assert out is None and "untouched custom op: com.microsoft::Gelu x1" in log.notes


# --- through the verified pipeline ------------------------------------------------------------

def test_pipeline_lets_declared_plugin_through_with_note():
    m = surgeon.load(FIXTURES / "custom_ops_groupnorm.onnx")
    out, report = surgeon.fix(m, ["replace-custom-ops"], options={"rules": [str(FIXTURES / "rules" / "trt_plugin_rules.py")]})
    p = report.passes[0]
    assert p.status == "applied" and p.counts == {"trt-group-norm-plugin": 1}
    assert any("numeric verification was not possible" in n and "GroupNormalizationPlugin" in n for n in p.notes)
    assert any("gn1/reshape_in: rule trt-group-norm-plugin refused: InstanceNormalization has its own scale/bias" in n
               for n in p.notes)
    assert "structural" in report.verification
    plugin = [n for n in out.graph.node if n.domain == "trt.plugins"]
    assert len(plugin) == 1 and plugin[0].output[0] == "gn0.out"
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in plugin[0].attribute}
    assert attrs["num_groups"] == 2 and attrs["eps"] == pytest.approx(1e-5)
    inferred = onnx.shape_inference.infer_shapes(out)
    assert {v.name for v in inferred.graph.value_info} >= {"gn0.out", "gn0.act", "gn1.out"}


def test_pipeline_rolls_back_broken_standard_rewrite(tmp_path):
    rules = tmp_path / "wrong.py"
    rules.write_text(
        "from surgeon.rewrite import Op, rule\n"
        "RULES = [rule('relu-is-abs', Op('Relu'), lambda m, b: [b.op('Abs', [m.inputs[0]])])]\n")
    m = surgeon.load(FIXTURES / "custom_ops_groupnorm.onnx")
    out, report = surgeon.fix(m, ["replace-custom-ops"], options={"rules": [str(rules)]})
    assert report.passes[0].status == "rolled-back" and "differs" in report.passes[0].reason
    assert out.SerializeToString() == m.SerializeToString()


def test_pipeline_rolls_back_undeclared_unknown_op(tmp_path):
    # a custom-domain node the engine did not make cannot slip through: the pass is honest,
    # but a rule emitting a *standard-domain* op ORT cannot run is still a failure
    rules = tmp_path / "bogus.py"
    rules.write_text(
        "from surgeon.rewrite import Op, rule\n"
        "RULES = [rule('relu-bogus', Op('Relu'), lambda m, b: [b.op('NoSuchOp', [m.inputs[0]])])]\n")
    m = surgeon.load(FIXTURES / "custom_ops_groupnorm.onnx")
    out, report = surgeon.fix(m, ["replace-custom-ops"], options={"rules": [str(rules)]})
    assert report.passes[0].status == "rolled-back"


def test_cli_match_lists_and_writes_nothing(tmp_path):
    model = FIXTURES / "custom_ops_groupnorm.onnx"
    before = model.read_bytes()
    rep = tmp_path / "m.json"
    proc = run_cli("match", str(model), "--rules", str(FIXTURES / "rules" / "trt_plugin_rules.py"), "--report", str(rep))
    assert proc.returncode == 0, proc.stderr
    assert "1 replacement(s), 1 refusal(s)" in proc.stdout
    data = json.loads(rep.read_text())
    found = {(f["node"], f["status"]) for f in data["findings"]}
    assert found == {("gn0/reshape_in", "replace"), ("gn1/reshape_in", "refused")}
    assert [f["outputs"] for f in data["findings"] if f["status"] == "replace"] == [["gn0.out"]]
    assert model.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_cli_fix_contrib_fixture_all_standard(tmp_path):
    out = tmp_path / "o.onnx"
    proc = run_cli("fix", str(FIXTURES / "custom_ops_contrib.onnx"), "-o", str(out), "--passes", "replace-custom-ops")
    assert proc.returncode == 0, proc.stderr
    m = onnx.load(str(out))
    assert not [n for n in m.graph.node if n.domain not in ("", "ai.onnx")]
    assert G.op_histogram(m)["LayerNormalization"] == 2  # SkipLayerNorm + the decomposed one
    src = onnx.load(str(FIXTURES / "custom_ops_contrib.onnx"))
    _equal(src, m, atol=2e-5, rtol=1e-5)


@requires_corpus("silero_vad_v6.onnx")
def test_corpus_silero_nothing_to_replace_and_untouched():
    m = surgeon.load(CORPUS / "silero_vad_v6.onnx")
    out, log = _run(m)
    assert out is None and not log.counts
    assert not [n for n in log.notes if n.startswith("untouched custom op")]


def test_layernorm_with_an_overridable_epsilon_is_not_fused():
    """Fuzz finding replace-custom-ops/001 (branch kernel-fuzz): the epsilon of a decomposed LayerNorm is
    an initializer listed as a graph input (IR 8). Fusing baked the default into the attribute and the
    user's value was ignored (outputs off by 1.04). The one constant reader refuses it; the note says why."""
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("ReduceMean", ["x"], ["mean"], axes=[-1]), helper.make_node("Sub", ["x", "mean"], ["d"]),
             helper.make_node("Pow", ["d", "two"], ["sq"]), helper.make_node("ReduceMean", ["sq"], ["var"], axes=[-1]),
             helper.make_node("Add", ["var", "eps"], ["ve"]), helper.make_node("Sqrt", ["ve"], ["std"]),
             helper.make_node("Div", ["d", "std"], ["n"]), helper.make_node("Mul", ["n", "gamma"], ["g"]),
             helper.make_node("Add", ["g", "beta"], ["y"], name="ln_out")]
    inits = [numpy_helper.from_array(np.float32(2.0), "two"), numpy_helper.from_array(np.float32(1e-5), "eps"),
             numpy_helper.from_array(np.ones(6, np.float32), "gamma"), numpy_helper.from_array(np.zeros(6, np.float32), "beta")]
    g = helper.make_graph(nodes, "ln", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 5, 6]),
                                        helper.make_tensor_value_info("eps", TensorProto.FLOAT, [])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5, 6])], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    out, report = surgeon.fix(model, verify=False)
    assert "LayerNormalization" not in [n.op_type for n in out.graph.node]
    assert [i.name for i in out.graph.input] == ["x", "eps"]
    assert any("epsilon is not a scalar constant" in n for p in report.passes for n in p.notes)
    x = np.random.default_rng(0).uniform(-1, 1, (3, 5, 6)).astype(np.float32)
    for eps in (1e-5, 0.5):
        feeds = {"x": x, "eps": np.array(eps, np.float32)}
        np.testing.assert_allclose(run_ort(out, feeds)["y"], run_ort(model, feeds)["y"], atol=1e-6, rtol=1e-6)
