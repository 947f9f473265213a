"""`surgeon fix` over the ONNX backend conformance suite, checked on each test's own inputs.

The suite: every node test of the installed onnx package (written from its test
definitions, since the wheel ships no node test data), plus the simple, pytorch-converted,
pytorch-operator and light tests the wheel does ship. Only tests ONNX Runtime can run on
their own ``test_data_set_*`` inputs count.

For each test, in a worker process with a timeout, ``surgeon.fix(model)`` (default
pipeline, numeric verification on) gives ``(model, report)``. The output is saved, read
back, and run with ONNX Runtime on the test's inputs against the input model's outputs.
Every test gets one outcome:

- ``equivalent``: the written output keeps the interface and matches on the test inputs;
- ``refused``: surgeon raised a SurgeonError (the CLI's exit 2);
- ``crash``: any other exception, or the worker dying; ``timeout``: no result in time;
- ``wrong-output``: ONNX Runtime cannot load or run the output, or its outputs differ;
- ``interface-changed``: graph input/output names, order or types changed.

Orthogonal to the outcome, the report's own claim: ``numeric`` verification, ``proof``
(every change proven structurally, where the engine offers that), or written with only
structural checks (``unverified-but-written``). The reasons for the latter are grouped
in the summary.

The judge (feeding ONNX Runtime, comparing outputs) is written here, not imported from
surgeon, so that the code under test does not grade itself and a BEFORE run on an older
checkout uses the same judge.

    python bench/conformance.py prepare [--out /work/models/conformance]
    python bench/conformance.py run [--data DIR] [--jobs 2] [--timeout 180] [--peers onnxslim]
                                    [--only SUBSTR ...] [--json FILE]
    python bench/conformance.py summary FILE.json

``PYTHONPATH`` decides which checkout's ``surgeon`` is measured (the path is printed):
``PYTHONPATH=. python bench/conformance.py run`` for this one. Records are appended to
``<json>.partial.jsonl`` as they come, so an interrupted run keeps what it measured. Tolerances of the judge: float32/64
atol 1e-4 rtol 1e-3, float16/bfloat16/float8 atol 1e-2 rtol 1e-2 (by value), integers,
booleans and strings exact; NaN matches NaN.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = Path("/work/models/conformance")
KINDS = ("node", "simple", "pytorch-converted", "pytorch-operator", "light")


# --- prepare ---------------------------------------------------------------------------------


def _write_value(path: Path, value, vi) -> None:
    from onnx import TensorProto, numpy_helper

    kind = vi.type.WhichOneof("value")
    if kind == "sequence_type":
        proto = numpy_helper.from_list(value, vi.name)
    elif kind == "optional_type":
        proto = numpy_helper.from_optional(value, vi.name)
    elif kind == "map_type":
        proto = numpy_helper.from_dict(value, vi.name)
    elif isinstance(value, TensorProto):
        proto = value
    else:
        proto = numpy_helper.from_array(value, vi.name)
    path.write_bytes(proto.SerializeToString())


def _write_case(dest: Path, model, data_sets) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "model.onnx").write_bytes(model.SerializeToString())
    inits = {t.name for t in model.graph.initializer}
    ins = [vi for vi in model.graph.input if vi.name not in inits]
    for i, (inputs, outputs) in enumerate(data_sets):
        d = dest / f"test_data_set_{i}"
        d.mkdir(exist_ok=True)
        for j, value in enumerate(inputs):
            _write_value(d / f"input_{j}.pb", value, ins[j])
        for j, value in enumerate(outputs):
            _write_value(d / f"output_{j}.pb", value, model.graph.output[j])


def prepare(out: Path) -> None:
    import numpy as np
    import onnx
    from onnx import numpy_helper
    from onnx.backend.test.case import node as node_cases

    data = Path(onnx.__file__).parent / "backend" / "test" / "data"
    out.mkdir(parents=True, exist_ok=True)
    counts = Counter()
    for case in node_cases.collect_testcases():
        _write_case(out / "node" / case.name, case.model, case.data_sets)
        counts["node"] += 1
    for kind in ("simple", "pytorch-converted", "pytorch-operator"):
        for src in sorted((data / kind).iterdir()):
            if (src / "model.onnx").is_file():
                shutil.copytree(src, out / kind / src.name, dirs_exist_ok=True)
                counts[kind] += 1
    # light: the onnx test runner feeds arange(n)/n (generate_dummy_data(random=False)); do the same
    for src in sorted((data / "light").glob("light_*.onnx")):
        model = onnx.load(str(src))
        dest = out / "light" / f"test_{src.stem}"
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dest / "model.onnx")
        (dest / "test_data_set_0").mkdir(exist_ok=True)
        inits = {t.name for t in model.graph.initializer}
        for j, vi in enumerate(x for x in model.graph.input if x.name not in inits):
            shape = tuple(d.dim_value if d.HasField("dim_value") else 1 for d in vi.type.tensor_type.shape.dim)
            n = int(np.prod(shape))
            value = (np.arange(n).reshape(shape) / n).astype(np.float32)
            (dest / "test_data_set_0" / f"input_{j}.pb").write_bytes(numpy_helper.from_array(value, vi.name).SerializeToString())
        counts["light"] += 1
    print(f"wrote {sum(counts.values())} tests to {out}: {dict(counts)}")


# --- the judge: feeding ONNX Runtime and comparing, independent of surgeon -------------------------


def read_inputs(case: Path, model) -> list[dict]:
    """Each test_data_set_* as {input name: value} (tensors, lists, None, dicts)."""
    import onnx
    from onnx import numpy_helper

    inits = {t.name for t in model.graph.initializer}
    ins = [vi for vi in model.graph.input if vi.name not in inits]
    sets = []
    for d in sorted(case.glob("test_data_set_*")):
        feeds = {}
        for j, vi in enumerate(ins):
            p = d / f"input_{j}.pb"
            if not p.is_file():
                break
            kind = vi.type.WhichOneof("value")
            raw = p.read_bytes()
            if kind == "sequence_type":
                proto = onnx.SequenceProto()
                proto.ParseFromString(raw)
                feeds[vi.name] = numpy_helper.to_list(proto)
            elif kind == "optional_type":
                proto = onnx.OptionalProto()
                proto.ParseFromString(raw)
                feeds[vi.name] = numpy_helper.to_optional(proto)
            elif kind == "map_type":
                proto = onnx.MapProto()
                proto.ParseFromString(raw)
                feeds[vi.name] = numpy_helper.to_dict(proto)
            else:
                proto = onnx.TensorProto()
                proto.ParseFromString(raw)
                feeds[vi.name] = numpy_helper.to_array(proto)
        sets.append(feeds)
    return sets


def _ort_feed(value):
    """ONNX Runtime takes numpy's own dtypes; bfloat16/float8/int4 (ml_dtypes) go in as OrtValues."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    if isinstance(value, list):
        return [_ort_feed(v) for v in value]
    if isinstance(value, np.ndarray) and value.dtype.kind == "V" or (
            isinstance(value, np.ndarray) and type(value.dtype).__module__.startswith("ml_dtypes")):
        elem = helper.np_dtype_to_tensor_dtype(value.dtype)
        if value.dtype.itemsize == 1 and elem in (onnx.TensorProto.INT4, onnx.TensorProto.UINT4, onnx.TensorProto.FLOAT4E2M1,
                                                  onnx.TensorProto.INT2, onnx.TensorProto.UINT2):
            packed = np.frombuffer(numpy_helper.from_array(value).raw_data, dtype=np.uint8)
            ov = ort.OrtValue.ortvalue_from_shape_and_type(list(value.shape), elem)
            ctypes_copy(packed, ov)
            return ov
        return ort.OrtValue.ortvalue_from_numpy_with_onnx_type(np.ascontiguousarray(value).view(f"u{value.dtype.itemsize}"), elem)
    return value


def ctypes_copy(buf, ov) -> None:
    import ctypes

    ctypes.memmove(ov.data_ptr(), buf.ctypes.data, buf.nbytes)


_ORT_TYPE_TO_ELEM = {"bfloat16": 16, "float8e4m3fn": 17, "float8e4m3fnuz": 18, "float8e5m2": 19, "float8e5m2fnuz": 20,
                     "uint4": 21, "int4": 22, "float4e2m1": 23, "float8e8m0": 24, "uint2": 25, "int2": 26}


def _from_ort(ov):
    """An output OrtValue as numpy (ml_dtypes for the types numpy lacks), list, or None."""
    import ctypes

    import onnx
    from onnx import numpy_helper

    if not isinstance(ov, type(None)) and hasattr(ov, "data_type"):
        if not ov.has_value():
            return None
        if ov.is_tensor_sequence():
            return ov.numpy()  # ORT has no element accessor for exotic sequences; plain ones only
        elem_name = ov.data_type().split("(")[-1].rstrip(")")
        if elem_name in _ORT_TYPE_TO_ELEM:
            size = ov.tensor_size_in_bytes()
            raw = ctypes.string_at(ov.data_ptr(), size)
            t = onnx.TensorProto(data_type=_ORT_TYPE_TO_ELEM[elem_name], dims=ov.shape(), raw_data=raw)
            return numpy_helper.to_array(t)
        return ov.numpy()
    return ov


def ort_run(model_bytes: bytes, feeds: dict) -> list:
    import onnxruntime as ort

    ort.set_default_logger_severity(4)
    so = ort.SessionOptions()
    so.log_severity_level = 4
    sess = ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    exotic = any(any(k in o.type for k in _ORT_TYPE_TO_ELEM) for o in sess.get_outputs()) or any(
        any(k in i.type for k in _ORT_TYPE_TO_ELEM) for i in sess.get_inputs())
    fed = {k: _ort_feed(v) for k, v in feeds.items()}
    if not exotic:
        return sess.run(names, fed)
    ovs = {}
    for k, v in fed.items():
        if isinstance(v, ort.OrtValue):
            ovs[k] = v
        else:
            ovs[k] = ort.OrtValue.ortvalue_from_numpy(v)
    return [_from_ort(o) for o in sess.run_with_ort_values(names, ovs)]


def _to_float(a):
    import numpy as np

    return np.asarray(a).astype(np.float64)


def same_value(ref, got, atol: float, rtol: float) -> str | None:
    """None when ``got`` matches ``ref``; else why not."""
    import numpy as np

    if ref is None or got is None:
        return None if ref is None and got is None else "one optional is absent, the other present"
    if isinstance(ref, (list, tuple)):
        if not isinstance(got, (list, tuple)) or len(ref) != len(got):
            return "sequence lengths differ"
        for i, (a, b) in enumerate(zip(ref, got)):
            why = same_value(a, b, atol, rtol)
            if why:
                return f"[{i}] {why}"
        return None
    if isinstance(ref, dict):
        if not isinstance(got, dict) or set(ref) != set(got):
            return "map keys differ"
        for k in ref:
            why = same_value(ref[k], got[k], atol, rtol)
            if why:
                return f"[{k!r}] {why}"
        return None
    ref, got = np.asarray(ref), np.asarray(got)
    if ref.shape != got.shape:
        return f"shape {got.shape} vs {ref.shape}"
    if str(ref.dtype) != str(got.dtype):
        return f"dtype {got.dtype} vs {ref.dtype}"
    if ref.dtype.kind in "OUSb" or ref.dtype.kind in "iu":
        return None if np.array_equal(ref, got) else "values differ"
    loose = ref.dtype.itemsize <= 2
    a, r = (1e-2, 1e-2) if loose else (atol, rtol)
    x, y = _to_float(ref), _to_float(got)
    ok = np.isclose(y, x, atol=a, rtol=r, equal_nan=True) | ((x == y) & np.isinf(x))
    if ok.all():
        return None
    with np.errstate(invalid="ignore"):
        err = np.nanmax(np.abs(np.where(ok, 0, y - x)))
    return f"{int((~ok).sum())} of {ok.size} elements differ (max abs {err:.3g})"


def interface(model) -> tuple:
    inits = {t.name for t in model.graph.initializer}

    def sig(vi):
        t = vi.type
        kind = t.WhichOneof("value")
        return (vi.name, kind, str(getattr(t, kind)).replace("\n", " ") if kind != "tensor_type" else t.tensor_type.elem_type)

    return ([sig(v) for v in model.graph.input if v.name not in inits], [sig(v) for v in model.graph.output])


# --- one test ----------------------------------------------------------------------------------


def judge_output(model, out_bytes: bytes, sets: list, refs: list) -> tuple[str, str]:
    import onnx

    out_model = onnx.load_from_string(out_bytes)
    if interface(out_model) != interface(model):
        return "interface-changed", "graph inputs/outputs differ"
    try:
        for feeds, ref in zip(sets, refs):
            got = ort_run(out_bytes, feeds)
            for vi, r, g in zip(model.graph.output, ref, got):
                why = same_value(r, g, 1e-4, 1e-3)
                if why:
                    return "wrong-output", f"output '{vi.name}': {why}"
    except Exception as exc:
        return "wrong-output", f"ORT cannot run the output: {_line(exc)}"
    return "equivalent", ""


def _line(exc: BaseException) -> str:
    text = str(exc).strip().replace("[ONNXRuntimeError] : ", "")
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]


def run_case(case: str, tools: tuple[str, ...]) -> dict:
    """One test: ORT on its own inputs (else ``ort-cannot-run``), then each tool on it."""
    import onnx

    path = Path(case)
    model = onnx.load(str(path / "model.onnx"))
    raw = (path / "model.onnx").read_bytes()
    rec: dict = {"test": f"{path.parent.name}/{path.name}", "kind": path.parent.name}
    sets = read_inputs(path, model)
    try:
        refs = [ort_run(raw, feeds) for feeds in sets]
    except Exception as exc:
        rec.update(outcome="ort-cannot-run", detail=_line(exc))
        return rec
    rec["outcome"] = "not-run"
    if "surgeon" in tools:
        rec.update(run_surgeon(model, sets, refs))
    for peer in tools:
        if peer != "surgeon":
            rec[peer] = run_peer(peer, path / "model.onnx", model, sets, refs)
    return rec


def run_surgeon(model, sets: list, refs: list) -> dict:
    """``surgeon.fix`` through the Python API (default pipeline, verification on), its output judged."""
    import surgeon
    from surgeon.errors import SurgeonError

    t0 = time.perf_counter()
    try:
        out, report = surgeon.fix(model)
    except SurgeonError as exc:
        return {"outcome": "refused", "detail": _line(exc), "seconds": time.perf_counter() - t0}
    except Exception as exc:
        return {"outcome": "crash", "detail": f"{type(exc).__name__}: {_line(exc)}",
                "where": traceback.format_exc().strip().splitlines()[-3:], "seconds": time.perf_counter() - t0}
    rec = {"seconds": time.perf_counter() - t0, "verification": getattr(report, "verification", "?"),
           "rolled_back": [p.name for p in getattr(report, "rolled_back", [])]}
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "out.onnx"
        try:
            surgeon.save(out, target)
            out_bytes = target.read_bytes()
        except Exception as exc:
            rec.update(outcome="crash", detail=f"saving the output failed: {_line(exc)}")
            return rec
    rec["outcome"], rec["detail"] = judge_output(model, out_bytes, sets, refs)
    return rec


def run_peer(peer: str, src: Path, model, sets, refs) -> dict:
    """A peer through its command line, as users run it."""
    exe = shutil.which(peer) or str(Path(sys.executable).parent / peer)
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "out.onnx"
        try:
            proc = subprocess.run([exe, str(src), str(target)], capture_output=True, text=True, timeout=300)
        except subprocess.TimeoutExpired:
            return {"outcome": "crash", "detail": "timeout (300 s)"}
        if proc.returncode != 0 or not target.is_file():
            last = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
            return {"outcome": "crash", "detail": last[:200]}
        outcome, detail = judge_output(model, target.read_bytes(), sets, refs)
        return {"outcome": outcome, "detail": detail}


# --- the pool: long-lived workers, a hung or dead one is killed and replaced ---------------------


def _worker(conn, tools) -> None:
    import warnings

    warnings.filterwarnings("ignore")
    import logging

    logging.disable(logging.CRITICAL)
    while True:
        case = conn.recv()
        if case is None:
            return
        try:
            conn.send(run_case(case, tools))
        except BaseException as exc:  # the judge itself failed: record it, keep going
            conn.send({"test": case, "outcome": "bench-error", "detail": f"{type(exc).__name__}: {_line(exc)}"})


class _Slot:
    def __init__(self, ctx, tools):
        self.ctx, self.tools = ctx, tools
        self.start()

    def start(self) -> None:
        self.conn, child = self.ctx.Pipe()
        self.proc = self.ctx.Process(target=_worker, args=(child, self.tools), daemon=True)
        self.proc.start()
        child.close()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.join()
        self.start()


def run_all(cases: list[Path], jobs: int, timeout: float, tools: tuple[str, ...], log: Path | None = None) -> list[dict]:
    """Every case through the worker pool; each record is also appended to ``log`` (JSON lines) as it comes."""
    ctx = mp.get_context("fork")
    slots = [_Slot(ctx, tools) for _ in range(max(1, jobs))]
    pending = list(cases)
    busy: dict[int, tuple[Path, float]] = {}
    results = []
    done = 0
    t_start = time.time()
    try:
        while pending or busy:
            for i, slot in enumerate(slots):
                if i not in busy and pending:
                    case = pending.pop(0)
                    slot.conn.send(str(case))
                    busy[i] = (case, time.time())
            time.sleep(0.01)
            for i in list(busy):
                slot, (case, since) = slots[i], busy[i]
                rec = None
                try:
                    if slot.conn.poll():
                        rec = slot.conn.recv()
                except EOFError:
                    rec = {"test": f"{case.parent.name}/{case.name}", "kind": case.parent.name, "outcome": "crash",
                           "detail": f"worker died (exit {slot.proc.exitcode})"}
                    slot.kill()
                if rec is None and not slot.proc.is_alive():
                    rec = {"test": f"{case.parent.name}/{case.name}", "kind": case.parent.name, "outcome": "crash",
                           "detail": f"worker died (exit {slot.proc.exitcode})"}
                    slot.kill()
                if rec is None and time.time() - since > timeout:
                    rec = {"test": f"{case.parent.name}/{case.name}", "kind": case.parent.name, "outcome": "timeout",
                           "detail": f"no result within {timeout:g} s"}
                    slot.kill()
                if rec is not None:
                    results.append(rec)
                    if log is not None:
                        with open(log, "a") as f:
                            f.write(json.dumps(rec) + "\n")
                    del busy[i]
                    done += 1
                    if done % 100 == 0:
                        print(f"  {done}/{len(cases)} ({time.time() - t_start:.0f} s)", file=sys.stderr, flush=True)
    finally:
        for slot in slots:
            slot.proc.kill()
    return results


# --- summary ------------------------------------------------------------------------------------


def _reason_group(text: str) -> str:
    """Why a written model was not verified numerically, in a few buckets."""
    t = text.lower()
    for keys, label in ((("numpy_type", "no corresponding numpy type"), "bfloat16/float8 data ORT could not take or give"),
                        (("no valid sample could be made",), "no valid sample could be made (reason given per input)"),
                        (("fails on the given inputs", "does not run on generated inputs", "no generated input sizes run"),
                         "generated inputs rejected by the model (indices, axes, shapes, counts)"),
                        (("cannot load the model", "cannot run"), "ONNX Runtime cannot run the model or an added op")):
        if any(k in t for k in keys):
            return label
    return text[:80]


def summarize(results: list[dict], peers: tuple[str, ...]) -> dict:
    counted = [r for r in results if r["outcome"] != "ort-cannot-run"]  # "not-run": peers only
    outcomes = Counter(r["outcome"] for r in counted)
    written = [r for r in counted if "verification" in r]
    numeric = sum(1 for r in written if r["verification"] == "numeric")
    proof = sum(1 for r in written if r["verification"] == "proof")  # the new engine: every change proven structurally
    unverified = [r for r in written if r["verification"] not in ("numeric", "proof")]
    summary = {
        "tests": len(results), "ort_can_run": len(counted), "by_kind": dict(Counter(r["kind"] for r in counted)),
        "outcomes": dict(outcomes), "numerically_verified": numeric, "proven": proof,
        "unverified_but_written": len(unverified),
        "unverified_reasons": dict(Counter(_reason_group(r["verification"]) for r in unverified).most_common()),
        "refused_reasons": dict(Counter(r["detail"][:80] for r in counted if r["outcome"] == "refused").most_common(15)),
        "crashes": [f"{r['test']}: {r['detail']}" for r in counted if r["outcome"] in ("crash", "timeout")],
        "wrong": [f"{r['test']}: {r['detail']}" for r in counted if r["outcome"] in ("wrong-output", "interface-changed")],
        "rolled_back_models": sum(1 for r in written if r.get("rolled_back")),
    }
    for peer in peers:
        summary[peer] = dict(Counter(r[peer]["outcome"] for r in counted if peer in r))
    return summary


def print_summary(s: dict, peers: tuple[str, ...]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"conformance: {s['ort_can_run']} of {s['tests']} tests ONNX Runtime can run")
    t.add_column("result")
    t.add_column("surgeon", justify="right")
    for peer in peers:
        t.add_column(peer, justify="right")
    rows = ["equivalent", "refused", "crash", "timeout", "wrong-output", "interface-changed", "bench-error"]
    for row in rows:
        t.add_row(row, str(s["outcomes"].get(row, 0)), *[str(s[p].get(row, 0)) for p in peers])
    t.add_row("numerically verified", str(s["numerically_verified"]), *["-" for _ in peers])
    if s.get("proven"):
        t.add_row("proven without a numeric run", str(s["proven"]), *["-" for _ in peers])
    t.add_row("unverified but written (exit 0)", str(s["unverified_but_written"]), *["-" for _ in peers])
    Console(width=200).print(t)
    print("unverified, by reason:")
    for k, v in s["unverified_reasons"].items():
        print(f"  {v:5d}  {k}")
    if s["refused_reasons"]:
        print("refused, by message:")
        for k, v in s["refused_reasons"].items():
            print(f"  {v:5d}  {k}")
    for line in s["crashes"][:20] + s["wrong"][:20]:
        print(f"  {line}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--out", type=Path, default=DEFAULT_DATA)
    r = sub.add_parser("run")
    r.add_argument("--data", type=Path, default=DEFAULT_DATA)
    r.add_argument("--jobs", type=int, default=2)
    r.add_argument("--timeout", type=float, default=180.0, help="seconds per test (default 180)")
    r.add_argument("--peers", nargs="*", default=[], choices=["onnxslim", "onnxsim"])
    r.add_argument("--no-surgeon", action="store_true", help="run the peers only")
    r.add_argument("--only", nargs="*", default=[], help="only tests whose name contains one of these")
    r.add_argument("--json", type=Path, help="write every record and the summary here")
    sm = sub.add_parser("summary", help="print the summary of a JSON (or .partial.jsonl) written by 'run'")
    sm.add_argument("file", type=Path)
    args = ap.parse_args()
    if args.cmd == "prepare":
        prepare(args.out)
        return
    if args.cmd == "summary":
        text = args.file.read_text()
        results = json.loads(text)["results"] if args.file.suffix == ".json" else [json.loads(l) for l in text.splitlines() if l]
        peers = tuple(p for p in ("onnxslim", "onnxsim") if any(p in r for r in results))
        print_summary(summarize(results, peers), peers)
        return
    import surgeon

    print(f"surgeon from {Path(surgeon.__file__).parent}", file=sys.stderr)
    cases = sorted(p.parent for kind in KINDS for p in (args.data / kind).glob("*/model.onnx"))
    if args.only:
        cases = [c for c in cases if any(s in c.name for s in args.only)]
    if not cases:
        raise SystemExit(f"no tests under {args.data}; run 'python bench/conformance.py prepare' first")
    t0 = time.time()
    partial = args.json.with_suffix(".partial.jsonl") if args.json else None
    if partial is not None:
        partial.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text("")
    tools = (() if args.no_surgeon else ("surgeon",)) + tuple(args.peers)
    results = run_all(cases, args.jobs, args.timeout, tools, partial)
    summary = summarize(results, tuple(args.peers))
    summary["wall_s"] = round(time.time() - t0, 1)
    summary["surgeon"] = str(Path(surgeon.__file__).parent)
    print_summary(summary, tuple(args.peers))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"summary": summary, "results": sorted(results, key=lambda r: r["test"])}, indent=1))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
