"""The TensorRT worker process: ``python trt_worker.py ACTION [SPEC.json]`` (run by path, see ``trt._worker_command``).

Actions:

- ``build`` (ONNX file -> serialized engine, with precision flags and optimization
  profiles) and ``infer`` (engine + inputs .npz -> outputs .npz): one request per
  process, for the ``trt``/``trt-rtx`` backends. A handled failure is written as JSON to
  ``spec["result"]`` (parser errors node by node, builder messages, a missing CUDA
  driver) and the process exits 1.
- ``serve``: a long-lived worker for many small requests (``trt-check``'s parse loop,
  ``bisect --check trt-build``). Requests are JSON lines on stdin, answers JSON lines on
  the original stdout; everything TensorRT or Polygraphy prints goes to stderr, so it
  can never corrupt an answer.

Runs in its own process so that a crash or abort inside TensorRT is a verdict for the
parent, not its death. TensorRT or TensorRT-RTX is chosen the way Polygraphy documents
it (``POLYGRAPHY_USE_TENSORRT_RTX=1`` in the environment selects TensorRT-RTX); the
module is imported through Polygraphy's ``lazy_import_trt`` and builder configs are made
by Polygraphy's ``CreateConfig`` / ``CreateConfigRTX``. The parser and builder are driven
directly through the TensorRT 10/11 API (``OnnxParser.parse_from_file``,
``get_error``, ``supports_operator``, ``Builder.build_serialized_network``) because
Polygraphy's loaders turn parser errors into log lines; here they become records.
"""

from __future__ import annotations

import json
import os
import sys
import time

def _trt():
    from polygraphy.mod.trt_importer import lazy_import_trt

    return lazy_import_trt()


def _is_rtx() -> bool:
    from polygraphy import config as pg_config

    return bool(pg_config.USE_TENSORRT_RTX)


def _capture_logger(trt):
    """A TensorRT logger that keeps warnings and errors (the builder reports failures only there)."""

    class Capture(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.messages: list[tuple[str, str]] = []

        def log(self, severity, msg):  # called from TensorRT; must not raise
            try:
                if severity <= trt.ILogger.Severity.WARNING:
                    self.messages.append((str(severity).rsplit(".", 1)[-1], str(msg)))
            except Exception:  # noqa: BLE001 - a logger callback must never throw into TensorRT
                pass

    return Capture()


def _error_record(err) -> dict:
    def get(name, default=None):
        try:
            value = getattr(err, name)()
        except Exception:  # noqa: BLE001 - older parsers lack some accessors
            return default
        return value

    code = get("code")
    stack = get("local_function_stack", []) or []
    return {"code": str(code).rsplit(".", 1)[-1] if code is not None else "UNKNOWN", "node": get("node", -1),
            "node_name": get("node_name", "") or "", "op": get("node_operator", "") or "", "desc": get("desc", "") or "",
            "func": get("func", "") or "", "file": get("file", "") or "", "line": get("line", -1),
            "stack": [str(s) for s in stack]}


def _network(trt, builder):
    flags = 0
    creation = getattr(trt, "NetworkDefinitionCreationFlag", None)
    if creation is not None and hasattr(creation, "EXPLICIT_BATCH") and not _is_rtx() and int(trt.__version__.split(".")[0]) < 10:
        flags |= 1 << int(creation.EXPLICIT_BATCH)
    return builder.create_network(flags)


def _parse(trt, logger, path: str):
    # The parser imports some ops through TensorRT's plugin library (ScatterElements with a
    # reduction, RoiAlign, NonZero in TensorRT-RTX); register it first, as Polygraphy does.
    init_plugins = getattr(trt, "init_libnvinfer_plugins", None)
    if init_plugins is not None:
        init_plugins(logger, "")
    builder = trt.Builder(logger)
    network = _network(trt, builder)
    parser = trt.OnnxParser(network, logger)
    t0 = time.perf_counter()
    ok = bool(parser.parse_from_file(path))
    seconds = time.perf_counter() - t0
    errors = [_error_record(parser.get_error(i)) for i in range(parser.num_errors)]
    return builder, network, parser, ok and not errors, errors, seconds


def _network_inputs(network) -> list[dict]:
    out = []
    for i in range(network.num_inputs):
        t = network.get_input(i)
        out.append({"name": t.name, "shape": [int(d) for d in t.shape], "dtype": str(t.dtype).rsplit(".", 1)[-1],
                    "shape_tensor": bool(getattr(t, "is_shape_tensor", False))})
    return out


def do_info(_spec: dict) -> dict:
    trt = _trt()
    caps = []
    cc = getattr(trt, "ComputeCapability", None)
    if cc is not None:
        caps = [n for n in dir(cc) if n.startswith("SM")]
    parser_version = getattr(trt, "get_nv_onnx_parser_version", lambda: None)()
    return {"version": trt.__version__, "rtx": _is_rtx(), "module": trt.__name__, "compute_capabilities": caps,
            "parser_version": parser_version}


def do_parse(spec: dict) -> dict:
    """Parse one model file; every error record, and which op names the parser knows."""
    trt = _trt()
    logger = _capture_logger(trt)
    _builder, network, parser, ok, errors, seconds = _parse(trt, logger, spec["model"])
    supports = {op: bool(parser.supports_operator(op)) for op in spec.get("ops", [])}
    return {"ok": ok, "errors": errors, "seconds": seconds, "supports": supports,
            "inputs": _network_inputs(network) if ok else [], "layers": network.num_layers if ok else 0}


def _config(trt, builder, network, spec: dict):
    from polygraphy.backend.trt import CreateConfig, Profile

    profiles = []
    for p in spec.get("profiles") or []:
        prof = Profile()
        for name, (lo, opt, hi) in p.items():
            prof.add(name, min=tuple(lo), opt=tuple(opt), max=tuple(hi))
        profiles.append(prof)
    if _is_rtx():
        from polygraphy.backend.tensorrt_rtx import CreateConfigRTX

        caps = [tuple(c) for c in spec.get("compute_capabilities") or []] or None
        return CreateConfigRTX(profiles=profiles or None, compute_capabilities=caps)(builder, network)
    prec = spec.get("precision") or {}
    return CreateConfig(fp16=prec.get("fp16") or None, bf16=prec.get("bf16") or None, int8=prec.get("int8") or None,
                        tf32=prec.get("tf32") or None, profiles=profiles or None)(builder, network)


def do_build(spec: dict) -> dict:
    """Parse, then build a serialized engine (no runtime needed, so no GPU needed for TensorRT-RTX)."""
    trt = _trt()
    logger = _capture_logger(trt)
    builder, network, _parser, ok, errors, parse_s = _parse(trt, logger, spec["model"])
    out = {"parsed": ok, "parse_errors": errors, "parse_seconds": parse_s, "built": False, "messages": [],
           "build_seconds": 0.0, "engine_bytes": 0}
    if not ok:
        return out
    t0 = time.perf_counter()
    try:
        config = _config(trt, builder, network, spec)
        engine = builder.build_serialized_network(network, config)
    except Exception as exc:  # noqa: BLE001 - Polygraphy raises on bad profiles; report it as a build message
        text = str(exc).strip().splitlines()
        logger.messages.append(("ERROR", f"{type(exc).__name__}: {text[-1] if text else ''}"))
        engine = None
    out["build_seconds"] = time.perf_counter() - t0
    out["messages"] = [[s, m] for s, m in logger.messages if s in ("ERROR", "INTERNAL_ERROR")] or \
        [[s, m] for s, m in logger.messages][-5:]
    if engine is not None:
        out["built"] = True
        out["engine_bytes"] = int(engine.nbytes)
        out["messages"] = []
        if spec.get("engine"):
            with open(spec["engine"], "wb") as f:
                f.write(engine)
    return out


def _build(spec: dict) -> None:
    """The ``build`` action of the backends: an engine file, or a structured failure."""
    result = do_build(spec)
    if not result["parsed"]:
        raise _Handled({"phase": "parse", "errors": result["parse_errors"]})
    if not result["built"]:
        raise _Handled({"phase": "build", "messages": result["messages"]})


def _infer(spec: dict) -> None:
    import numpy as np
    from polygraphy.backend.common import BytesFromPath
    from polygraphy.backend.trt import EngineFromBytes, TrtRunner

    with np.load(spec["inputs"], allow_pickle=False) as z:
        feeds = {k: z[k] for k in z.files}
    with TrtRunner(EngineFromBytes(BytesFromPath(spec["engine"]))) as runner:
        outputs = runner.infer(feed_dict=feeds)
    np.savez(spec["outputs"], **{k: np.asarray(v) for k, v in outputs.items()})


class _Handled(Exception):
    """A failure with a structured description for the parent."""

    def __init__(self, record: dict):
        super().__init__(record.get("phase", "failure"))
        self.record = record


_SERVE_ACTIONS = {"info": do_info, "parse": do_parse, "build": do_build}


def serve() -> int:
    """Answer JSON-line requests until stdin closes; TensorRT's own prints go to stderr."""
    answers = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)  # native code printing to fd 1 (the parser does) must not reach the answer channel
    sys.stdout = sys.stderr
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        action = _SERVE_ACTIONS.get(request.get("action"))
        try:
            if action is None:
                raise ValueError(f"unknown action {request.get('action')!r}")
            answer = {"ok": True, "result": action(request)}
        except Exception as exc:  # noqa: BLE001 - the parent gets a record, the worker keeps serving
            text = str(exc).strip().splitlines()
            answer = {"ok": False, "error": f"{type(exc).__name__}: {text[-1] if text else ''}"}
        answers.write(json.dumps(answer) + "\n")
    return 0


def main(argv: list[str]) -> int:
    if argv == ["serve"]:
        return serve()
    if len(argv) != 2 or argv[0] not in ("build", "infer"):
        print("usage: python trt_worker.py build|infer SPEC.json | serve", file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as f:
        spec = json.load(f)
    try:
        (_build if argv[0] == "build" else _infer)(spec)
    except _Handled as exc:
        if spec.get("result"):
            with open(spec["result"], "w", encoding="utf-8") as f:
                json.dump(exc.record, f)
        print(f"{exc.record.get('phase')} failed", file=sys.stderr)
        return 1
    except Exception as exc:  # report one line to the parent; it turns it into a BackendError
        text = str(exc).strip().splitlines()
        print(f"{type(exc).__name__}: {text[-1] if text else ''}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
