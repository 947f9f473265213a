"""One measurement in a fresh process: load a model, run one tool, print JSON.

Run by bench/fix_vs_peers.py; a fresh process per measurement makes peak RSS
(ru_maxrss) belong to that tool alone. Time covers the tool's work on an in-memory
model (not interpreter start-up, imports or file loading), the same for every tool.
"""

from __future__ import annotations

import json
import resource
import sys
import time


def count(model) -> tuple[int, int]:
    """(all nodes incl. subgraphs, nodes outside the standard domains)."""
    from surgeon.graph import iter_proto_nodes

    nodes = list(iter_proto_nodes(model))
    return len(nodes), sum(1 for n in nodes if n.domain not in ("", "ai.onnx", "ai.onnx.ml"))


def peak_rss_mb() -> float:
    """VmHWM: this process's own high-water mark (ru_maxrss would include the parent's at fork)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024


def main() -> None:
    tool, path = sys.argv[1], sys.argv[2]
    import onnx

    model = onnx.load(path)
    # Every tool's libraries are imported before timing (each tool imports some lazily).
    import numpy  # noqa: F401
    import onnx_graphsurgeon  # noqa: F401
    import onnxruntime  # noqa: F401
    import onnxsim  # noqa: F401
    import onnxslim  # noqa: F401
    if tool.startswith("surgeon"):
        import surgeon
        import surgeon.pipeline.registry as registry

        registry.all_passes()  # import passes outside the timed region, as for the peers' imports
        t0 = time.perf_counter()
        out, report = surgeon.fix(model, verify=(tool == "surgeon"))
        seconds = time.perf_counter() - t0
        extra = {"rolled_back": [p.name for p in report.rolled_back], "verification": report.verification}
    elif tool == "onnxsim":
        import onnxsim

        t0 = time.perf_counter()
        out, ok = onnxsim.simplify(model)
        seconds = time.perf_counter() - t0
        extra = {"check_ok": bool(ok)}
    elif tool == "onnxslim":
        import onnxslim

        t0 = time.perf_counter()
        out = onnxslim.slim(model)
        seconds = time.perf_counter() - t0
        extra = {}
    else:
        raise SystemExit(f"unknown tool {tool}")
    nodes, nonstd = count(out)
    print(json.dumps({"seconds": seconds, "nodes": nodes, "nonstd": nonstd,
                      "maxrss_mb": peak_rss_mb(), **extra}))


if __name__ == "__main__":
    main()
