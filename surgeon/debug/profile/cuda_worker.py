"""The profiled runs of ``profile --backend onnxrt-cuda``:
``python -m surgeon.debug.profile.cuda_worker SPEC.json``: synchronized (started with
``CUDA_LAUNCH_BLOCKING=1``), or under PyTorch's profiler (``"timing": "cupti"``).

Why a process of its own: CUDA reads ``CUDA_LAUNCH_BLOCKING`` once, when it starts in a
process; PyTorch must be imported before onnxruntime for ONNX Runtime to use its CUDA
libraries, and its profiler must not slow the latency runs, which run in the parent. SPEC:
``{"model", "inputs" (.npz of the samples), "spec" (the backend, e.g. onnxrt-cuda:tf32=0),
"cpu_stand_in", "warmup", "iterations", "prefix" (profile file prefix), "optimized" (path for
the optimized graph), "answer" (where the JSON answer goes), "timing" (optional: "cupti")}``.
Exit 0 with the answer ``{"trace", "optimized"}`` (with cupti also ``"kineto"``, the Kineto
trace, ``"ort_start_ns"`` and ``"torch"``); 1 with one line on stderr; 3 with the one-sentence
reason PyTorch or its GPU is not there (cupti only).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


CUPTI_UNAVAILABLE = 3


def _run(spec: dict, torch_version: str | None = None) -> dict:
    from surgeon import input_files
    from surgeon.debug.profile.cuda import backend_for, profiled_session

    backend = backend_for(spec["spec"], bool(spec.get("cpu_stand_in")))
    samples = input_files.load_inputs(spec["inputs"])
    sess, saved = profiled_session(backend, spec["model"], spec["prefix"], spec["optimized"])
    if torch_version is not None:
        from surgeon.debug.profile.cupti import profile_runs

        kineto = spec["prefix"] + "_kineto.json"
        profile_runs(sess, samples, int(spec["warmup"]), int(spec["iterations"]), kineto)
        return {"trace": sess.end_profiling(), "optimized": spec["optimized"] if saved else None, "kineto": kineto,
                "ort_start_ns": int(sess.get_profiling_start_time_ns()), "torch": torch_version}
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
    torch_version = None
    if spec.get("timing") == "cupti":
        from surgeon.debug.profile.cupti import import_torch_cuda, unavailable_sentence

        try:
            torch_version = import_torch_cuda()  # before anything imports onnxruntime
        except RuntimeError as exc:
            print(unavailable_sentence(str(exc)), file=sys.stderr)
            return CUPTI_UNAVAILABLE
    try:
        answer = _run(spec, torch_version)
    except Exception as exc:  # one line for the parent
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"{type(exc).__name__}: {first}", file=sys.stderr)
        return 1
    Path(spec["answer"]).write_text(json.dumps(answer), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
