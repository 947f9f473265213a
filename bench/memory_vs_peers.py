"""Issue 20's figures: surgeon fix on multi-GB models against onnxslim and onnxsim, in one run.

Every measurement is a fresh process running the command a user types, under GNU time
(wall time, and the peak RSS the kernel accounts to the process, ``%M``):

    surgeon fix IN -o OUT                  verified (--verify auto)
    surgeon fix IN -o OUT --verify local   verified, each change on its region
    surgeon fix IN -o OUT --no-verify
    onnxslim IN OUT
    onnxsim IN OUT

A watchdog polls the RSS of each run's process tree and kills it at ``--cap-gb`` (default
18 GB; the machine is shared) or when the machine's available memory falls below
``--floor-gb``, so the kernel's OOM killer never picks a victim; such a run is reported as
"killed at N GB after T s". Ratios (ours / peer, ours / weight bytes) come from the same
run. Node counts include If/Loop/Scan bodies. ``--equivalence`` also runs the input and
surgeon's written output, read back from disk, on the model's own ``*.inputs.npz`` (the
decoder's: token ids and a filled KV cache; else two seeded samples of surgeon's generator)
in ONNX Runtime without graph optimizations,
one after the other in a child process, and compares every output with surgeon's float16
tolerance (|a - b| <= 1e-2 + 1e-2 |a|). The weights go to ONNX Runtime as run inputs a
slice at a time (surgeon.staged): a plain InferenceSession of the 8.8 GB decoder passed a
16 GB cap while loading.

    python bench/memory_vs_peers.py MODEL.onnx [MODEL.onnx ...] [--runs 3] [--peer-runs 1]
        [--tools surgeon,surgeon-local,surgeon-noverify,onnxslim,onnxsim] [--cap-gb 18] [--equivalence]
        [--surgeon-cli OTHER/cli.py] [--json FILE] [--work DIR]

Models come from ``bench/make_memory_models.py`` (and ``bench/make_large_exports.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from fix_vs_peers import GNU_TIME, _console_script, finished, model_facts  # noqa: E402  (bench/, beside this script)
TOOLS = ("surgeon", "surgeon-local", "surgeon-noverify", "onnxslim", "onnxsim")
PEERS = ("onnxslim", "onnxsim")


def command(tool: str, src: Path, dst: Path, cli: Path, extra: list[str]) -> list[str]:
    base = [sys.executable, str(cli), "fix", str(src), "-o", str(dst), *extra]
    if tool == "surgeon":
        return base
    if tool == "surgeon-local":
        return base + ["--verify", "local"]
    if tool == "surgeon-noverify":
        return base + ["--no-verify"]
    return [_console_script(tool), str(src), str(dst)]


def _children(pid: int) -> list[int]:
    out = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return out


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants (VmRSS from /proc)."""
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
                        break
        except OSError:
            continue
        stack += _children(p)
    return total


def available() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def spawn(cmd: list[str], log: Path, cap: float, floor: float, timeout: float) -> dict:
    """Run ``cmd`` under GNU time and the watchdog; wall seconds, peak RSS, or how it was killed."""
    rss_file = log.with_suffix(".rss")
    seen = 0
    with open(log, "wb") as sink:
        t0 = time.perf_counter()
        proc = subprocess.Popen([str(GNU_TIME), "-f", "%M", "-o", str(rss_file), *cmd], stdout=sink,
                                stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
        killed = None
        while proc.poll() is None:
            rss = tree_rss(proc.pid)
            seen = max(seen, rss)
            elapsed = time.perf_counter() - t0
            if rss > cap:
                killed = f"killed at {rss / 1e9:.1f} GB (cap {cap / 1e9:.0f} GB) after {elapsed:.0f} s"
            elif available() < floor:
                killed = (f"killed at {rss / 1e9:.1f} GB after {elapsed:.0f} s: the machine had less than "
                          f"{floor / 1e9:.0f} GB available")
            elif elapsed > timeout:
                killed = f"killed after {elapsed:.0f} s (timeout), at {rss / 1e9:.1f} GB"
            if killed:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return {"error": killed, "seconds": elapsed, "peak_gb": seen / 1e9, "killed": True}
            time.sleep(0.05)
        seconds = time.perf_counter() - t0
    result = finished(log, seconds, proc.returncode, seen)
    result["peak_gb"] = result.pop("peak_bytes") / 1e9
    return result


def facts(path: Path) -> dict:
    """Nodes (bodies included) and the bytes of the initializers and Constant nodes' values
    (paddle2onnx keeps its weights there); weights not loaded."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    tensors = list(model.graph.initializer) + [a.t for n in model.graph.node for a in n.attribute if a.HasField("t")]
    weight_bytes = sum(int(np.prod(t.dims, dtype=np.int64)) * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
                       for t in tensors)
    return {"nodes": model_facts(path)["nodes"], "weight_bytes": weight_bytes}


def disk_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


EQUIV_CHILD = r'''
import sys, json, numpy as np
sys.path.insert(0, sys.argv[4])
from surgeon import backends, staged
from surgeon.model import open_model
src, out, inputs = sys.argv[1:4]
if inputs:
    z = np.load(inputs)
    names = sorted({k.split("/", 1)[0] for k in z.files})
    samples = [{k.split("/", 1)[1]: z[k] for k in z.files if k.startswith(p + "/")} for p in names]
else:  # no input file beside the model: two seeded samples of surgeon's generator (dynamic dims at two sizes)
    from surgeon.input_data import make_samples
    samples = make_samples(open_model(src).export().skeleton, iterations=2, seed=0)
backend = backends.create("onnxrt", optimization="disable", memory_lean=True)
results = [staged.run(backend, open_model(path).export(), samples) for path in (src, out)]
worst, ok = {}, True
for a, b in zip(*results):
    for name in a:
        x, y = a[name].astype(np.float64), b[name].astype(np.float64)
        d = float(np.abs(x - y).max()) if x.size else 0.0
        worst[name] = max(worst.get(name, 0.0), d)
        ok &= x.shape == y.shape and bool(np.all(np.abs(x - y) <= 1e-2 + 1e-2 * np.abs(x)))
print(json.dumps({"ok": ok, "samples": len(samples), "inputs": inputs or "generated", "outputs": len(worst),
                  "max_abs": max(worst.values())}))
'''


def equivalence(src: Path, out: Path, cap: float, floor: float) -> dict:
    inputs = src.with_name(src.stem + ".inputs.npz")
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "equiv.log"
        r = spawn([sys.executable, "-c", EQUIV_CHILD, str(src), str(out), str(inputs) if inputs.is_file() else "",
                   str(ROOT)], log, cap, floor, 3600)
        if "error" in r:
            return r
        line = log.read_text().strip().splitlines()[-1]
        return {**json.loads(line), "seconds": r["seconds"], "peak_gb": r["peak_gb"]}


def measure(path: Path, tools: list[str], runs: int, peer_runs: int, cap: float, floor: float, timeout: float,
            cli: Path, extra: list[str], work: Path, equiv: bool) -> dict:
    row: dict = {"model": path.name, "input": facts(path)}
    for tool in tools:
        attempts = []
        n = peer_runs if tool in PEERS else runs
        with tempfile.TemporaryDirectory(prefix="memory_vs_peers_", dir=work) as tmp:
            dst = Path(tmp) / f"{tool}.onnx"
            for _ in range(n):
                for stale in Path(tmp).glob(f"{tool}.onnx*"):
                    stale.unlink()
                r = spawn(command(tool, path, dst, cli, extra if tool.startswith("surgeon") else []),
                          Path(tmp) / f"{tool}.log", cap, floor, timeout)
                attempts.append(r)
                print(f"  {path.name} {tool}: " + (r["error"] if "error" in r else
                                                   f"{r['seconds']:.1f} s, {r['peak_gb']:.2f} GB"), file=sys.stderr,
                      flush=True)
                if "error" in r:
                    break
            good = [a for a in attempts if "error" not in a]
            if not good or not dst.is_file():
                row[tool] = {"error": attempts[-1].get("error", "no output written"), **{
                    k: attempts[-1][k] for k in ("seconds", "peak_gb") if k in attempts[-1]}}
                continue
            row[tool] = {"seconds": statistics.median(a["seconds"] for a in good),
                         "peak_gb": statistics.median(a["peak_gb"] for a in good), "runs": len(good),
                         "all_seconds": [round(a["seconds"], 2) for a in good],
                         "output_gb": disk_bytes(dst) / 1e9, **facts(dst)}
            if equiv and tool == "surgeon":
                row["equivalence"] = equivalence(path, dst, cap, floor)
    return row


def render(rows: list[dict], tools: list[str]) -> None:
    short = {"surgeon": "ours", "surgeon-local": "ours-local", "surgeon-noverify": "ours-nv", "onnxslim": "slim",
             "onnxsim": "sim"}
    for row in rows:
        wb = row["input"]["weight_bytes"]
        print(f"\n{row['model']}: {row['input']['nodes']} nodes, {wb / 1e9:.2f} GB of weights")
        print(f"  {'tool':<12} {'wall s':>8} {'peak GB':>8} {'peak/weights':>13} {'nodes':>7}  note")
        for tool in tools:
            r = row.get(tool, {})
            if "error" in r:
                print(f"  {short[tool]:<12} {'-':>8} {r.get('peak_gb', 0):>8.2f} {'-':>13} {'-':>7}  {r['error']}")
                continue
            print(f"  {short[tool]:<12} {r['seconds']:>8.1f} {r['peak_gb']:>8.2f} {r['peak_gb'] * 1e9 / max(wb, 1):>13.2f} "
                  f"{r['nodes']:>7}  median of {r['runs']}: {r['all_seconds']}")
        slim = row.get("onnxslim", {})
        for tool in ("surgeon", "surgeon-local", "surgeon-noverify"):
            r = row.get(tool, {})
            if "seconds" in r and "error" not in r and "seconds" in slim and "error" not in slim:
                print(f"  {short[tool]} / slim wall: {r['seconds'] / slim['seconds']:.2f}")
        peers = [row[p]["nodes"] for p in PEERS if "nodes" in row.get(p, {})]
        ours = row.get("surgeon", {}).get("nodes")
        if ours is not None and peers:
            print(f"  nodes: ours {ours} vs min(peers that finished) {min(peers)}")
        if "equivalence" in row:
            print(f"  equivalence of surgeon's output on the model's inputs: {row['equivalence']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", type=Path)
    ap.add_argument("--tools", default=",".join(TOOLS))
    ap.add_argument("--runs", type=int, default=3, help="runs of each surgeon command (median)")
    ap.add_argument("--peer-runs", type=int, default=1, help="runs of each peer (median)")
    ap.add_argument("--cap-gb", type=float, default=18.0, help="kill a run whose process tree exceeds this RSS")
    ap.add_argument("--floor-gb", type=float, default=1.5, help="kill a run when the machine has less available")
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--surgeon-cli", type=Path, default=ROOT / "cli.py")
    ap.add_argument("--surgeon-args", default="", help="extra arguments for every surgeon command (one string)")
    ap.add_argument("--equivalence", action="store_true", help="compare surgeon's output with the input on its inputs")
    ap.add_argument("--work", type=Path, default=None, help="folder for outputs (default: beside the model)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    if not set(tools) <= set(TOOLS):
        ap.error(f"--tools from {TOOLS}")
    if not GNU_TIME.is_file():
        ap.error("peak RSS is read through GNU time: install it (Debian: apt install time)")
    sys.path.insert(0, str(HERE))
    from _bytecode import compile_checkout

    compile_checkout(args.surgeon_cli.resolve().parent)
    rows = []
    for path in args.models:
        extra = args.surgeon_args.split()
        inputs = path.with_name(path.stem + ".inputs.npz")
        if inputs.is_file() and "--load-inputs" not in extra:
            extra += ["--load-inputs", str(inputs)]  # token ids and a KV cache the model can run on
        rows.append(measure(path.resolve(), tools, args.runs, args.peer_runs, args.cap_gb * 1e9, args.floor_gb * 1e9,
                            args.timeout, args.surgeon_cli.resolve(), extra, args.work or path.resolve().parent,
                            args.equivalence))
        if args.json:
            args.json.write_text(json.dumps(rows, indent=2))
    render(rows, tools)


if __name__ == "__main__":
    main()
