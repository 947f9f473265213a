"""Reading TensorRT's per-layer profile and layer information, and mapping layers to ONNX nodes.

Formats, as TensorRT writes them (read from TensorRT's sources and examples; see the README):

``trtexec --exportProfile=P.json`` (``samples/common/sampleReporting.cpp``,
``Profiler::exportJSONProfile``): a JSON list whose first record is ``{ "count" : N }``
(the number of profiled runs) and whose other records are one per layer::

    [
      { "count" : 10 }
    , { "name" : "Conv_0 + Relu_1", "timeMs" : 1.2, "averageMs" : 0.12, "medianMs" : 0.11, "percentage" : 8.5 }
    ]

``timeMs`` is the total over the runs, ``averageMs`` and ``medianMs`` per run, and
``percentage`` the share of the summed layer time; ``medianMs`` was added in TensorRT 8.x
and is missing from older files. The writer does not escape layer names, so a name with a
``"`` makes the file invalid JSON; such files are read line by line instead.

``trtexec --exportLayerInfo=L.json`` (the engine inspector's ``LayerInformationFormat.JSON``):
``{"Layers": [...], "Bindings": [...]}``. With ``--profilingVerbosity=detailed`` each layer
is an object with ``Name``, ``LayerType``, ``Inputs``, ``Outputs``, often ``ParameterType``
and ``TacticName``, and since TensorRT 8.6 ``Metadata``: the ONNX parser's record of the
nodes the layer came from, ``[ONNX Layer: <node>]`` (entries of fused layers joined by a
``\\x1e`` or ``\\x1f`` separator; a node inside a local function is followed by
`` | <caller> (<function>)``). Without detailed verbosity ``Layers`` is a list of names.

Mapping a layer to ONNX nodes: from ``Metadata`` when there is one (exact); otherwise from
the layer name, which TensorRT builds from the node names: fused layers join them with
``" + "``, pointwise fusions wrap them in ``PWN(...)``, Myelin regions are
``{ForeignNode[first...last]}`` (the nodes from first to last in graph order), copies
between formats are ``Reformatting CopyNode for Input/Output Tensor k to <layer>``, and
``[profile N]`` marks the layers of the N-th optimization profile. Tokens that are not node
names (weights such as ``conv1.weight``, ``(Unnamed Layer* 12) [Shuffle]``) are skipped.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from surgeon.debug.profile import aggregate
from surgeon.debug.profile.fusion_map import Origin, node_label
from surgeon.debug.profile.result import ModelProfile
from surgeon.errors import InputDataError
from surgeon.graph import count_nodes

_PROFILE_LINE = re.compile(
    r'^\s*,?\s*\{\s*"name"\s*:\s*"(?P<name>.*)"\s*,\s*"timeMs"\s*:\s*(?P<time>[^,\s]+)\s*,'
    r'\s*"averageMs"\s*:\s*(?P<avg>[^,\s]+)\s*(?:,\s*"medianMs"\s*:\s*(?P<median>[^,\s]+)\s*)?,'
    r'\s*"percentage"\s*:\s*(?P<pct>[^,\s}]+)\s*\}\s*$')
_COUNT_LINE = re.compile(r'^\s*\[?\s*\{\s*"count"\s*:\s*(?P<count>\d+)\s*\}\s*$')
_METADATA = re.compile(r"\[ONNX Layer: ([^\]]*)\]")
_PROFILE_SUFFIX = re.compile(r"\s*\[profile \d+\]$")
_REFORMAT = re.compile(r"^Reformatting CopyNode for (?:Input|Output) Tensor \d+ to (?P<target>.+)$")
_FOREIGN = re.compile(r"^\{ForeignNode\[(?P<first>.*?)\.\.\.(?P<last>.*)\]\}$")


@dataclass(frozen=True)
class LayerTime:
    name: str
    time_ms: float  # total over the profiled runs
    average_ms: float
    median_ms: float | None
    percentage: float


@dataclass
class TrtProfile:
    count: int
    layers: list[LayerTime]


@dataclass
class LayerInfo:
    name: str
    layer_type: str | None = None
    metadata_nodes: list[str] = field(default_factory=list)
    tactic: str | None = None
    raw: dict = field(default_factory=dict)


def _not_profile(path: Any, reason: str) -> InputDataError:
    return InputDataError(f"'{path}' is not a trtexec --exportProfile file: {reason}")


def _what_else(data: Any) -> str | None:
    """A hint when the file is one of the other JSON files users mix up with the profile."""
    if isinstance(data, dict) and "Layers" in data:
        return "it is layer information (--exportLayerInfo); give it with --trt-layers"
    if isinstance(data, list) and data and isinstance(data[0], dict):
        if "latencyMs" in data[0] or "startMs" in data[0]:
            return "it is a timing trace (--exportTimes), not a per-layer profile"
        if "ph" in data[0] and "cat" in data[0]:
            return "it looks like ONNX Runtime's profiler trace"
    return None


def _number(rec: dict, key: str, k: int, path: Any) -> float:
    v = rec.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _not_profile(path, f"record {k} has no number '{key}'")
    return float(v)


def parse_profile(data: Any, path: Any = "profile") -> TrtProfile:
    """Check and read the records of an ``--exportProfile`` file (already parsed JSON)."""
    hint = _what_else(data)
    if hint:
        raise _not_profile(path, hint)
    if not isinstance(data, list) or not data:
        raise _not_profile(path, "expected a JSON list starting with {\"count\": N}")
    first = data[0]
    if not (isinstance(first, dict) and set(first) == {"count"} and isinstance(first["count"], int)):
        raise _not_profile(path, "the first record must be {\"count\": N}")
    layers = []
    for k, rec in enumerate(data[1:], start=1):
        if not isinstance(rec, dict) or not isinstance(rec.get("name"), str):
            raise _not_profile(path, f"record {k} has no layer 'name'")
        median = rec.get("medianMs")
        layers.append(LayerTime(rec["name"], _number(rec, "timeMs", k, path), _number(rec, "averageMs", k, path),
                                _number(rec, "medianMs", k, path) if median is not None else None,
                                _number(rec, "percentage", k, path)))
    return TrtProfile(int(first["count"]), layers)


def _parse_lines(text: str, path: Any) -> TrtProfile:
    """The writer's own line layout, for files that are not valid JSON (unescaped names)."""
    lines = [l for l in text.splitlines() if l.strip() and l.strip() not in ("[", "]")]
    if not lines:
        raise _not_profile(path, "the file is empty")
    m = _COUNT_LINE.match(lines[0])
    if not m:
        raise _not_profile(path, "it is not valid JSON and does not start with trtexec's { \"count\" : N } line")
    layers = []
    for k, line in enumerate(lines[1:], start=1):
        r = _PROFILE_LINE.match(line.rstrip().rstrip("]").rstrip())
        if not r:
            raise _not_profile(path, f"it is not valid JSON, and line {k + 1} is not a trtexec layer record")
        try:
            layers.append(LayerTime(r["name"], float(r["time"]), float(r["avg"]),
                                    float(r["median"]) if r["median"] else None, float(r["pct"])))
        except ValueError:
            raise _not_profile(path, f"line {k + 1} has a time that is not a number") from None
    return TrtProfile(int(m["count"]), layers)


def _read_text(path: str | os.PathLike, what: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise InputDataError(f"cannot read the {what} '{path}': {exc.strerror}") from exc


def read_profile(path: str | os.PathLike) -> TrtProfile:
    text = _read_text(path, "TensorRT profile")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return _parse_lines(text, path)
    return parse_profile(data, path)


def metadata_nodes(metadata: str) -> list[str]:
    """ONNX node names in a layer's ``Metadata`` (the calling function stack left out)."""
    return [entry.split(" | ")[0].strip() for entry in _METADATA.findall(metadata or "")]


def parse_layer_info(data: Any, path: Any = "layer information") -> list[LayerInfo]:
    if not isinstance(data, dict) or not isinstance(data.get("Layers"), list):
        raise InputDataError(f"'{path}' is not a trtexec --exportLayerInfo file: expected an object with a 'Layers' list")
    out = []
    for k, layer in enumerate(data["Layers"]):
        if isinstance(layer, str):  # --profilingVerbosity=layer_names_only
            out.append(LayerInfo(layer))
        elif isinstance(layer, dict) and isinstance(layer.get("Name"), str):
            out.append(LayerInfo(layer["Name"], layer.get("ParameterType") or layer.get("LayerType"),
                                 metadata_nodes(str(layer.get("Metadata", ""))), layer.get("TacticName"),
                                 {key: layer[key] for key in ("LayerType", "ParameterType", "TacticName", "Metadata")
                                  if key in layer}))
        else:
            raise InputDataError(f"'{path}' is not a trtexec --exportLayerInfo file: layer {k} has no 'Name'")
    return out


def read_layer_info(path: str | os.PathLike) -> list[LayerInfo]:
    text = _read_text(path, "TensorRT layer information")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputDataError(f"'{path}' is not a trtexec --exportLayerInfo file: not JSON ({exc.msg})") from exc
    return parse_layer_info(data, path)


class LayerMapper:
    """Layer name (+ layer information) → ONNX nodes of ``model``'s main graph."""

    def __init__(self, model: onnx.ModelProto, layers: list[LayerInfo] | None = None):
        g = model.graph
        self.order = [node_label(n, i) for i, n in enumerate(g.node)]
        self.op = {label: n.op_type for label, n in zip(self.order, g.node)}
        self.index = {label: i for i, label in enumerate(self.order)}
        self.info = {_PROFILE_SUFFIX.sub("", l.name): l for l in layers or []}

    def _tokens(self, name: str) -> list[str]:
        if name in self.index:
            return [name]
        parts = []
        for part in name.split(" + "):
            part = part.strip()
            if part in self.index:
                parts.append(part)
                continue
            # PWN(PWN(a, b), c) → a, b, c
            for tok in re.split(r",\s*", part.replace("PWN(", "").replace(")", " ").strip()):
                tok = tok.strip()
                if tok in self.index:
                    parts.append(tok)
        return parts

    def _range(self, first: str, last: str) -> list[str]:
        if first in self.index and last in self.index and self.index[first] <= self.index[last]:
            return self.order[self.index[first]: self.index[last] + 1]
        return [t for t in (first, last) if t in self.index]

    def origin(self, layer: str) -> Origin:
        name = _PROFILE_SUFFIX.sub("", layer)
        info = self.info.get(name)
        if info is not None and info.metadata_nodes:
            nodes = [n for n in info.metadata_nodes if n in self.index] or info.metadata_nodes
            how = "metadata" if all(n in self.index for n in info.metadata_nodes) else "metadata (names not in the model)"
            return self._origin(nodes, how)
        m = _REFORMAT.match(name)
        if m:
            return Origin((), (), f"reformat for {m['target']}")
        m = _FOREIGN.match(name)
        if m:
            nodes = self._range(m["first"], m["last"])
            return self._origin(nodes, "Myelin range" if nodes else "unmapped")
        nodes = self._tokens(name)
        return self._origin(nodes, "by name" if nodes else "unmapped")

    def _origin(self, nodes: list[str], how: str) -> Origin:
        unique = sorted(dict.fromkeys(nodes), key=lambda n: self.index.get(n, len(self.index)))
        return Origin(tuple(unique), tuple(self.op.get(n, "?") for n in unique), how)

    def op_type(self, layer: str, origin: Origin) -> str:
        info = self.info.get(_PROFILE_SUFFIX.sub("", layer))
        if info is not None and info.layer_type:
            return str(info.layer_type)
        if origin.how.startswith("reformat"):
            return "Reformat"
        if origin.op_types:
            return "+".join(dict.fromkeys(origin.op_types))
        return "?"

    def detail(self, layer: str) -> dict:
        info = self.info.get(_PROFILE_SUFFIX.sub("", layer))
        return dict(info.raw) if info is not None else {}


def profile_from_layers(label: str, model: onnx.ModelProto, runs: list[list[tuple[str, float]]],
                        layers: list[LayerInfo] | None, source: str) -> ModelProfile:
    """A ModelProfile from per-run layer times (one pseudo-run for a trtexec file)."""
    mapper = LayerMapper(model, layers)
    observed = [[aggregate.Observed(name, "", ms) for name, ms in run] for run in runs]
    for run in observed:
        for o in run:
            origin = mapper.origin(o.name)
            o.op_type = mapper.op_type(o.name, origin)
            o.detail = mapper.detail(o.name)
    run_ms = [sum(o.dur_ms for o in run) for run in observed]
    p = ModelProfile(model=label, backend="trt", source=source, nodes=count_nodes(model))
    p.kernels, p.op_types, p.origins, p.body_op_types = aggregate.tables(observed, run_ms, lambda name, op, key, occ: mapper.origin(name))
    if layers is None:
        p.notes.append("no layer information given (--trt-layers): layers are matched to ONNX nodes by their names only")
    elif not any(l.metadata_nodes for l in layers):
        p.notes.append("the layer information has no ONNX metadata (TensorRT < 8.6, or built without "
                       "--profilingVerbosity=detailed): layers are matched to ONNX nodes by their names")
    mapped = {n for k in p.kernels for n in k.origin}
    p.removed = [(n, mapper.op[n]) for n in mapper.order if n not in mapped]
    unmapped = [k.name for k in p.kernels if k.how == "unmapped"]
    if unmapped:
        p.notes.append(f"{len(unmapped)} layer(s) are TensorRT's own (no ONNX node in their name): "
                       f"{', '.join(unmapped[:3])}{', …' if len(unmapped) > 3 else ''}")
    return p


def profile_from_files(label: str, model: onnx.ModelProto, profile_json: str | os.PathLike,
                       layers_json: str | os.PathLike | None) -> ModelProfile:
    prof = read_profile(profile_json)
    layers = read_layer_info(layers_json) if layers_json else None
    have_median = all(l.median_ms is not None for l in prof.layers)
    run = [(l.name, l.median_ms if have_median else l.average_ms) for l in prof.layers]
    p = profile_from_layers(label, model, [run], layers,
                            f"trtexec --exportProfile {profile_json}" + (f" + --exportLayerInfo {layers_json}" if layers_json else ""))
    p.iterations = prof.count
    for k in p.kernels:
        k.p90_ms = None  # a profile file has one figure per layer; no per-run spread
    for g in (*p.op_types, *p.origins):
        g.p90_ms = None
    p.notes.insert(0, f"per-layer {'median' if have_median else 'average'} times over {prof.count} run(s), as trtexec "
                      "measured them on the engine's GPU; no p90 (the file has one figure per layer); end-to-end "
                      "latency is in trtexec's own summary, not in this file")
    return p
