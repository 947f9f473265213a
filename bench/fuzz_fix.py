"""Differential campaign: random exporter-pattern graphs through ``fix`` (``--no-verify``) vs ONNX Runtime.

Each example is a plan from ``tests/graphgen.py`` (shape chains, Conv+BN, neutral ops and
near misses, If/Loop with outer-scope reads, decomposed LayerNorm, Resize, fp16 paths,
initializer-backed inputs; opsets 11-21, IR 7-10), judged by ``tests/differential.py``:
the default pipeline without numeric verification must give the original's outputs in
ONNX Runtime (optimizations off) on two samples, the second overriding every
initializer-backed input, and keep the interface. Prints the count of each outcome and,
for every failure, the pass after which it first shows (the passes run one by one).

    python bench/fuzz_fix.py --examples 2000 [--seed 0] [--passes a,b] [--verify] [--findings DIR] [--peer onnxslim]
                             [--freeze-initializer-inputs] [--json FILE]

``--findings DIR`` shrinks each failure (blocks of the plan deleted while the same pass
still fails the same way) and writes ``DIR/<pass>/NNN.onnx`` with a README line each.
``--peer onnxslim`` also runs onnxslim on every graph, in-process (``onnxslim.slim``:
its command line costs about a second of start-up per graph), judged the same way.
``--verify`` turns numeric verification on and says, for each rollback, whether the pass
on its own (no verification) was right, i.e. whether the verifier or the pass was wrong.
``--freeze-initializer-inputs`` fixes with that option (the interface then loses them).
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import random
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import graphgen  # noqa: E402
import differential  # noqa: E402

FAILURES = ("refused", "crash", "rolled-back", "interface-changed", "wrong-output")


def shrink(plan: tuple, outcome: differential.Outcome, options: dict, passes=None) -> tuple:
    """Delete blocks while the same kind of failure, after the same pass, remains: (plan, its outcome)."""
    opset, ir, spec, blocks = plan
    blocks = list(blocks)
    i = 0
    while i < len(blocks):
        trial = (opset, ir, spec, tuple(blocks[:i] + blocks[i + 1:]))
        g = graphgen.build(trial)
        got = differential.judge(g.model, g.sizes, g.overrides, options=options, passes=passes)
        if got.kind == outcome.kind and got.culprits == outcome.culprits:
            blocks.pop(i)
            outcome = got
        else:
            i += 1
    return (opset, ir, spec, tuple(blocks)), outcome


def write_finding(root: Path, plan: tuple, outcome: differential.Outcome, seen: set) -> Path | None:
    import onnx

    culprit = outcome.culprits[0] if outcome.culprits else "unattributed"
    folder = root / culprit
    folder.mkdir(parents=True, exist_ok=True)
    key = (culprit, outcome.kind, tuple(k for k, _ in plan[3]))
    if key in seen:
        return None
    seen.add(key)
    n = len(list(folder.glob("*.onnx"))) + 1
    path = folder / f"{n:03d}.onnx"
    g = graphgen.build(plan)
    onnx.save(g.model, path)
    overrides = {k: v.tolist() for k, v in g.overrides.items()}
    line = (f"- `{path.name}`: {outcome.kind}: {outcome.detail} (blocks {[k for k, _ in plan[3]]}, opset {plan[0]}, "
            f"IR {plan[1]}; sample 0: dims {({k: v[0] for k, v in g.sizes.items()})}, random inputs; sample 1: "
            f"dims {({k: v[1] for k, v in g.sizes.items()})}{', overrides ' + json.dumps(overrides) if overrides else ''}; "
            f"plan {plan!r})\n")
    readme = folder / "README.md"
    if not readme.exists():
        readme.write_text(f"# Findings for `{culprit}` (bench/fuzz_fix.py)\n\nEach model: `surgeon fix --no-verify` "
                          "(default pipeline) gives a result that differs from the original in ONNX Runtime "
                          "(optimizations off). Inputs are uniform in [-1, 1] (seeded); tolerances float32 "
                          "1e-4 abs + 1e-3 rel, float16 1e-2 + 1e-2.\n\n")
    with readme.open("a") as fh:
        fh.write(line)
    return path


def judge_peer(g: graphgen.Graph) -> str:
    """onnxslim (in-process) on the same graph, judged the same way: an outcome kind."""
    import onnxslim

    feeds = differential.samples(g.model, g.sizes, g.overrides)
    try:
        ref = differential.run(g.model, feeds)
    except Exception:  # noqa: BLE001
        return "invalid"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            work = type(g.model)()
            work.CopyFrom(g.model)  # onnxslim edits the model it is given
            out = onnxslim.slim(work)
    except Exception:  # noqa: BLE001
        return "crash"
    try:
        import onnx

        onnx.checker.check_model(out)
    except Exception:  # noqa: BLE001
        return "checker-failure"
    if differential.interface(out) != differential.interface(g.model):
        return "interface-changed"
    try:
        got = differential.run(out, feeds)
    except Exception:  # noqa: BLE001
        return "unloadable"
    if differential.differs(ref, got):
        if differential._within_rounding(g.model, feeds, ref, got) or \
                differential._closer_than_float32(g.model, feeds, ref, got):
            return "rounding"
        return "ort-noise" if differential._reference_agrees(g.model, out, feeds) else "wrong-output"
    return "ok"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-blocks", type=int, default=6)
    ap.add_argument("--findings", type=Path)
    ap.add_argument("--peer", choices=["onnxslim"])
    ap.add_argument("--passes", help="a pipeline other than the default one (a,b,c), e.g. one pass on its own")
    ap.add_argument("--options", nargs="*", default=[], help="pipeline options KEY=VALUE")
    ap.add_argument("--verify", action="store_true",
                    help="numeric verification on: count its rollbacks, and whether the pass alone without it was right")
    ap.add_argument("--freeze-initializer-inputs", action="store_true", help="fix with freeze_initializer_inputs")
    ap.add_argument("--json", type=Path, help="write every non-ok record here")
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    import onnxruntime as ort

    ort.set_default_logger_severity(3)
    options = dict(o.split("=", 1) for o in args.options)
    counts: collections.Counter = collections.Counter()
    by_pass: collections.Counter = collections.Counter()
    peer: collections.Counter = collections.Counter()
    verdicts: collections.Counter = collections.Counter()  # (rolled-back pass, its outcome alone without verification)
    records, seen = [], set()
    rng = random.Random(args.seed)
    start = time.perf_counter()
    for i in range(args.examples):
        plan = graphgen.random_plan(rng, args.max_blocks)
        g = graphgen.build(plan)
        outcome = differential.judge(g.model, g.sizes, g.overrides, options=options, passes=args.passes,
                                     verify=args.verify, freeze=args.freeze_initializer_inputs)
        counts[outcome.kind] += 1
        if args.verify and outcome.kind == "rolled-back":
            # a rollback by the verifier: was the pass wrong on its own (no verification, this pass only)?
            alone = differential.judge(g.model, g.sizes, g.overrides, options=options, passes=outcome.culprits)
            verdicts[(outcome.culprits[0], alone.kind)] += 1
            if alone.kind in ("ok", "rounding", "ort-noise"):
                print(f"[{i}] rolled back by verification, {outcome.culprits[0]} alone: {alone.kind}: {outcome.detail}")
                continue
        if args.peer:
            peer[judge_peer(g)] += 1
        if outcome.kind in FAILURES:
            by_pass[(outcome.kind, ",".join(outcome.culprits) or "?")] += 1
            record = {"example": i, "kind": outcome.kind, "culprits": outcome.culprits, "detail": outcome.detail,
                      "plan": repr(plan)}
            if args.findings:
                small, small_outcome = shrink(plan, outcome, options, args.passes)
                path = write_finding(args.findings, small, small_outcome, seen)
                record["shrunk"] = repr(small)
                record["file"] = str(path) if path else None
            records.append(record)
            print(f"[{i}] {outcome.kind} after {outcome.culprits or '?'}: {outcome.detail}", flush=True)
        if (i + 1) % 500 == 0:
            print(f"... {i + 1} examples, {time.perf_counter() - start:.0f} s: {dict(counts)}", flush=True)
    elapsed = time.perf_counter() - start
    print(f"\n{args.examples} examples in {elapsed:.0f} s (seed {args.seed})")
    for kind in differential.KINDS:
        print(f"  {kind:18s} {counts.get(kind, 0)}")
    if by_pass:
        print("failures by the pass after which they first show:")
        for (kind, name), n in sorted(by_pass.items()):
            print(f"  {kind:18s} {name:24s} {n}")
    if verdicts:
        print("rollbacks by verification, and the pass alone without verification:")
        for (name, kind), n in sorted(verdicts.items()):
            print(f"  {name:24s} {kind:18s} {n}")
    if args.peer:
        print(f"{args.peer} (in-process) on the same graphs:")
        for kind, n in sorted(peer.items()):
            print(f"  {kind:18s} {n}")
    if args.json:
        args.json.write_text(json.dumps({"counts": dict(counts), "peer": dict(peer), "failures": records}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
