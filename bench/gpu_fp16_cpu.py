"""The CPU half of bench/gpu_run.py for one corpus model, in its own process (killed past its time):

1. ``surgeon fix`` (the CLI) of the model, for ``fix --profile`` on the GPU;
2. the FP16 emulation's verdict (every convertible node in FP16, emulated on ONNX Runtime CPU)
   against the FP32 reference, per output, at float16's tolerances (atol = rtol = 1e-2);
3. the same conversion written as a real float16 model (``surgeon.precision.convert``, every
   candidate node in float16) for CUDA's float16 kernels, and the named FP32 model it came from;
4. per-tensor errors of the emulation (every float tensor of the main graph), to say where the
   emulation and the GPU part ways;
5. ``scan``'s findings, ``bisect --test fp16``'s culprits (when the emulation fails), and
   ``surgeon fp16``'s mixed-precision model (its FP32 islands searched on the emulation).

The answer (JSON) is rewritten after every step, so a step killed by the time limit keeps the
ones before it.

    python bench/gpu_fp16_cpu.py --model M.onnx --workdir DIR --out M.json [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_common import FP16_SHAPES, ROOT, corpus_feed, manifest, stats, worst_output  # noqa: E402

FP16_TOL = (1e-2, 1e-2)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-oracle-calls", type=int, default=60)
    ap.add_argument("--skip-fix", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    path, work = Path(args.model), Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    R: dict = {"model": path.name, "steps": {}}

    def flush():
        tmp = Path(args.out + ".tmp")
        tmp.write_text(json.dumps(R, indent=1, default=str))
        os.replace(tmp, args.out)

    def step(name, fn):
        t0 = time.perf_counter()
        try:
            R[name] = fn()
            R["steps"][name] = {"ok": True, "s": round(time.perf_counter() - t0, 2)}
        except Exception as exc:  # noqa: BLE001 - recorded, the next step still runs
            R["steps"][name] = {"ok": False, "s": round(time.perf_counter() - t0, 2),
                                "error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:400],
                                "trace": traceback.format_exc()[-1500:]}
        flush()

    stem = path.stem
    if not args.skip_fix:
        def fix():
            out = work / f"{stem}.fixed.onnx"
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, str(ROOT / "cli.py"), "fix", str(path), "-o", str(out)],
                                  capture_output=True, text=True, timeout=600)
            last = (proc.stderr.strip().splitlines() or [""])[-1]
            return {"ok": proc.returncode == 0 and out.is_file(), "path": str(out), "s": round(time.perf_counter() - t0, 2),
                    "stderr_last": last[:300]}
        step("fix", fix)

    from surgeon import model as model_io
    from surgeon.backends.fp16 import Fp16Backend, classify, emulate
    from surgeon.backends.onnxrt import OnnxRuntimeBackend
    from surgeon.debug.bisect import extract
    from surgeon.debug.bisect.reduce import reference_values
    from surgeon.precision.api import name_nodes
    from surgeon.precision.convert import convert

    original = model_io.load(path)
    named, _, _ = name_nodes(original)
    feed = corpus_feed(path, manifest(path.parent), FP16_SHAPES.get(path.stem))
    cpu = OnnxRuntimeBackend(threads=args.threads)
    state: dict = {}

    def prepare():
        cls = classify(named, "fp16")
        state["cls"] = cls
        if not cls.candidates:
            return {"candidates": 0, "note": "no node computes in float32 outside shape/integer/control-flow paths"}
        model_io.save(named, work / f"{stem}.named.onnx")
        conv = convert(named, cls, set())
        model_io.save(conv.model, work / f"{stem}.full16.onnx")
        return {"candidates": len(cls.candidates), "nodes": len(cls.nodes), "named": str(work / f"{stem}.named.onnx"),
                "full16": str(work / f"{stem}.full16.onnx"), "io_types": conv.io_types, "casts": conv.casts}
    step("prepare", prepare)
    if not state.get("cls") or not state["cls"].candidates:
        return 0

    def emulation():
        ref = cpu.session(named).run(feed)
        emu_model, plan = emulate(named, classification=state["cls"])
        got = OnnxRuntimeBackend(threads=args.threads, name="fp16").session(emu_model).run(feed)
        per = {n: stats(ref[n], got.get(n), *FP16_TOL) for n in ref}
        worst = worst_output(per)
        return {"passed": all(p["passed"] for p in per.values()), "worst_output": worst, "outputs": per,
                "converted": len(plan.converted), "kept_fp32": len(plan.kept)}
    step("emulation", emulation)

    def tensors():
        types = extract.inferred_types(named)
        ref = reference_values(named, cpu, [feed])[0]
        from surgeon.debug.scan.fp16_run import emulated_values

        emu = emulated_values(named, [feed], [], extract.types_from_values([ref], types))[0][0]
        order = [t for t in extract.all_tensor_names(named) if isinstance(ref.get(t), np.ndarray)
                 and ref[t].dtype.kind == "f" and t in emu]
        producer = {o: (n.name, n.op_type) for n in named.graph.node for o in n.output}
        out = []
        for t in order:
            s = stats(ref[t], emu[t], *FP16_TOL)
            out.append({"tensor": t, "node": producer.get(t, ("", ""))[0], "op": producer.get(t, ("", ""))[1],
                        "passed": s["passed"], "tol_ratio": s.get("tol_ratio"), "max_abs": s.get("max_abs"),
                        "nonfinite": s.get("nonfinite"), "ref_absmax": float(np.max(np.abs(ref[t]))) if ref[t].size else 0.0})
        return out
    step("tensors", tensors)

    def scan():
        from surgeon.debug.scan import scan_model

        rep = scan_model(named, [feed], cpu)
        will = [f.to_dict() for f in rep.will][:20]
        return {"will": will, "findings": len(rep.findings), "clean": rep.clean,
                "fp16_outputs_match": (rep.fp16 or {}).get("outputs_match")}
    step("scan", scan)

    if not (R.get("emulation") or {}).get("passed", True):
        def bisect():
            from surgeon.debug.bisect import bisect_model

            res = bisect_model(named, [feed], ref=cpu, test=Fp16Backend(threads=args.threads), atol=FP16_TOL[0],
                               rtol=FP16_TOL[1])
            outputs = {n.name: [o for o in n.output if o] for n in named.graph.node}
            culprits = [{"node": c["node"], "op_type": c.get("op_type"), "introduced": c.get("introduced"),
                         "tensors": outputs.get(c["node"], [])} for c in res.culprits]
            accumulation = [{"node": a["node"], "op_type": a.get("op_type"), "tensors": outputs.get(a["node"], []),
                             "upstream_nodes": a.get("upstream_nodes")} for a in res.accumulation]
            return {"failed": res.failed, "culprits": culprits, "accumulation": accumulation,
                    "diagnosis": res.diagnosis, "oracle_calls": res.calls}
        step("bisect", bisect)

    def mixed():
        from surgeon.precision import Fp16Options, convert_mixed_precision

        out = work / f"{stem}.mixed.onnx"
        rep = convert_mixed_precision(named, out, samples=[feed],
                                      options=Fp16Options(max_oracle_calls=args.max_oracle_calls, trt_check=False))
        return {"path": str(out), "passed": rep.passed, "status": rep.status, "kept": rep.kept,
                "oracle_calls": rep.oracle_calls, "ort_cpu_float16": rep.ort.passed if rep.ort else None}
    step("mixed", mixed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
