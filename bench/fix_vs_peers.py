"""`surgeon fix` against onnxsim and onnxslim on the same models, in the same run.

For every model of ../shared/corpus and the onnx package's light_* model-zoo models (their
ConstantOfShape weight fills replaced by seeded random initializers, so that identical
branches do not merge): median wall time of several runs, peak RSS, and node counts
(subgraphs included) side by side, with ratios ours/peer. Each measurement runs in a fresh
process. Machines here are shared and noisy: read the ratios, not the absolute times.

    python bench/fix_vs_peers.py [--runs 3] [--models SUBSTR ...] [--json bench/results/fix.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CORPUS = ROOT.parent / "shared" / "corpus"
TOOLS = ("surgeon", "surgeon-noverify", "onnxslim", "onnxsim")


def light_models(dest: Path) -> list[Path]:
    """The light_* models with random weights instead of constant fills."""
    src_dir = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for src in sorted(src_dir.glob("light_*.onnx")):
        target = dest / src.name
        if not target.exists():
            model = onnx.load(str(src))
            inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
            rng = np.random.default_rng(len(src.name))
            keep, new_inits = [], []
            for node in model.graph.node:
                if node.op_type == "ConstantOfShape" and node.input[0] in inits:
                    shape = tuple(int(d) for d in inits[node.input[0]])
                    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
                    value = rng.normal(0, 1 / np.sqrt(max(fan_in, 1)), shape).astype(np.float32)
                    if len(shape) == 1:  # biases, BN stats: keep variances positive
                        value = np.abs(value) + 0.5
                    new_inits.append(numpy_helper.from_array(value, node.output[0]))
                else:
                    keep.append(node)
            del model.graph.node[:]
            model.graph.node.extend(keep)
            model.graph.initializer.extend(new_inits)
            if model.ir_version < 4:  # IR 3: every initializer must also be a graph input
                model.graph.input.extend(
                    onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in new_inits)
            onnx.save(model, str(target))
        out.append(target)
    return out


def measure(tool: str, path: Path) -> dict:
    proc = subprocess.run([sys.executable, str(HERE / "_fix_worker.py"), tool, str(path)],
                          capture_output=True, text=True, cwd=ROOT, timeout=1800)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["failed"])[-1]
        return {"error": last[:120]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--models", nargs="*", default=[], help="only models whose file name contains one of these")
    ap.add_argument("--no-light", action="store_true")
    ap.add_argument("--json", default=str(HERE / "results" / "fix_vs_peers.json"))
    args = ap.parse_args()
    models = sorted(CORPUS.glob("*.onnx")) if CORPUS.is_dir() else []
    if not args.no_light:
        models += light_models(HERE / "results" / "light")
    if args.models:
        models = [m for m in models if any(s in m.name for s in args.models)]
    results = {}
    for path in models:
        original = onnx.load(str(path), load_external_data=False)
        from surgeon.graph import count_nodes

        row = {"input_nodes": count_nodes(original)}
        for tool in TOOLS:
            runs = [measure(tool, path) for _ in range(args.runs)]
            good = [r for r in runs if "error" not in r]
            if not good:
                row[tool] = {"error": runs[0]["error"]}
                continue
            row[tool] = {**good[0], "seconds": statistics.median(r["seconds"] for r in good),
                         "maxrss_mb": statistics.median(r["maxrss_mb"] for r in good), "runs": len(good)}
        results[path.name] = row
        print(path.name, json.dumps(row), flush=True)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=2))
    render(results)


def render(results: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="surgeon fix vs onnxslim / onnxsim (median of runs; ratio = ours / peer)")
    for c in ("model", "in", "surgeon", "onnxslim", "onnxsim", "t ours(noverify)/slim", "t ours(verify)/slim",
              "t ours(noverify)/sim", "RSS MB ours/slim/sim", "note"):
        t.add_column(c)

    def nodes(r):
        return str(r["nodes"]) if "nodes" in r else "fail"

    for name, row in results.items():
        s, sn, sl, si = row["surgeon"], row["surgeon-noverify"], row["onnxslim"], row["onnxsim"]

        def ratio(a, b):
            return f"{a['seconds'] / b['seconds']:.2f}" if "seconds" in a and "seconds" in b and b["seconds"] > 0 else "-"

        notes = []
        ours = sn.get("nodes", s.get("nodes"))
        for peer, r in (("onnxslim", sl), ("onnxsim", si)):
            if ours is not None and "nodes" in r and ours > r["nodes"]:
                notes.append(f"behind {peer} by {ours - r['nodes']}")
            if "error" in r:
                notes.append(f"{peer} failed")
        if s.get("rolled_back"):
            notes.append("rolled back: " + ",".join(s["rolled_back"]))
        rss = "/".join(f"{r['maxrss_mb']:.0f}" if "maxrss_mb" in r else "-" for r in (sn, sl, si))
        t.add_row(name, str(row["input_nodes"]), nodes(sn), nodes(sl), nodes(si), ratio(sn, sl), ratio(s, sl),
                  ratio(sn, si), rss, "; ".join(notes))
    Console(width=200).print(t)


if __name__ == "__main__":
    main()
