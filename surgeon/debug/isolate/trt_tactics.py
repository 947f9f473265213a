"""Isolate adapter: which TensorRT tactic choice(s) make an engine diverge.

Two mechanisms, picked by the TensorRT version found (and reported):

- **TensorRT >= 10.8, editable timing cache.** Build once with
  ``BuilderFlag.EDITABLE_TIMING_CACHE`` and ``ProfilingVerbosity.DETAILED``; the verbose
  builder log lists, per autotuned op, its timing-cache key, the tactics timed (fastest
  first) and the one selected (``Autotuning op X(key: 0x...)`` ... ``The selected tactic
  is (tactic hash, cost(in ms)):0x..``); the engine inspector's JSON says which tactic
  each engine layer runs. A choice is "op X keeps the tactic the failing build chose";
  a candidate rewrites the cache entries of the other ops to their next-fastest tactic
  (``ITimingCache.update``) and rebuilds. The artifact is the edited timing cache that
  avoids the culprits.
- **Older TensorRT, tactic replay (Polygraphy's format).** Builds are recorded with
  Polygraphy's ``TacticRecorder`` and judged good or bad; only a tactic that appears in
  *no* good build for that layer is a suspect (a plain set difference blames tactics
  that good builds also used). A choice is "layer X uses its bad-build tactic"; a
  candidate replays the bad build with the other suspects taken from a good build.

The parsing, the good/bad diff and the cache-edit plan are pure functions tested on data
in the real formats; the parts that talk to TensorRT are thin and run only where
``tensorrt`` imports.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from surgeon.debug.isolate.ddmin import Subset, Verdict
from surgeon.errors import BackendUnavailableError, UsageError

log = logging.getLogger(__name__)

EDITABLE_CACHE = "editable-timing-cache"
TACTIC_REPLAY = "tactic-replay"
_TYPE_MARKER = "polygraphy_class"  # polygraphy.constants.TYPE_MARKER


# ---- version and mechanism -------------------------------------------------------------

def parse_version(text: str) -> tuple[int, ...]:
    nums = re.findall(r"\d+", text or "")
    return tuple(int(n) for n in nums[:3])


def mechanism_for(version: str) -> str:
    """TensorRT 10.8 added the editable timing cache; before it, IAlgorithmSelector replay."""
    return EDITABLE_CACHE if parse_version(version) >= (10, 8) else TACTIC_REPLAY


def tensorrt_version() -> str:
    """The installed TensorRT version, or one sentence on how to get it."""
    try:
        import tensorrt as trt  # noqa: F401 (lazy, optional)
    except ImportError as exc:
        raise BackendUnavailableError(
            "isolate --target trt-tactics needs TensorRT, which is not installed here "
            "(pip install tensorrt --extra-index-url https://pypi.nvidia.com, on a machine with an NVIDIA GPU); "
            "on CPU, '--target onnxrt-optimizers' or 'surgeon compare --backend fp16' cover what can be emulated"
        ) from exc
    return str(getattr(trt, "__version__", ""))


# ---- engine inspector JSON ----------------------------------------------------------------

@dataclass(frozen=True)
class EngineLayer:
    name: str
    layer_type: str = ""
    tactic_name: str = ""
    tactic_value: str = ""
    onnx_nodes: tuple[str, ...] = ()


_ONNX_LAYER = re.compile(r"ONNX Layer:\s*([^\]\x1e]+)")


def parse_inspector_json(data: str | Mapping[str, Any]) -> list[EngineLayer]:
    """Layers of ``IEngineInspector.get_engine_information(LayerInformationFormat.JSON)``.

    With ``ProfilingVerbosity.DETAILED`` each layer is an object (Name, LayerType,
    TacticName, TacticValue, Metadata naming the ONNX node(s)); with LAYER_NAMES_ONLY it
    is just a name.
    """
    doc = json.loads(data) if isinstance(data, str) else data
    layers = []
    for item in doc.get("Layers", []):
        if isinstance(item, str):
            layers.append(EngineLayer(item))
            continue
        meta = str(item.get("Metadata", ""))
        nodes = tuple(n.strip() for n in _ONNX_LAYER.findall(meta))
        layers.append(EngineLayer(str(item.get("Name", "")), str(item.get("LayerType", "")),
                                  str(item.get("TacticName", "")), str(item.get("TacticValue", "")), nodes))
    return layers


# ---- verbose builder log: autotuning records -------------------------------------------------

@dataclass
class AutotuneRecord:
    """One autotuned op: its timing-cache key, the tactics timed (fastest first), the choice."""

    op: str
    key: str
    tactics: list[tuple[str, str]] = field(default_factory=list)  # (tactic hash, kernel name)
    selected: str = ""

    def alternative(self) -> str | None:
        """The fastest timed tactic other than the selected one."""
        for tactic, _ in self.tactics:
            if tactic != self.selected:
                return tactic
        return None


_AUTOTUNE = re.compile(r"Autotuning op (?P<op>[^(]+)\(key: (?P<key>0x[0-9a-fA-F]+)\)")
_TABLE_HEADER = "tactic_id, cost(in ms), cost/fastest_cost"
_TACTIC_ROW = re.compile(r"(?:^|\s)\d+,\s*[-\d.eE+]+,\s*[-\d.eE+]+,\s*[-\w.+]+,\s*(?P<kernel>[^,]+),\s*(?P<hash>0x[0-9a-fA-F]+)")
_SELECTED = re.compile(r"\(tactic hash, cost\(in ms\)\):\s*(?P<hash>0x[0-9a-fA-F]+)")


def parse_autotuning_log(lines: Iterable[str]) -> dict[str, AutotuneRecord]:
    """Autotuning records from TensorRT's verbose builder log (10.8+ format).

    A small state machine: ``Autotuning op`` opens a record, the tactic table follows its
    header, ``The selected tactic is`` closes it. Lines of other messages in between are
    ignored, so the log of a whole build can be fed as is.
    """
    records: dict[str, AutotuneRecord] = {}
    current: AutotuneRecord | None = None
    in_table = False
    for line in lines:
        m = _AUTOTUNE.search(line)
        if m:
            current, in_table = AutotuneRecord(m.group("op").strip(), m.group("key").lower()), False
            continue
        if current is None:
            continue
        if _TABLE_HEADER in line:
            in_table = True
            continue
        if in_table:
            row = _TACTIC_ROW.search(line)
            if row:
                current.tactics.append((row.group("hash").lower(), row.group("kernel").strip()))
                continue
            in_table = False
        sel = _SELECTED.search(line)
        if sel:
            current.selected = sel.group("hash").lower()
            records[current.op] = current
            current = None
    return records


def match_ops(records: Mapping[str, AutotuneRecord], layers: Sequence[EngineLayer], flagged: Sequence[str]) -> list[str]:
    """Autotuned ops that belong to the flagged layers or ONNX nodes (all ops when none flagged).

    TensorRT names an op after the layer (or the ONNX node) it came from, and fused
    layers carry the ONNX node names in their metadata, so a flag matches an op when it is
    a prefix of the op name or one of the layer's ONNX nodes names the op.
    """
    if not flagged:
        return list(records)
    wanted = set(flagged)
    for layer in layers:
        if layer.name in wanted or wanted & set(layer.onnx_nodes):
            wanted.add(layer.name)
    return [op for op in records if any(op == w or op.startswith(w) for w in wanted)]


def cache_edits(records: Mapping[str, AutotuneRecord], choices: Sequence[str], subset: Subset) -> dict[str, str]:
    """Timing-cache entries to rewrite for a candidate: ops not in ``subset`` get their alternative.

    Returns {cache key: tactic hash}. An op with no alternative tactic keeps its choice
    (it cannot be the culprit's cure; the report says so).
    """
    keep = {choices[i] for i in subset}
    edits = {}
    for op in choices:
        if op in keep:
            continue
        alt = records[op].alternative()
        if alt is not None:
            edits[records[op].key] = alt
    return edits


# ---- Polygraphy tactic replay files ----------------------------------------------------------

@dataclass(frozen=True)
class ReplayAlgorithm:
    """One layer's entry in a Polygraphy tactic replay file (``TacticReplayData``)."""

    implementation: int
    tactic: int
    inputs: tuple = ()  # TensorInfo dicts, kept as frozen JSON for hashing
    outputs: tuple = ()

    @property
    def tactic_id(self) -> tuple[int, int]:
        return (self.implementation, self.tactic)


def _freeze(infos: Sequence[Mapping[str, Any]]) -> tuple:
    return tuple(json.dumps({k: v for k, v in i.items() if k != _TYPE_MARKER}, sort_keys=True) for i in infos)


def load_replay(text: str) -> dict[str, ReplayAlgorithm]:
    """Parse a replay file written by ``polygraphy run --save-tactics`` / ``TacticRecorder``."""
    doc = json.loads(text)
    if not isinstance(doc, dict) or "replay" not in doc:
        raise UsageError("not a Polygraphy tactic replay file (no 'replay' key)")
    out = {}
    for layer, algo in doc["replay"].items():
        out[layer] = ReplayAlgorithm(int(algo["implementation"]), int(algo["tactic"]),
                                     _freeze(algo.get("inputs", [])), _freeze(algo.get("outputs", [])))
    return out


def dump_replay(replay: Mapping[str, ReplayAlgorithm]) -> str:
    """Write a replay in Polygraphy's format, so ``polygraphy run --load-tactics`` reads it."""
    def infos(frozen):
        return [dict(json.loads(s), **{_TYPE_MARKER: "TensorInfo"}) for s in frozen]

    body = {layer: {"implementation": a.implementation, "tactic": a.tactic, "inputs": infos(a.inputs),
                    "outputs": infos(a.outputs), _TYPE_MARKER: "Algorithm"} for layer, a in replay.items()}
    return json.dumps({"replay": body, _TYPE_MARKER: "TacticReplayData"}, indent=2) + "\n"


def suspects(good: Sequence[Mapping[str, ReplayAlgorithm]], bad: Sequence[Mapping[str, ReplayAlgorithm]]) -> dict[str, set[ReplayAlgorithm]]:
    """Per layer, the algorithms bad builds used that *no* good build used for that layer.

    This is the rule that keeps innocent tactics out: a tactic a good build also ran
    cannot on its own be what breaks the bad ones.
    """
    seen_good: dict[str, set[ReplayAlgorithm]] = {}
    for replay in good:
        for layer, algo in replay.items():
            seen_good.setdefault(layer, set()).add(algo)
    out: dict[str, set[ReplayAlgorithm]] = {}
    for replay in bad:
        for layer, algo in replay.items():
            if algo not in seen_good.get(layer, set()):
                out.setdefault(layer, set()).add(algo)
    return out


def replay_candidate(bad: Mapping[str, ReplayAlgorithm], good: Mapping[str, ReplayAlgorithm],
                     choices: Sequence[str], subset: Subset) -> dict[str, ReplayAlgorithm]:
    """The bad build's replay, with every suspect layer not in ``subset`` taken from a good build."""
    keep = {choices[i] for i in subset}
    out = dict(bad)
    for layer in choices:
        if layer not in keep and layer in good:
            out[layer] = good[layer]
    return out


# ---- the TensorRT-facing part (runs only where tensorrt imports) -------------------------------

class TrtTacticsTarget:
    """Oracle over tactic choices of a TensorRT build (see the module docstring)."""

    name = "trt-tactics"

    def __init__(self, model, samples, *, reference_outputs, compare, flagged: Sequence[str] = (),
                 fp16: bool = False, builds: int = 4):
        import tensorrt as trt

        self.trt, self.samples, self.reference, self.compare = trt, samples, reference_outputs, compare
        self.version = str(trt.__version__)
        self.kind = mechanism_for(self.version)
        self.model_bytes = model.SerializeToString()
        self.fp16 = fp16
        if self.kind == EDITABLE_CACHE:
            self._init_cache(flagged)
        else:
            self._init_replay(flagged, builds)
        self.mechanism = f"TensorRT {self.version}: {self.kind}"

    # -- building -----------------------------------------------------------------------------
    def _logger(self, lines: list[str]):
        trt = self.trt

        class _Capture(trt.ILogger):
            def __init__(self):
                trt.ILogger.__init__(self)

            def log(self, severity, msg):
                lines.append(str(msg))

        return _Capture()

    def _build(self, *, cache_blob: bytes | None = None, edits: Mapping[str, str] | None = None,
               selector=None, lines: list[str] | None = None):
        trt = self.trt
        lines = [] if lines is None else lines
        logger = self._logger(lines)
        builder = trt.Builder(logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse(self.model_bytes):
            raise UsageError("TensorRT cannot parse the model: " + str(parser.get_error(0)))
        config = builder.create_builder_config()
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
        if self.fp16:
            config.set_flag(trt.BuilderFlag.FP16)
        cache = None
        if self.kind == EDITABLE_CACHE:
            config.set_flag(trt.BuilderFlag.EDITABLE_TIMING_CACHE)
            cache = config.create_timing_cache(cache_blob or b"")
            for key_text, tactic in (edits or {}).items():
                keys = {str(k).lower(): k for k in cache.queryKeys()}
                key = keys.get(key_text)
                if key is None:
                    continue
                value = cache.query(key)
                value.tacticHash = int(tactic, 16)
                cache.update(key, value)
            config.set_timing_cache(cache, False)
        elif selector is not None:
            config.algorithm_selector = selector
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            return None, cache
        return bytes(plan), cache

    def _run(self, plan: bytes) -> Verdict:
        from polygraphy.backend.trt import EngineFromBytes, TrtRunner

        if plan is None:
            return Verdict.UNRESOLVED
        with TrtRunner(EngineFromBytes(plan)) as runner:
            outputs = [runner.infer(feed) for feed in self.samples]
        return Verdict.PASS if all(self.compare(r, o) for r, o in zip(self.reference, outputs)) else Verdict.FAIL

    # -- editable timing cache (>= 10.8) ------------------------------------------------------------
    def _init_cache(self, flagged):
        lines: list[str] = []
        plan, cache = self._build(lines=lines)
        if plan is None:
            raise UsageError("TensorRT could not build the model")
        self.base_cache = bytes(cache.serialize())
        self.records = parse_autotuning_log(lines)
        runtime = self.trt.Runtime(self._logger([]))
        engine = runtime.deserialize_cuda_engine(plan)
        info = engine.create_engine_inspector().get_engine_information(self.trt.LayerInformationFormat.JSON)
        self.layers = parse_inspector_json(info)
        self.choices = [op for op in match_ops(self.records, self.layers, flagged) if self.records[op].alternative()]

    # -- tactic replay (< 10.8) ------------------------------------------------------------------
    def _init_replay(self, flagged, builds):
        from polygraphy.backend.trt import TacticRecorder
        from polygraphy.backend.trt.algorithm_selector import TacticReplayData

        good, bad = [], []
        for _ in range(max(2, builds)):
            replay = TacticReplayData()
            plan, _ = self._build(selector=TacticRecorder(replay))
            verdict = self._run(plan)
            parsed = load_replay(replay.to_json())
            (bad if verdict == Verdict.FAIL else good).append(parsed)
        if not bad:
            raise UsageError(f"none of {builds} TensorRT builds diverged; nothing to isolate")
        if not good:
            raise UsageError(f"all {builds} TensorRT builds diverged; tactic replay needs a good build to compare with")
        self.good, self.bad = good[0], bad[0]
        found = suspects(good, bad)
        self.choices = [layer for layer in self.bad if layer in found and (not flagged or any(layer.startswith(f) for f in flagged))]

    # -- oracle -------------------------------------------------------------------------------------
    def __call__(self, subset: Subset) -> Verdict:
        if self.kind == EDITABLE_CACHE:
            plan, _ = self._build(cache_blob=self.base_cache, edits=cache_edits(self.records, self.choices, subset))
            return self._run(plan)
        from polygraphy.backend.trt import TacticReplayer
        from polygraphy.backend.trt.algorithm_selector import TacticReplayData

        replay = TacticReplayData.from_json(dump_replay(replay_candidate(self.bad, self.good, self.choices, subset)))
        plan, _ = self._build(selector=TacticReplayer(replay))
        return self._run(plan)

    def avoid_artifact(self, culprits: Subset) -> tuple[str, bytes]:
        """The file that avoids the culprits: an edited timing cache, or a replay file."""
        rest = tuple(i for i in range(len(self.choices)) if i not in set(culprits))
        if self.kind == EDITABLE_CACHE:
            _, cache = self._build(cache_blob=self.base_cache, edits=cache_edits(self.records, self.choices, rest))
            return "timing.cache", bytes(cache.serialize())
        text = dump_replay(replay_candidate(self.bad, self.good, self.choices, rest))
        return "tactics.json", text.encode()

    def describe(self, index: int) -> dict[str, Any]:
        name = self.choices[index]
        if self.kind == EDITABLE_CACHE:
            rec = self.records[name]
            return {"op": name, "cache_key": rec.key, "tactic": rec.selected, "alternative": rec.alternative()}
        algo = self.bad[name]
        return {"layer": name, "implementation": algo.implementation, "tactic": algo.tactic}

    def label(self, index: int) -> str:
        return self.choices[index]

    def write_avoid(self, culprits: Subset, art) -> tuple[str, str]:
        name, payload = self.avoid_artifact(culprits)
        path = art.write_bytes(name, payload)
        if self.kind == EDITABLE_CACHE:
            return str(path), f"trtexec --onnx=MODEL --timingCacheFile={path} (or IBuilderConfig.set_timing_cache)"
        return str(path), f"polygraphy run MODEL --trt --load-tactics {path}"
