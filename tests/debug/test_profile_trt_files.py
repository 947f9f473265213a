"""Readers of trtexec's --exportProfile and --exportLayerInfo files, and the layer → ONNX mapping.

The files are written here byte for byte in the layout TensorRT's writers produce:
``Profiler::exportJSONProfile`` in TensorRT's ``samples/common/sampleReporting.cpp`` for the
profile (``[``, ``  { "count" : N }``, then ``, { "name" : ..., "timeMs" : ..., "averageMs" : ...,
"medianMs" : ..., "percentage" : ... }`` per layer, names not escaped), and the engine
inspector's JSON as in TREx's examples (``resnet.onnx.engine.graph.json``) for layer
information, with the ``Metadata`` field of TensorRT >= 8.6 (``[ONNX Layer: name]`` entries
joined by ``\\x1f``, a local function written as ``| caller (function)``). The layer names
follow TensorRT's naming: ``a + b`` for fused layers, ``PWN(...)`` for pointwise fusions,
``{ForeignNode[first...last]}`` for Myelin, ``Reformatting CopyNode for Input Tensor 0 to X``,
``[profile 1]`` for a second optimization profile, weights and unnamed layers in names.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from helpers import run_cli
from surgeon.debug.profile import read_trt_profile
from surgeon.debug.profile.trt_files import metadata_nodes, parse_profile, read_profile
from surgeon.errors import InputDataError

REL = 1e-9  # shares are ratios of the same numbers the file holds; only float rounding differs


def _model() -> onnx.ModelProto:
    """conv-relu, conv+residual-relu, pool, flatten+fc, SiLU: the node names a PyTorch export gives."""
    w = lambda name, *shape: numpy_helper.from_array(np.full(shape, 0.1, np.float32), name)  # noqa: E731
    nodes = [
        helper.make_node("Conv", ["x", "conv1.weight"], ["c1"], name="/conv1/Conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="/relu1/Relu"),
        helper.make_node("Conv", ["r1", "conv2.weight"], ["c2"], name="/conv2/Conv", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "r1"], ["a2"], name="/add/Add"),
        helper.make_node("Relu", ["a2"], ["r2"], name="/relu2/Relu"),
        helper.make_node("GlobalAveragePool", ["r2"], ["p"], name="/pool/GlobalAveragePool"),
        helper.make_node("Flatten", ["p"], ["f"], name="/flatten/Flatten"),
        helper.make_node("MatMul", ["f", "fc.weight"], ["m"], name="/fc/MatMul"),
        helper.make_node("Add", ["m", "fc.bias"], ["l"], name="/fc/Add"),
        helper.make_node("Sigmoid", ["l"], ["s"], name="/act/Sigmoid"),
        helper.make_node("Mul", ["l", "s"], ["y"], name="/act/Mul"),
    ]
    graph = helper.make_graph(nodes, "net", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
                              [w("conv1.weight", 4, 3, 3, 3), w("conv2.weight", 4, 4, 3, 3), w("fc.weight", 4, 4),
                               w("fc.bias", 4)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


# (layer name, average ms); count = 10 runs, timeMs = 10 x average, medianMs slightly below the average
LAYERS = [
    ("Reformatting CopyNode for Input Tensor 0 to /conv1/Conv + /relu1/Relu", 0.004),
    ("conv1.weight + /conv1/Conv + /relu1/Relu", 0.031),
    ("/conv2/Conv + /add/Add + /relu2/Relu", 0.052),
    ("/pool/GlobalAveragePool", 0.008),
    ("{ForeignNode[/flatten/Flatten.../fc/Add]}", 0.012),
    ("PWN(PWN(/act/Sigmoid), /act/Mul)", 0.006),
    ("(Unnamed Layer* 12) [Shuffle]", 0.0),
]
COUNT = 10


def _profile_text(layers=LAYERS, median=True, suffix="") -> str:
    """Exactly what Profiler::exportJSONProfile writes (C++ stream formatting of floats)."""
    total = sum(avg * COUNT for _, avg in layers)
    lines = ["[", f'  {{ "count" : {COUNT} }}']
    for name, avg in layers:
        rec = f', {{ "name" : "{name}{suffix}", "timeMs" : {avg * COUNT:g}, "averageMs" : {avg:g}'
        if median:
            rec += f', "medianMs" : {avg * 0.9:g}'
        rec += f', "percentage" : {avg * COUNT / total * 100:g} }}'
        lines.append(rec)
    return "\n".join(lines + ["]"]) + "\n"


def _tensor(name, dims, fmt="Row major linear FP32"):
    return {"Name": name, "Location": "Device", "Dimensions": dims, "Format/Datatype": fmt}


def _layer_info(metadata=True) -> str:
    """The engine inspector's JSON (--profilingVerbosity=detailed), as trtexec --exportLayerInfo writes it."""
    sep = "\x1f"
    meta = {
        LAYERS[1][0]: f"[ONNX Layer: /conv1/Conv]{sep}[ONNX Layer: /relu1/Relu]",
        LAYERS[2][0]: f"[ONNX Layer: /conv2/Conv]{sep}[ONNX Layer: /add/Add]{sep}[ONNX Layer: /relu2/Relu]",
        LAYERS[3][0]: "[ONNX Layer: /pool/GlobalAveragePool]",
        LAYERS[4][0]: f"[ONNX Layer: /flatten/Flatten]{sep}[ONNX Layer: /fc/MatMul]{sep}[ONNX Layer: /fc/Add]",
        # a node inside a local function: the caller and the function follow a " | "
        LAYERS[5][0]: f"[ONNX Layer: /act/Sigmoid | /act (SiLU)]{sep}[ONNX Layer: /act/Mul | /act (SiLU)]",
    }
    kinds = {LAYERS[0][0]: ("Reformat", "Reformat"), LAYERS[1][0]: ("CaskConvolution", "Convolution"),
             LAYERS[2][0]: ("CaskConvolution", "Convolution"), LAYERS[3][0]: ("CudnnPooling", "Pooling"),
             LAYERS[4][0]: ("Myelin", None), LAYERS[5][0]: ("PointWiseV2", "PointWise"),
             LAYERS[6][0]: ("NoOp", None)}
    layers = []
    for name, _ in LAYERS:
        layer_type, param = kinds[name]
        rec = {"Name": name, "LayerType": layer_type, "Inputs": [_tensor("in", [1, 4, 8, 8])],
               "Outputs": [_tensor("out", [1, 4, 8, 8])]}
        if param:
            rec["ParameterType"] = param
        if metadata and name in meta:
            rec["Metadata"] = meta[name]
        rec["TacticValue"] = "0x0000000000000000"
        layers.append(rec)
    # the inspector's own layout: {"Layers": [{...},{...}],\n"Bindings": [...]}
    body = ",".join(json.dumps(l, indent=2) for l in layers)
    return '{"Layers": [' + body + '],\n"Bindings": ["x"\n,"y"\n]}\n'


@pytest.fixture
def files(tmp_path):
    model = tmp_path / "net.onnx"
    onnx.save(_model(), model)
    prof = tmp_path / "profile.json"
    prof.write_text(_profile_text())
    layers = tmp_path / "layers.json"
    layers.write_text(_layer_info())
    return model, prof, layers


def test_profile_file_is_read_as_trtexec_wrote_it(files):
    _, prof, _ = files
    p = read_profile(prof)
    assert p.count == COUNT and [l.name for l in p.layers] == [n for n, _ in LAYERS]
    conv = p.layers[2]
    assert conv.average_ms == pytest.approx(0.052, rel=REL) and conv.median_ms == pytest.approx(0.0468, rel=REL)
    assert conv.time_ms == pytest.approx(0.52, rel=REL)


def test_layers_mapped_by_name_without_layer_information(files):
    model, prof, _ = files
    p = read_trt_profile(model, prof)
    by = {k.name: k for k in p.kernels}
    assert by[LAYERS[1][0]].origin == ["/conv1/Conv", "/relu1/Relu"] and by[LAYERS[1][0]].how == "by name"
    assert by[LAYERS[2][0]].origin == ["/conv2/Conv", "/add/Add", "/relu2/Relu"]
    # Myelin region: the nodes from first to last in graph order
    assert by[LAYERS[4][0]].origin == ["/flatten/Flatten", "/fc/MatMul", "/fc/Add"]
    assert by[LAYERS[4][0]].how == "Myelin range"
    assert by[LAYERS[5][0]].origin == ["/act/Sigmoid", "/act/Mul"]
    reformat = by[LAYERS[0][0]]
    assert reformat.origin == [] and reformat.how.startswith("reformat for /conv1/Conv") and reformat.op_type == "Reformat"
    assert by[LAYERS[6][0]].how == "unmapped"
    assert p.removed == []  # every ONNX node is inside some layer
    # medians from the file, no p90 (one figure per layer), shares = trtexec's percentages
    assert by[LAYERS[2][0]].median_ms == pytest.approx(0.0468, rel=REL) and by[LAYERS[2][0]].p90_ms is None
    total = sum(avg for _, avg in LAYERS)
    for name, avg in LAYERS:
        assert by[name].share == pytest.approx(avg / total, rel=1e-6)
    assert any("matched to ONNX nodes by their names only" in n for n in p.notes)


def test_layers_mapped_by_metadata_with_layer_information(files):
    model, prof, layers = files
    p = read_trt_profile(model, prof, layers)
    by = {k.name: k for k in p.kernels}
    conv = by[LAYERS[2][0]]
    assert conv.how == "metadata" and conv.origin == ["/conv2/Conv", "/add/Add", "/relu2/Relu"]
    assert conv.op_type == "Convolution" and conv.detail["LayerType"] == "CaskConvolution"
    silu = by[LAYERS[5][0]]
    assert silu.origin == ["/act/Sigmoid", "/act/Mul"] and silu.how == "metadata"
    ops = {g.key: g for g in p.op_types}
    assert ops["Convolution"].kernels == 2
    assert ops["Convolution"].median_ms == pytest.approx((0.031 + 0.052) * 0.9, rel=REL)
    # the ONNX op types of each layer's origin nodes are kept too
    assert by[LAYERS[4][0]].origin_ops == ["Flatten", "MatMul", "Add"]


def test_metadata_parsing():
    assert metadata_nodes("[ONNX Layer: /a/Conv]\x1f[ONNX Layer: /a/Relu]") == ["/a/Conv", "/a/Relu"]
    assert metadata_nodes("[ONNX Layer: /a/Conv]\x1e[ONNX Layer: /b]") == ["/a/Conv", "/b"]  # TensorRT 8.6 separator
    assert metadata_nodes("[ONNX Layer: /blk/Mul | /blk (Swish) | /top (Block)]") == ["/blk/Mul"]
    assert metadata_nodes("") == []


def test_metadata_names_missing_from_the_model_are_said(tmp_path, files):
    model, prof, _ = files
    info = json.loads(_layer_info())
    info["Layers"][3]["Metadata"] = "[ONNX Layer: /other_model/Pool]"
    layers = tmp_path / "other.json"
    layers.write_text(json.dumps(info))
    k = {k.name: k for k in read_trt_profile(model, prof, layers).kernels}[LAYERS[3][0]]
    assert k.how == "metadata (names not in the model)" and k.origin == ["/other_model/Pool"]


def test_older_profile_without_median_uses_averages(tmp_path, files):
    model, _, _ = files
    prof = tmp_path / "old.json"
    prof.write_text(_profile_text(median=False))
    p = read_trt_profile(model, prof)
    assert p.kernels[0].name == LAYERS[2][0] and p.kernels[0].median_ms == pytest.approx(0.052, rel=REL)
    assert "per-layer average times" in p.notes[0]


def test_unescaped_quote_in_a_layer_name_is_read_line_by_line(tmp_path, files):
    model, _, _ = files
    layers = LAYERS[:3] + [('/pool/GlobalAveragePool "final"', 0.008)]
    text = _profile_text(layers)
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)  # trtexec does not escape names: the file is not valid JSON
    prof = tmp_path / "quoted.json"
    prof.write_text(text)
    p = read_profile(prof)
    assert [l.name for l in p.layers][-1] == '/pool/GlobalAveragePool "final"'
    assert p.layers[-1].median_ms == pytest.approx(0.0072, rel=REL)


def test_second_optimization_profile_and_names_only_layer_information(tmp_path, files):
    model, _, _ = files
    prof = tmp_path / "p1.json"
    prof.write_text(_profile_text(suffix=" [profile 1]"))
    layers = tmp_path / "names_only.json"  # --profilingVerbosity=layer_names_only
    layers.write_text(json.dumps({"Layers": [n for n, _ in LAYERS], "Bindings": ["x", "y"]}))
    p = read_trt_profile(model, prof, layers)
    by = {k.name: k for k in p.kernels}
    assert by[LAYERS[2][0] + " [profile 1]"].origin == ["/conv2/Conv", "/add/Add", "/relu2/Relu"]
    assert any("no ONNX metadata" in n for n in p.notes)


@pytest.mark.parametrize("content, reason", [
    (lambda: _layer_info(), "it is layer information (--exportLayerInfo); give it with --trt-layers"),
    (lambda: json.dumps([{"startMs": 0.1, "endMs": 0.4, "latencyMs": 0.3}]), "timing trace (--exportTimes)"),
    (lambda: json.dumps([{"cat": "Node", "ph": "X", "name": "a_kernel_time"}]), "ONNX Runtime's profiler trace"),
    (lambda: json.dumps([{"name": "a", "timeMs": 1}]), "the first record must be"),
    (lambda: json.dumps([{"count": 3}, {"name": "a", "timeMs": 1.0, "percentage": 100}]), "record 1 has no number 'averageMs'"),
    (lambda: "not json at all", "does not start with trtexec's"),
    (lambda: json.dumps({"count": 3}), "expected a JSON list"),
])
def test_not_a_trtexec_profile(tmp_path, content, reason):
    path = tmp_path / "bad.json"
    path.write_text(content())
    with pytest.raises(InputDataError, match="is not a trtexec --exportProfile file") as err:
        read_profile(path)
    assert reason in str(err.value)


def test_parse_profile_accepts_zero_time_layers():
    p = parse_profile([{"count": 1}, {"name": "copied_squeeze", "timeMs": 0, "averageMs": 0, "medianMs": 0,
                                      "percentage": 0}])
    assert p.layers[0].median_ms == 0.0


def test_cli_reads_trtexec_files_and_rejects_a_wrong_one(tmp_path, files):
    model, prof, layers = files
    report = tmp_path / "r.json"
    r = run_cli("profile", str(model), "--trt-profile", str(prof), "--trt-layers", str(layers), "--report", str(report))
    assert r.returncode == 0, r.stderr
    assert "Convolution" in r.stdout and "7 kernels ran for 11 ONNX nodes" in r.stdout.replace("\n", " ")
    data = json.loads(report.read_text())
    assert data["source"].startswith("trtexec --exportProfile") and data["latency"] is None
    k = {k["name"]: k for k in data["kernels"]}["/conv2/Conv + /add/Add + /relu2/Relu"]
    assert k["origin"] == ["/conv2/Conv", "/add/Add", "/relu2/Relu"] and k["how"] == "metadata"
    bad = run_cli("profile", str(model), "--trt-profile", str(layers))
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.strip().count("\n") == 0 and "is not a trtexec --exportProfile file" in bad.stderr


def test_per_run_layer_times_as_the_iprofiler_reports_them():
    """The --backend trt adapter's parent side: per-run (layer, ms) lists from IProfiler.report_layer_time
    plus the engine inspector's JSON give medians, p90 and exact origins (the worker itself needs a GPU)."""
    from surgeon.debug.profile.trt_files import parse_layer_info, profile_from_layers

    times = [0.10, 0.12, 0.11, 0.30, 0.10]  # per run, for the residual conv layer; one slow run
    runs = [[(LAYERS[1][0], 0.05), (LAYERS[2][0], t)] for t in times]
    layers = parse_layer_info(json.loads(_layer_info()), "inspector")
    p = profile_from_layers("net", _model(), runs, layers, "TensorRT IProfiler via Polygraphy's TrtRunner")
    conv = {k.name: k for k in p.kernels}[LAYERS[2][0]]
    assert conv.median_ms == pytest.approx(0.11, rel=REL)
    assert conv.p90_ms == pytest.approx(float(np.percentile(times, 90)), rel=REL) and conv.p90_ms > 0.2
    assert conv.share == pytest.approx(sum(times) / (sum(times) + 0.25), rel=1e-9)
    assert conv.how == "metadata" and conv.origin == ["/conv2/Conv", "/add/Add", "/relu2/Relu"]
    # nodes no profiled layer covers are listed (here: everything after the second layer)
    assert ("/pool/GlobalAveragePool", "GlobalAveragePool") in p.removed and ("/conv1/Conv", "Conv") not in p.removed
