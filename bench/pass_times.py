"""Where `surgeon fix`'s time goes on one model: per pass and round, medians of several CLI runs.

The engine's promise is that after loading, cost follows the graph, not the weights: a pass
that changes a handful of nodes of a 500 MB model should take well under 100 ms (its own
work, the structural checks and the proof or its share of the batched comparison). This
runs ``python cli.py fix MODEL -o OUT --report R.json`` (verified, and ``--no-verify``) a
few times, and prints each pass's median seconds with what it changed, plus the whole
command's wall time and the time inside the pipeline.

    python bench/pass_times.py MODEL.onnx [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(model: Path, verify: bool, tmp: Path) -> tuple[dict, float]:
    report = tmp / "r.json"
    cmd = [sys.executable, str(ROOT / "cli.py"), "fix", str(model), "-o", str(tmp / "o.onnx"), "--report", str(report)]
    if not verify:
        cmd.append("--no-verify")
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return json.loads(report.read_text()), time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    for verify in (False, True):
        runs = []
        with tempfile.TemporaryDirectory() as d:
            for _ in range(args.runs):
                runs.append(_run(args.model, verify, Path(d)))
        first = runs[0][0]
        print(f"\n{args.model.name}, {'verified' if verify else '--no-verify'}: wall {statistics.median(w for _, w in runs):.2f} s, "
              f"pipeline {statistics.median(r['seconds'] for r, _ in runs):.2f} s (medians of {args.runs}); "
              f"nodes {first['nodes_before']} -> {first['nodes_after']}")
        print("| pass | round | result | changes counted | nodes | verified | median ms |")
        print("|---|---|---|---|---|---|---|")
        for i, p in enumerate(first["passes"]):
            times = [r["passes"][i]["seconds"] for r, _ in runs if len(r["passes"]) > i]
            print(f"| {p['name']} | {p['round']} | {p['status']} | {sum(p['counts'].values())} | "
                  f"{p['nodes_before']} -> {p['nodes_after']} | {p['checked'] or '-'} | {1000 * statistics.median(times):.0f} |")


if __name__ == "__main__":
    main()
