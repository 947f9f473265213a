"""A concrete remedy per failure: which ``surgeon fix`` pass or rule pack, a plugin rule to
write, dims to name or fix, or "keep this part on ONNX Runtime".

Why rules on (op, code, text) rather than a table per error string: the parser's texts
change between versions, its codes and op names do not. Where the remedy is one of
our own rewrites, the built-in rule packs are asked (``find_matches``, a dry run) whether
they actually match the failing node, so "surgeon fix lowers this" is only said when a
rule matches. Remedies that name a pass which does not exist yet say so
(``exists=False``).
"""

from __future__ import annotations

import logging
import re
from typing import Iterable

import onnx

from surgeon import graph_ops as K
from surgeon.debug.trt_check.report import Failure, Remedy

log = logging.getLogger(__name__)

_CONSTANT_INPUT = re.compile(r"initializer|build-time constant|resolvable to a constant|must be constant|not a constant|"
                             r"shape tensor|static dimensions", re.I)
ONNX_ML = "ai.onnx.ml"
KEEP_ON_ORT = ("keep this node on ONNX Runtime: split the model there (onnx.utils.extract_model) and run the part "
               "around it with ONNX Runtime")
PLUGIN_RULE = ("write a replace-custom-ops rule that lowers it to standard ops (see fixtures/rules/trt_plugin_rules.py; "
               "'surgeon match MODEL --rules R.py' lists what it would replace), or build and load a TensorRT plugin named {op}")


def builtin_matches(model: onnx.ModelProto, failures: Iterable[Failure]) -> set[str]:
    """Working names of failing custom-domain nodes a built-in rule pack would replace (dry run).

    The dry run works on a copy named the way the check's working copy is
    (:func:`graph_edit.assign_unique_names` is deterministic), so unnamed nodes match too.
    """
    wanted = {f.working_name for f in failures if f.working_name and not K.is_default_domain(f)}
    if not wanted:
        return set()
    try:
        from surgeon import model as model_io
        from surgeon.debug.trt_check import graph_edit
        from surgeon.pipeline import registry
        from surgeon.rewrite import find_matches

        named = model_io.copy(model)
        graph_edit.assign_unique_names(named)
        rules = registry.get("replace-custom-ops").collect_rules({"rules": [], "builtin_rules": True})
        report = find_matches(named, rules)
    except Exception as exc:  # noqa: BLE001 - a remedy lookup must never fail the check
        log.info("built-in rule dry run failed: %s", exc)
        return set()
    return {f.node for f in report.findings if f.status == "replace" and f.node in wanted}


def remedy_for(f: Failure, *, engine: str, replaceable: set[str] = frozenset(), model_path: str = "MODEL") -> Remedy:
    op, code, text = f.op, f.code, f.message
    if code == "CRASH":
        return Remedy("bisect", "TensorRT crashed (the worker died): reduce the model to the part that crashes it",
                      command=f"surgeon bisect {model_path} --check trt-build -o trt-crash-repro")
    if f.working_name and f.working_name in replaceable:
        return Remedy("rule-pack", "surgeon fix lowers it to standard ops (replace-custom-ops, built-in rule pack)",
                      command=f"surgeon fix {model_path} -o FIXED.onnx --passes replace-custom-ops")
    if f.phase == "domain":
        return Remedy("rename-domain", f"if {f.qualified_op} computes exactly the standard {op}, move it to the standard domain "
                      f"(a replace-custom-ops rule); otherwise give it a name TensorRT does not know and register a plugin "
                      f"for it, or keep it on ONNX Runtime")
    if f.phase == "profile":
        if "same name" in text or "named alike" in text or "different constant values" in text:
            return Remedy("dims", "give the dynamic dims distinct names (TensorRT takes dims with one name as equal; a "
                          "'name-dims' pass does not exist yet: onnx.tools.update_model_dims.update_inputs_outputs_dims "
                          "renames them), or pin them with --input-shapes / --profile", exists=False)
        return Remedy("dims", "give a realistic optimization profile with --profile NAME:MIN/OPT/MAX (the sizes used "
                      "are in the report), or fix the dims with 'surgeon fix --input-shapes ... --fix-shapes'")
    if f.phase == "build" and not f.node:
        return Remedy("bisect", "reduce it to a minimal failing subgraph and report it with the REPRO bundle",
                      command=f"surgeon bisect {model_path} --check trt-build -o trt-build-repro")
    if f.domain == ONNX_ML:
        return Remedy("keep-on-ort", f"TensorRT has no ai.onnx.ml operators; {KEEP_ON_ORT}")
    if not K.is_default_domain(f) or f.func == "checkFallbackPluginImporter":
        return Remedy("plugin-rule", PLUGIN_RULE.format(op=op))
    if text and _CONSTANT_INPUT.search(text):
        return Remedy("fix-pass", "fold the computed input into a constant: surgeon fix (fold-constants, fold-shape-chains)",
                      command=f"surgeon fix {model_path} -o FIXED.onnx --passes fold-constants,fold-shape-chains")
    if op == "NonZero" and engine == "trt-rtx":
        return Remedy("keep-on-ort", f"TensorRT-RTX has no NonZero (its parser needs a plugin it does not ship); full "
                      f"TensorRT 10 imports NonZero natively; or {KEEP_ON_ORT}")
    if op == "NonMaxSuppression":
        return Remedy("keep-on-ort", f"no NonMaxSuppression kernel in this engine; run NMS as host post-processing or "
                      f"{KEEP_ON_ORT}")
    if op in ("ScatterElements", "ScatterND") and ("reduction" in text.lower() or code == "UNSUPPORTED_NODE_ATTR"):
        full = "full TensorRT imports ScatterElements reductions through its plugin library; " if op == "ScatterElements" else ""
        return Remedy("keep-on-ort", f"{full}TensorRT has no ScatterND reduction; rewrite the scatter without "
                      f"reduction (duplicate-free indices) or {KEEP_ON_ORT}")
    if op == "Resize":
        return Remedy("export", "re-export with a mode TensorRT has (coordinate_transformation_mode half_pixel / "
                      "pytorch_half_pixel / align_corners / asymmetric, no antialias, keep_aspect_ratio_policy=stretch), "
                      f"or {KEEP_ON_ORT}")
    if op == "Loop" and "trip" in text:
        return Remedy("export", "give the Loop a constant trip count (or turn its scan outputs into loop-carried "
                      "state); TensorRT must know a scan output's length")
    if op == "Attention":
        return Remedy("export", "no Attention kernel for these types/shapes: use FP16 inputs with shapes that have a "
                      "fused kernel, or export attention as MatMul+Softmax (opset < 23)")
    if not f.working_name and "opset" in text.lower():
        return Remedy("fix-pass", "convert the model to an opset this TensorRT supports (an 'upgrade-opset' pass does "
                      "not exist yet; onnx.version_converter.convert_version does it)", exists=False)
    if code in ("UNSUPPORTED_NODE", "UNSUPPORTED_NODE_ATTR", "UNSUPPORTED_NODE_DATATYPE", "UNSUPPORTED_NODE_INPUT",
                "UNSUPPORTED_NODE_SHAPE", "UNSUPPORTED_NODE_DYNAMIC"):
        return Remedy("keep-on-ort", f"{op} is not supported in this form; {KEEP_ON_ORT}, or write a plugin rule")
    if f.phase == "build":
        return Remedy("bisect", "reduce it to a minimal failing subgraph",
                      command=f"surgeon bisect {model_path} --check trt-build -o trt-build-repro")
    return Remedy("keep-on-ort", KEEP_ON_ORT)
