"""`surgeon fp16` against NVIDIA Model Optimizer's AutoCast and onnxconverter-common's
`auto_convert_mixed_precision`, on the same models, inputs and tolerance, in the same run.

For every float model of ../shared/corpus (inputs from its manifest) and the transformer and
detector of bench/fp16_models.py, each tool runs as its users run it, in its own process:

- surgeon: ``surgeon fp16 MODEL -o OUT --load-inputs IN.json --atol A --rtol R --keep-io-types``;
- AutoCast: ``python -m modelopt.onnx.autocast --onnx_path MODEL --calibration_data IN.json
  --keep_io_types --providers cpu`` (heuristics: data_max=512, init_max=65504; no validation);
- auto_convert_mixed_precision: bench/_acmp_driver.py (its API has no CLI) with a validation
  function using our rule, on the first sample (the API takes one feed dict).

Every written model is then judged the same way here: its FP32 float compute nodes (those
whose outputs it left in float32), its error per output on surgeon's FP16 emulation (the
engine-like rounding) with those nodes kept, and its error on ONNX Runtime's own float16
execution; "met" is the comparison rule on every sample. Oracle calls are the models a tool
judged (surgeon: its report; auto_convert: its attempts; AutoCast: none) and ORT runs are
counted by wrapping ``InferenceSession.run`` (bench/_count_ort_runs.py), surgeon's from its
report. Wall time is the median of --runs, peak RSS from /usr/bin/time. The machine is shared
and loaded: read ratios, not absolute times.

AutoCast and onnxconverter-common need onnx 1.21 / onnxruntime-gpu, which would replace this
environment's packages, so they live in their own venv (--peers-python, default
/work/models/peers-venv/bin/python, made with ``python -m venv --system-site-packages`` and
``pip install "nvidia-modelopt[onnx]" onnxconverter-common``).

    python bench/fp16_vs_peers.py [--models SUBSTR ...] [--atol 1e-2 --rtol 1e-2] [--runs 1] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
CORPUS = ROOT.parent / "shared" / "corpus"
OWN = Path("/work/models/fp16")
CORPUS_MODELS = ("tutorial_cnn_op12_static", "openwakeword_melspectrogram", "rapidocr_ppocr_mobile_v2_cls",
                 "rapidocr_ppocrv4_det", "magika_standard_v3_3", "nudenet_320n_yolov8n", "vit_tiny_legacy_op17",
                 "rnn_bilstm_gru_legacy_op13", "cf_loop_if_scripted_legacy_op16", "silero_vad_v6")
OWN_MODELS = ("encoder_outliers_op14", "detector_decode_op17")
INT_RANGES = {"bytes": (0, 255), "tokens": (0, 999)}
TOOLS = ("surgeon", "autocast", "acmp")


def manifest_samples(name: str) -> list[dict[str, np.ndarray]]:
    entry = next(m for m in json.loads((CORPUS / "manifest.json").read_text())["models"] if m["file"] == f"{name}.onnx")
    out = []
    for i, feed in enumerate(entry["feeds"][:2]):
        rng = np.random.default_rng(i)
        sample = {}
        for k, spec in feed.items():
            shape, kind, dtype = tuple(spec["shape"]), spec["kind"], np.dtype(spec["dtype"])
            if kind == "const":
                sample[k] = np.full(shape, spec["value"], dtype)
            elif kind == "zeros":
                sample[k] = np.zeros(shape, dtype)
            elif kind == "int":
                lo, hi = INT_RANGES.get(k, (0, 99))
                sample[k] = rng.integers(lo, hi, size=shape, endpoint=True).astype(dtype)
            elif kind == "uniform":
                sample[k] = rng.uniform(0, 1, size=shape).astype(dtype)
            else:
                sample[k] = rng.normal(0, 1, size=shape).astype(dtype)
        out.append(sample)
    return out


def own_samples(model: onnx.ModelProto) -> list[dict[str, np.ndarray]]:
    from surgeon import input_data

    ranges = {"tokens": (0, 999), "images": (0.0, 1.0)}
    names = {i.name for i in model.graph.input}
    return input_data.make_samples(model, value_ranges={k: v for k, v in ranges.items() if k in names}, iterations=2, seed=0)


def timed(cmd: list[str], *, timeout: float, cwd: Path) -> tuple[int, float, float, str, str]:
    """(exit code, seconds, peak RSS MB, last stderr line, stdout) of one command in its own process."""
    rss_file = cwd / "rss.txt"
    wrap = ["/usr/bin/time", "-f", "%M", "-o", str(rss_file)] if Path("/usr/bin/time").exists() else []
    start = time.perf_counter()
    try:
        proc = subprocess.run(wrap + cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd)
        rc, err, out = proc.returncode, proc.stderr, proc.stdout
    except subprocess.TimeoutExpired:
        return 124, time.perf_counter() - start, 0.0, f"timeout after {timeout:g} s", ""
    secs = time.perf_counter() - start
    rss = 0.0
    if rss_file.exists():
        try:
            rss = float(rss_file.read_text().strip().splitlines()[-1]) / 1024
        except ValueError:
            pass
    crash = [l for l in err.splitlines() if l.startswith("Command terminated by signal")]
    if crash:
        return rc, secs, rss, f"crashed ({crash[0].split('by ')[-1]})", out
    lines = [l for l in err.strip().splitlines() if l.strip() and not l.startswith("Command exited")
             and "warn" not in l.lower()]
    return rc, secs, rss, (lines[-1] if lines else ""), out


def evaluate(named: onnx.ModelProto, cls, out_path: Path, samples, reference, tolerances) -> dict:
    """The same judgement for every tool's model: FP32 nodes, emulation error, ORT float16 error."""
    from onnx import TensorProto

    from surgeon.precision.api import run_on_ort
    from surgeon.precision.oracle import EmulationOracle

    model = onnx.load(str(out_path))
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:
        inferred = model
    g = inferred.graph
    types = {vi.name: vi.type.tensor_type.elem_type for vi in (*g.input, *g.value_info, *g.output)}
    types.update({t.name: t.data_type for t in g.initializer})
    by_name = {n.name: n for n in model.graph.node}
    kept, missing = [], []
    for c in cls.nodes:
        if c.fixed is not None:
            continue
        node = by_name.get(c.label)
        if node is None:
            missing.append(c.label)
            continue
        if any(j < len(node.output) and types.get(node.output[j]) == TensorProto.FLOAT for j in c.low_outputs):
            kept.append(c.label)
    oracle = EmulationOracle(named, cls, samples, reference, tolerances)
    emu = oracle.evaluate(frozenset(kept) | frozenset(missing))
    ort, note, _ = run_on_ort(model, samples, reference, tolerances)
    return {"fp32_nodes": len(kept), "missing_nodes": len(missing), "candidates": len(cls.candidates),
            "emu_met": emu.passed, "emu_usage": {o.name: o.usage for o in emu.outputs}, "emu_error": emu.error,
            "ort_met": None if ort is None else ort.passed, "ort_note": note}


def run_model(name: str, path: Path, samples, args, work: Path) -> dict:
    from surgeon import input_files
    from surgeon.backends.fp16 import classify
    from surgeon.precision.api import name_nodes, reference_outputs
    from surgeon.precision.oracle import resolve_tolerances

    work.mkdir(parents=True, exist_ok=True)
    named, _, _ = name_nodes(onnx.load(str(path)))
    named_path = work / f"{name}.named.onnx"
    onnx.save(named, str(named_path))
    inputs = work / "inputs.json"
    input_files.save_inputs(str(inputs), samples)
    cls = classify(named)
    reference, _ = reference_outputs(named, samples)
    tolerances = resolve_tolerances(reference[0], args.atol, args.rtol, "fp16")
    row = {"model": name, "nodes": len(named.graph.node), "candidates": len(cls.candidates), "tools": {}}
    counter = [args.peers_python, str(HERE / "_count_ort_runs.py")]
    for tool in TOOLS:
        if tool != "surgeon" and args.no_peers:
            continue
        out = work / f"{tool}.onnx"
        count = work / f"{tool}.count.json"
        rep = work / "surgeon.json"
        if tool == "surgeon":
            cmd = [sys.executable, str(ROOT / "cli.py"), "fp16", str(named_path), "-o", str(out), "--load-inputs", str(inputs),
                   "--atol", str(args.atol), "--rtol", str(args.rtol), "--keep-io-types", "--no-trt-check", "--report", str(rep),
                   "--max-oracle-calls", str(args.max_oracle_calls)]
        elif tool == "autocast":
            cmd = [*counter, str(count), "-m", "modelopt.onnx.autocast", "--onnx_path", str(named_path), "--output_path",
                   str(out), "--calibration_data", str(inputs), "--keep_io_types", "--providers", "cpu", "--log_level", "ERROR"]
        else:
            cmd = [*counter, str(count), str(HERE / "_acmp_driver.py"), str(named_path), str(inputs), str(out),
                   str(args.atol), str(args.rtol)]
        times, rss, rc, why, stdout = [], 0.0, 0, "", ""
        for _ in range(args.runs):
            out.unlink(missing_ok=True)
            rc, secs, peak, why, stdout = timed(cmd, timeout=args.timeout, cwd=work)
            times.append(secs)
            rss = max(rss, peak)
            if rc != 0:
                break
        entry = {"rc": rc, "seconds": statistics.median(times), "peak_mb": round(rss, 1)}
        if rc != 0 or not out.exists():
            entry["error"] = why or f"exit code {rc}"
            if tool == "acmp":
                entry["oracle_calls"] = stdout.count("Running attempt")  # attempts made before it failed
            row["tools"][tool] = entry
            print(f"  {tool}: failed ({entry['error']})", flush=True)
            continue
        if tool == "surgeon":
            data = json.loads(rep.read_text())
            entry["oracle_calls"] = data["search"]["oracle_calls"]
            entry["ort_runs"] = data["search"]["onnxruntime_runs"]
            entry["status"] = data["status"]
        else:
            counted = json.loads(count.read_text()) if count.exists() else {}
            entry["ort_runs"] = counted.get("runs")
            # auto_convert prints one line per attempt, then validates the final model once more
            entry["oracle_calls"] = stdout.count("Running attempt") + 1 if tool == "acmp" else 0
        entry.update(evaluate(named, cls, out, samples, reference, tolerances))
        row["tools"][tool] = entry
        print(f"  {tool}: {entry['fp32_nodes']}/{entry['candidates']} FP32, emu met={entry['emu_met']}, "
              f"ort met={entry['ort_met']}, oracle calls={entry.get('oracle_calls')}, ORT runs={entry.get('ort_runs')}, "
              f"{entry['seconds']:.1f} s", flush=True)
    return row


def fmt_usage(usage: dict) -> str:
    return ", ".join(f"{k}:{v:.2g}" for k, v in usage.items())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=[], metavar="SUBSTR")
    ap.add_argument("--atol", type=float, default=1e-2)
    ap.add_argument("--rtol", type=float, default=1e-2)
    ap.add_argument("--runs", type=int, default=1, help="runs per tool for the median wall time (default 1)")
    ap.add_argument("--timeout", type=float, default=1800.0)
    ap.add_argument("--max-oracle-calls", type=int, default=300)
    ap.add_argument("--peers-python", default="/work/models/peers-venv/bin/python")
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--workdir", default="/tmp/surgeon-fp16-bench")
    ap.add_argument("--json", metavar="OUT.json")
    args = ap.parse_args()
    if not args.no_peers and not Path(args.peers_python).exists():
        sys.exit(f"peers' python {args.peers_python} not found (see the module docstring), or use --no-peers")
    if not all((OWN / f"{m}.onnx").exists() for m in OWN_MODELS):
        subprocess.run([sys.executable, str(HERE / "fp16_models.py"), "--out", str(OWN)], check=True)
    work = Path(args.workdir)
    jobs = [(m, CORPUS / f"{m}.onnx", "corpus") for m in CORPUS_MODELS] + [(m, OWN / f"{m}.onnx", "own") for m in OWN_MODELS]
    jobs = [j for j in jobs if not args.models or any(s in j[0] for s in args.models)]
    rows = []
    for name, path, kind in jobs:
        if not path.exists():
            print(f"{name}: not found at {path}; skipped")
            continue
        print(f"{name}:", flush=True)
        samples = manifest_samples(name) if kind == "corpus" else own_samples(onnx.load(str(path)))
        shutil.rmtree(work / name, ignore_errors=True)
        rows.append(run_model(name, path, samples, args, work / name))

    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"FP16 mixed precision at atol={args.atol:g} rtol={args.rtol:g} (FP32 nodes of the float compute nodes; "
                    "usage = max |err| / (atol + rtol|ref|), met when <= 1)")
    for c in ("model", "tool", "FP32 nodes", "emulation: usage per output", "met (emu)", "met (ORT fp16)", "oracle calls",
              "ORT runs", "wall s", "peak MB"):
        t.add_column(c)
    for row in rows:
        for tool, e in row["tools"].items():
            if "error" in e:
                t.add_row(row["model"], tool, "-", f"failed: {e['error'][:70]}", "-", "-", str(e.get("oracle_calls", "-")), "-",
                          f"{e['seconds']:.1f}", f"{e['peak_mb']:.0f}")
                continue
            t.add_row(row["model"], tool, f"{e['fp32_nodes']}/{row['candidates']}", fmt_usage(e["emu_usage"]),
                      str(e["emu_met"]), str(e["ort_met"]), str(e.get("oracle_calls")), str(e.get("ort_runs")),
                      f"{e['seconds']:.1f}", f"{e['peak_mb']:.0f}")
    Console(width=220).print(t)

    def ok(row, tool):
        e = row["tools"].get(tool, {})
        return "error" not in e and bool(e)

    print("\nGoals:")
    sur = [r for r in rows if ok(r, "surgeon")]
    print(f"- surgeon meets the tolerance (emulation) on {sum(r['tools']['surgeon']['emu_met'] for r in sur)}/{len(sur)} models; "
          f"on ONNX Runtime float16 on {sum(bool(r['tools']['surgeon']['ort_met']) for r in sur)}/{len(sur)}")
    both = [r for r in sur if ok(r, "autocast") and r["tools"]["autocast"]["emu_met"]]
    for r in both:
        s, a = r["tools"]["surgeon"]["fp32_nodes"], r["tools"]["autocast"]["fp32_nodes"]
        print(f"- {r['model']}: FP32 nodes surgeon {s} vs AutoCast {a} (AutoCast meets the tolerance): "
              f"{'fewer' if s < a else 'equal' if s == a else 'MORE'}")
    missed = [r["model"] for r in rows if ok(r, "autocast") and not r["tools"]["autocast"]["emu_met"]]
    if missed:
        print(f"- AutoCast misses the tolerance on the emulation on: {', '.join(missed)}")
    for r in sur:
        if ok(r, "acmp"):
            s, c = r["tools"]["surgeon"]["ort_runs"], r["tools"]["acmp"]["ort_runs"]
            print(f"- {r['model']}: ORT runs surgeon {s} vs auto_convert_mixed_precision {c} "
                  f"(ratio {s / c:.2f}); oracle calls {r['tools']['surgeon']['oracle_calls']} vs {r['tools']['acmp']['oracle_calls']}")
    if args.json:
        Path(args.json).write_text(json.dumps({"atol": args.atol, "rtol": args.rtol, "rows": rows}, indent=1, default=str))


if __name__ == "__main__":
    main()
