"""Oracle calls and wall time: `surgeon bisect --check` vs `polygraphy debug reduce --mode=bisect`.

Both tools get the same oracle, ``bench/fp16_nonfinite_check.py`` (FP16 emulation gives
NaN/Inf where float32 is finite), which counts its own calls. Cases: a 200- and a
1000-node chain with one node that overflows float16, two independent 100-node branches
with the fault in one, and a real corpus model (YOLOv8n from ../shared/corpus) with an
overflowing Mul injected after a Conv in the middle.

"correct" means: the reduced model still fails the oracle, contains the faulty node, and
every other node in it is upstream of the faulty one (nothing from an unrelated branch,
nothing downstream).

    python bench/bisect_vs_polygraphy.py [--reps 3] [--cases chain200,chain1000,branches,corpus]
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
CHECK = ROOT / "bench" / "fp16_nonfinite_check.py"
CORPUS = ROOT.parent / "shared" / "corpus"

spec = importlib.util.spec_from_file_location("make_bisect_fixtures", ROOT / "fixtures" / "make_bisect_fixtures.py")
F = importlib.util.module_from_spec(spec)
spec.loader.exec_module(F)


def corpus_case() -> tuple[onnx.ModelProto, str, list[str]] | None:
    path = CORPUS / "nudenet_320n_yolov8n.onnx"
    if not path.is_file():
        return None
    m = onnx.load(str(path))
    convs = [i for i, n in enumerate(m.graph.node) if n.op_type == "Conv"]
    k = convs[len(convs) // 3]
    conv = m.graph.node[k]
    old = conv.output[0]
    conv.output[0] = old + "_pre_fault"
    m.graph.initializer.append(numpy_helper.from_array(np.array([1e6], np.float32), "fault_scale"))
    m.graph.node.insert(k + 1, helper.make_node("Mul", [old + "_pre_fault", "fault_scale"], [old], name="injected_fault"))
    for vi in m.graph.input:  # pin the dynamic dims so both tools see static shapes
        dims = vi.type.tensor_type.shape.dim
        for d, v in zip(dims, (1, 3, 160, 160)):
            d.Clear()
            d.dim_value = v
    del m.graph.value_info[:]
    for o in m.graph.output:
        o.type.tensor_type.ClearField("shape")
    m = onnx.shape_inference.infer_shapes(m)
    return m, "injected_fault", []


def cases(names: list[str]) -> dict[str, tuple[onnx.ModelProto, str]]:
    out = {}
    if "chain200" in names:
        out["chain200"] = (F.chain(200, fault=137), "n137")
    if "chain1000" in names:
        out["chain1000"] = (F.chain(1000, fault=613), "n613")
    if "branches" in names:
        out["branches"] = (F.branches(100, fault_in="b", fault_at=50), "b50")
    if "corpus" in names:
        c = corpus_case()
        if c is not None:
            out["corpus"] = (c[0], c[1])
    return out


def ancestors(model: onnx.ModelProto, name: str) -> set[str]:
    producer = {o: n for n in model.graph.node for o in n.output}
    node = next(n for n in model.graph.node if n.name == name)
    seen, stack = set(), list(node.input)
    while stack:
        t = stack.pop()
        p = producer.get(t)
        if p is not None and p.name not in seen:
            seen.add(p.name)
            stack.extend(p.input)
    return seen


def judge(original: onnx.ModelProto, reduced_path: Path, fault: str, workdir: Path) -> tuple[int, bool]:
    if not reduced_path.is_file():
        return -1, False
    red = onnx.load(str(reduced_path))
    names = [n.name for n in red.graph.node if n.op_type != "Constant"]
    upstream = ancestors(original, fault)
    rc = subprocess.run([sys.executable, str(CHECK), str(reduced_path)], cwd=workdir, capture_output=True).returncode
    ok = rc == 1 and fault in names and all(n == fault or n in upstream for n in names)
    return len(names), ok


def run_surgeon(model_path: Path, work: Path) -> tuple[int, float, Path]:
    count = work / "count_surgeon"
    count.unlink(missing_ok=True)
    out = work / "surgeon_out"
    shutil.rmtree(out, ignore_errors=True)
    check = f"{sys.executable} {CHECK} {{model}} --count {count}"
    t = time.perf_counter()
    r = subprocess.run([sys.executable, str(ROOT / "cli.py"), "bisect", str(model_path), "--check", check, "-o", str(out)],
                       capture_output=True, text=True, cwd=work)
    wall = time.perf_counter() - t
    if r.returncode != 1:
        print(f"surgeon exited {r.returncode}: {r.stderr.strip()[-300:]}", file=sys.stderr)
    return len(count.read_text().splitlines()) if count.exists() else 0, wall, out / "reduced.onnx"


def run_polygraphy(model_path: Path, work: Path) -> tuple[int, float, Path]:
    count = work / "count_poly"
    count.unlink(missing_ok=True)
    red = work / "poly_reduced.onnx"
    red.unlink(missing_ok=True)
    cmd = ["polygraphy", "debug", "reduce", str(model_path), "-o", str(red), "--mode=bisect",
           "--check", sys.executable, str(CHECK), "polygraphy_debug.onnx", "--count", str(count)]
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=work)
    wall = time.perf_counter() - t
    if r.returncode != 0:
        print(f"polygraphy exited {r.returncode}: {r.stdout.strip()[-300:]}", file=sys.stderr)
    return len(count.read_text().splitlines()) if count.exists() else 0, wall, red


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--cases", default="chain200,chain1000,branches,corpus")
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bisect-bench-") as d:
        work = Path(d)
        for case, (model, fault) in cases(args.cases.split(",")).items():
            path = work / f"{case}.onnx"
            onnx.save(model, str(path))
            for tool, runner in (("surgeon", run_surgeon), ("polygraphy", run_polygraphy)):
                walls, calls, reduced, ok = [], 0, -1, False
                for _ in range(args.reps):
                    calls, wall, red = runner(path, work)
                    walls.append(wall)
                reduced, ok = judge(model, red, fault, work)
                rows.append((case, tool, calls, statistics.median(walls), reduced,
                             len([n for n in model.graph.node if n.op_type != "Constant"]), ok))
                print(f"{case:10s} {tool:10s} calls={calls:4d} wall={statistics.median(walls):6.2f}s reduced={reduced} correct={ok}",
                      file=sys.stderr, flush=True)
    print("| case | tool | oracle calls | wall time (median of %d) | reduced nodes (of) | correct? |" % args.reps)
    print("|---|---|---|---|---|---|")
    for case, tool, calls, wall, reduced, total, ok in rows:
        print(f"| {case} | {tool} | {calls} | {wall:.2f} s | {reduced} ({total}) | {'yes' if ok else 'no'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
