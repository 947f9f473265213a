"""The synchronized profiling run of ``profile --backend onnxrt-cuda``:
``python -m surgeon.debug.profile.cuda_worker SPEC.json``, started with ``CUDA_LAUNCH_BLOCKING=1``.

Why a process of its own: CUDA reads ``CUDA_LAUNCH_BLOCKING`` once, when it starts in a
process; the latency runs must not be synchronized, so they run in the parent. SPEC:
``{"model", "inputs" (.npz of the samples), "spec" (the backend, e.g. onnxrt-cuda:tf32=0),
"cpu_stand_in", "warmup", "iterations", "prefix" (profile file prefix), "optimized" (path for
the optimized graph), "answer" (where the JSON answer goes)}``. Exit 0 with the answer
``{"trace", "optimized"}``; 1 with one line on stderr.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _run(spec: dict) -> dict:
    from surgeon import input_files
    from surgeon.debug.profile.cuda import backend_for, profiled_session

    backend = backend_for(spec["spec"], bool(spec.get("cpu_stand_in")))
    samples = input_files.load_inputs(spec["inputs"])
    sess, saved = profiled_session(backend, spec["model"], spec["prefix"], spec["optimized"])
    outputs = [o.name for o in sess.get_outputs()]
    for r in range(int(spec["warmup"]) + int(spec["iterations"])):
        sess.run(outputs, dict(samples[r % len(samples)]))
    trace = sess.end_profiling()
    return {"trace": trace, "optimized": spec["optimized"] if saved else None}


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m surgeon.debug.profile.cuda_worker SPEC.json", file=sys.stderr)
        return 2
    spec = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    try:
        answer = _run(spec)
    except Exception as exc:  # one line for the parent
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"{type(exc).__name__}: {first}", file=sys.stderr)
        return 1
    Path(spec["answer"]).write_text(json.dumps(answer), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
