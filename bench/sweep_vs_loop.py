"""`surgeon sweep --steps fix,trt-check --jobs 2` against a shell loop of `surgeon fix` and
`surgeon trt-check` per model, and a second sweep with nothing changed against the first.

Models: the 12 of ../shared/corpus and the top-level fixtures/*.onnx. The loop is what users
run today: for each model, `surgeon fix M -o FIXED` then `surgeon trt-check FIXED` (the sweep's
trt-check also runs on the fixed model), one fresh process per command, one model after the
other. The sweep writes into a fresh --out each repeat; the resume run is the same sweep again
into the same --out (every step from the cache). Repeats alternate loop, sweep, resume so that
the machine's load falls on all three alike. Prints each wall time, the medians and the ratios
(targets: sweep <= 0.6 x loop, resume <= 0.05 x sweep).

    python bench/sweep_vs_loop.py [--repeats 3] [--jobs 2] [--models SUBSTR ...] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _bytecode import compile_checkout  # bench/, beside this script

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CORPUS = ROOT.parent / "shared" / "corpus"
CLI = [sys.executable, str(ROOT / "cli.py")]


def models(substrings: list[str]) -> list[Path]:
    found = sorted(CORPUS.glob("*.onnx")) + sorted((ROOT / "fixtures").glob("*.onnx"))
    return [m for m in found if not substrings or any(s in m.name for s in substrings)]


def loop_script(paths: list[Path], work: Path) -> str:
    """The shell loop: two commands per model, each a fresh process (exit codes ignored, as a loop
    that must get through the zoo does)."""
    cli = " ".join(shlex.quote(c) for c in CLI)
    lines = ["set -u"]
    for i, m in enumerate(paths):
        fixed = shlex.quote(str(work / f"{i}_{m.stem}.onnx"))
        lines.append(f"{cli} fix {shlex.quote(str(m))} -o {fixed} > /dev/null 2>&1 || true")
        lines.append(f"[ -f {fixed} ] && {cli} trt-check {fixed} > /dev/null 2>&1 || true")
    return "\n".join(lines) + "\n"


def wall(cmd: list[str]) -> tuple[float, int]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode not in (0, 1):  # 1: a model failed a step, which is a result; anything else is not
        sys.exit(f"{' '.join(cmd[:3])} ... exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    return time.perf_counter() - t0, proc.returncode


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--models", nargs="*", default=[], metavar="SUBSTR")
    ap.add_argument("--json", type=Path, help="write the timings here")
    args = ap.parse_args()
    paths = models(args.models)
    if not CORPUS.is_dir():
        print(f"note: {CORPUS} is missing; the fixtures alone are swept", file=sys.stderr)
    compile_checkout(ROOT)
    print(f"{len(paths)} models, steps fix,trt-check, {args.jobs} sweep workers, {args.repeats} repeat(s)", flush=True)
    times: dict[str, list[float]] = {"loop": [], "sweep": [], "resume": []}
    summary: dict = {}
    with tempfile.TemporaryDirectory(prefix="sweep-bench-") as tmp:
        root = Path(tmp)
        for r in range(args.repeats):
            work = root / f"loop{r}"
            work.mkdir()
            script = work / "loop.sh"
            script.write_text(loop_script(paths, work))
            t0 = time.perf_counter()
            subprocess.run(["bash", str(script)], check=True)
            t = time.perf_counter() - t0
            times["loop"].append(t)
            shutil.rmtree(work)
            out = root / f"sweep{r}"
            sweep = [*CLI, "sweep", *map(str, paths), "--steps", "fix,trt-check", "--jobs", str(args.jobs), "--out", str(out)]
            t, rc = wall(sweep)
            times["sweep"].append(t)
            summary = json.loads((out / "sweep.json").read_text())["summary"]
            t, _ = wall(sweep)
            times["resume"].append(t)
            again = json.loads((out / "sweep.json").read_text())
            assert again["started_jobs"] == 0, "the second sweep started jobs: the cache missed"
            shutil.rmtree(out)
            print(f"repeat {r + 1}: loop {times['loop'][-1]:.1f} s, sweep {times['sweep'][-1]:.1f} s (exit {rc}), "
                  f"resume {times['resume'][-1]:.2f} s", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"sweep results: {summary}")
    print(f"median wall: loop {med['loop']:.1f} s, sweep {med['sweep']:.1f} s, resume {med['resume']:.2f} s")
    print(f"sweep / loop   = {med['sweep'] / med['loop']:.3f}  (target <= 0.6)")
    print(f"resume / sweep = {med['resume'] / med['sweep']:.3f}  (target <= 0.05)")
    if args.json:
        args.json.write_text(json.dumps({"models": [str(p) for p in paths], "times": times, "medians": med}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
