"""Node counts (If/Loop bodies included) after each tool's command line, on the corpus.

Every tool runs as a user runs it: ``surgeon fix IN -o OUT``, ``onnxslim IN OUT``,
``onnxsim IN OUT``, each in its own process. surgeon verifies on the manifest's feed sets
(some models need particular input values, such as silero's sample rate), as
tests/test_corpus.py does. ``--without a,b`` adds a column for surgeon's default pipeline
without those passes (what they contribute), and ``--timings`` prints the median time of
each pass on the largest model over ``--runs`` runs (the machine is shared: read ratios).

    python bench/node_counts_cli.py [--models SUBSTR ...] [--without merge-duplicates,fold-control-flow]
                                    [--timings] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CORPUS = ROOT.parent / "shared" / "corpus"


def _count(path: Path) -> int | str:
    import onnx

    from surgeon.graph import count_nodes

    return count_nodes(onnx.load(str(path), load_external_data=False)) if path.is_file() else "fail"


def _feeds(entry: dict, dest: Path) -> Path:
    """The manifest's feed sets as a Polygraphy JSON input file."""
    import numpy as np
    from polygraphy.json import save_json

    from gpu_common import manifest_value  # bench/, beside this script

    rng = np.random.default_rng(0)
    save_json([{k: manifest_value(v, rng) for k, v in fs.items()} for fs in entry["feeds"]], str(dest))
    return dest


def _surgeon(src: Path, out: Path, feeds: Path | None, passes: str | None, report: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / "cli.py"), "fix", str(src), "-o", str(out), "--report", str(report)]
    if feeds is not None:
        cmd += ["--load-inputs", str(feeds)]
    if passes:
        cmd += ["--passes", passes]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", default=[])
    ap.add_argument("--without", default="", help="comma-separated passes for a default-pipeline-without column")
    ap.add_argument("--timings", action="store_true", help="per-pass median seconds on the largest model")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from surgeon.pipeline import registry

    manifest = {e["file"]: e for e in json.loads((CORPUS / "manifest.json").read_text())["models"]}
    models = sorted(CORPUS.glob("*.onnx"))
    if args.models:
        models = [m for m in models if any(s in m.name for s in args.models)]
    without = [p for p in args.without.split(",") if p]
    reduced = ",".join(p for p in registry.default_pipeline() if p not in without) if without else None
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for src in models:
            entry = manifest.get(src.name)
            feeds = _feeds(entry, tmp / f"{src.stem}.json") if entry and entry.get("feeds") else None
            row = {"model": src.name, "in": _count(src)}
            _surgeon(src, tmp / "s.onnx", feeds, None, tmp / "r.json")
            row["surgeon"] = _count(tmp / "s.onnx")
            report = tmp / "r.json"
            rolled = json.loads(report.read_text()).get("rolled_back", []) if report.is_file() else ["?"]
            if reduced:
                _surgeon(src, tmp / "w.onnx", feeds, reduced, tmp / "rw.json")
                row["without"] = _count(tmp / "w.onnx")
            for tool in ("onnxslim", "onnxsim"):
                out = tmp / f"{tool}.onnx"
                out.unlink(missing_ok=True)
                subprocess.run([tool, str(src), str(out)], capture_output=True, text=True, cwd=tmp)
                row[tool] = _count(out)
            row["rolled_back"] = ",".join(rolled)
            rows.append(row)
            print(json.dumps(row), flush=True)
            for f in tmp.glob("*.onnx"):
                f.unlink()
        cols = ["model", "in"] + (["without"] if reduced else []) + ["surgeon", "onnxslim", "onnxsim", "rolled_back"]
        print("| " + " | ".join("surgeon without " + args.without if c == "without" else c for c in cols) + " |")
        print("|" + "---|" * len(cols))
        for r in rows:
            print("| " + " | ".join(str(r.get(c, "")) for c in cols) + " |")
        if args.timings and models:
            largest = max(models, key=lambda p: p.stat().st_size)
            entry = manifest.get(largest.name)
            feeds = _feeds(entry, tmp / "feeds.json") if entry and entry.get("feeds") else None
            per_pass: dict[str, list[float]] = {}
            totals = []
            for _ in range(args.runs):
                _surgeon(largest, tmp / "t.onnx", feeds, None, tmp / "rt.json")
                report = json.loads((tmp / "rt.json").read_text())
                totals.append(report["seconds"])
                for p in report["passes"]:
                    per_pass.setdefault(f"{p['round']}:{p['name']}", []).append(p["seconds"])
            print(f"\nper-pass seconds on {largest.name} (median of {args.runs}; pipeline total "
                  f"{statistics.median(totals):.2f} s)")
            for key, values in per_pass.items():
                print(f"  {key:32s} {statistics.median(values):7.3f}")


if __name__ == "__main__":
    main()
