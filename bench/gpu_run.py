"""The whole GPU run of issue 17 in one command: ONNX Runtime's CUDA provider (``onnxrt-cuda``)
through surgeon's compare, bisect, isolate, profile, ``fix --profile`` and fp16, on the corpus.

    python bench/gpu_run.py [--models DIR] [--out DIR] [--budget 450] [--only SUBSTR,...] [--parts a,b] [--cpu]

Writes ``OUT/gpu_results.json`` (rewritten after every model, so a run cut short keeps what it
measured) and ``OUT/gpu_results.md`` (the tables). ``OUT`` defaults to ``$OUT``, else
``./gpu_out``. ``--models`` defaults to ../shared/corpus, shared/corpus or .gpuwork/models.

Parts, in order (each in try/except, each with a share of the overall budget; a part may also
use what the parts before it left unused, see BUDGETS):
env (what ONNX Runtime and the machine give) -> compare (every corpus model, TF32 on and off,
latency against the CPU) -> [CPU jobs start in the background: ``surgeon fix`` and the FP16
emulation side of each model, bench/gpu_fp16_cpu.py] -> bisect (a planted divergence only the
GPU shows) -> isolate (cuda-options on it, against one-at-a-time) -> marking (does marking
tensors as outputs change CUDA's outputs: data for the noise-aware bisect) -> profile (per-node
times against wall latency, the default method and, with PyTorch, ``timing=cupti``) -> profile-methods (every way of timing nodes this machine offers,
side by side on four models: bench/gpu_profile_methods.py) -> fix-profile (``fix --profile`` on
the GPU for every corpus model) -> fp16 (the emulation's verdict against real CUDA float16
kernels).

``--cpu``: every code path on the CPU provider, through the CPU stand-in of the onnxrt-cuda
backend (TF32 emulated by rounding); every figure it writes is labelled CPU STAND-IN and is not a
GPU result. Use it to check the script before spending GPU time.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_common import (FP16_SHAPES, LARGE_SHAPES, ROOT, corpus_feed, error_phrase, find_corpus, manifest, stats,  # noqa: E402
                        worst_output)

# Each part's share of the time, scaled so that the shares of the parts run add up to --budget
# (default 450 s). A part may run until the sum of its share and the shares of the parts before
# it has passed since the start: what earlier parts left unused goes to the next ones, and the
# parts after it still have their own shares before the overall deadline.
BUDGETS = {"env": 20, "compare": 90, "bisect": 35, "isolate": 45, "marking": 30, "profile": 150,
           "profile-methods": 60, "fix-profile": 60, "fp16": 100}
PARTS = list(BUDGETS)
F32_TOL = (1e-4, 1e-3)
FP16_TOL = (1e-2, 1e-2)
CONV_MODELS = ("rapidocr_ppocrv4_det", "nudenet_320n_yolov8n", "rapidocr_ppocr_mobile_v2_cls")


class OutOfTime(Exception):
    pass


class Run:
    """Results, flushed after every step; budgets; the backend factory (GPU or CPU stand-in)."""

    def __init__(self, args):
        self.args = args
        self.cpu = args.cpu
        self.out = Path(args.out or os.environ.get("OUT") or "gpu_out")
        self.out.mkdir(parents=True, exist_ok=True)
        self.work = Path(tempfile.mkdtemp(prefix="gpu_run_"))
        self.t0 = time.monotonic()
        self.deadline = self.t0 + args.budget
        self.part_deadline = self.deadline
        mode = "CPU STAND-IN: the CPU provider ran everything; NOT GPU results" if self.cpu else "GPU"
        self.R: dict[str, Any] = {"meta": {"mode": mode, "gpu": not self.cpu, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                                           "budget_s": args.budget, "argv": sys.argv[1:], "commit": _commit()},
                                  "parts": {}}
        self.corpus = find_corpus(args.models)
        self.entries = manifest(self.corpus) if self.corpus else {}
        self.jobs: dict[str, Any] = {}

    # -- results --------------------------------------------------------------------------------
    def flush(self) -> None:
        self.R["meta"]["elapsed_s"] = round(time.monotonic() - self.t0, 1)
        tmp = self.out / "gpu_results.json.tmp"
        tmp.write_text(json.dumps(self.R, indent=1, default=_jsonable))
        os.replace(tmp, self.out / "gpu_results.json")
        try:
            (self.out / "gpu_results.md.tmp").write_text(markdown(self.R))
            os.replace(self.out / "gpu_results.md.tmp", self.out / "gpu_results.md")
        except Exception:  # noqa: BLE001 - the JSON is what counts; the tables are rebuilt from it
            self.R["meta"]["markdown_error"] = traceback.format_exc()[-800:]

    def left(self) -> float:
        return min(self.part_deadline, self.deadline) - time.monotonic()

    def check_time(self, need: float = 0.0) -> None:
        if self.left() < need:
            raise OutOfTime(f"time budget of this part used up ({need:.0f} s needed)")

    def say(self, *parts: Any) -> None:
        print(f"[{time.monotonic() - self.t0:6.1f}s]", *parts, flush=True)

    # -- backends and models --------------------------------------------------------------------
    def backend(self, spec: str = "onnxrt-cuda"):
        from surgeon import backends

        return backends.create(spec, cpu_stand_in=True) if self.cpu else backends.create(spec)

    def models(self) -> list[Path]:
        if self.corpus is None:
            return []
        paths = sorted(self.corpus.glob("*.onnx"))
        paths = [p for p in paths if not any(s in p.name for s in (".fp16.", ".fixed.", ".named.", ".full16.", ".mixed."))]
        if self.args.only:
            paths = [p for p in paths if any(s in p.name for s in self.args.only.split(","))]
        return paths

    def each_model(self, part: dict, fn: Callable[[Path], dict], paths: list[Path] | None = None,
                   need: float = 3.0) -> None:
        rows = part.setdefault("models", {})
        for path in self.models() if paths is None else paths:
            if self.left() < need:
                rows[path.name] = {"skipped": "time budget of this part used up"}
                continue
            t0 = time.monotonic()
            try:
                rows[path.name] = fn(path)
            except OutOfTime as exc:  # the part's time ran out inside this model: not a failure of the model
                rows[path.name] = {"skipped": str(exc)}
            except Exception as exc:  # noqa: BLE001 - one model's failure is a row, not the end
                rows[path.name] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:500],
                                   "trace": traceback.format_exc()[-1500:]}
            rows[path.name]["wall_s"] = round(time.monotonic() - t0, 2)
            row = rows[path.name]
            self.say(part.get("name", ""), path.name, "error" if row.get("error") else "skipped" if row.get("skipped") else "ok")
            if self.jobs:
                poll_cpu_jobs(self)  # so that a job's time is read when it ends, not at the end of the part
            self.flush()


def _commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip() or None
    except Exception:  # noqa: BLE001 - a copy without .git
        return None


def _jsonable(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return str(o)


def _median_ms(fn: Callable[[], Any], budget_s: float = 1.5, lo: int = 5, hi: int = 40, warmup: int = 3) -> dict:
    for _ in range(warmup):
        fn()
    t = time.perf_counter()
    fn()
    one = time.perf_counter() - t
    n = int(max(lo, min(hi, budget_s / max(one, 1e-6))))
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return {"median_ms": float(np.median(times)), "p90_ms": float(np.percentile(times, 90)), "runs": n}


def _load(path: Path):
    from surgeon import model as model_io

    return model_io.load(path)


# --- parts -------------------------------------------------------------------------------------------

def part_env(run: Run) -> dict:
    import onnx
    import onnxruntime as ort

    from surgeon.backends.onnxrt_cuda import cuda_runs, unavailable_reason

    env = {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count(),
           "onnxruntime": ort.__version__, "onnx": onnx.__version__, "numpy": np.__version__,
           "providers": ort.get_available_providers(), "ort_device": ort.get_device(),
           "corpus": str(run.corpus) if run.corpus else None, "corpus_models": [p.name for p in run.models()],
           "tools": {t: shutil.which(t) for t in ("nvidia-smi", "ncu", "nsys", "nvcc")},
           "cupti_libs": sorted(set(glob.glob("/opt/*/.venv/lib/python3*/site-packages/nvidia/*/lib/libcupti*")[:4]
                                    + glob.glob("/usr/local/cuda*/extras/CUPTI/lib64/libcupti*")[:2])),
           "ld_library_path": os.environ.get("LD_LIBRARY_PATH")}
    if shutil.which("nvidia-smi"):
        q = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,compute_cap", "--format=csv,noheader"],
                           capture_output=True, text=True, timeout=30)
        env["gpu"] = q.stdout.strip() or q.stderr.strip()
    if run.cpu:
        env["cuda_session"] = False
        env["cuda_why_not"] = "--cpu: the CPU stand-in runs everything"
        env["cuda_build"] = unavailable_reason() is None
        return env
    ok, why = cuda_runs()
    if not ok and hasattr(ort, "preload_dlls"):  # CUDA/cuDNN from pip's nvidia-* packages or PyTorch
        env["preload_dlls_tried"] = True
        try:
            ort.preload_dlls()
            ok, why = cuda_runs()
        except Exception as exc:  # noqa: BLE001 - recorded
            why += f"; preload_dlls failed: {exc}"
    env["cuda_session"], env["cuda_why_not"] = ok, why
    return env


def part_compare(run: Run) -> dict:
    """Every corpus model against ONNX Runtime CPU: TF32 on (compare's own follow-up re-runs it
    with TF32 off), per-output max error, latency ratio, and where ONNX Runtime put nodes on the CPU."""
    from surgeon.backends.onnxrt import OnnxRuntimeBackend
    from surgeon.debug.compare_run import compare

    part: dict = {"name": "compare", "tolerance": {"atol": F32_TOL[0], "rtol": F32_TOL[1], "note": "per-dtype defaults"}}
    run.R["parts"][part["name"]] = part  # partial results survive a stop
    part["warmup"] = _warm_up(run)

    def one(path: Path) -> dict:
        model = _load(path)
        feed = corpus_feed(path, run.entries)
        cuda = run.backend("onnxrt-cuda")
        report = compare(model, test=cuda, samples=[feed])
        row: dict = {"verdict": report.verdict, "error": report.error, "inputs": report.samples[0]}
        follow = report.followups[0] if report.followups else {}
        row["tf32"] = {"verdict": follow.get("verdict"), "message": follow.get("message")}
        row["outputs"] = {o["name"]: {"tf32_on": o["tf32_on"], "tf32_off": o["tf32_off"]} for o in follow.get("outputs", [])}
        if not row["outputs"]:
            row["outputs"] = {o.name: {"tf32_on": {"passed": o.passed, "max_abs": o.worst.max_abs}} for o in report.outputs}
        run.check_time(2)
        cpu_sess = OnnxRuntimeBackend().session(model)
        row["cpu_latency"] = _median_ms(lambda: cpu_sess.run(feed), budget_s=1.0)
        for label, spec in (("cuda_tf32", "onnxrt-cuda"), ("cuda_notf32", "onnxrt-cuda:tf32=0")):
            sess = run.backend(spec).session(model)
            row[f"{label}_latency"] = _median_ms(lambda: sess.run(feed), budget_s=0.8)
            if label == "cuda_tf32":
                cpu_nodes = sess.cpu_nodes()
                row["placement"] = {k: v["nodes"] for k, v in sess.placement.items()}
                row["cpu_node_ops"] = sorted({op for op, _ in cpu_nodes})[:12]
        row["cpu_over_cuda"] = row["cpu_latency"]["median_ms"] / row["cuda_tf32_latency"]["median_ms"]
        if path.stem in CONV_MODELS[:2]:  # the table: algorithm search and layout
            ref = cpu_sess.run(feed)
            configs = {}
            for label, spec in (("exhaustive_tf32", "onnxrt-cuda"), ("exhaustive_notf32", "onnxrt-cuda:tf32=0"),
                                ("heuristic_tf32_nhwc", "onnxrt-cuda:algo-search=heuristic,nhwc=1"),
                                ("default_tf32", "onnxrt-cuda:algo-search=default")):
                run.check_time(3)
                sess = run.backend(spec).session(model)
                got = sess.run(feed)
                per = {n: stats(ref[n], got[n], *F32_TOL) for n in ref}
                configs[label] = {"max_abs": max((p.get("max_abs") or 0.0) for p in per.values()),
                                  "latency": _median_ms(lambda: sess.run(feed), budget_s=0.6, lo=3)}
            row["configs"] = configs
        return row

    run.each_model(part, one, need=4)
    return part


def _warm_up(run: Run, seconds: float = 1.5) -> dict:
    """Run the first corpus model on the backend for a while before anything is timed, so that the
    first figures do not include the GPU leaving its idle clocks or the libraries' lazy loading
    (the first GPU run, 2026-12-05, timed its first model's TF32-on latency at twice TF32-off)."""
    paths = run.models()
    if not paths:
        return {"skipped": "no model"}
    path = paths[0]
    t0 = time.monotonic()
    try:
        feed = corpus_feed(path, run.entries)
        sess = run.backend("onnxrt-cuda").session(_load(path))
        n = 0
        while time.monotonic() - t0 < seconds or n < 3:
            sess.run(feed)
            n += 1
        return {"model": path.name, "runs": n, "s": round(time.monotonic() - t0, 2)}
    except Exception as exc:  # noqa: BLE001 - compare itself says what is wrong with the model
        return {"model": path.name, "error": f"{type(exc).__name__}: {exc}"[:300]}


def _planted():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_gpu_fixtures", ROOT / "fixtures" / "make_gpu_fixtures.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    model = mod.tf32_planted()
    return mod, model, mod.tf32_planted_inputs(model)


def _cli(run: Run, argv: list[str], timeout: float) -> dict:
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, str(ROOT / "cli.py"), *argv], capture_output=True, text=True,
                          timeout=max(5.0, timeout), cwd=run.work)
    return {"argv": argv, "rc": proc.returncode, "s": round(time.monotonic() - t0, 2),
            "stdout_tail": proc.stdout[-1500:], "stderr_tail": proc.stderr[-600:]}


def _planted_files(run: Run):
    from surgeon import input_files
    from surgeon import model as model_io

    mod, model, feed = _planted()
    mpath, ipath = run.work / "tf32_planted.onnx", run.work / "tf32_planted_inputs.npz"
    model_io.save(model, mpath)
    input_files.save_inputs(ipath, [feed])
    return mod, model, feed, mpath, ipath


def part_bisect(run: Run) -> dict:
    """A MatMul whose TF32 error exceeds float32's tolerance: does bisect name it, and in how many calls?"""
    from surgeon.backends.onnxrt import OnnxRuntimeBackend
    from surgeon.debug.bisect import bisect_model

    mod, model, feed, mpath, ipath = _planted_files(run)
    part: dict = {"name": "bisect", "planted": mod.CULPRIT, "model": "fixtures/make_gpu_fixtures.py:tf32_planted",
                  "configs": {}}
    run.R["parts"][part["name"]] = part  # partial results survive a stop
    for spec in ("onnxrt-cuda", "onnxrt-cuda:opt=disable", "onnxrt-cuda:tf32=0"):
        run.check_time(5)
        t0 = time.monotonic()
        try:
            outdir = run.work / f"bisect_{len(part['configs'])}"
            outdir.mkdir(parents=True, exist_ok=True)
            res = bisect_model(model, [feed], ref=OnnxRuntimeBackend(), test=run.backend(spec), outdir=outdir)
            names = [c["node"] for c in res.culprits]
            part["configs"][spec] = {"failed": res.failed, "culprits": names, "oracle_calls": res.calls,
                                     "diagnosis": res.diagnosis["message"], "reduced": res.reduced_nodes,
                                     "named_the_planted_node": names == [mod.CULPRIT] if res.failed else None,
                                     "introduced": [c.get("introduced") for c in res.culprits], "mode": res.mode,
                                     "s": round(time.monotonic() - t0, 2)}
        except Exception as exc:  # noqa: BLE001
            part["configs"][spec] = {"error": f"{type(exc).__name__}: {exc}"[:500], "trace": traceback.format_exc()[-1200:]}
        run.flush()
    run.check_time(8)
    part["cli"] = _cli(run, ["bisect", str(mpath), "--test", "onnxrt-cuda", "--load-inputs", str(ipath), "-o",
                             str(run.work / "bisect_cli")], timeout=run.left())
    report = run.work / "bisect_cli" / "report.json"
    if report.is_file():
        doc = json.loads(report.read_text())
        part["cli"]["culprits"] = [c["node"] for c in doc.get("culprits", [])]
        part["cli"]["oracle_calls"] = doc.get("oracle_calls")
    return part


def part_isolate(run: Run) -> dict:
    """cuda-options on the planted model, configuration under test TF32 + exhaustive + NHWC + all
    optimizers: the culprit set, ddmin's oracle calls, and one-at-a-time's."""
    from surgeon.debug import isolate
    from surgeon.debug.isolate.cuda_options import CudaOptionsTarget
    from surgeon.debug.isolate.ddmin import one_at_a_time

    mod, model, feed, mpath, ipath = _planted_files(run)
    part: dict = {"name": "isolate", "under_test": "onnxrt-cuda:nhwc=1"}
    run.R["parts"][part["name"]] = part  # partial results survive a stop
    target = CudaOptionsTarget(model, [feed], test=run.backend("onnxrt-cuda:nhwc=1"))
    part["choices"] = list(target.choices)
    result, report = isolate.run(target, str(run.work / "isolate"), confirm_repeats=1)
    part.update(status=report["status"], message=report["message"], oracle_calls=report["oracle_calls"],
                culprit_sets=[[c["choice"] for c in s] for s in report["culprit_sets"]], avoid=report.get("avoid"))
    run.flush()
    run.check_time(3)
    found, calls = one_at_a_time(len(target.choices), target)
    part["one_at_a_time"] = {"calls": calls, "failing_alone": [target.choices[i] for i in found]}
    part["ddmin_within_one_at_a_time"] = part["oracle_calls"] <= calls
    run.flush()
    run.check_time(8)
    part["cli"] = _cli(run, ["isolate", str(mpath), "--target", "cuda-options", "--test", "onnxrt-cuda:nhwc=1",
                             "--load-inputs", str(ipath), "-o", str(run.work / "isolate_cli"), "--confirm-repeats", "1"],
                       timeout=run.left())
    rep = run.work / "isolate_cli" / "report.json"
    if rep.is_file():
        doc = json.loads(rep.read_text())
        part["cli"]["culprit_sets"] = [[c["label"] for c in s] for s in doc.get("culprit_sets", [])]
        part["cli"]["oracle_calls"] = doc.get("oracle_calls")
    return part


def part_marking(run: Run) -> dict:
    """Does marking every intermediate tensor as an output change what CUDA computes? Max abs
    difference of the graph outputs, marked against plain, and plain against a fresh plain session
    (cuDNN's exhaustive search times algorithms per session and may pick another)."""
    from surgeon.backends.onnxrt import OnnxRuntimeBackend
    from surgeon.debug.bisect import extract

    part: dict = {"name": "marking"}
    run.R["parts"][part["name"]] = part  # partial results survive a stop

    def diff(a: dict, b: dict) -> float:
        return max((float(np.max(np.abs(a[k].astype(np.float64) - b[k].astype(np.float64)))) if a[k].size else 0.0)
                   for k in a if isinstance(a[k], np.ndarray) and a[k].dtype.kind == "f")

    def one(path: Path) -> dict:
        model = _load(path)
        feed = corpus_feed(path, run.entries)
        names = extract.all_tensor_names(model)
        marked = extract.with_outputs(model, names, extract.inferred_types(model))
        outs = [o.name for o in model.graph.output]
        row: dict = {"marked_tensors": len(names)}
        for label, spec in (("cuda_tf32_all", "onnxrt-cuda"), ("cuda_notf32_all", "onnxrt-cuda:tf32=0"),
                            ("cuda_notf32_noopt", "onnxrt-cuda:tf32=0,opt=disable"), ("cpu_all", None),
                            ("cpu_noopt", "noopt")):
            run.check_time(2)
            make = (lambda: OnnxRuntimeBackend()) if spec is None else (
                (lambda: OnnxRuntimeBackend(optimization="disable")) if spec == "noopt" else (lambda s=spec: run.backend(s)))
            plain = make().session(model).run(feed)
            again = make().session(model).run(feed)
            got = make().session(marked).run(feed)
            row[label] = {"mark_vs_plain": diff(plain, {k: got[k] for k in outs}), "plain_vs_new_session": diff(plain, again)}
        return row

    paths = [p for p in run.models() if p.stem in CONV_MODELS]
    run.each_model(part, one, paths=paths, need=6)
    return part


CUPTI_SECONDS = 60.0  # at most this long on the timing=cupti profiles (a worker importing PyTorch per model)


def _timing_row(p: Any) -> dict:
    t = p.gpu_timing or {}
    top = [{"kernel": k.name, "op": k.op_type, "median_ms": k.median_ms, "share": k.share, "origin": k.origin[:4],
            "how": k.how, "provider": k.detail.get("provider")} for k in p.kernels[:5]]
    return {"inputs": p.inputs, "method": t.get("method"), "node_sum_ms": t.get("node_sum_ms"),
            "latency_ms": t.get("latency_ms"), "ratio": t.get("ratio"),
            "within_10pct": (abs(t["ratio"] - 1) <= 0.10) if t.get("ratio") else None,
            "profiled_run_ms": t.get("profiled_run_ms"), "kernels": len(p.kernels),
            "mapped": sum(1 for k in p.kernels if k.how not in ("unmapped", "session")), "top": top,
            **{k: t[k] for k in ("gpu_busy_ms", "session_rows_ms", "clock_offset_us", "attributed_share", "torch")
               if k in t}}


def part_profile(run: Run) -> dict:
    """Per-node times against wall latency: large inputs first (the GPU busy), then the corpus's own;
    each with the default method and, where PyTorch is importable, with ``timing=cupti`` (CUPTI
    kernels per node plus the input and output copies) on the same inputs."""
    import importlib.util

    from surgeon.debug.profile import profile_model

    part: dict = {"name": "profile", "models": {}}
    run.R["parts"][part["name"]] = part  # partial results survive a stop
    if run.cpu:
        cupti_skip = "CPU stand-in: no GPU kernels to time"
    elif importlib.util.find_spec("torch") is None:
        cupti_skip = "PyTorch is not importable here (timing=cupti needs it)"
    else:
        cupti_skip = None
    cupti_s = 0.0
    by_stem = {p.stem: p for p in run.models()}
    # large inputs are sized for a GPU; on the CPU stand-in they would take minutes each
    todo = [] if run.cpu else [(by_stem[s], shapes, "large") for s, shapes in LARGE_SHAPES.items() if s in by_stem]
    todo += [(p, None, "manifest") for p in run.models()]
    for path, shapes, which in todo:
        key = f"{path.name} [{which}]"
        if run.left() < 10:
            part["models"][key] = {"skipped": "time budget of this part used up"}
            continue
        t0 = time.monotonic()
        try:
            feed = corpus_feed(path, run.entries, shapes)
            iterations = 10 if which == "large" else 20
            p = profile_model(path, backend="onnxrt-cuda", samples=[feed], warmup=3, iterations=iterations,
                              cpu_stand_in=run.cpu)
            part["models"][key] = dict(_timing_row(p), notes=p.notes[:4])
        except Exception as exc:  # noqa: BLE001
            part["models"][key] = {"error": f"{type(exc).__name__}: {exc}"[:500], "trace": traceback.format_exc()[-1200:]}
        part["models"][key]["wall_s"] = round(time.monotonic() - t0, 2)
        if cupti_skip or cupti_s >= CUPTI_SECONDS or run.left() < 10 or "error" in part["models"][key]:
            part["models"][key]["cupti"] = {"skipped": cupti_skip or ("time budget of this part used up" if run.left() < 10
                                                                      else "the default method failed" if "error" in part["models"][key]
                                                                      else f"the {CUPTI_SECONDS:.0f} s for timing=cupti used up")}
        else:
            t1 = time.monotonic()
            try:
                p = profile_model(path, backend="onnxrt-cuda:timing=cupti", samples=[feed], warmup=3, iterations=iterations)
                part["models"][key]["cupti"] = dict(_timing_row(p), notes=p.notes[:2])
            except Exception as exc:  # noqa: BLE001
                part["models"][key]["cupti"] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
            part["models"][key]["cupti"]["wall_s"] = round(time.monotonic() - t1, 2)
            cupti_s += time.monotonic() - t1
        run.say("profile", key, "error" if "error" in part["models"][key] else "ok")
        run.flush()
    ok = [k for k, v in part["models"].items() if v.get("within_10pct")]
    part["within_10pct"] = ok
    by_method: dict[str, dict] = {}
    for v in part["models"].values():
        for row in (v, v.get("cupti") or {}):
            if row.get("method"):
                m = by_method.setdefault(row["method"], {"profiles": 0, "within_10pct": 0})
                m["profiles"] += 1
                m["within_10pct"] += bool(row.get("within_10pct"))
    part["within_10pct_by_method"] = by_method
    part["cupti_s"] = round(cupti_s, 1)
    return part


# Models of the profile-methods part: two of many small kernels at the corpus's inputs (the
# synchronized sum read 2.4x and 4.3x their latency in the first GPU run), two with large inputs
# (0.76x and 0.62x there; copies of large inputs and outputs are in no node).
METHOD_MODELS = (("nudenet_320n_yolov8n", "manifest"), ("vit_tiny_legacy_op17", "manifest"),
                 ("rapidocr_ppocrv4_det", "large"), ("tutorial_cnn_op12_dynbatch", "large"))


def part_profile_methods(run: Run) -> dict:
    """Every way of timing nodes on CUDA that this machine offers, side by side on the same models
    and inputs, each as its per-run sum against the wall latency (bench/gpu_profile_methods.py)."""
    import gpu_profile_methods as gpm

    part: dict = {"name": "profile-methods", "models": {}}
    run.R["parts"][part["name"]] = part  # partial results survive a stop
    by_stem = {p.stem: p for p in run.models()}
    todo = [(by_stem[s], which) for s, which in METHOD_MODELS if s in by_stem and not (run.cpu and which == "large")]
    if not todo and run.models():
        todo = [(run.models()[0], "manifest")]  # a corpus without those models (the CPU check's one model)
    work = run.work / "methods"
    work.mkdir(parents=True, exist_ok=True)
    rows, kineto_models = part["models"], []
    from surgeon import input_files

    for path, which in todo:
        key = f"{path.name} [{which}]"
        if run.left() < 12:
            rows[key] = {"skipped": "time budget of this part used up"}
            continue
        t0 = time.monotonic()
        label = f"m{len(kineto_models)}"
        try:
            feed = corpus_feed(path, run.entries, LARGE_SHAPES.get(path.stem) if which == "large" else None)
            row = {"label": label, "inputs": ", ".join(f"{k}{list(v.shape)}" for k, v in feed.items())}
            row.update(gpm.measure_host(path, label, feed, run.backend, run.cpu, work))
            rows[key] = row
            if not run.cpu:
                inputs = work / f"{label}_inputs.npz"
                input_files.save_inputs(inputs, [feed])
                kineto_models.append({"label": label, "model": str(path), "inputs": str(inputs),
                                      "prefix": str(work / f"{label}_k")})
        except Exception as exc:  # noqa: BLE001
            rows[key] = {"error": f"{type(exc).__name__}: {exc}"[:500], "trace": traceback.format_exc()[-1200:]}
        rows[key]["wall_s"] = round(time.monotonic() - t0, 2)
        run.say("profile-methods", key, "error" if "error" in rows[key] else "ok")
        if run.jobs:
            poll_cpu_jobs(run)
        run.flush()
    runs = 10
    if run.cpu:
        for row in rows.values():
            for m in ("cupti-gpu-busy", "cupti-kernels-per-node"):
                if "methods" in row:
                    row["methods"][m] = {"skipped": "CPU stand-in: no GPU kernels to time"}
    elif kineto_models and run.left() > 15:
        t0 = time.monotonic()
        answer = gpm.run_kineto_worker(kineto_models, work, warmup=5, runs=runs, timeout=min(150.0, run.left() - 5))
        part["kineto_worker"] = {"s": round(time.monotonic() - t0, 1), "torch": answer.get("torch"),
                                 "unavailable": answer.get("unavailable"), "error": answer.get("worker_error")}
        for row in rows.values():
            if "methods" in row:
                gpm.add_kineto(row, answer, runs)
    for row in rows.values():
        if "methods" in row:
            row["closest_per_node_method"] = gpm.closest(row)
    part["closest"] = {k: r.get("closest_per_node_method") for k, r in rows.items() if "methods" in r}
    return part


# --- CPU jobs (bench/gpu_fp16_cpu.py), started early, collected late -----------------------------------

def start_cpu_jobs(run: Run) -> None:
    models = run.models()
    slots = max(1, min(8, (os.cpu_count() or 2) // 2))
    run.R["cpu_jobs"] = {"slots": slots, "models": {}}
    big_first = sorted(models, key=lambda p: -p.stat().st_size)  # the longest jobs start first
    run.jobs = {"queue": big_first, "running": {}, "slots": slots}
    poll_cpu_jobs(run)


def poll_cpu_jobs(run: Run) -> None:
    jobs = run.jobs
    if not jobs:
        return
    for name, (proc, t0, out) in list(jobs["running"].items()):
        if proc.poll() is not None or time.monotonic() - t0 > run.args.cpu_job_timeout:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            run.R["cpu_jobs"]["models"][name] = {"rc": proc.returncode, "s": round(time.monotonic() - t0, 1),
                                                 "killed": proc.returncode is not None and proc.returncode < 0,
                                                 "result": str(out)}
            del jobs["running"][name]
    while jobs["queue"] and len(jobs["running"]) < jobs["slots"]:
        path = jobs["queue"].pop(0)
        out = run.work / f"{path.stem}.cpu.json"
        log = open(run.work / f"{path.stem}.cpu.log", "w")
        proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve().parent / "gpu_fp16_cpu.py"), "--model",
                                 str(path), "--workdir", str(run.work / "fp16"), "--out", str(out), "--threads", "2"],
                                stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        jobs["running"][path.name] = (proc, time.monotonic(), out)


def wait_cpu_jobs(run: Run, until: float) -> None:
    while run.jobs and (run.jobs["queue"] or run.jobs["running"]) and time.monotonic() < until:
        poll_cpu_jobs(run)
        time.sleep(0.5)
    if run.jobs:
        for name, (proc, t0, out) in list(run.jobs["running"].items()):
            proc.kill()
            proc.wait()
            run.R["cpu_jobs"]["models"][name] = {"rc": proc.returncode, "killed": True, "s": round(time.monotonic() - t0, 1),
                                                 "result": str(out)}
        for path in run.jobs["queue"]:
            run.R["cpu_jobs"]["models"][path.name] = {"not_started": "out of time"}
        run.jobs = {}
    run.flush()


def cpu_result(run: Run, path: Path) -> dict:
    f = run.work / f"{path.stem}.cpu.json"
    return json.loads(f.read_text()) if f.is_file() else {}


def part_fix_profile(run: Run) -> dict:
    """``fix --profile`` on the GPU: each corpus model against ``surgeon fix``'s output, interleaved
    latency runs on CUDA, B/A with a 95% bootstrap interval and the A/A noise."""
    from surgeon.debug.profile import fix_summary

    part: dict = {"name": "fix-profile"}
    run.R["parts"][part["name"]] = part  # partial results survive a stop

    def one(path: Path) -> dict:
        cpu = cpu_result(run, path)
        fixed = (cpu.get("fix") or {}).get("path")
        if not fixed or not Path(fixed).is_file():
            return {"skipped": "no surgeon fix output", "cpu_steps": cpu.get("steps")}
        feed = corpus_feed(path, run.entries)
        c = fix_summary(path, fixed, samples=[feed], backend="onnxrt-cuda", cpu_stand_in=run.cpu, iterations=40, warmup=5)
        d = c.difference
        return {"headline": c.headline(), "noise_line": c.noise_line(), "nodes": [c.a.nodes, c.b.nodes],
                "latency_ms": [c.a.latency.median_ms, c.b.latency.median_ms], "ratio": d.ratio,
                "ci": [d.ci_low, d.ci_high], "noise": d.noise, "verdict": d.verdict}

    run.each_model(part, one, need=4)
    return part


def part_fp16(run: Run) -> dict:
    """The FP16 emulation's verdict against real CUDA float16 kernels, per corpus model, with what
    explains a disagreement: the outputs, the first tensor where the two part ways, the nodes ONNX
    Runtime ran on the CPU, and whether scan's and bisect's findings show on the GPU."""
    from surgeon.backends.onnxrt import OnnxRuntimeBackend
    from surgeon.debug.bisect import extract
    from surgeon.debug.bisect.reduce import reference_values
    from surgeon.precision.convert import feeds_for

    part: dict = {"name": "fp16", "tolerance": {"atol": FP16_TOL[0], "rtol": FP16_TOL[1]},
                  "gpu_config": "onnxrt-cuda:tf32=0 (FP32 islands at full float32, so only float16 differs)"}
    run.R["parts"][part["name"]] = part  # partial results survive a stop

    def one(path: Path) -> dict:
        cpu = cpu_result(run, path)
        prep = cpu.get("prepare") or {}
        if not prep.get("full16"):
            return {"skipped": prep.get("note") or "no float16 model from the CPU job", "cpu_steps": cpu.get("steps")}
        if run.cpu:
            crashed = _crashes_on_cpu([prep["full16"], (cpu.get("mixed") or {}).get("path")])
            if crashed:
                return {"skipped": f"CPU stand-in: {crashed}"}
        named, full16 = _load(Path(prep["named"])), _load(Path(prep["full16"]))
        feed = corpus_feed(path, run.entries, FP16_SHAPES.get(path.stem))  # the CPU job's inputs
        ref_all = reference_values(named, OnnxRuntimeBackend(), [feed])[0]
        outs = [o.name for o in named.graph.output]
        emu = cpu.get("emulation") or {}
        row: dict = {"emulation": {"passed": emu.get("passed"), "worst_output": emu.get("worst_output"),
                                   "worst": (emu.get("outputs") or {}).get(emu.get("worst_output") or "", {})}}
        backend = run.backend("onnxrt-cuda:tf32=0")
        try:
            sess = backend.session(full16)
        except Exception as exc:  # noqa: BLE001 - e.g. no float16 kernel anywhere: that is the finding
            row["cuda"] = {"passed": False, "error": str(exc)[:400]}
            row["agree"] = emu.get("passed") is False
            return row
        got = sess.run(feeds_for(full16, dict(feed)))
        per = {n: stats(ref_all[n], got[n].astype(ref_all[n].dtype) if isinstance(got.get(n), np.ndarray) and
                        ref_all[n].dtype.kind == "f" else got.get(n), *FP16_TOL) for n in outs}
        worst = worst_output(per)
        row["cuda"] = {"passed": all(p["passed"] for p in per.values()), "worst_output": worst, "worst": per[worst],
                       "outputs": per, "cpu_nodes": sess.cpu_nodes()[:20],
                       "placement": {k: v["nodes"] for k, v in sess.placement.items()}}
        row["agree"] = row["cuda"]["passed"] == emu.get("passed")
        # every float tensor on the GPU, for where the two part ways
        run.check_time(2)
        f16_names = {o for n in full16.graph.node for o in n.output if o}
        names = [t["tensor"] for t in cpu.get("tensors") or [] if t["tensor"] in f16_names]
        marked = extract.with_outputs(full16, names, extract.inferred_types(full16))
        gpu_all = backend.session(marked).run(feeds_for(full16, dict(feed)))
        gpu_t = {t: stats(ref_all[t], gpu_all[t].astype(np.float32), *FP16_TOL) for t in names
                 if isinstance(gpu_all.get(t), np.ndarray) and t in ref_all and ref_all[t].dtype.kind == "f"}
        emu_t = {t["tensor"]: t for t in cpu.get("tensors") or []}
        first_gpu = next((t for t in names if t in gpu_t and not gpu_t[t]["passed"]), None)
        first_emu = next((t["tensor"] for t in cpu.get("tensors") or [] if not t["passed"]), None)
        part_ways = next((t for t in names if t in gpu_t and t in emu_t and gpu_t[t]["passed"] != emu_t[t]["passed"]), None)
        row["tensors"] = {"compared": len(gpu_t), "first_beyond_tol_gpu": first_gpu, "first_beyond_tol_emulation": first_emu,
                          "first_where_they_differ": None if part_ways is None else {
                              "tensor": part_ways, "node": emu_t[part_ways]["node"], "op": emu_t[part_ways]["op"],
                              "emulation_tol_ratio": emu_t[part_ways]["tol_ratio"], "gpu_tol_ratio": gpu_t[part_ways].get("tol_ratio"),
                              "ref_absmax": emu_t[part_ways]["ref_absmax"], "gpu_nonfinite": gpu_t[part_ways].get("nonfinite"),
                              "emulation_nonfinite": emu_t[part_ways]["nonfinite"]}}
        # scan's "will" findings and bisect's culprits, seen on the GPU
        scan = cpu.get("scan") or {}
        row["scan"] = []
        for f in scan.get("will", [])[:10]:
            t = f.get("tensor")
            g = gpu_t.get(t)
            v = gpu_all.get(t)
            row["scan"].append({"kind": f.get("kind"), "node": f.get("node"), "tensor": t,
                                "on_gpu_nonfinite": int(np.sum(~np.isfinite(v.astype(np.float32)))) if isinstance(v, np.ndarray) else None,
                                "on_gpu_absmax": float(np.max(np.abs(v[np.isfinite(v)]))) if isinstance(v, np.ndarray) and np.isfinite(v).any() else None,
                                "on_gpu_beyond_tol": None if g is None else not g["passed"]})
        bis = cpu.get("bisect") or {}
        row["bisect"] = {"culprits": [], "emulation_diagnosis": (bis.get("diagnosis") or {}).get("message"),
                         "oracle_calls": bis.get("oracle_calls")}
        for c in (bis.get("culprits") or []) + (bis.get("accumulation") or []):
            ts = [t for t in c.get("tensors", []) if t in gpu_t]
            row["bisect"]["culprits"].append({"node": c["node"], "op": c.get("op_type"),
                                              "diverges_on_gpu": any(not gpu_t[t]["passed"] for t in ts) if ts else None,
                                              "gpu_tol_ratio": max((gpu_t[t].get("tol_ratio") or 0.0) for t in ts) if ts else None,
                                              "first_on_gpu_too": first_gpu in ts if ts else None})
        # surgeon fp16's output (islands searched on the emulation) on CUDA
        mixed = cpu.get("mixed") or {}
        if mixed.get("path") and Path(mixed["path"]).is_file():
            run.check_time(1)
            mm = _load(Path(mixed["path"]))
            try:
                mgot = backend.session(mm).run(feeds_for(mm, dict(feed)))
                mper = {n: stats(ref_all[n], mgot[n].astype(ref_all[n].dtype) if isinstance(mgot.get(n), np.ndarray)
                                 and ref_all[n].dtype.kind == "f" else mgot.get(n), *FP16_TOL) for n in outs}
                mw = worst_output(mper)
                row["mixed"] = {"emulation_passed": mixed.get("passed"), "fp32_nodes": len(mixed.get("kept") or []),
                                "cuda_passed": all(p["passed"] for p in mper.values()), "worst_output": mw, "worst": mper[mw]}
            except Exception as exc:  # noqa: BLE001
                row["mixed"] = {"emulation_passed": mixed.get("passed"), "error": str(exc)[:300]}
        row["explanation"] = explain(row)
        return row

    run.each_model(part, one, need=4)
    rows = [r for r in part["models"].values() if "agree" in r]
    part["agreement"] = {"models": len(rows), "agree": sum(1 for r in rows if r["agree"])}
    return part


def _crashes_on_cpu(paths: list) -> str | None:
    """Why ONNX Runtime's CPU provider cannot even open these float16 models, when it crashes
    doing so (onnxruntime 1.32's CPU provider segfaults creating a session of the recurrent
    model in float16): found in a child process, so that the stand-in run goes on."""
    files = [str(p) for p in paths if p and Path(p).is_file()]
    code = ("import sys, onnxruntime as ort\n"
            "for f in sys.argv[1:]:\n"
            "    try:\n"
            "        ort.InferenceSession(f, providers=['CPUExecutionProvider'])\n"
            "    except Exception:\n"
            "        pass  # a refusal is the part's own finding; only a crash is screened out\n")
    try:
        proc = subprocess.run([sys.executable, "-c", code, *files], capture_output=True, timeout=120)
    except subprocess.TimeoutExpired:
        return "creating the CPU sessions of the float16 models did not finish in 120 s"
    if proc.returncode < 0 or proc.returncode > 1:
        return (f"ONNX Runtime's CPU provider crashed creating a session of the float16 model "
                f"(exit {proc.returncode}); not compared")
    return None


def explain(row: dict) -> str:
    """One sentence from the gathered facts (no judgement beyond them)."""
    emu, cuda = row.get("emulation", {}), row.get("cuda", {})
    if cuda.get("error"):
        return f"CUDA could not run the float16 model: {cuda['error'][:200]}"
    e_w, c_w = emu.get("worst") or {}, cuda.get("worst") or {}
    facts = [f"emulation {'passes' if emu.get('passed') else 'fails'} (worst {emu.get('worst_output')}: {error_phrase(e_w)})",
             f"CUDA float16 {'passes' if cuda.get('passed') else 'fails'} (worst {cuda.get('worst_output')}: "
             f"{error_phrase(c_w)})"]
    if row.get("agree"):
        return "agree: " + "; ".join(facts)
    t = (row.get("tensors") or {}).get("first_where_they_differ")
    if t:
        facts.append(f"first tensor where they part: '{t['tensor']}' ({t['op']} '{t['node']}'): emulation "
                     f"{_g(t['emulation_tol_ratio'])}x tol, GPU {_g(t['gpu_tol_ratio'])}x tol, |ref| up to {_g(t['ref_absmax'])}"
                     + (f", GPU NaN/Inf {t['gpu_nonfinite']}" if t.get("gpu_nonfinite") else "")
                     + (f", emulation NaN/Inf {t['emulation_nonfinite']}" if t.get("emulation_nonfinite") else ""))
    cpu_ops = sorted({op for op, _ in cuda.get("cpu_nodes") or []})
    if cpu_ops:
        facts.append(f"ONNX Runtime ran {', '.join(cpu_ops[:6])} on the CPU")
    return "DISAGREE: " + "; ".join(facts)


def _g(v: Any) -> str:
    return "-" if v is None else (f"{v:.3g}" if isinstance(v, (int, float)) else str(v))


def _short(s: dict | None) -> str:
    """A table cell's error: NaN/Inf counted where there are any (an all-NaN output has no finite
    error to show), else the error in tolerances."""
    s = s or {}
    if s.get("nonfinite"):
        return f"{s['nonfinite']}/{s.get('elements')} non-finite"
    if s.get("reason"):
        return str(s["reason"])
    return f"{_g(s.get('tol_ratio'))}x tol"


# --- markdown ----------------------------------------------------------------------------------------------

def markdown(R: dict) -> str:
    m = R["meta"]
    L = [f"# GPU run ({m['mode']})", "", f"started {m['started']}, {m.get('elapsed_s')} s of a {m['budget_s']} s budget; "
         f"commit {m.get('commit')}; argv {' '.join(m['argv'])}", ""]
    if not m["gpu"]:
        L += ["**CPU STAND-IN: every figure below comes from ONNX Runtime's CPU provider (TF32 emulated by rounding); "
              "none is a GPU result.**", ""]
    P = R["parts"]
    env = P.get("env", {})
    if env:
        L += ["## Environment", "", f"- onnxruntime {env.get('onnxruntime')}, providers {env.get('providers')}, "
              f"onnx {env.get('onnx')}, numpy {env.get('numpy')}, Python {env.get('python')}, {env.get('cpus')} CPUs",
              f"- GPU: {env.get('gpu')}; CUDA session starts: {env.get('cuda_session')} {env.get('cuda_why_not') or ''}",
              f"- tools: {env.get('tools')}; CUPTI libraries seen: {len(env.get('cupti_libs') or [])}", ""]
    cmp_ = P.get("compare", {}).get("models", {})
    if cmp_:
        L += ["## compare: onnxrt-cuda against ONNX Runtime CPU (float32 atol 1e-4, rtol 1e-3)", "",
              "| model | output | TF32 on: max abs (ok?) | TF32 off: max abs (ok?) | TF32 verdict | CPU ms | CUDA ms TF32 on / off | CPU/CUDA | nodes on CPU |",
              "|---|---|---|---|---|---|---|---|---|"]
        for name, r in cmp_.items():
            if "outputs" not in r:
                L.append(f"| {name} | {r.get('error') or r.get('skipped')} | | | | | | | |")
                continue
            first = True
            for out, o in r["outputs"].items():
                on, off = o.get("tf32_on") or {}, o.get("tf32_off") or {}
                cells = [name if first else "", out, f"{_g(on.get('max_abs'))} ({'ok' if on.get('passed') else 'NO'})",
                         f"{_g(off.get('max_abs'))} ({'ok' if off.get('passed') else 'NO'})" if off else "-"]
                if first:
                    cells += [str(r["tf32"].get("verdict")), _g(r["cpu_latency"]["median_ms"]),
                              f"{_g(r['cuda_tf32_latency']['median_ms'])} / {_g(r['cuda_notf32_latency']['median_ms'])}",
                              _g(r.get("cpu_over_cuda")), str((r.get("placement") or {}).get("CPUExecutionProvider", 0))]
                else:
                    cells += [""] * 5
                L.append("| " + " | ".join(cells) + " |")
                first = False
        configs = {n: r["configs"] for n, r in cmp_.items() if r.get("configs")}
        if configs:
            L += ["", "| model | configuration | max abs vs CPU | latency ms |", "|---|---|---|---|"]
            for n, cs in configs.items():
                for label, c in cs.items():
                    L.append(f"| {n} | {label} | {_g(c['max_abs'])} | {_g(c['latency']['median_ms'])} |")
        L.append("")
    b = P.get("bisect")
    if b:
        L += [f"## bisect: planted TF32 divergence at '{b.get('planted')}'", "",
              "| test backend | fails | culprits | named the planted node | oracle calls | diagnosis |", "|---|---|---|---|---|---|"]
        for spec, c in (b.get("configs") or {}).items():
            L.append(f"| {spec} | {c.get('failed')} | {', '.join(c.get('culprits') or []) or c.get('error', '')} | "
                     f"{c.get('named_the_planted_node')} | {c.get('oracle_calls')} | {c.get('diagnosis')} |")
        if b.get("cli"):
            L.append(f"\nCLI `surgeon bisect --test onnxrt-cuda`: exit {b['cli']['rc']}, culprits {b['cli'].get('culprits')}, "
                     f"{b['cli'].get('oracle_calls')} oracle calls")
        L.append("")
    i = P.get("isolate")
    if i and "choices" in i:
        L += ["## isolate --target cuda-options (planted model, under test: " + i["under_test"] + ")", "",
              f"- {len(i['choices'])} choices; status {i.get('status')}; culprit sets {i.get('culprit_sets')}",
              f"- oracle calls: ddmin {i.get('oracle_calls')} (preconditions and confirmations included) against "
              f"one-at-a-time {i.get('one_at_a_time', {}).get('calls')} (failing alone: {i.get('one_at_a_time', {}).get('failing_alone')}); "
              f"within: {i.get('ddmin_within_one_at_a_time')}"]
        if i.get("cli"):
            L.append(f"- CLI: exit {i['cli']['rc']}, culprit sets {i['cli'].get('culprit_sets')}, {i['cli'].get('oracle_calls')} calls")
        L.append("")
    mk = P.get("marking", {}).get("models", {})
    if mk:
        L += ["## marking every tensor as an output: max abs change of the graph outputs", "",
              "| model | configuration | marked vs plain | plain vs new session |", "|---|---|---|---|"]
        for n, r in mk.items():
            if r.get("error") or r.get("skipped"):
                L.append(f"| {n} | {r.get('error') or r.get('skipped')} | | |")
                continue
            for label, v in r.items():
                if isinstance(v, dict):
                    L.append(f"| {n} | {label} | {_g(v['mark_vs_plain'])} | {_g(v['plain_vs_new_session'])} |")
        L.append("")
    pr = P.get("profile", {}).get("models", {})
    if pr:
        L += ["## profile --backend onnxrt-cuda: per-node sum against wall latency", "",
              "| model [inputs] | method | node sum ms | latency ms | sum/latency | within 10% | kernels mapped | top kernel |",
              "|---|---|---|---|---|---|---|---|"]
        for n, r in pr.items():
            for row in (r, r.get("cupti")):
                if row is None:
                    continue
                if row is not r and not row.get("method"):
                    L.append(f"| {n} | timing=cupti: {row.get('error') or row.get('skipped')} | | | | | | |")
                    continue
                top = (row.get("top") or [{}])[0]
                L.append(f"| {n} {row.get('inputs', '')} | {row.get('method') or row.get('error') or row.get('skipped')} | "
                         f"{_g(row.get('node_sum_ms'))} | {_g(row.get('latency_ms'))} | {_g(row.get('ratio'))} | "
                         f"{row.get('within_10pct')} | {row.get('mapped')}/{row.get('kernels')} | "
                         f"{top.get('kernel', '')} ({top.get('op', '')}) {_g(top.get('median_ms'))} ms |")
        bm = P["profile"].get("within_10pct_by_method") or {}
        L.append("\nwithin 10%: " + ("; ".join(f"{m}: {v['within_10pct']} of {v['profiles']} profile(s)" for m, v in bm.items())
                                     or f"{len(P['profile'].get('within_10pct') or [])} profile(s)"))
        copies = [(n, r["cupti"]) for n, r in pr.items() if (r.get("cupti") or {}).get("session_rows_ms")]
        if copies:
            L.append("\ntiming=cupti, rows that are no node (median ms per run) and the GPU's busy time:\n")
            for n, c in copies:
                rows = ", ".join(f"{k} {_g(v)}" for k, v in c["session_rows_ms"].items())
                L.append(f"- {n}: {rows}; GPU busy {_g(c.get('gpu_busy_ms'))} ms; clock offset {c.get('clock_offset_us')} us, "
                         f"{_g(c.get('attributed_share'))} of GPU activities in a node")
        L.append("")
    pm = P.get("profile-methods", {}).get("models", {})
    if pm:
        L += ["## profile-methods: per-run sum of node times against wall latency, method by method", "",
              "Each cell: sum ms (sum/latency). Latency with numpy inputs and outputs, as `profile` reports it; "
              "CUPTI GPU busy also against the latency with inputs and outputs on the device.", "",
              "| model [inputs] | latency ms numpy I/O / device I/O | copies in / out ms (MB) | synchronized-node-events | "
              "host-node-events | ORT model_run | CUPTI GPU busy (/ device-I/O latency) | CUPTI kernels per node (attributed, offset us) | closest per-node |",
              "|---|---|---|---|---|---|---|---|---|"]
        for n, r in pm.items():
            if "methods" not in r:
                L.append(f"| {n} | {r.get('error') or r.get('skipped')} | | | | | | | |")
                continue
            m, c = r["methods"], r.get("copies") or {}

            def cell(name: str, m=m) -> str:
                v = m.get(name) or {}
                if v.get("skipped") or v.get("error"):
                    return "-: " + str(v.get("skipped") or v.get("error"))[:80]
                return f"{_g(v.get('node_sum_ms'))} ({_g(v.get('ratio'))})"

            busy = m.get("cupti-gpu-busy") or {}
            att = m.get("cupti-kernels-per-node") or {}
            busy_cell = cell("cupti-gpu-busy") + (f" / {_g(busy.get('ratio_to_device_io'))}" if busy.get("ratio_to_device_io") else "")
            att_cell = cell("cupti-kernels-per-node") + (
                f", {_g(att.get('attributed_share'))} attributed, offset {att.get('offset_us')}" if "attributed_share" in att else "")
            copies = (f"{_g(c.get('h2d_ms'))} / {_g(c.get('d2h_ms'))} ({_g(c.get('input_mb'))} / {_g(c.get('output_mb'))})"
                      if c else r.get("device_io_error", "-"))
            L.append(f"| {n} {r.get('inputs', '')} | {_g(r.get('latency_ms'))} / {_g(r.get('latency_device_io_ms'))} | {copies} | "
                     f"{cell('synchronized-node-events')} | {cell('host-node-events')} | {cell('ort-model-run')} | {busy_cell} | "
                     f"{att_cell} | {r.get('closest_per_node_method')} |")
        kw = P["profile-methods"].get("kineto_worker")
        if kw:
            L.append(f"\nCUPTI worker: torch {kw.get('torch')}, {kw.get('s')} s"
                     + (f"; unavailable: {kw['unavailable']}" if kw.get("unavailable") else "")
                     + (f"; error: {kw['error']}" if kw.get("error") else ""))
        L.append("")
    fp = P.get("fix-profile", {}).get("models", {})
    if fp:
        L += ["## fix --profile on the GPU (original A, surgeon fix output B)", "",
              "| model | nodes A → B | latency ms A → B | B/A | 95% interval | noise | verdict |", "|---|---|---|---|---|---|---|"]
        for n, r in fp.items():
            if "ratio" not in r:
                L.append(f"| {n} | {r.get('skipped') or r.get('error')} | | | | | |")
                continue
            L.append(f"| {n} | {r['nodes'][0]} → {r['nodes'][1]} | {_g(r['latency_ms'][0])} → {_g(r['latency_ms'][1])} | "
                     f"{r['ratio']:.3f} | {r['ci'][0]:.3f}–{r['ci'][1]:.3f} | {_g(r.get('noise'))} | {r['verdict']} |")
        L.append("")
    f16 = P.get("fp16", {})
    if f16.get("models"):
        L += ["## fp16: the CPU emulation's verdict against real CUDA float16 kernels (atol = rtol = 1e-2)", "",
              "| model | emulation (worst output: error) | CUDA float16 (worst output: error) | agree | surgeon fp16 output on CUDA | explanation |",
              "|---|---|---|---|---|---|"]
        for n, r in f16["models"].items():
            if "agree" not in r:
                L.append(f"| {n} | {r.get('skipped') or r.get('error')} | | | | |")
                continue
            e, c = r["emulation"], r["cuda"]
            mixed = r.get("mixed") or {}
            mtxt = (f"{'ok' if mixed.get('cuda_passed') else 'FAILS'} ({mixed.get('fp32_nodes')} FP32 nodes)"
                    if "cuda_passed" in mixed else mixed.get("error", "-"))
            L.append(f"| {n} | {'ok' if e['passed'] else 'FAIL'} ({e.get('worst_output')}: {_short(e.get('worst'))}) | "
                     f"{'ok' if c.get('passed') else 'FAIL'} ({c.get('worst_output')}: {_short(c.get('worst'))}) | "
                     f"{r['agree']} | {mtxt} | {r.get('explanation', '')} |")
        a = f16.get("agreement") or {}
        L.append(f"\nagreement: {a.get('agree')} of {a.get('models')} models\n")
    errs = {k: v.get("error") for k, v in P.items() if isinstance(v, dict) and v.get("error")}
    if errs:
        L += ["## parts that failed", ""] + [f"- {k}: {v}" for k, v in errs.items()]
    return "\n".join(L) + "\n"


# --- driver ---------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", help="folder of corpus .onnx files (default: ../shared/corpus, shared/corpus, .gpuwork/models)")
    ap.add_argument("--out", help="output folder (default $OUT, else ./gpu_out)")
    ap.add_argument("--budget", type=float, default=450.0, help="seconds for the whole run (default 450)")
    ap.add_argument("--only", help="comma-separated substrings of model file names")
    ap.add_argument("--parts", help=f"comma-separated parts (default all: {','.join(PARTS)})")
    ap.add_argument("--cpu", action="store_true", help="CPU stand-in: run every code path on the CPU provider, labelled as such")
    ap.add_argument("--cpu-job-timeout", type=float, default=300.0, help="seconds one model's CPU job may take (default 300)")
    args = ap.parse_args(argv)

    def stop(signum, _frame):  # a kill from a time limit still ends the CPU jobs and writes the results
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    run = Run(args)
    wanted = args.parts.split(",") if args.parts else PARTS
    unknown = [p for p in wanted if p not in PARTS]
    if unknown:
        ap.error(f"unknown part {unknown[0]}; parts: {', '.join(PARTS)}")
    run.say(f"mode {run.R['meta']['mode']}; corpus {run.corpus}; {len(run.models())} models; out {run.out}")
    table = {"env": part_env, "compare": part_compare, "bisect": part_bisect, "isolate": part_isolate,
             "marking": part_marking, "profile": part_profile, "profile-methods": part_profile_methods,
             "fix-profile": part_fix_profile, "fp16": part_fp16}
    need_jobs = any(p in wanted for p in ("fix-profile", "fp16"))
    scale = args.budget / sum(BUDGETS[p] for p in wanted)
    planned = 0.0  # seconds from the start by which the parts so far are to end
    try:
        for name in PARTS:
            if name == "bisect" and need_jobs:
                start_cpu_jobs(run)  # after compare's CPU latencies, before the GPU-only parts
            if name == "fix-profile" and need_jobs:
                wait_cpu_jobs(run, until=min(run.deadline - 140, time.monotonic() + args.cpu_job_timeout))
            if name not in wanted:
                continue
            if name != "env" and not run.cpu and not run.R["parts"].get("env", {}).get("cuda_session", True):
                run.R["parts"][name] = {"skipped": "no CUDA session could start (see env)"}
                continue
            planned += BUDGETS[name] * scale
            run.part_deadline = run.t0 + planned
            t0 = time.monotonic()
            run.say("part", name, f"(share {BUDGETS[name] * scale:.0f} s, {run.left():.0f} s with what earlier parts left)")
            try:
                run.R["parts"][name] = table[name](run)
            except OutOfTime as exc:
                run.R["parts"].setdefault(name, {})["stopped"] = str(exc)
            except Exception as exc:  # noqa: BLE001 - the next part still runs
                run.R["parts"].setdefault(name, {}).update(error=f"{type(exc).__name__}: {exc}"[:600],
                                                           trace=traceback.format_exc()[-2000:])
            run.R["parts"].setdefault(name, {}).update(wall_s=round(time.monotonic() - t0, 1),
                                                       share_s=round(BUDGETS[name] * scale, 1),
                                                       window_s=round(run.part_deadline - t0, 1))
            if run.jobs:
                poll_cpu_jobs(run)
            run.flush()
    finally:
        if run.jobs:
            wait_cpu_jobs(run, until=time.monotonic())
        run.flush()
        shutil.rmtree(run.work, ignore_errors=True)
    run.say(f"wrote {run.out / 'gpu_results.json'} and {run.out / 'gpu_results.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
