"""`surgeon trt-check` over the corpus and the trt-check fixtures, before and after `surgeon fix`,
against `polygraphy inspect capability` with TensorRT-RTX (which only parses).

For every model of ../shared/corpus and fixtures/trt_check: parse ok, build ok, failing nodes
and time for the original and for `python cli.py fix IN -o OUT`; the median wall time of
trt-check and of `POLYGRAPHY_USE_TENSORRT_RTX=1 polygraphy inspect capability` over several
runs (each a fresh process, as users run them) with the ratio; peak RSS (os.wait4, the
process and the workers it waited for); and the number of distinct failing nodes trt-check
finds against what a single parse reports and what polygraphy lists. The machines are
shared and noisy: read medians and ratios.

    python bench/trt_check_corpus.py [--runs 3] [--models SUBSTR ...] [--no-fix] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import os
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
FIXTURES = ROOT / "fixtures" / "trt_check"


def timed(cmd: list[str], *, cwd: Path | None = None, env: dict | None = None) -> tuple[int, float, int, str]:
    """(exit code, wall seconds, peak RSS in MB of the process and its waited-for children, stdout+stderr)."""
    with tempfile.TemporaryFile() as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        _pid, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode("utf-8", "replace")
    return proc.returncode, wall, usage.ru_maxrss // 1024, text


def trt_check(model: Path, report: Path, engine: str, *extra: str) -> tuple[int, float, int, dict]:
    rc, wall, rss, text = timed([sys.executable, str(ROOT / "cli.py"), "trt-check", str(model), "--engine", engine,
                                 "--report", str(report), *extra])
    data = json.loads(report.read_text()) if report.is_file() and rc in (0, 1) else {"error": text.strip().splitlines()[-1:]}
    return rc, wall, rss, data


def polygraphy_capability(model: Path, work: Path) -> tuple[int, float, int, int]:
    """Exit code, wall, RSS and the rows of polygraphy's unsupported-node summary."""
    env = {**os.environ, "POLYGRAPHY_USE_TENSORRT_RTX": "1"}
    rc, wall, rss, text = timed(["polygraphy", "inspect", "capability", str(model), "-o", str(work / "capability")],
                                cwd=work, env=env)
    rows, in_summary = 0, False
    for line in text.splitlines():
        if "===== Summary =====" in line:
            in_summary = True
            continue
        if in_summary:
            if line.startswith("[") and not line.startswith("    "):
                in_summary = False
            elif "|" in line and "Operator" not in line and not set(line.strip()) <= {"-"}:
                rows += 1
    return rc, wall, rss, rows


def summarize(data: dict) -> dict:
    if "error" in data:
        return {"parse": "error", "build": "error", "failing": "-", "first": "-", "parses": "-", "t": "-"}
    build = data["build"]
    parse_ok = data["parse"]["ok"]
    return {"parse": "ok" if parse_ok else "FAIL",
            "build": "ok" if build["ok"] else ("FAIL" if build["ok"] is False else "-"),
            "failing": len(data["failures"]), "first": data["parse"]["first_parse_failures"] if parse_ok is False else 0,
            "parses": data["parse"]["parses"], "phases": sorted({f["phase"] for f in data["failures"]})}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--models", nargs="*", default=[])
    ap.add_argument("--no-fix", action="store_true")
    ap.add_argument("--engine", default="trt-rtx")
    ap.add_argument("--json", metavar="OUT.json")
    args = ap.parse_args(argv)
    models = sorted(CORPUS.glob("*.onnx")) if CORPUS.is_dir() else []
    models += sorted(FIXTURES.glob("*.onnx"))
    if args.models:
        models = [m for m in models if any(s in m.name for s in args.models)]
    rows: list[dict] = []
    compile_checkout(ROOT)
    print_header(args)
    with tempfile.TemporaryDirectory(prefix="trt-check-bench-") as tmp:
        tmp = Path(tmp)
        for model in models:
            print(f"# {model.name}", file=sys.stderr, flush=True)
            walls, parse_walls, pg_walls, rss, pg_rss = [], [], [], 0, 0
            data: dict = {}
            for i in range(args.runs):
                rep = tmp / f"{model.stem}.{i}.json"
                _rc, wall, r, data = trt_check(model, rep, args.engine)
                walls.append(wall)
                rss = max(rss, r)
                _rc, pwall_ours, _r, _d = trt_check(model, tmp / f"{model.stem}.{i}.nb.json", args.engine, "--no-build")
                parse_walls.append(pwall_ours)
                prc, pwall, pr, pg_rows = polygraphy_capability(model, tmp)
                pg_walls.append(pwall)
                pg_rss = max(pg_rss, pr)
            row = {"model": model.name, "before": summarize(data), "trt_check_s": statistics.median(walls),
                   "trt_check_parse_only_s": statistics.median(parse_walls),
                   "polygraphy_s": statistics.median(pg_walls), "trt_check_rss_mb": rss, "polygraphy_rss_mb": pg_rss,
                   "polygraphy_rows": pg_rows, "polygraphy_rc": prc}
            if not args.no_fix:
                fixed = tmp / f"{model.stem}.fixed.onnx"
                frc, fwall, _frss, ftext = timed([sys.executable, str(ROOT / "cli.py"), "fix", str(model), "-o", str(fixed)])
                row["fix_s"] = fwall
                if frc == 0:
                    _rc, awall, _r, after = trt_check(fixed, tmp / f"{model.stem}.fixed.json", args.engine)
                    row["after"] = summarize(after)
                    row["after_s"] = awall
                else:
                    row["after"] = {"parse": "fix failed: " + (ftext.strip().splitlines()[-1:] or [""])[0][:80]}
            rows.append(row)
            print_row(row)  # as each model finishes: a run cut short keeps its rows
            if args.json:
                Path(args.json).write_text(json.dumps(rows, indent=1))
    print_summary(rows)
    return 0


def print_header(args) -> None:
    print(f"engine: {args.engine}; {args.runs} run(s) each, medians; shared, loaded machine\n")
    print("| model | parse | build | failing nodes (trt-check / single parse / polygraphy rows) | phases | trt-check s | "
          "--no-build s | polygraphy s | ratio (no-build / polygraphy) | after fix: parse | build | failing | fix s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|", flush=True)


def print_row(r: dict) -> None:
    b, a = r["before"], r.get("after", {})
    ratio = r["trt_check_parse_only_s"] / r["polygraphy_s"] if r["polygraphy_s"] else float("nan")
    print(f"| {r['model']} | {b['parse']} | {b['build']} | {b['failing']} / {b['first']} / {r['polygraphy_rows']} | "
          f"{','.join(b.get('phases', [])) or '-'} | {r['trt_check_s']:.2f} | {r['trt_check_parse_only_s']:.2f} | "
          f"{r['polygraphy_s']:.2f} | {ratio:.2f} | "
          f"{a.get('parse', '-')} | {a.get('build', '-')} | {a.get('failing', '-')} | "
          f"{r.get('fix_s', float('nan')):.1f} |", flush=True)


def print_summary(rows: list[dict]) -> None:
    if not rows:
        return
    for key, what in (("trt_check_parse_only_s", "trt-check --no-build (parses only, like polygraphy)"),
                      ("trt_check_s", "trt-check (parses, and builds every model that parses)")):
        ratios = [r[key] / r["polygraphy_s"] for r in rows if r["polygraphy_s"]]
        if ratios:
            print(f"\nmedian wall-time ratio {what} / polygraphy inspect capability: {statistics.median(ratios):.2f}")
    found = sum(r["before"]["failing"] for r in rows if isinstance(r["before"]["failing"], int))
    first = sum(r["before"]["first"] for r in rows if isinstance(r["before"]["first"], int))
    pg = sum(r["polygraphy_rows"] for r in rows)
    print(f"failing nodes over all models: trt-check {found}, a single parse {first}, polygraphy summary rows {pg}")
    rss = [r["trt_check_rss_mb"] for r in rows]
    print(f"peak RSS, max over models: trt-check {max(rss)} MB, polygraphy {max(r['polygraphy_rss_mb'] for r in rows)} MB")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
