"""The static answer: onnx-tensorrt's published operator matrix and checker rules, no TensorRT needed.

Why a data file: where neither TensorRT nor TensorRT-RTX can be imported, the best
answer is what onnx-tensorrt documents (``docs/operators.md``, per TensorRT version)
plus the attribute checks its op checkers make (Resize modes, reductions, dilations...).
``data/onnx_tensorrt_operators.json`` holds both with their source URLs and dates; it is
package data. The answer is marked *static* in every report: a model that passes here
can still fail TensorRT's importer or builder, which only an executed engine shows.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

import onnx

from surgeon import graph_ops as K
from surgeon.debug.trt_check import graph_edit
from surgeon.debug.trt_check.report import Failure
from surgeon.errors import UsageError

DATA_FILE = "onnx_tensorrt_operators.json"


@functools.lru_cache(maxsize=1)
def data() -> dict[str, Any]:
    """The shipped matrix (read once; immutable use only)."""
    text = resources.files("surgeon.debug.trt_check").joinpath("data").joinpath(DATA_FILE).read_text(encoding="utf-8")
    return json.loads(text)


def versions() -> list[str]:
    return sorted(data()["versions"], key=lambda v: tuple(int(x) for x in v.split(".")))


def resolve_version(version: str | None) -> str:
    if version is None:
        return data()["default_version"]
    if version not in data()["versions"]:
        raise UsageError(f"no operator matrix for TensorRT {version}; shipped: {', '.join(versions())}")
    return version


def table(version: str) -> dict[str, Any]:
    return data()["versions"][version]


def supported_ops(version: str) -> set[str]:
    return {op for op, e in table(version)["ops"].items() if e.get("supported")}


def _attr(node: onnx.NodeProto, name: str) -> Any:
    for a in node.attribute:
        if a.name == name:
            value = onnx.helper.get_attribute_value(a)
            return value.decode("utf-8") if isinstance(value, bytes) else value
    return None


def _opset(model: onnx.ModelProto) -> int:
    for o in model.opset_import:
        if K.is_default_domain(o):
            return o.version
    return 0


def _rule_violation(rule: dict, node: onnx.NodeProto, opset: int) -> str | None:
    if rule.get("min_opset") and opset < rule["min_opset"]:
        return None
    if "forbidden_attributes" in rule:
        used = [a.name for a in node.attribute if a.name in rule["forbidden_attributes"]]
        return f"attribute {used[0]} is set" if used else None
    if "max_outputs" in rule:
        outs = [o for o in node.output if o]
        return f"{len(outs)} outputs are used" if len(outs) > rule["max_outputs"] else None
    if rule.get("special") == "scan_output_needs_trip_count":
        body = _attr(node, "body")
        trip = node.input[0] if len(node.input) else ""
        carried = len(node.input) - 2
        scans = len(body.output) - 1 - carried if body is not None else 0
        return "the Loop has scan outputs and no trip count" if not trip and scans > 0 else None
    value = _attr(node, rule["attribute"])
    if "all_equal" in rule:
        return f"{rule['attribute']}={list(value)}" if value is not None and any(v != rule["all_equal"] for v in value) else None
    if value is None:
        value = rule.get("default")
    if value not in rule["allowed"]:
        return f"{rule['attribute']}={value!r}"
    return None


def check(model: onnx.ModelProto, index: graph_edit.NodeIndex, version: str) -> list[Failure]:
    """Every node the published matrix or the checker rules reject, in every body."""
    tab = table(version)
    ops = tab["ops"]
    rules: dict[str, list[dict]] = {}
    for r in data()["attribute_rules"]:
        rules.setdefault(r["op"], []).append(r)
    failures: list[Failure] = []
    opset = _opset(model)
    if opset and not tab["opset_min"] <= opset <= tab["opset_max"]:
        failures.append(Failure(node="", working_name="", op="", domain="", path="", phase="static", code="UNSUPPORTED_GRAPH",
                                message=f"the model uses opset {opset}; the TensorRT {version} matrix covers opsets "
                                        f"{tab['opset_min']} to {tab['opset_max']}"))
    for path, _graph, node in graph_edit.walk(model.graph):
        ref = index.get(node.name)
        if ref is None:
            continue

        def fail(code: str, message: str, func: str = "") -> None:
            failures.append(Failure(node=ref.original, working_name=ref.name, op=ref.op_type, domain=ref.domain,
                                    path=ref.where, phase="static", code=code, message=message, func=func))

        if not K.is_default_domain(node):
            if node.op_type not in supported_ops(version):
                fail("INVALID_NODE", f"{ref.qualified_op} is not an ONNX operator TensorRT imports; it needs a TensorRT plugin "
                                     f"named {node.op_type} (none is known here)", "checkFallbackPluginImporter")
            continue  # a custom-domain op with a built-in name is the domain trap, reported separately
        entry = ops.get(node.op_type)
        if entry is None:
            fail("UNSUPPORTED_NODE", f"{node.op_type} is not in the TensorRT {version} operator matrix")
            continue
        if not entry.get("supported"):
            fail("UNSUPPORTED_NODE", f"{node.op_type} is marked unsupported in the TensorRT {version} operator matrix"
                 + (f": {entry['restrictions']}" if entry.get("restrictions") else ""))
            continue
        for rule in rules.get(node.op_type, []):
            why = _rule_violation(rule, node, opset)
            if why:
                fail(rule["code"], f"{why}: {rule['text']}", rule.get("checker", ""))
    return failures


def describe(version: str) -> dict[str, Any]:
    tab = table(version)
    return {"name": "matrix", "label": "onnx-tensorrt operator matrix", "version": f"TensorRT {version}", "mode": "static",
            "what": f"published support matrix + checker rules; {tab['source_url']} ({tab['date']})",
            "source_url": tab["source_url"], "date": tab["date"]}
