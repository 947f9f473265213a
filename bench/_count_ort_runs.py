"""Run a Python tool as its users do, counting its ONNX Runtime inference calls.

``python bench/_count_ort_runs.py COUNT.json -m module [args...]`` or
``python bench/_count_ort_runs.py COUNT.json script.py [args...]``. The tool runs unchanged
(``runpy``, its own argv); ``onnxruntime.InferenceSession.run`` is wrapped to count calls,
and the count is written to COUNT.json at exit. Used by bench/fp16_vs_peers.py for the
peers' "oracle calls" (whole-model ONNX Runtime runs).
"""

from __future__ import annotations

import atexit
import json
import runpy
import sys


def main() -> None:
    count_file, rest = sys.argv[1], sys.argv[2:]
    import onnxruntime

    counts = {"runs": 0, "sessions": 0}
    run, init = onnxruntime.InferenceSession.run, onnxruntime.InferenceSession.__init__

    def counted_run(self, *a, **k):
        counts["runs"] += 1
        return run(self, *a, **k)

    def counted_init(self, *a, **k):
        counts["sessions"] += 1
        return init(self, *a, **k)

    onnxruntime.InferenceSession.run = counted_run
    onnxruntime.InferenceSession.__init__ = counted_init

    def write() -> None:
        with open(count_file, "w", encoding="utf-8") as f:
            json.dump(counts, f)

    atexit.register(write)
    if rest[0] == "-m":
        sys.argv = [rest[1], *rest[2:]]
        runpy.run_module(rest[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = rest
        runpy.run_path(rest[0], run_name="__main__")


if __name__ == "__main__":
    main()
