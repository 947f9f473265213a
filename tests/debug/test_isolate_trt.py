"""isolate --target trt-tactics: the pure parts on data in TensorRT's and Polygraphy's real
formats (verbose autotuning log, engine inspector JSON, tactic replay JSON), and the
search over tactic choices with a fake build oracle. The TensorRT-facing part runs only
where `tensorrt` imports."""

import json

import pytest

from surgeon.debug.isolate import trt_tactics as T
from surgeon.debug.isolate.ddmin import Verdict, isolate

# Lines as TensorRT 10.8+ prints them at kVERBOSE (see the sampleEditableTimingCache README).
LOG = """[V] [TRT] Autotuning op matMul1(key: 0x1814870c44ff0f8574df6e3dda04cbd7):
[V] [TRT] Sorted table of all evaluated tactics:
[V] [TRT] tactic_id, cost(in ms), cost/fastest_cost, prediction_correlation, kernel_name, tactic_hash, tunable_parameter
[V] [TRT]    3, 0.0112640, 1.00000, 0.50673, sm80_xmma_gemm_f32f32_tf32f32_f32_nn_n_tilesize64x64x32, 0x9f3a1b2c3d4e5f60, 
[V] [TRT]    1, 0.0133120, 1.18182, 0.47000, sm80_xmma_gemm_f32f32_f32f32_f32_nn_n_tilesize128x128x8, 0x0a0b0c0d0e0f1011, 
[V] [TRT] The selected tactic is (tactic hash, cost(in ms)):0x9f3a1b2c3d4e5f60, 0.0112640
[V] [TRT] Some unrelated message
[V] [TRT] Autotuning op matMul2(key: 0x2a2b2c2d2e2f30313233343536373839):
[V] [TRT] tactic_id, cost(in ms), cost/fastest_cost, prediction_correlation, kernel_name, tactic_hash, tunable_parameter
[V] [TRT]    0, 0.0051200, 1.00000, 0.88300, sm86_xmma_gemm_a, 0x00000000533a71ce, 
[V] [TRT]    2, 0.0060000, 1.17188, 0.80000, sm86_xmma_gemm_b, 0x00000000aaaa0001, 
[V] [TRT] The selected tactic is (tactic hash, cost(in ms)):0x00000000533a71ce, 0.0051200
""".splitlines()

INSPECTOR = {
    "Layers": [
        {"Name": "matMul1_myl0_1", "LayerType": "gemm", "TacticName": "sm80_xmma_gemm_f32f32_tf32f32_f32_nn_n_tilesize64x64x32",
         "TacticValue": "0x9f3a1b2c3d4e5f60", "StreamId": 0, "Metadata": "[ONNX Layer: /fc1/MatMul]"},
        {"Name": "softmax", "LayerType": "SoftMax", "TacticValue": "0x0000000000000000", "Metadata": ""},
        {"Name": "matMul2_myl0_3", "LayerType": "gemm", "TacticName": "sm86_xmma_gemm_a", "TacticValue": "0x533a71ce",
         "Metadata": "[ONNX Layer: /fc2/MatMul]\x1e[ONNX Layer: /fc2/Add]"},
    ],
    "Bindings": ["input", "output"],
}


def _algo(impl, tactic):
    info = {"dtype": "DataType.FLOAT", "strides": [4, 1], "vectorized_dim": -1, "components_per_element": -1,
            "polygraphy_class": "TensorInfo"}
    return {"implementation": impl, "tactic": tactic, "inputs": [info], "outputs": [info], "polygraphy_class": "Algorithm"}


def _replay(**layers):
    return json.dumps({"replay": {k: _algo(*v) for k, v in layers.items()}, "polygraphy_class": "TacticReplayData"})


def test_mechanism_follows_the_version():
    assert T.mechanism_for("10.8.0.43") == T.EDITABLE_CACHE
    assert T.mechanism_for("10.13.3") == T.EDITABLE_CACHE
    assert T.mechanism_for("11.0.0") == T.EDITABLE_CACHE
    assert T.mechanism_for("10.7.0") == T.TACTIC_REPLAY
    assert T.mechanism_for("8.6.1") == T.TACTIC_REPLAY


def test_autotuning_log_parser():
    recs = T.parse_autotuning_log(LOG)
    assert list(recs) == ["matMul1", "matMul2"]
    r = recs["matMul1"]
    assert r.key == "0x1814870c44ff0f8574df6e3dda04cbd7"
    assert r.selected == "0x9f3a1b2c3d4e5f60"
    assert r.alternative() == "0x0a0b0c0d0e0f1011"
    assert [k for _, k in r.tactics][1].endswith("tilesize128x128x8")


def test_inspector_json_and_flag_matching():
    layers = T.parse_inspector_json(json.dumps(INSPECTOR))
    assert layers[0].onnx_nodes == ("/fc1/MatMul",)
    assert layers[2].onnx_nodes == ("/fc2/MatMul", "/fc2/Add")
    recs = T.parse_autotuning_log(LOG)
    assert T.match_ops(recs, layers, []) == ["matMul1", "matMul2"]
    assert T.match_ops(recs, layers, ["matMul2"]) == ["matMul2"]
    assert T.parse_inspector_json({"Layers": ["a", "b"]})[1].name == "b"  # LAYER_NAMES_ONLY form


def test_cache_edits_switch_only_ops_outside_the_subset():
    recs = T.parse_autotuning_log(LOG)
    choices = ["matMul1", "matMul2"]
    assert T.cache_edits(recs, choices, (0,)) == {"0x2a2b2c2d2e2f30313233343536373839": "0x00000000aaaa0001"}
    assert T.cache_edits(recs, choices, (0, 1)) == {}


def test_replay_roundtrip_in_polygraphy_format():
    text = _replay(conv1=(1, 10), conv2=(2, 20))
    replay = T.load_replay(text)
    again = T.load_replay(T.dump_replay(replay))
    assert again == replay
    doc = json.loads(T.dump_replay(replay))
    assert doc["polygraphy_class"] == "TacticReplayData"
    assert doc["replay"]["conv1"]["polygraphy_class"] == "Algorithm"


def test_diff_never_blames_a_tactic_a_good_build_also_used():
    good = [T.load_replay(_replay(conv1=(1, 10), conv2=(2, 20), conv3=(3, 30))),
            T.load_replay(_replay(conv1=(1, 11), conv2=(2, 21), conv3=(3, 30)))]
    bad = [T.load_replay(_replay(conv1=(1, 11), conv2=(2, 22), conv3=(3, 30)))]  # conv1's 11 is in a good build
    sus = T.suspects(good, bad)
    assert set(sus) == {"conv2"}
    plain_set_difference = {k for k, v in bad[0].items() if v != good[0][k]}
    assert plain_set_difference == {"conv1", "conv2"}  # what a naive diff against one good build would blame


def test_search_over_replay_candidates_with_a_fake_build():
    good = T.load_replay(_replay(**{f"l{i}": (1, i) for i in range(40)}))
    bad = T.load_replay(_replay(**{f"l{i}": (1, i + (100 if i in (7, 29) else 0)) for i in range(40)}))
    choices = sorted(T.suspects([good], [bad]))
    assert choices == ["l29", "l7"]

    def build(subset):  # the engine breaks only when l7's bad tactic runs
        replay = T.replay_candidate(bad, good, choices, subset)
        return Verdict.FAIL if replay["l7"].tactic == 107 else Verdict.PASS

    result = isolate(len(choices), build)
    assert [choices[i] for s in result.culprit_sets for i in s] == ["l7"]


def test_missing_tensorrt_is_one_clear_sentence():
    pytest.importorskip("polygraphy")
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(T.BackendUnavailableError, match="needs TensorRT"):
            T.tensorrt_version()
    else:
        assert T.tensorrt_version()


def test_trt_target_builds_where_tensorrt_imports():
    pytest.importorskip("tensorrt", reason="TensorRT is not installed here (needs NVIDIA's wheel and a GPU)")
    from onnx import helper

    from surgeon import input_data
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [helper.make_tensor_value_info("x", 1, [1, 8])],
                          [helper.make_tensor_value_info("y", 1, [1, 8])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    samples = input_data.make_samples(model)
    target = T.TrtTacticsTarget(model, samples, reference_outputs=[{"y": s["x"].clip(0)} for s in samples],
                                compare=lambda r, o: abs(r["y"] - o["y"]).max() <= 1e-6)
    assert target.kind == T.mechanism_for(target.version)
