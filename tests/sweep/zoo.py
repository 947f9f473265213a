"""Small models and manifests for the sweep tests, made in tmp_path (never in the checkout)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from helpers import ROOT


def conv_relu(path: Path, *, extra_sin: bool = False) -> Path:
    """Conv+BN+Relu: fix folds the BN (nodes 3 -> 2). ``extra_sin``: an op nothing can fuse away."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(np.ones(4, np.float32), "s"), numpy_helper.from_array(np.zeros(4, np.float32), "b"),
             numpy_helper.from_array(np.zeros(4, np.float32), "m"), numpy_helper.from_array(np.ones(4, np.float32), "v")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["n"], name="bn"),
             helper.make_node("Relu", ["n"], ["r" if extra_sin else "y"], name="relu")]
    if extra_sin:
        nodes.append(helper.make_node("Sin", ["r"], ["y"], name="sin"))
    g = helper.make_graph(nodes, "conv_relu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], inits)
    return _save(g, path)


def matmul(path: Path, *, unique: bool = False) -> Path:
    """MatMul+Add+Relu; ``unique``: a Unique at the end, which TensorRT does not take."""
    inits = [numpy_helper.from_array(np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3), "w"),
             numpy_helper.from_array(np.ones(3, np.float32), "b")]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"], name="mm"), helper.make_node("Add", ["m", "b"], ["a"], name="add"),
             helper.make_node("Relu", ["a"], ["r" if unique else "y"], name="relu")]
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"] if unique else [2, 3])
    if unique:
        nodes.append(helper.make_node("Unique", ["r"], ["y"], name="unique", sorted=1))
    g = helper.make_graph(nodes, "matmul", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])], [out], inits)
    return _save(g, path)


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def manifest(path: Path, models: list[dict], **top) -> Path:
    """A manifest (JSON is YAML too); ``trt-check`` defaults to the static matrix: fast and the same everywhere."""
    defaults = top.pop("defaults", {})
    defaults.setdefault("trt-check", {"engine": "matrix"})
    path.write_text(json.dumps({"defaults": defaults, "models": models, **top}, indent=2))
    return path


def sweep_cli(*args: str, timeout: float = 900, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), "sweep", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env)


def results(out: Path) -> dict:
    return json.loads((out / "sweep.json").read_text())


def steps_by_model(out: Path) -> dict[str, dict[str, dict]]:
    return {m["model"]: {s["step"]: s for s in m["steps"]} for m in results(out)["models"]}
