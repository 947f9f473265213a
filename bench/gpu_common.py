"""Shared pieces of bench/gpu_run.py and its CPU worker (bench/gpu_fp16_cpu.py): the corpus, its
inputs, and error statistics. Nothing here needs a GPU."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Mapping

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Where the corpus may be: ../shared/corpus beside the checkout, shared/corpus inside it, or the
# coordinator's .gpuwork/models.
CORPUS_CANDIDATES = (ROOT.parent / "shared" / "corpus", ROOT / "shared" / "corpus", ROOT / ".gpuwork" / "models")

# Input sizes for models whose dims are dynamic, when no manifest is at hand (the manifest's first
# feed set otherwise): the same sizes the corpus manifest uses.
FALLBACK_SHAPES = {
    "silero_vad_v6": {"input": (1, 512), "state": (2, 1, 128)},
    "magika_standard_v3_3": {"bytes": (1, 2048)},
    "rapidocr_ppocrv4_det": {"x": (1, 3, 640, 640)},
    "rapidocr_ppocr_mobile_v2_cls": {"x": (1, 3, 48, 192)},
    "nudenet_320n_yolov8n": {"images": (1, 3, 320, 320)},
    "openwakeword_melspectrogram": {"input": (1, 16000)},
    "tutorial_cnn_op12_dynbatch": {"input": (1, 3, 32, 32)},
    "vit_tiny_legacy_op17": {"pixel_values": (1, 3, 224, 224)},
    "rnn_bilstm_gru_legacy_op13": {"tokens": (1, 64), "h0": (4, 1, 256), "c0": (4, 1, 256)},
    "cf_loop_if_scripted_legacy_op16": {"x": (4, 256)},
    "skl_rf_pipeline": {"X": (100, 20)},
}

# Larger inputs for the profile accuracy figure: the GPU busy long enough that per-launch host
# overhead is small against kernel time (the per-node sum is compared with wall latency).
LARGE_SHAPES = {
    "rapidocr_ppocrv4_det": {"x": (8, 3, 960, 960)},
    "nudenet_320n_yolov8n": {"images": (16, 3, 640, 640)},
    "vit_tiny_legacy_op17": {"pixel_values": (64, 3, 224, 224)},
    "rapidocr_ppocr_mobile_v2_cls": {"x": (512, 3, 48, 192)},
    "tutorial_cnn_op12_dynbatch": {"input": (2048, 3, 32, 32)},
}


# The FP16 comparison's inputs, where the manifest's are too large for the CPU side in time (every
# tensor of PP-OCRv4 det at 640x640, marked and emulated, took 290 s on a 2-core machine).
FP16_SHAPES = {"rapidocr_ppocrv4_det": {"x": (1, 3, 320, 320)}}


def find_corpus(given: str | None) -> Path | None:
    if given:
        return Path(given)
    for c in CORPUS_CANDIDATES:
        if c.is_dir() and any(c.glob("*.onnx")):
            return c
    return None


def manifest(folder: Path) -> dict[str, dict]:
    for candidate in (folder / "manifest.json", ROOT.parent / "shared" / "corpus" / "manifest.json"):
        if candidate.is_file():
            return {m["file"]: m for m in json.loads(candidate.read_text())["models"]}
    return {}


def manifest_value(spec: Mapping[str, Any], rng: np.random.Generator) -> np.ndarray:
    """One input as the corpus manifest describes it (kinds zeros, ones, const, int, uniform,
    str, else normal times ``scale``); the one reading of the manifest's feeds the bench scripts share."""
    dtype, shape, kind = np.dtype(spec["dtype"]), tuple(spec["shape"]), spec["kind"]
    if kind == "zeros":
        return np.zeros(shape, dtype)
    if kind == "ones":
        return np.ones(shape, dtype)
    if kind == "const":
        return np.full(shape, spec["value"], dtype)
    if kind == "int":
        return rng.integers(0, spec["hi"], size=shape).astype(dtype)
    if kind == "uniform":
        return rng.uniform(0, 1, size=shape).astype(dtype)
    if kind == "str":
        return np.array(rng.choice(spec.get("choices", ["a"]), size=shape), dtype=object)
    return (rng.standard_normal(shape) * spec.get("scale", 1.0)).astype(dtype)


def feed_from_spec(spec: Mapping[str, Any], seed: int = 0) -> dict[str, np.ndarray]:
    """One feed set as the corpus manifest describes it (the value kinds tests/test_corpus.py uses)."""
    rng = np.random.default_rng(seed)
    return {name: manifest_value(s, rng) for name, s in spec.items()}


def corpus_feed(path: Path, entries: Mapping[str, dict], shapes: Mapping[str, tuple] | None = None, seed: int = 0) -> dict:
    """The manifest's first feed set (resized to ``shapes`` where given), else surgeon's seeded samples."""
    entry = entries.get(path.name)
    if entry and entry.get("feeds"):
        spec = {k: dict(v) for k, v in entry["feeds"][0].items()}
        for name, shape in (shapes or {}).items():
            if name in spec:
                spec[name]["shape"] = list(shape)
        return feed_from_spec(spec, seed)
    from surgeon import model as model_io
    from surgeon.input_data import make_samples

    model = model_io.load(path)
    wanted = dict(FALLBACK_SHAPES.get(path.stem, {}))
    wanted.update(shapes or {})
    return make_samples(model, input_shapes=wanted, iterations=1, seed=seed)[0]


def stats(ref: Any, test: Any, atol: float, rtol: float) -> dict[str, Any]:
    """Error of one tensor against its reference: max abs, worst |d|/(atol+rtol|ref|), elements
    outside, NaN/Inf where the reference is finite, and pass/fail (NaN matching NaN)."""
    if not isinstance(ref, np.ndarray) or not isinstance(test, np.ndarray):
        equal = bool(np.all(np.asarray(ref) == np.asarray(test))) if not isinstance(ref, (list, dict)) else ref == test
        return {"passed": bool(equal), "kind": "non-tensor"}
    if ref.shape != test.shape:
        return {"passed": False, "reason": f"shape {list(test.shape)} vs {list(ref.shape)}"}
    if ref.dtype.kind not in "fc":
        same = bool(np.array_equal(ref, test))
        return {"passed": same, "max_abs": 0.0 if same else float(np.max(np.abs(ref.astype(np.float64) - test.astype(np.float64)))),
                "tol_ratio": 0.0 if same else float("inf"), "mismatches": int(np.sum(ref != test)), "elements": int(ref.size)}
    r, t = ref.astype(np.float64), test.astype(np.float64)
    fin_r, fin_t = np.isfinite(r), np.isfinite(t)
    nonfinite = int(np.sum(fin_r & ~fin_t))
    both = fin_r & fin_t
    err = np.abs(t - r)
    bound = atol + rtol * np.abs(r)
    outside = int(np.sum(both & (err > bound))) + nonfinite + int(np.sum(~fin_r & fin_t))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = float(np.max(np.where(both, err / np.where(bound > 0, bound, 1.0), 0.0))) if both.any() else 0.0
    where = None
    if both.any():
        flat = int(np.argmax(np.where(both, err, -1.0)))
        where = {"index": [int(i) for i in np.unravel_index(flat, r.shape)], "ref": float(r.flat[flat]),
                 "test": float(t.flat[flat])}
    return {"passed": outside == 0, "max_abs": float(err[both].max()) if both.any() else 0.0, "tol_ratio": ratio,
            "mismatches": outside, "elements": int(r.size), "nonfinite": nonfinite,
            "test_absmax": float(np.max(np.abs(t[fin_t]))) if fin_t.any() else None, "worst_at": where}


def worst_output(per_output: Mapping[str, Mapping[str, Any]]) -> str | None:
    """The output to report: failing before passing, then NaN/Inf where the reference is finite
    (no finite error measures those; an all-NaN output has max abs 0 over its finite elements),
    then the largest error in tolerances."""
    if not per_output:
        return None
    return max(per_output, key=lambda n: (not per_output[n].get("passed", True), per_output[n].get("nonfinite") or 0,
                                          per_output[n].get("tol_ratio") or 0.0))


def error_phrase(s: Mapping[str, Any] | None) -> str:
    """One tensor's error in a few words: 'N/M non-finite' where the test side has NaN/Inf the
    reference has not (then the finite error, if any finite element is left), else 'R x tol,
    max abs E'."""
    if not s:
        return "-"
    if s.get("reason"):
        return str(s["reason"])
    if s.get("kind") == "non-tensor":
        return "equal" if s.get("passed") else "differs"
    n, total = s.get("nonfinite") or 0, s.get("elements")
    finite = f"{_g(s.get('tol_ratio'))}x tol, max abs {_g(s.get('max_abs'))}"
    if n:
        head = f"{n}/{total} non-finite"
        return head if n == total else f"{head}; finite elements {finite}"
    return finite


def _g(v: Any) -> str:
    return "-" if v is None else (f"{v:.3g}" if isinstance(v, (int, float)) else str(v))
