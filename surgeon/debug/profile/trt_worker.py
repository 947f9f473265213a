"""TensorRT profiling worker: ``python -m surgeon.debug.profile.trt_worker SPEC.json``.

Builds an engine for the model with Polygraphy (one optimization profile at the shapes
of the given inputs, detailed profiling verbosity so that the inspector reports each
layer's ONNX origin), runs it ``warmup`` times, then ``iterations`` times without a
profiler (latency) and ``iterations`` times with an ``IProfiler`` (per-layer times), and
writes a JSON result with both series and the inspector's layer information. Exit code 0
on success, 1 with one line on stderr on failure. Uses only documented APIs of
Polygraphy (``NetworkFromOnnxPath``, ``CreateConfig``, ``Profile``, ``EngineFromNetwork``,
``TrtRunner``) and TensorRT (``IProfiler.report_layer_time``, ``IExecutionContext.profiler``,
``ICudaEngine.create_engine_inspector``, ``LayerInformationFormat.JSON``).
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np


def _profile(spec: dict) -> dict:
    if spec.get("rtx"):
        import tensorrt_rtx as trt
        from polygraphy.backend.tensorrt_rtx import CreateConfigRTX as CreateConfig
    else:
        import tensorrt as trt
        from polygraphy.backend.trt import CreateConfig
    from polygraphy.backend.trt import EngineFromNetwork, NetworkFromOnnxPath, Profile, TrtRunner

    with np.load(spec["inputs"], allow_pickle=False) as z:
        feeds = {k: z[k] for k in z.files}
    prof = Profile()
    for name, value in feeds.items():
        prof.add(name, min=value.shape, opt=value.shape, max=value.shape)
    config = CreateConfig(profiles=[prof], profiling_verbosity=trt.ProfilingVerbosity.DETAILED)
    build = EngineFromNetwork(NetworkFromOnnxPath(spec["model"]), config=config)

    class Collector(trt.IProfiler):
        def __init__(self):
            trt.IProfiler.__init__(self)
            self.records: list[tuple[str, float]] = []

        def report_layer_time(self, layer_name, ms):
            self.records.append((str(layer_name), float(ms)))

    latency, profiled, layer_runs = [], [], []
    with TrtRunner(build) as runner:
        for _ in range(spec["warmup"]):
            runner.infer(feed_dict=feeds)
        for _ in range(spec["iterations"]):
            t0 = time.perf_counter_ns()
            runner.infer(feed_dict=feeds)
            latency.append((time.perf_counter_ns() - t0) / 1e6)
        collector = Collector()
        runner.context.profiler = collector
        for _ in range(spec["iterations"]):
            before = len(collector.records)
            t0 = time.perf_counter_ns()
            runner.infer(feed_dict=feeds)
            profiled.append((time.perf_counter_ns() - t0) / 1e6)
            layer_runs.append(collector.records[before:])
        inspector = runner.engine.create_engine_inspector()
        inspector.execution_context = runner.context
        info = json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
    return {"latency_ms": latency, "profiled_ms": profiled, "layer_runs": layer_runs, "layer_info": info}


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m surgeon.debug.profile.trt_worker SPEC.json", file=sys.stderr)
        return 2
    with open(argv[0], encoding="utf-8") as f:
        spec = json.load(f)
    try:
        result = _profile(spec)
    except Exception as exc:  # one line for the parent, which turns it into a BackendError
        text = str(exc).strip().splitlines()
        print(f"{type(exc).__name__}: {text[-1] if text else ''}", file=sys.stderr)
        return 1
    with open(spec["result"], "w", encoding="utf-8") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
