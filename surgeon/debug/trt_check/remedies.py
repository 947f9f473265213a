"""A concrete remedy per failure: which ``surgeon fix`` pass or rule pack, a plugin rule to
write, dims to name or fix, or "keep this part on ONNX Runtime".

Why rules on (op, code, text) rather than a table per error string: the parser's texts
change between versions, its codes and op names do not. Where the remedy is one of
our own rewrites, the built-in rule packs are asked (``find_matches``, a dry run) whether
they actually match the failing node, so "surgeon fix lowers this" is only said when a
rule matches; a rule that refuses only because the model's opset is too old names the
opset, and the remedy becomes ``surgeon fix --target-opset N``. A remedy that is a
``surgeon fix`` command carries what it runs (``Remedy.fix``), so trt-check can run it
in memory and check the model again (:mod:`.remedy_check`). Remedies that name a pass
which does not exist (or is not registered here) say so (``exists=False``).
"""

from __future__ import annotations

import logging
import re
import shlex
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

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


# The pass that writes int8/uint8 weights stored as Cast -> (Sub) -> Mul(scale) as one
# DequantizeLinear, by its registry name; the remedy is checked only where it is registered.
DEQUANTIZE_PASS = "fold-dequantize"
_QUANTIZED_CONSTANT = re.compile(r"Quantized constant \(([^)]*)\) is only allowed before DQ", re.I)
_WANTS_OPSET = re.compile(r"--target-opset (\d+)")
_OPSET_RANGE = re.compile(r"covers opsets (\d+) to (\d+)")
_USES_OPSET = re.compile(r"uses opset (\d+)")
_DYNAMIC_QUANT_OPS = frozenset({"DynamicQuantizeLinear", "MatMulInteger", "ConvInteger", "DynamicQuantizeLSTM",
                                "DynamicQuantizeMatMul", "MatMulIntegerToFloat"})


@dataclass
class DryRun:
    """What the built-in rule packs would do to the failing custom-domain nodes (by working name):
    replace them, or refuse only because the model's opset is older than the standard op (the
    opset the rule asks for)."""

    replace: set[str] = field(default_factory=set)
    opset: dict[str, int] = field(default_factory=dict)


def builtin_dry_run(model: onnx.ModelProto, failures: Iterable[Failure]) -> DryRun:
    """Ask the built-in rule packs (through the public :func:`surgeon.pipeline.registry.rules_of`)
    what they would do to each failing custom-domain node, without changing anything.

    The dry run works on a copy named the way the check's working copy is
    (:func:`graph_edit.assign_unique_names` is deterministic), so unnamed nodes match too.
    """
    wanted = {f.working_name for f in failures if f.working_name and not K.is_default_domain(f)}
    if not wanted:
        return DryRun()
    try:
        from surgeon import model as model_io
        from surgeon.debug.trt_check import graph_edit
        from surgeon.pipeline import registry
        from surgeon.rewrite import find_matches

        named = model_io.copy(model)
        graph_edit.assign_unique_names(named)
        report = find_matches(named, registry.rules_of("replace-custom-ops", {"rules": [], "builtin_rules": True}))
    except Exception as exc:  # noqa: BLE001 - a remedy lookup must never fail the check
        log.info("built-in rule dry run failed: %s", exc)
        return DryRun()
    out = DryRun()
    for finding in report.findings:
        if finding.node not in wanted:
            continue
        if finding.status == "replace":
            out.replace.add(finding.node)
        elif (m := _WANTS_OPSET.search(finding.reason or "")) is not None:
            out.opset[finding.node] = int(m.group(1))
    return out


def builtin_matches(model: onnx.ModelProto, failures: Iterable[Failure]) -> set[str]:
    """Working names of failing custom-domain nodes a built-in rule pack would replace (dry run)."""
    return builtin_dry_run(model, failures).replace


def fix_command(model_path: str, fix: Mapping[str, Any]) -> str:
    """The ``surgeon fix`` command line a remedy's ``fix`` spec stands for."""
    parts = ["surgeon", "fix", model_path, "-o", "FIXED.onnx"]
    if fix.get("passes"):
        parts += ["--passes", ",".join(fix["passes"])]
    if fix.get("target_opset") is not None:
        parts += ["--target-opset", str(fix["target_opset"])]
    return " ".join(shlex.quote(p) for p in parts)


def _fix_remedy(kind: str, text: str, fix: dict, model_path: str, *, exists: bool = True) -> Remedy:
    return Remedy(kind, text, command=fix_command(model_path, fix), exists=exists, fix=fix)


def _registered(name: str) -> bool:
    from surgeon.pipeline import registry

    return name in registry.all_passes()


def remedy_for(f: Failure, *, engine: str, replaceable: set[str] = frozenset(), model_path: str = "MODEL",
               opset_for: Mapping[str, int] | None = None) -> Remedy:
    op, code, text = f.op, f.code, f.message
    wants = (opset_for or {}).get(f.working_name) if f.working_name else None
    if code == "CRASH":
        return Remedy("bisect", "TensorRT crashed (the worker died): reduce the model to the part that crashes it",
                      command=f"surgeon bisect {model_path} --check trt-build -o trt-crash-repro")
    if f.working_name and f.working_name in replaceable:
        return _fix_remedy("rule-pack", "surgeon fix lowers it to standard ops (replace-custom-ops, built-in rule pack)",
                           {"passes": ["replace-custom-ops"]}, model_path)
    if wants is not None:
        return _fix_remedy("fix-opset", f"{f.qualified_op} has a standard {op} from opset {wants}: surgeon fix raises the "
                           f"opset to {wants} first (upgrade-opset), then replace-custom-ops moves it to the standard "
                           "domain; every change verified", {"passes": None, "target_opset": wants}, model_path)
    quantized = _QUANTIZED_CONSTANT.search(text or "")
    if quantized:
        what = (f"the int8 weight '{quantized.group(1)}' is dequantized with Cast -> Mul(scale); TensorRT takes "
                "8-bit weights only as DequantizeLinear(weight, scale)")
        if _registered(DEQUANTIZE_PASS):
            return _fix_remedy("fix-pass", f"{what}: surgeon fix writes it that way ({DEQUANTIZE_PASS}; the int8 storage "
                               "is kept, fewer nodes)", {"passes": [DEQUANTIZE_PASS]}, model_path)
        return Remedy("fix-pass", f"{what}; the pass that writes it that way ('{DEQUANTIZE_PASS}') is not registered in "
                      "this surgeon, so the remedy was not checked: rewrite Cast -> Mul(scale) as DequantizeLinear by hand, "
                      "or store the weight in float", command=fix_command(model_path, {"passes": [DEQUANTIZE_PASS]}),
                      exists=False)
    if op in _DYNAMIC_QUANT_OPS:
        return Remedy("export", f"{op} comes from dynamic quantization (onnxruntime.quantization.quantize_dynamic), which "
                      "TensorRT does not import: quantize statically with QuantizeLinear/DequantizeLinear pairs "
                      f"(TensorRT's explicit quantization), or export the float model; or {KEEP_ON_ORT}")
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
        return _fix_remedy("fix-pass", "fold the computed input into a constant: surgeon fix (fold-constants, "
                           "fold-shape-chains)", {"passes": ["fold-constants", "fold-shape-chains"]}, model_path)
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
        covered = _OPSET_RANGE.search(text)
        used = _USES_OPSET.search(text)
        if covered and used and int(used.group(1)) < int(covered.group(1)):
            low = int(covered.group(1))
            return _fix_remedy("fix-opset", f"raise the model to opset {low}, the oldest this TensorRT covers (upgrade-opset, "
                               "verified like every pass)", {"passes": None, "target_opset": low}, model_path)
        return Remedy("fix-opset", "convert the model to an opset this TensorRT supports: surgeon fix --target-opset N "
                      "(the upgrade-opset pass raises it; nothing lowers an opset)",
                      command=f"surgeon fix {shlex.quote(model_path)} -o FIXED.onnx --target-opset N")
    if code in ("UNSUPPORTED_NODE", "UNSUPPORTED_NODE_ATTR", "UNSUPPORTED_NODE_DATATYPE", "UNSUPPORTED_NODE_INPUT",
                "UNSUPPORTED_NODE_SHAPE", "UNSUPPORTED_NODE_DYNAMIC"):
        return Remedy("keep-on-ort", f"{op} is not supported in this form; {KEEP_ON_ORT}, or write a plugin rule")
    if f.phase == "build":
        return Remedy("bisect", "reduce it to a minimal failing subgraph",
                      command=f"surgeon bisect {model_path} --check trt-build -o trt-build-repro")
    return Remedy("keep-on-ort", KEEP_ON_ORT)
