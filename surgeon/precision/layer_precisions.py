"""The same FP32 decision for TensorRT's own builder, and a TensorRT-RTX build of the result.

Two ways to deploy the decision:

- the **mixed-precision ONNX model** (strongly typed: the types in the file are the
  precisions; the only way with TensorRT-RTX, which builds strongly typed networks only);
- the **FP32 model with builder flags** for full TensorRT's weakly typed networks:
  ``trtexec --fp16 --precisionConstraints=obey --layerPrecisions=A:fp32,...
  --layerOutputTypes=A:fp32,...`` (output types too: a layer computing in FP32 whose
  output is stored in FP16 still overflows), or Polygraphy's ``--layer-precisions
  A:float32 ... --precision-constraints obey``. TensorRT names a layer after the ONNX node
  it comes from, so the node names are the layer names (a node TensorRT imports as
  several layers adds suffixed names the list does not cover; the file says so).

Where ``tensorrt_rtx`` imports, :func:`trt_rtx_build` builds the strongly typed OUT on the
CPU through the TensorRT worker (``python -m surgeon.backends.trt_worker build``), in its
own process, so a parser or builder crash is a verdict and not ours.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

_TRTEXEC = {"fp16": ("--fp16", "fp16"), "bf16": ("--bf16", "bf16")}


def _quote_list(items: Sequence[str]) -> str:
    return shlex.quote(",".join(items))


def layer_precision_text(model_path: str, kept: Sequence[str], precision: str, *, forced: Sequence[str] = ()) -> str:
    """The decision as trtexec and Polygraphy flags (a small shell-readable text file)."""
    flag, _low = _TRTEXEC[precision]
    nodes = list(dict.fromkeys([*kept, *forced]))
    odd = [n for n in nodes if any(c in n for c in ",: ")]
    lines = [f"# surgeon fp16: layers to keep in FP32 when {model_path} (the FP32 model) is built with {flag}",
             f"# {len(nodes)} layer(s): {len(kept)} chosen by the search, {len(forced)} kept for other reasons",
             "# TensorRT names a layer after its ONNX node; nodes imported as several layers add suffixed names",
             "# not listed here. The mixed-precision OUT model needs no flags (its types are the precisions)."]
    if odd:
        lines.append(f"# warning: {len(odd)} name(s) contain ',', ':' or spaces and cannot be passed this way: {odd[:3]}")
    if not nodes:
        lines.append("# nothing needs FP32: build with the precision flag alone")
        lines.append(f"trtexec --onnx={shlex.quote(model_path)} {flag}")
        lines.append(f"polygraphy run {shlex.quote(model_path)} --trt {flag}")
        return "\n".join(lines) + "\n"
    precs = [f"{n}:fp32" for n in nodes]
    lines.append(f"trtexec --onnx={shlex.quote(model_path)} {flag} --precisionConstraints=obey "
                 f"--layerPrecisions={_quote_list(precs)} --layerOutputTypes={_quote_list(precs)}")
    lines.append(f"polygraphy run {shlex.quote(model_path)} --trt {flag} --precision-constraints obey "
                 f"--layer-precisions {' '.join(shlex.quote(f'{n}:float32') for n in nodes)}")
    return "\n".join(lines) + "\n"


def trt_rtx_available() -> bool:
    return importlib.util.find_spec("tensorrt_rtx") is not None and importlib.util.find_spec("polygraphy") is not None


def trt_rtx_build(model_path: str | os.PathLike, shapes: Mapping[str, tuple[int, ...]], *, timeout: float = 600.0) -> dict[str, Any]:
    """Build the (strongly typed) model with TensorRT-RTX on the CPU; a verdict dict, never raises."""
    import sys

    if not trt_rtx_available():
        return {"ran": False, "reason": "tensorrt_rtx is not installed"}
    with tempfile.TemporaryDirectory(prefix="surgeon-fp16-trt-") as tmp:
        spec = {"model": str(Path(model_path).resolve()), "engine": str(Path(tmp) / "engine.plan"),
                "result": str(Path(tmp) / "result.json"),  # the worker writes the parser's or builder's reason here
                "precision": {}, "profiles": [{k: [list(v)] * 3 for k, v in shapes.items()}] if shapes else []}
        spec_path = Path(tmp) / "build.json"
        spec_path.write_text(json.dumps(spec), encoding="utf-8")
        from surgeon.backends.ort_worker import worker_env

        env = worker_env({"POLYGRAPHY_USE_TENSORRT_RTX": "1"})
        start = time.perf_counter()
        try:
            proc = subprocess.run([sys.executable, "-m", "surgeon.backends.trt_worker", "build", str(spec_path)],
                                  capture_output=True, text=True, env=env, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"ran": True, "built": False, "reason": f"the build did not finish within {timeout:g} s"}
        seconds = round(time.perf_counter() - start, 2)
        if proc.returncode != 0:
            lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
            why = _worker_reason(Path(spec["result"])) or (lines[-1] if lines else f"exit code {proc.returncode}")
            return {"ran": True, "built": False, "reason": why, "seconds": seconds}
        size = Path(spec["engine"]).stat().st_size if Path(spec["engine"]).exists() else 0
        return {"ran": True, "built": True, "engine_bytes": size, "seconds": seconds}


def _worker_reason(result: Path) -> str:
    """The builder's (or parser's) own reason from the worker's failure record, '' when there is none."""
    if not result.is_file():
        return ""
    from surgeon.backends.trt import builder_reason, describe_parse_errors

    record = json.loads(result.read_text(encoding="utf-8"))
    if record.get("phase") == "parse":
        return describe_parse_errors(record.get("errors", []), "trt-rtx")
    return builder_reason([m for _s, m in record.get("messages", [])])


def sample_shapes(sample: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(int(d) for d in np.shape(v)) for k, v in sample.items() if isinstance(v, np.ndarray)}


def trt_layer_names(model_path: str | os.PathLike, *, timeout: float = 300.0) -> dict[str, Any]:
    """The layer names TensorRT's parser gives ``model_path`` (worker process; never raises)."""
    import sys

    if not trt_rtx_available() and importlib.util.find_spec("tensorrt") is None:
        return {"parsed": False, "layers": [], "error": "TensorRT is not installed"}
    with tempfile.TemporaryDirectory(prefix="surgeon-fp16-layers-") as tmp:
        out = Path(tmp) / "layers.json"
        try:
            from surgeon.backends.ort_worker import worker_env

            proc = subprocess.run([sys.executable, "-m", "surgeon.backends.trt_layers", str(model_path), str(out)],
                                  capture_output=True, text=True, timeout=timeout, env=worker_env())
        except subprocess.TimeoutExpired:
            return {"parsed": False, "layers": [], "error": f"parsing did not finish within {timeout:g} s"}
        if not out.exists():
            return {"parsed": False, "layers": [], "error": f"the parser process ended with code {proc.returncode}"}
        return json.loads(out.read_text(encoding="utf-8"))
