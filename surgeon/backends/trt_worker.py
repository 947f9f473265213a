"""The TensorRT worker process: ``python -m surgeon.backends.trt_worker ACTION SPEC.json``.

Actions: ``build`` (ONNX file -> serialized engine, with precision flags and
optimization profiles) and ``infer`` (engine + inputs .npz -> outputs .npz). Runs in its
own process so that a crash of TensorRT is a verdict for the parent, not its death.
Uses Polygraphy's public API only. Exit code 0 on success, 1 with one line on stderr on
a handled failure; a crash shows up as a signal in the parent.
"""

from __future__ import annotations

import json
import sys

import numpy as np


def _build(spec: dict) -> None:
    from polygraphy import config as pg_config
    from polygraphy.backend.common import save_bytes
    from polygraphy.backend.trt import CreateConfig, Profile, engine_bytes_from_network, network_from_onnx_path

    profiles = []
    for p in spec.get("profiles") or []:
        prof = Profile()
        for name, (lo, opt, hi) in p.items():
            prof.add(name, min=tuple(lo), opt=tuple(opt), max=tuple(hi))
        profiles.append(prof)
    if pg_config.USE_TENSORRT_RTX:
        from polygraphy.backend.tensorrt_rtx import CreateConfigRTX

        config = CreateConfigRTX(profiles=profiles or None)
    else:
        prec = spec.get("precision") or {}
        config = CreateConfig(fp16=prec.get("fp16") or None, bf16=prec.get("bf16") or None,
                              int8=prec.get("int8") or None, tf32=prec.get("tf32") or None, profiles=profiles or None)
    # Serialized bytes, not a deserialized engine: building needs no runtime (TensorRT-RTX
    # builds ahead of time even without a GPU), so a build and a run fail separately.
    save_bytes(engine_bytes_from_network(network_from_onnx_path(spec["model"]), config=config), spec["engine"])


def _infer(spec: dict) -> None:
    from polygraphy.backend.common import BytesFromPath
    from polygraphy.backend.trt import EngineFromBytes, TrtRunner

    with np.load(spec["inputs"], allow_pickle=False) as z:
        feeds = {k: z[k] for k in z.files}
    with TrtRunner(EngineFromBytes(BytesFromPath(spec["engine"]))) as runner:
        outputs = runner.infer(feed_dict=feeds)
    np.savez(spec["outputs"], **{k: np.asarray(v) for k, v in outputs.items()})


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("build", "infer"):
        print("usage: python -m surgeon.backends.trt_worker build|infer SPEC.json", file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as f:
        spec = json.load(f)
    try:
        (_build if argv[0] == "build" else _infer)(spec)
    except Exception as exc:  # report one line to the parent; it turns it into a BackendError
        text = str(exc).strip().splitlines()
        print(f"{type(exc).__name__}: {text[-1] if text else ''}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
