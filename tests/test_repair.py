"""The one lenient open (surgeon.repair through surgeon.model): every command opens a model the
checker rejects for reasons that do not touch the computation, repaired in memory, the file untouched."""

from __future__ import annotations

import logging

import numpy as np
import onnx
import pytest
from onnx import helper

import cli
from helpers import run_ort
from surgeon import model as model_io
from surgeon import repair
from surgeon.errors import ModelLoadError


def _broken(opsets=(17, 17)) -> onnx.ModelProto:
    """Nodes out of order, two nodes named 'n', a third unnamed, a duplicated opset import."""
    nodes = [helper.make_node("Relu", ["a"], ["b"], name="n"), helper.make_node("Sigmoid", ["x"], ["a"], name="n"),
             helper.make_node("Neg", ["b"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", 1, [2, 4])],
                          [helper.make_tensor_value_info("y", 1, [2, 4])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", v) for v in opsets], ir_version=8)


def test_repair_counts_what_it_did_and_the_result_passes_the_checker():
    m = _broken()
    with pytest.raises(onnx.checker.ValidationError):
        onnx.checker.check_model(m)
    done = repair.repair(m)
    assert done == {repair.SORTED: 1, repair.DUPLICATE_NAME: 1, repair.UNNAMED: 1, repair.DUPLICATE_IMPORT: 1}
    onnx.checker.check_model(m, full_check=True)
    assert [n.op_type for n in m.graph.node] == ["Sigmoid", "Relu", "Neg"]
    assert len({n.name for n in m.graph.node}) == 3 and all(n.name for n in m.graph.node)
    x = np.linspace(-2, 2, 8, dtype=np.float32).reshape(2, 4)
    np.testing.assert_allclose(run_ort(m, {"x": x})["y"], -np.maximum(1 / (1 + np.exp(-x)), 0), atol=1e-6, rtol=1e-6)
    assert repair.repair(m) == {}  # a repaired model needs nothing more


def test_sorting_keeps_a_sorted_graph_and_respects_what_bodies_read():
    # the If reads 'c' from the outer scope: it must come after c's producer although no input names it
    then = helper.make_graph([helper.make_node("Identity", ["c"], ["t"], name="ti")], "then", [],
                             [helper.make_tensor_value_info("t", 1, [2])])
    other = helper.make_graph([helper.make_node("Neg", ["c"], ["e"], name="en")], "else", [],
                              [helper.make_tensor_value_info("e", 1, [2])])
    nodes = [helper.make_node("If", ["cond"], ["y"], name="if", then_branch=then, else_branch=other),
             helper.make_node("Abs", ["x"], ["c"], name="abs")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", 1, [2]),
                                       helper.make_tensor_value_info("cond", onnx.TensorProto.BOOL, [])],
                          [helper.make_tensor_value_info("y", 1, [2])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    assert repair.repair(m) == {repair.SORTED: 1}
    assert [n.name for n in m.graph.node] == ["abs", "if"]
    onnx.checker.check_model(m, full_check=True)


def test_custom_domain_gets_an_import_and_an_onnx_domain_is_not_guessed():
    g = helper.make_graph([helper.make_node("Foo", ["x"], ["y"], domain="my.ops", name="foo")], "g",
                          [helper.make_tensor_value_info("x", 1, [2])], [helper.make_tensor_value_info("y", 1, [2])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    assert repair.repair(m) == {repair.MISSING_IMPORT: 1}
    assert {(o.domain, o.version) for o in m.opset_import} == {("", 17), ("my.ops", 1)}
    ml = helper.make_model(helper.make_graph([helper.make_node("Normalizer", ["x"], ["y"], domain="ai.onnx.ml", name="nz")],
                                             "g", [helper.make_tensor_value_info("x", 1, [1, 2])],
                                             [helper.make_tensor_value_info("y", 1, [1, 2])]),
                           opset_imports=[helper.make_opsetid("", 17)])
    assert repair.repair(ml) == {}


def test_load_repairs_in_memory_warns_once_and_leaves_the_file_alone(tmp_path, caplog):
    path = tmp_path / "m.onnx"
    path.write_bytes(_broken().SerializeToString())
    before = path.read_bytes()
    with caplog.at_level(logging.WARNING, logger="surgeon.model"):
        m = model_io.load(path)
    onnx.checker.check_model(m, full_check=True)
    assert path.read_bytes() == before
    (record,) = [r for r in caplog.records if r.name == "surgeon.model"]
    assert "repaired in memory (the file is unchanged)" in record.getMessage()
    assert "graph sorted topologically" in record.getMessage()
    opened = model_io.open_model(path)
    assert opened.repairs[repair.SORTED] == 1
    assert path.read_bytes() == before


def test_a_cycle_is_refused_with_one_sentence(tmp_path):
    nodes = [helper.make_node("Relu", ["b"], ["a"], name="r"), helper.make_node("Neg", ["a"], ["b"], name="n")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", 1, [2])], [helper.make_tensor_value_info("a", 1, [2])])
    path = tmp_path / "c.onnx"
    path.write_bytes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    for opener in (model_io.load, model_io.open_model):
        with pytest.raises(ModelLoadError, match=r"cannot be opened: the nodes of graph 'g' form a cycle \(through r, n\)"):
            opener(path)


# Every command that opens a model, with the arguments that keep it short. Each must get
# past opening the model (exit 0 or 1, a verdict), never exit 2 with the checker's sentence.
_COMMANDS = {
    "fix --passes": ["fix", "{m}", "-o", "{d}/fixed.onnx", "--passes", "fold-constants", "--strict"],
    "compare": ["compare", "{m}", "--test", "onnxrt-noopt"],
    "doctor": ["doctor", "{m}", "-o", "{d}/doctor.onnx"],
    "bisect": ["bisect", "{m}", "--test", "onnxrt-noopt", "-o", "{d}/bisect"],
    "scan": ["scan", "{m}"],
    "isolate": ["isolate", "{m}", "--target", "onnxrt-optimizers", "-o", "{d}/isolate"],
    "profile": ["profile", "{m}", "--iterations", "2", "--warmup", "0"],
    "match": ["match", "{m}"],
    "fp16": ["fp16", "{m}", "-o", "{d}/half.onnx", "--no-trt-check"],
    "trt-check": ["trt-check", "{m}"],
}


@pytest.mark.parametrize("command", list(_COMMANDS))
def test_every_command_opens_what_fix_opens(command, tmp_path, capsys):
    path = tmp_path / "m.onnx"
    path.write_bytes(_broken().SerializeToString())
    before = path.read_bytes()
    argv = [a.format(m=path, d=tmp_path) for a in _COMMANDS[command]]
    rc = cli.main(argv)
    err = capsys.readouterr().err
    assert rc in (0, 1), err
    assert "checker rejects" not in err
    assert path.read_bytes() == before
