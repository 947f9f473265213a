"""Is `surgeon fix`'s output faster than the original? And onnxslim's? (ONNX Runtime CPU)

For every model of ../shared/corpus:

1. ``python cli.py fix IN -o OUT`` (this checkout, default pipeline) and ``onnxslim IN OUT``,
   each run once through its command line, as users run them;
2. the original, surgeon's output and onnxslim's output run on the manifest's first feed
   set, in interleaved rounds (the order rotating each round), one intra-op thread, each
   with a plain session (latency) and a profiled one (ONNX Runtime's profiler), so the
   same rounds also give the profiler's overhead;
3. per output: median(output)/median(original) with a 95% bootstrap interval over rounds,
   and the run-to-run noise (A/A split of each series); "slower" means beyond both;
   when surgeon's output is slower, the per-op-type difference says where.

    python bench/profile_corpus.py [--runs 30] [--warmup 5] [--models a.onnx,b.onnx] [--json OUT.json]

The machine these figures come from is shared (2 cores, several workers): read ratios
measured in the same run, not absolute times.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpus"
sys.path.insert(0, str(ROOT))

from surgeon import model as model_io  # noqa: E402
from surgeon.debug.profile import _op_diff, onnxrt  # noqa: E402
from surgeon.debug.profile.stats import compare  # noqa: E402


def feeds_from_manifest(entry: dict, seed: int = 0) -> dict:
    """The manifest's first feed set (the same value kinds tests/test_corpus.py uses)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, spec in entry["feeds"][0].items():
        dtype, shape, kind = np.dtype(spec["dtype"]), tuple(spec["shape"]), spec["kind"]
        if kind == "zeros":
            out[name] = np.zeros(shape, dtype)
        elif kind == "const":
            out[name] = np.full(shape, spec["value"], dtype)
        elif kind == "int":
            out[name] = rng.integers(0, spec["hi"], size=shape).astype(dtype)
        elif kind == "uniform":
            out[name] = rng.uniform(0, 1, size=shape).astype(dtype)
        else:
            out[name] = (rng.standard_normal(shape) * spec.get("scale", 1.0)).astype(dtype)
    return out


def tool(argv: list[str]) -> tuple[bool, float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT)
    last = (proc.stderr.strip().splitlines() or [""])[-1]
    return proc.returncode == 0, time.perf_counter() - t0, last


def one_model(entry: dict, tmp: Path, runs: int, warmup: int) -> dict:
    src = CORPUS / entry["file"]
    stem = src.stem
    row: dict = {"model": entry["file"]}
    fixed, slim = tmp / f"{stem}.surgeon.onnx", tmp / f"{stem}.onnxslim.onnx"
    ok_fix, row["fix_s"], err_fix = tool([sys.executable, "cli.py", "fix", str(src), "-o", str(fixed)])
    ok_slim, row["onnxslim_s"], err_slim = tool(["onnxslim", str(src), str(slim)])
    if not ok_fix:
        row["fix_error"] = err_fix
    if not ok_slim:
        row["onnxslim_error"] = err_slim
    sources = [onnxrt.Source("original", model_io.load(src), src)]
    if ok_fix:
        try:
            src_fix = onnxrt.Source("surgeon", model_io.load(fixed), fixed)
            onnxrt.session(src_fix, "onnxrt")
            sources.append(src_fix)
        except Exception as exc:
            row["fix_error"] = f"output does not load: {str(exc).splitlines()[0][:200]}"
    if ok_slim:
        try:
            src_slim = onnxrt.Source("onnxslim", model_io.load(slim), slim)
            onnxrt.session(src_slim, "onnxrt")
            sources.append(src_slim)
        except Exception as exc:  # onnxslim wrote something that does not load: say so, go on
            row["onnxslim_error"] = f"output does not load: {str(exc).splitlines()[0][:200]}"
    feeds = [feeds_from_manifest(entry)]
    profiles = onnxrt.run(sources, feeds, threads=1, warmup=warmup, iterations=runs, profile=True)
    base = profiles[0]
    row["nodes"] = {p.model: p.nodes for p in profiles}
    row["original_ms"] = base.latency.median_ms
    row["overhead"] = {p.model: p.overhead for p in profiles}
    for p in profiles[1:]:
        d = compare(base.latency_runs_ms, p.latency_runs_ms)
        row[p.model] = {"ms": p.latency.median_ms, **d.to_dict()}
        if p.model == "surgeon" and d.verdict == "slower":
            row["surgeon_slower_op_diff"] = [o.to_dict() for o in _op_diff(base, p)[:6]]
    return row


def fmt(row: dict, who: str) -> str:
    r = row.get(who)
    if r is None:
        return f"failed: {row.get(who.replace('surgeon', 'fix') + '_error', '')[:120]}"
    return f"{r['ms']:.3g} ms x{r['ratio']:.3f} [{r['ci_low']:.3f}-{r['ci_high']:.3f}] {r['verdict']}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=30, help="measured rounds per model (default 30)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--models", help="comma-separated corpus file names (default: all)")
    ap.add_argument("--json", default=str(Path(tempfile.gettempdir()) / "profile_corpus.json"))
    args = ap.parse_args()
    entries = json.loads((CORPUS / "manifest.json").read_text())["models"]
    if args.models:
        keep = set(args.models.split(","))
        entries = [e for e in entries if e["file"] in keep]
    rows = []
    print(f"load average at start: {os.getloadavg()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="profile-corpus-") as d:
        for entry in entries:
            t0 = time.perf_counter()
            row = one_model(entry, Path(d), args.runs, args.warmup)
            row["bench_s"] = time.perf_counter() - t0
            rows.append(row)
            n = row["nodes"]
            print(f"{row['model']}: nodes {n.get('original')} / surgeon {n.get('surgeon', '-')} / onnxslim "
                  f"{n.get('onnxslim', '-')}; original {row['original_ms']:.3g} ms; surgeon {fmt(row, 'surgeon')}; "
                  f"onnxslim {fmt(row, 'onnxslim')}; noise ±{(row.get('surgeon') or {}).get('noise', float('nan')) * 100:.1f}%; "
                  f"profiler overhead {row['overhead']['original'] * 100:+.1f}%", flush=True)
            if "surgeon_slower_op_diff" in row:
                print("   surgeon slower; per op type (A=original, B=surgeon):",
                      ", ".join(f"{o['op_type']} {o['delta_ms']:+.3f} ms" for o in row["surgeon_slower_op_diff"]))
    print(f"load average at end: {os.getloadavg()}")
    Path(args.json).write_text(json.dumps({"runs": args.runs, "warmup": args.warmup, "threads": 1, "rows": rows},
                                          indent=2, default=float))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
