"""Layer names TensorRT's ONNX parser gives a model: ``python -m surgeon.backends.trt_layers MODEL OUT.json``.

Why: per-layer precision flags (``trtexec --layerPrecisions``, Polygraphy
``--layer-precisions``) name *layers*, and the parser names a layer after its ONNX node,
or ``node_of_<first output>`` for an unnamed node. Where TensorRT-RTX (or TensorRT) is
installed, ``surgeon fp16`` checks the names it writes against what the real parser makes.
Runs in its own process, like the build worker, so a parser crash is a verdict. Writes
``{"parsed": bool, "layers": [...], "error": str}``; exit code 0 unless it could not write.
"""

from __future__ import annotations

import importlib
import json
import sys


def _trt():
    for name in ("tensorrt_rtx", "tensorrt"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return None


def layer_names(model_path: str) -> dict:
    trt = _trt()
    if trt is None:
        return {"parsed": False, "layers": [], "error": "neither tensorrt_rtx nor tensorrt is installed"}
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    ok = parser.parse_from_file(model_path)
    errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
    layers = [network.get_layer(i).name for i in range(network.num_layers)]
    return {"parsed": bool(ok), "layers": layers, "error": errors[0] if errors else "", "module": trt.__name__}


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m surgeon.backends.trt_layers MODEL.onnx OUT.json", file=sys.stderr)
        return 2
    try:
        result = layer_names(argv[0])
    except Exception as exc:  # reported to the parent as data
        result = {"parsed": False, "layers": [], "error": f"{type(exc).__name__}: {exc}"}
    with open(argv[1], "w", encoding="utf-8") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
