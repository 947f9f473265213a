"""`surgeon fix` against onnxslim and onnxsim, each through its command line, in one run.

Every measurement is a fresh process running the command a user types:

    python cli.py fix IN -o OUT              (verified)
    python cli.py fix IN -o OUT --no-verify
    onnxslim IN OUT
    onnxsim IN OUT

so interpreter start-up, imports, loading and saving are counted for every tool alike.
Wall time is the median of ``--runs`` runs; peak RSS is the child's own high-water mark
as GNU ``time`` reports it (``%M``), also a median. Node counts
include If/Loop/Scan bodies; initializer counts include bodies too. Ratios ours/peer are
printed from the same run. The machines here are shared and noisy: read the ratios.

    python bench/fix_vs_peers.py [--sets corpus,fixtures,models,light] [--only SUBSTR ...] [--skip SUBSTR ...] [--runs 3]
                                 [--tools surgeon,surgeon-noverify,onnxslim,onnxsim]
                                 [--keep DIR] [--ops] [--json FILE] [--surgeon-cli OTHER/cli.py]

``--keep DIR`` leaves each tool's last output in DIR (for diffing graphs); ``--ops`` prints,
for every model where surgeon keeps more nodes than the best peer, the op-type histogram
difference.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from _bytecode import compile_checkout  # bench/, beside this script

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SETS = {
    "corpus": ROOT.parent / "shared" / "corpus",
    "fixtures": ROOT / "fixtures" / "exports",
    "models": Path("/work/models"),  # *.onnx and packaged/*.onnx (see bench/make_large_exports.py)
    "light": None,  # the onnx package's light_* models, weights randomised (see light_models)
}
TOOLS = ("surgeon", "surgeon-noverify", "onnxslim", "onnxsim")
GNU_TIME = Path("/usr/bin/time")


def _console_script(name: str) -> str:
    """The console script installed beside this interpreter (no shell shim in between), else PATH's."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.is_file() else shutil.which(name)
    if not found:
        raise SystemExit(f"{name} is not installed (pip install {name})")
    return found


def command(tool: str, src: Path, dst: Path, extra: dict[str, list[str]], cli: Path = ROOT / "cli.py") -> list[str]:
    if tool == "surgeon":
        return [sys.executable, str(cli), "fix", str(src), "-o", str(dst), *extra.get(tool, [])]
    if tool == "surgeon-noverify":
        return [sys.executable, str(cli), "fix", str(src), "-o", str(dst), "--no-verify", *extra.get(tool, [])]
    if tool in ("onnxslim", "onnxsim"):
        return [_console_script(tool), str(src), str(dst), *extra.get(tool, [])]
    raise SystemExit(f"unknown tool {tool}")


def _spawn(cmd: list[str], timeout: float, log: Path) -> dict:
    """Run ``cmd`` with output to ``log``; its peak RSS as GNU time reports it.

    Why GNU time and not our own ``os.wait4``: Linux carries a process's high-water RSS
    across fork into exec, so a child forked from this (large, model-reading) process
    would report at least this process's size. ``time`` is a small process to fork from.
    """
    rss_file = log.with_suffix(".rss")
    with open(log, "wb") as sink:
        t0 = time.perf_counter()
        proc = subprocess.Popen([str(GNU_TIME), "-f", "%M", "-o", str(rss_file), *cmd], stdout=sink,
                                stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = t0 + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                os.wait4(proc.pid, 0)
                proc.returncode = -9
                return {"error": f"timed out after {timeout:.0f} s"}
            time.sleep(0.02)
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
    result = finished(log, seconds, proc.returncode, usage.ru_maxrss * 1024)
    result["maxrss_mb"] = result.pop("peak_bytes") / 2**20
    return result


def finished(log: Path, seconds: float, rc: int, fallback_bytes: int) -> dict:
    """A run that ended: wall seconds, peak RSS in bytes (GNU time's ``%M`` in ``log``'s
    ``.rss`` file, else ``fallback_bytes``), exit code, and the last output line of a failure."""
    rss_file = log.with_suffix(".rss")
    kb = rss_file.read_text().strip().splitlines()[-1] if rss_file.is_file() else ""
    result = {"seconds": seconds, "peak_bytes": int(kb) * 1024 if kb.isdigit() else fallback_bytes, "rc": rc}
    if rc != 0:
        lines = [ln for ln in log.read_text(errors="replace").strip().splitlines() if ln.strip()]
        result["error"] = f"exit {rc}: " + (lines[-1][:200] if lines else "no output")
    return result


def model_facts(path: Path) -> dict:
    """Nodes (bodies included), initializers (bodies included), op histogram; weights not loaded."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    ops: Counter = Counter()
    inits = 0

    def walk(graph) -> None:
        nonlocal inits
        inits += len(graph.initializer)
        for node in graph.node:
            ops[node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"] += 1
            for attr in node.attribute:
                if attr.HasField("g"):
                    walk(attr.g)
                for sub in attr.graphs:
                    walk(sub)

    walk(model.graph)
    return {"nodes": sum(ops.values()), "initializers": inits, "ops": dict(ops)}


def light_models(dest: Path) -> list[Path]:
    """The onnx package's light_* model-zoo models with seeded random weights instead of
    their ConstantOfShape fills (identical fills would let every tool merge branches)."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

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


def find_models(sets: list[str], only: list[str], skip: list[str] = ()) -> list[Path]:
    found: list[Path] = []
    for name in sets:
        if name == "light":
            found += light_models(Path(tempfile.gettempdir()) / "surgeon-bench-light")
            continue
        folder = SETS[name]
        if not folder.is_dir():
            print(f"[{name}] {folder} not found; skipped", file=sys.stderr)
            continue
        if name == "models":  # bench/make_large_exports.py's exports and the packaged models beside them
            paths = sorted(folder.glob("*.onnx")) + sorted((folder / "packaged").glob("*.onnx"))
        else:
            paths = sorted(folder.glob("*.onnx"))
        found += paths
    if only:
        found = [p for p in found if any(s in p.name for s in only)]
    return [p for p in found if not any(s in p.name for s in skip)]


def measure_model(path: Path, tools: list[str], runs: int, timeout: float, keep: Path | None,
                  extra: dict[str, list[str]], cli: Path = ROOT / "cli.py") -> dict:
    row: dict = {"path": str(path), "input": model_facts(path)}
    with tempfile.TemporaryDirectory(prefix="fix_vs_peers_") as tmp:
        for tool in tools:
            dst = Path(tmp) / f"{tool}.onnx"
            attempts = []
            for _ in range(runs):
                for stale in Path(tmp).glob(f"{tool}.onnx*"):
                    stale.unlink()
                attempts.append(_spawn(command(tool, path, dst, extra, cli), timeout, Path(tmp) / f"{tool}.log"))
                if "error" in attempts[-1]:
                    break  # a failing tool fails every run; do not wait for it again
            good = [a for a in attempts if "error" not in a]
            if not good or not dst.is_file():
                row[tool] = {"error": attempts[-1].get("error", "no output written")}
                continue
            row[tool] = {"seconds": statistics.median(a["seconds"] for a in good),
                         "maxrss_mb": statistics.median(a["maxrss_mb"] for a in good),
                         "runs": len(good), **model_facts(dst)}
            if keep is not None:
                keep.mkdir(parents=True, exist_ok=True)
                target = keep / f"{path.stem}.{tool}.onnx"
                for old in keep.glob(f"{path.stem}.{tool}.onnx*"):
                    old.unlink()
                for produced in Path(tmp).glob(f"{tool}.onnx*"):
                    shutil.copyfile(produced, keep / produced.name.replace(f"{tool}.onnx", target.name))
    return row


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a is not None and b else "-"


def render(results: dict[str, dict], tools: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    short = {"surgeon": "ours", "surgeon-noverify": "ours-nv", "onnxslim": "slim", "onnxsim": "sim"}
    names = "/".join(short[t] for t in tools)
    table = Table(title="surgeon fix vs onnxslim / onnxsim, each through its command line "
                        "(medians; ratio = ours / peer, same run)")
    for col in ("model", f"nodes in/{names}", f"inits in/{names}", f"wall s {names}", f"peak RSS MB {names}",
                "t nv/slim", "t ours/slim", "t nv/sim", "rss nv/slim", "note"):
        table.add_column(col, justify="left" if col in ("model", "note") else "right")

    def get(row, tool, key):
        r = row.get(tool, {})
        return r.get(key) if isinstance(r, dict) else None

    def joined(row, key, fmt):
        return "/".join("x" if "error" in row.get(t, {}) else fmt(get(row, t, key)) for t in tools)

    for name, row in results.items():
        notes = []
        ours = get(row, "surgeon", "nodes") or get(row, "surgeon-noverify", "nodes")
        for peer in ("onnxslim", "onnxsim"):
            theirs = get(row, peer, "nodes")
            if ours is not None and theirs is not None and ours > theirs:
                notes.append(f"+{ours - theirs} vs {peer}")
        for tool in tools:
            if "error" in row.get(tool, {}):
                notes.append(f"{tool}: {row[tool]['error'][:70]}")
        table.add_row(
            name,
            f"{row['input']['nodes']}/" + joined(row, "nodes", str),
            f"{row['input']['initializers']}/" + joined(row, "initializers", str),
            joined(row, "seconds", lambda v: f"{v:.1f}"),
            joined(row, "maxrss_mb", lambda v: f"{v:.0f}"),
            _ratio(get(row, "surgeon-noverify", "seconds"), get(row, "onnxslim", "seconds")),
            _ratio(get(row, "surgeon", "seconds"), get(row, "onnxslim", "seconds")),
            _ratio(get(row, "surgeon-noverify", "seconds"), get(row, "onnxsim", "seconds")),
            _ratio(get(row, "surgeon-noverify", "maxrss_mb"), get(row, "onnxslim", "maxrss_mb")),
            "; ".join(notes),
        )
    Console(width=240).print(table)


def print_op_gaps(results: dict[str, dict]) -> None:
    """Per model where we keep more nodes than the best peer: which op types make the difference."""
    for name, row in results.items():
        ours = row.get("surgeon") if "nodes" in row.get("surgeon", {}) else row.get("surgeon-noverify", {})
        peers = [(p, row[p]) for p in ("onnxslim", "onnxsim") if "nodes" in row.get(p, {})]
        if "nodes" not in ours or not peers:
            continue
        best_name, best = min(peers, key=lambda kv: kv[1]["nodes"])
        if ours["nodes"] <= best["nodes"]:
            continue
        diff = Counter(ours["ops"])
        diff.subtract(best["ops"])
        parts = [f"{op} {n:+d}" for op, n in sorted(diff.items(), key=lambda kv: -abs(kv[1])) if n]
        print(f"{name}: ours {ours['nodes']} vs {best_name} {best['nodes']}: " + ", ".join(parts))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default="corpus,fixtures", help=f"comma list of {', '.join(SETS)} (default corpus,fixtures)")
    ap.add_argument("--only", nargs="*", default=[], help="only models whose file name contains one of these")
    ap.add_argument("--skip", nargs="*", default=[], help="leave out models whose file name contains one of these")
    ap.add_argument("--runs", type=int, default=3, help="runs per tool and model (median; default 3)")
    ap.add_argument("--tools", default=",".join(TOOLS), help=f"comma list of {', '.join(TOOLS)}")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per run before it counts as failed")
    ap.add_argument("--keep", type=Path, help="keep each tool's output here (for diffing graphs)")
    ap.add_argument("--ops", action="store_true", help="print op-histogram differences where a peer has fewer nodes")
    ap.add_argument("--surgeon-args", default="", help="extra arguments for both surgeon commands (one string)")
    ap.add_argument("--surgeon-cli", type=Path, default=ROOT / "cli.py",
                    help="cli.py of the surgeon checkout to measure (e.g. an older commit unpacked elsewhere)")
    ap.add_argument("--json", type=Path, help="write the results as JSON here")
    args = ap.parse_args()
    sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    unknown = [s for s in sets if s not in SETS]
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    if unknown or not set(tools) <= set(TOOLS) or args.runs < 1:
        ap.error(f"--sets from {list(SETS)}, --tools from {list(TOOLS)}, --runs >= 1")
    if not GNU_TIME.is_file():
        ap.error("peak RSS is read through GNU time: install it (Debian: apt install time)")
    compile_checkout(args.surgeon_cli.resolve().parent)
    extra = {"surgeon": args.surgeon_args.split(), "surgeon-noverify": args.surgeon_args.split()}
    models = find_models(sets, args.only, args.skip)
    if not models:
        ap.error("no models found")
    results: dict[str, dict] = {}
    for path in models:
        results[path.name] = row = measure_model(path, tools, args.runs, args.timeout, args.keep, extra,
                                                 args.surgeon_cli.resolve())
        brief = {t: (row[t].get("nodes"), round(row[t]["seconds"], 2)) if "error" not in row[t] else row[t]["error"]
                 for t in tools}
        print(f"{path.name}: in {row['input']['nodes']} {brief}", file=sys.stderr, flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    render(results, tools)
    if args.ops:
        print_op_gaps(results)


if __name__ == "__main__":
    main()
