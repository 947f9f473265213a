"""Mutation testing of `surgeon fix`'s verification: plant wrong rewrites, count what it rolls back.

A verifier is only as good as the errors it catches. This script plants one wrong
rewrite at a time in real models and runs ``fix``'s verification on them with the
default (generated) samples, as a user's ``surgeon fix MODEL -o OUT`` does:

- ``affine``: a node's output y becomes 1.25 y + 0.25 (what a wrong fold does);
- ``swap``: a node's op is swapped for a look-alike (Tanh -> Sigmoid, Relu -> Abs, Add -> Sub,
  Max -> Min, ReduceMean -> ReduceMax, ...), as a wrong rule does.

The mutant is a pass, ``plant-mutant``, put first in the default pipeline; it runs in the
same batched, verified pipeline as every other pass. Each mutant ends as:

- ``killed``: the pipeline rolled it back (verification caught it);
- ``survived``: it was kept and the output reported as verified (numeric or proof);
- ``unverified``: it was kept and the report says the output is not verified
  (``--strict`` exits 1): honest, but not caught;
- ``equivalent``: it does not change the outputs on *realistic* inputs, so no verifier
  could or should catch it. How that is established, independently of the samples the
  verifier draws: the original and the mutant run on ONNX Runtime on realistic inputs
  (for the corpus: the manifest's example feed sets, at their sizes and value kinds --
  token ids within the vocabulary, sample rates, zero states -- each with two seeds, plus,
  for image inputs, a rendered page of text at the manifest's size; for fixtures: the
  recipes in ``RECIPES``), compared with the verifier's own rule and tolerances (float32
  atol 1e-4, rtol 1e-3; NaN equal to NaN). Equal everywhere: equivalent. A mutant that
  makes the model fail to run is not equivalent.

The score is killed / (mutants that change outputs on realistic inputs); the target is
every one of them. Sites are chosen deterministically (``--seed``) among nodes whose
output is a float tensor that depends on the graph inputs, bodies of If/Loop included.

    python bench/mutation.py [--sets corpus,fixtures] [--only SUBSTR ...] [--per-model 2] [--kinds affine,swap]
                             [--seed 0] [--json FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))  # the checkout's surgeon, whatever is installed

import onnx_graphsurgeon as gs  # noqa: E402

sys.path.insert(0, str(HERE))
from gpu_common import manifest_value  # noqa: E402  (bench/, beside this script)

from surgeon import graph as G  # noqa: E402
from surgeon.pipeline import registry  # noqa: E402
from surgeon.pipeline.base import Pass, PassContext, PassLog  # noqa: E402

CORPUS = ROOT.parent / "shared" / "corpus"
SETS = {"corpus": CORPUS, "fixtures": ROOT / "fixtures" / "exports"}
KINDS = ("affine", "swap")

# Look-alike ops: same inputs and attributes, other values.
SWAPS = {"Tanh": "Sigmoid", "Sigmoid": "Tanh", "Relu": "Abs", "Add": "Sub", "Sub": "Add", "Max": "Min", "Min": "Max",
         "ReduceMean": "ReduceMax", "ReduceMax": "ReduceMean", "Erf": "Tanh", "Div": "Mul", "Softmax": "LogSoftmax",
         "HardSigmoid": "Sigmoid", "HardSwish": "Relu", "Exp": "Softplus", "Sqrt": "Abs"}
_DROP_ATTRS = {"HardSigmoid"}  # its alpha/beta mean nothing to the op it becomes
FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16}


# --- the mutant, as a pass --------------------------------------------------------------------------------------------


class PlantMutant(Pass):
    """One deliberately wrong rewrite at one node (``options["mutant"]``); for this benchmark only."""

    name = "plant-mutant"
    summary = "bench/mutation.py: plant one wrong rewrite (never use it)"

    def run(self, model, ctx: PassContext, log: PassLog) -> bool:
        spec = ctx.options.get("mutant")
        if not spec:
            return False
        for g in G.iter_graphs(model.graph):
            for i, node in enumerate(g.nodes):
                if node.name.startswith("plant_mutant_"):
                    return False  # planted in an earlier round
                if not node.outputs or node.outputs[0].name != spec["output"]:
                    continue
                if spec["kind"] == "swap":
                    if node.op != spec["op"]:
                        return False
                    node.op = SWAPS[node.op]
                    if spec["op"] in _DROP_ATTRS:
                        node.attrs.clear()
                    node.name = f"plant_mutant_{node.name}"
                else:
                    y = node.outputs[0]
                    dtype = onnx.helper.tensor_dtype_to_np_dtype(spec["elem_type"])
                    pre = gs.Variable(f"{y.name}__mutant_pre", dtype=y.dtype, shape=y.shape)
                    mid = gs.Variable(f"{y.name}__mutant_mid", dtype=y.dtype, shape=y.shape)
                    node.outputs[0] = pre
                    scale = gs.Node("Mul", f"plant_mutant_scale_{i}", inputs=[pre, gs.Constant(
                        f"{y.name}__mutant_a", np.array(1.25, dtype=dtype))], outputs=[mid])
                    shift = gs.Node("Add", f"plant_mutant_shift_{i}", inputs=[mid, gs.Constant(
                        f"{y.name}__mutant_b", np.array(0.25, dtype=dtype))], outputs=[y])
                    g.nodes[i + 1:i + 1] = [scale, shift]  # right after the node: the graph stays sorted
                log.count(spec["kind"])
                return True
        return False


@dataclass
class Mutant:
    model: str
    kind: str
    output: str  # the mutated node's first output
    op: str
    elem_type: int
    in_body: bool
    verdict: str = ""  # killed, survived, unverified, equivalent (and what the verifier did), error
    equivalent: bool | None = None
    verification: str = ""
    seconds: float = 0.0
    detail: str = ""

    def spec(self) -> dict:
        return {"kind": self.kind, "output": self.output, "op": self.op, "elem_type": self.elem_type}


# --- where to plant ---------------------------------------------------------------------------------------------------


def _types(model: onnx.ModelProto) -> dict[str, int]:
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - fewer known types only means fewer sites
        inferred = model
    out: dict[str, int] = {}

    def visit(g: onnx.GraphProto) -> None:
        for vi in list(g.input) + list(g.value_info) + list(g.output):
            if vi.type.HasField("tensor_type"):
                out[vi.name] = vi.type.tensor_type.elem_type
        for n in g.node:
            for a in n.attribute:
                for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                    visit(sub)

    visit(inferred.graph)
    return out


def sites(model: onnx.ModelProto) -> list[tuple[onnx.NodeProto, bool]]:
    """Nodes (bodies included, in order) whose first output is a float tensor some graph input reaches."""
    types = _types(model)
    inits = {t.name for t in model.graph.initializer}
    live = {vi.name for vi in model.graph.input if vi.name not in inits}
    found: list[tuple[onnx.NodeProto, bool]] = []

    def reads(node: onnx.NodeProto) -> set[str]:
        names = {i for i in node.input if i}
        for a in node.attribute:
            for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                for inner in sub.node:
                    names |= reads(inner)
        return names

    def visit(g: onnx.GraphProto, in_body: bool) -> None:
        if in_body:
            live.update(vi.name for vi in g.input)
        for n in g.node:
            if n.op_type in ("Constant",) or not n.output:
                continue
            if reads(n) & live:
                live.update(o for o in n.output if o)
                if types.get(n.output[0]) in FLOAT_TYPES and n.op_type not in ("If", "Loop", "Scan"):
                    found.append((n, in_body))
            for a in n.attribute:
                for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                    visit(sub, True)

    visit(model.graph, False)
    return found


def plan(model: onnx.ModelProto, label: str, per_model: int, kinds: tuple[str, ...], seed: int) -> list[Mutant]:
    """Deterministic sites: ``per_model`` of each kind, spread over the graph."""
    types = _types(model)
    candidates = sites(model)
    rng = np.random.default_rng(seed + sum(label.encode()))
    out: list[Mutant] = []
    if "affine" in kinds and candidates:
        picks = sorted(rng.choice(len(candidates), size=min(per_model, len(candidates)), replace=False))
        for k in picks:
            node, body = candidates[k]
            out.append(Mutant(label, "affine", node.output[0], node.op_type, types[node.output[0]], body))
    swappable = [(n, b) for n, b in candidates if n.op_type in SWAPS and n.domain in ("", "ai.onnx")]
    if "swap" in kinds and swappable:
        picks = sorted(rng.choice(len(swappable), size=min(per_model, len(swappable)), replace=False))
        for k in picks:
            node, body = swappable[k]
            out.append(Mutant(label, "swap", node.output[0], node.op_type, types[node.output[0]], body))
    return out


def mutate(model: onnx.ModelProto, mutant: Mutant) -> onnx.ModelProto:
    """The mutated model, made by the same pass the pipeline runs."""
    work = G.Model.from_proto(model)
    log = PassLog()
    if not PlantMutant().run(work, PassContext(options={"mutant": mutant.spec()}, pass_name="plant-mutant"), log):
        raise RuntimeError(f"the mutant at {mutant.output} could not be planted")
    return work.export().full()


# --- realistic inputs -------------------------------------------------------------------------------------------------


def _page(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """A rendered page of text, NCHW in [0, 1] (what a text detector or an image classifier is for)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n, c, h, w = shape
    rng = np.random.default_rng(seed)
    fig = plt.figure(figsize=(w / 100, h / 100), dpi=100)
    words = ["invoice", "total", "2024", "surgeon", "ONNX", "model", "42.00", "TensorRT", "page", "Hello"]
    for k in range(max(2, h // 40)):
        fig.text(0.05, 0.9 - k * 35 / h, " ".join(rng.choice(words, size=4)), fontsize=max(6, h // 30))
    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())[:h, :w, :3].astype(np.float32) / 255
    plt.close(fig)
    img = rgba.transpose(2, 0, 1)[:c] if c <= 3 else np.repeat(rgba.mean(2, keepdims=True).transpose(2, 0, 1), c, 0)
    return np.repeat(img[None], n, axis=0).astype(np.float32)


def _prefix_mask(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    rows = int(np.prod(shape[:-1]))
    lengths = rng.integers(max(1, shape[-1] // 2), shape[-1] + 1, size=rows)
    return (np.arange(shape[-1])[None] < lengths[:, None]).reshape(shape).astype(np.int64)


def _recipes() -> dict[str, Any]:
    """Realistic inputs for the fixture exports (the corpus has its manifest): (seed) -> feed sets."""
    def bert(rng, token_types=False):
        sets = []
        for b, t in ((1, 16), (2, 9)):
            f = {"input_ids": rng.integers(0, 128, size=(b, t)).astype(np.int64), "attention_mask": _prefix_mask((b, t), rng)}
            if token_types:
                f["token_type_ids"] = (np.arange(t)[None] >= t // 2).repeat(b, 0).astype(np.int64)
            sets.append(f)
        return sets

    def gpt2(rng):
        sets = []
        for b, past, t in ((1, 6, 4), (2, 3, 5)):
            f = {"input_ids": rng.integers(0, 128, size=(b, t)).astype(np.int64),
                 "attention_mask": np.ones((b, past + t), np.int64)}
            for k in range(2):
                f[f"past_key_{k}"] = rng.standard_normal((b, 2, past, 16)).astype(np.float32)
                f[f"past_value_{k}"] = rng.standard_normal((b, 2, past, 16)).astype(np.float32)
            sets.append(f)
        return sets

    return {
        "bert_encoder_dynamo_op18.onnx": bert,
        "bert_sentence_legacy_op14.onnx": lambda rng: bert(rng, token_types=True),
        "captcha_cnn_lstm_op12.onnx": lambda rng: [{"image": _page((1, 1, 64, 160), int(rng.integers(1e6)))},
                                                    {"image": rng.uniform(0, 1, (2, 1, 64, 128)).astype(np.float32)}],
        "gpt2_kvcache_dynamo_op18.onnx": gpt2,
        "gru_zero_state_op14.onnx": lambda rng: [{"tokens": rng.integers(0, 50, size=s).astype(np.int64)}
                                                 for s in ((1, 12), (3, 7))],
        "speaker_lstm_int8_dynq.onnx": lambda rng: [{"mels": rng.standard_normal(s).astype(np.float32)}
                                                    for s in ((1, 50, 24), (2, 30, 24))],
        "tutorial_cnn.onnx": lambda rng: [{"input": rng.standard_normal((2, 3, 16, 16)).astype(np.float32)}],
        "evidence_t5_mask.onnx": lambda rng: [{"input_ids": rng.integers(0, 64, size=s).astype(np.int64),
                                               "attention_mask": _prefix_mask(s, rng)} for s in ((1, 10), (2, 6))],
        "evidence_if_branch.onnx": lambda rng: [{"x": rng.uniform(-1, 1, (2, 8)).astype(np.float32)},
                                                {"x": rng.uniform(0.3, 1, (3, 8)).astype(np.float32)}],
    }


def realistic_inputs(path: Path, manifest: dict[str, dict]) -> list[dict[str, np.ndarray]]:
    """Two seeds of each realistic feed set (see the module docstring), plus a page for image inputs."""
    sets: list[dict[str, np.ndarray]] = []
    entry = manifest.get(path.name)
    recipe = _recipes().get(path.name)
    for seed in (1, 2):
        rng = np.random.default_rng(seed)
        if entry:
            for fs in entry["feeds"]:
                sets.append({k: manifest_value(v, rng) for k, v in fs.items()})
        elif recipe:
            sets.extend(recipe(rng))
    if entry:
        for fs in entry["feeds"][:1]:
            pages = {k: _page(tuple(v["shape"]), 7) for k, v in fs.items()
                     if v["dtype"] == "float32" and len(v["shape"]) == 4 and v["shape"][1] in (1, 3)}
            if pages:
                sets.append({**{k: manifest_value(v, np.random.default_rng(3)) for k, v in fs.items()}, **pages})
    return sets


def equivalent(original: onnx.ModelProto, mutant: onnx.ModelProto, inputs: list[dict[str, np.ndarray]]) -> tuple[bool, str]:
    """Whether the mutant computes what the original does on every realistic input (the verifier's rule)."""
    from surgeon import backends
    from surgeon.comparison import diff_outputs
    from surgeon.errors import BackendError

    backend = backends.create("onnxrt")
    ref_session = backend.session(original)
    try:
        session = backend.session(mutant)
    except BackendError as exc:
        return False, f"the mutant does not load: {exc}"
    for i, feeds in enumerate(inputs):
        ref = ref_session.run(feeds)
        try:
            out = session.run(feeds)
        except BackendError as exc:
            return False, f"the mutant fails on realistic input {i}: {exc}"
        for d in diff_outputs(ref, out, nan_equal=True, detail=False):
            if not d.passed:
                return False, f"realistic input {i}: output '{d.name}' {d.reason}"
    return True, "no output changes on the realistic inputs"


# --- the verifier's verdict -------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _mutant_pass():
    """``plant-mutant`` registered for the duration of one run only (it must never leak into a pass list)."""
    registry.register(PlantMutant)
    try:
        yield
    finally:
        registry._PASSES.pop(PlantMutant.name, None)  # noqa: SLF001 - the registry has no unregister: a bench-only pass


def run_fix(model: onnx.ModelProto, mutant: Mutant) -> tuple[str, str, float]:
    """``fix`` with the mutant first in the default pipeline, default samples: (verdict, verification, seconds)."""
    import surgeon

    passes = [PlantMutant.name, *registry.default_pipeline()]
    start = time.perf_counter()
    with _mutant_pass():
        _out, report = surgeon.fix(model, passes, options={"mutant": mutant.spec()})
    seconds = time.perf_counter() - start
    runs = [p for p in report.passes if p.name == "plant-mutant" and p.status != "unchanged"]
    kept = any(p.status == "applied" for p in runs)
    if not runs:
        return "error", "the mutant was never planted", seconds
    if not kept:
        return "killed", report.verification, seconds
    return ("survived" if report.verified else "unverified"), report.verification, seconds


def evaluate(path: Path, manifest: dict[str, dict], per_model: int, kinds: tuple[str, ...], seed: int,
             progress=print) -> list[Mutant]:
    model = onnx.load(str(path))
    inputs = realistic_inputs(path, manifest)
    mutants = plan(model, path.name, per_model, kinds, seed)
    for m in mutants:
        try:
            mutated = mutate(model, m)
            if inputs:
                m.equivalent, m.detail = equivalent(model, mutated, inputs)
            m.verdict, m.verification, m.seconds = run_fix(model, m)
        except Exception as exc:  # noqa: BLE001 - one broken mutant must not stop the run
            m.verdict, m.detail = "error", f"{type(exc).__name__}: {exc}".splitlines()[0]
        progress(f"  {m.kind:6s} {m.op:>14s} -> {m.output[:48]:48s} {m.verdict:10s} "
                 f"{'equivalent' if m.equivalent else ''} {m.seconds:.2f}s")
    return mutants


@dataclass
class Score:
    mutants: int = 0
    equivalent: int = 0
    unknown: int = 0  # no realistic inputs to decide equivalence
    killed: int = 0
    survived: list[str] = field(default_factory=list)
    unverified: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    fix_median: float = 0.0

    @property
    def changing(self) -> int:
        return self.mutants - self.equivalent - len(self.errors)

    def line(self) -> str:
        rate = f"{100 * self.killed / self.changing:.0f}%" if self.changing else "-"
        return (f"mutation score: {self.killed}/{self.changing} output-changing mutants killed ({rate}); "
                f"{self.equivalent} equivalent on realistic inputs; {len(self.survived)} survived as verified; "
                f"{len(self.unverified)} written unverified; {len(self.errors)} errors; "
                f"{self.mutants} mutants, {self.seconds:.0f} s of fix (median {self.fix_median:.2f} s per run)")


def score(mutants: list[Mutant]) -> Score:
    s = Score(mutants=len(mutants))
    for m in mutants:
        tag = f"{m.model}:{m.kind}:{m.op}:{m.output}"
        if m.verdict == "error":
            s.errors.append(f"{tag}: {m.detail}")
            continue
        if m.equivalent:
            s.equivalent += 1
            continue
        if m.equivalent is None:
            s.unknown += 1
        if m.verdict == "killed":
            s.killed += 1
        elif m.verdict == "survived":
            s.survived.append(f"{tag}: {m.detail}")
        else:
            s.unverified.append(f"{tag}: {m.verification}")
    times = [m.seconds for m in mutants if m.seconds]
    s.seconds = sum(times)
    s.fix_median = statistics.median(times) if times else 0.0
    return s


def find_models(sets: list[str], only: list[str]) -> list[Path]:
    paths: list[Path] = []
    for name in sets:
        folder = SETS[name]
        if folder.is_dir():
            paths.extend(sorted(folder.glob("*.onnx")))
    return [p for p in paths if not only or any(o in p.name for o in only)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default="corpus,fixtures", help="comma list of corpus, fixtures (default both)")
    ap.add_argument("--only", nargs="*", default=[], help="only models whose file name contains one of these")
    ap.add_argument("--per-model", type=int, default=2, help="mutants of each kind per model (default 2)")
    ap.add_argument("--kinds", default=",".join(KINDS), help="comma list of affine, swap")
    ap.add_argument("--seed", type=int, default=0, help="seed of the site choice (default 0)")
    ap.add_argument("--json", type=Path, help="write every mutant and the score here")
    args = ap.parse_args()
    import logging

    logging.disable(logging.WARNING)
    manifest = {}
    if (CORPUS / "manifest.json").is_file():
        manifest = {e["file"]: e for e in json.loads((CORPUS / "manifest.json").read_text())["models"]}
    kinds = tuple(k for k in args.kinds.split(",") if k)
    everything: list[Mutant] = []
    for path in find_models(args.sets.split(","), args.only):
        print(f"{path.name}:", flush=True)
        everything.extend(evaluate(path, manifest, args.per_model, kinds, args.seed,
                                   progress=lambda line: print(line, flush=True)))
    s = score(everything)
    print()
    for what, items in (("survived (verified, but the output changed)", s.survived),
                        ("written unverified", s.unverified), ("errors", s.errors)):
        for item in items:
            print(f"{what}: {item}")
    print(s.line())
    if args.json:
        args.json.write_text(json.dumps({"score": {**asdict(s), "line": s.line()},
                                         "mutants": [asdict(m) for m in everything]}, indent=1))


if __name__ == "__main__":
    main()
