"""``upgrade-opset``: raise the model's default-domain opset through onnx's version converter.

Why: older exports (opset 9–13) cannot use the standard ops that newer opsets added
(GridSample 16, LayerNormalization 17, Gelu 20, RMSNormalization 23), so contrib ops
stay custom and decomposed patterns stay decomposed. ``surgeon fix --target-opset N``
runs this pass first; ``replace-custom-ops`` then replaces the contrib ops whose
standard equivalents the new opset allows (``passes/rulepacks/ms_contrib.py``).

The conversion itself is onnx's ``version_converter`` (its adapters know every
operator's changes between versions; writing them again would only add bugs). Around
it, :func:`upgrade` adds what a verified pipeline needs:

- it never downgrades, and refuses a target onnx does not know;
- the converter is given a skeleton whose large initializers keep their type and dims
  but not their data (it serializes the model into C++ and back, and upgrade adapters
  only read small shape-like tensors), and the weights are put back afterwards;
- a converter failure, or a converted model the ONNX checker rejects where the input
  passed, becomes a refusal that names the op (from the converter's message, or by
  converting the suspect nodes one by one);
- what the converter drops or rewrites is put back: each node's ``metadata_props``
  (provenance), the model's metadata, custom-domain opset imports, and the declared types
  of the graph's inputs and outputs (it writes inferred static dims over dynamic ones). Nodes the converter created
  (a ``Constant`` for axes that became an input) are stamped with this pass as their
  provenance. Models with local functions are refused: the converter drops them.
- the IR version is raised to the lowest one that the target opset requires.

:func:`upgrade` is a pure function over ``ModelProto`` (the input is never modified);
the pass class is a thin adapter to the pipeline.
"""

from __future__ import annotations

import logging
import re
from collections import Counter

import onnx

from surgeon import graph as G
from surgeon import graph_ops as K
from surgeon import model as model_io
from surgeon.pipeline.base import Pass, PassContext, PassLog
from surgeon.pipeline.registry import register

logger = logging.getLogger(__name__)

PASS_NAME = "upgrade-opset"
RULE = "convert-version"
OPTION = "target_opset"


# --- walking protobuf graphs ---------------------------------------------------------------

def _default_domain_ops(model: onnx.ModelProto) -> Counter:
    return Counter(n.op_type for g in K.walk_graph_protos(model.graph) for n in g.node if K.is_default_domain(n))


def _schema_version(op: str, opset: int) -> int | None:
    try:
        return onnx.defs.get_schema(op, opset, "").since_version
    except onnx.defs.SchemaError:
        return None


def _changed_ops(model: onnx.ModelProto, current: int, target: int) -> dict[str, tuple[int | None, int | None]]:
    """Op type → (its version at ``current``, at ``target``) for the ops whose definition changes."""
    out = {}
    for op in sorted(_default_domain_ops(model)):
        before, after = _schema_version(op, current), _schema_version(op, target)
        if before != after:
            out[op] = (before, after)
    return out


# --- the skeleton the converter sees -----------------------------------------------------------

def _is_large(t: onnx.TensorProto) -> bool:
    if t.data_location == onnx.TensorProto.EXTERNAL:
        return True
    if t.data_type == onnx.TensorProto.STRING:
        return False
    n = 1
    for d in t.dims:
        n *= d
    return n >= model_io.SHAPE_ONLY_MIN_ELEMENTS


def _copy_fields(src, dst, skip: str) -> None:
    """Copy every set field of protobuf message ``src`` into ``dst`` except ``skip``."""
    for field, value in src.ListFields():
        if field.name == skip:
            continue
        if field.is_repeated:
            getattr(dst, field.name).extend(value)
        elif field.message_type is not None:
            getattr(dst, field.name).CopyFrom(value)
        else:
            setattr(dst, field.name, value)


def _skeleton(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, onnx.TensorProto]]:
    """A copy of ``model`` whose large main-graph initializers carry type and dims only.

    Built field by field so the weights are never copied; returns the skeleton and the
    original tensors held back, by name.
    """
    held = {t.name: t for t in model.graph.initializer if _is_large(t)}
    skeleton = onnx.ModelProto()
    _copy_fields(model, skeleton, skip="graph")
    _copy_fields(model.graph, skeleton.graph, skip="initializer")
    for t in model.graph.initializer:
        if t.name in held:
            skeleton.graph.initializer.append(onnx.TensorProto(name=t.name, dims=t.dims, data_type=t.data_type))
        else:
            skeleton.graph.initializer.append(t)
    return skeleton, held


def _checkable(skeleton: onnx.ModelProto, held: dict[str, onnx.TensorProto]) -> onnx.ModelProto:
    """The skeleton with its data-less initializers turned into graph inputs (the checker wants data)."""
    out = onnx.ModelProto()
    out.CopyFrom(skeleton)
    keep = [t for t in out.graph.initializer if t.name not in held]
    listed = {vi.name for vi in out.graph.input}
    for t in out.graph.initializer:
        if t.name in held and t.name not in listed:
            out.graph.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    del out.graph.initializer[:]
    out.graph.initializer.extend(keep)
    return out


def _checker_problem(model: onnx.ModelProto) -> str | None:
    """The first line of the checker's complaint (full check: shapes and types too), or None."""
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        text = str(exc).strip()
        return text.splitlines()[0] if text else type(exc).__name__
    return None


# --- naming the op the converter could not take ------------------------------------------------

_ADAPTER_RE = re.compile(r"adapt_([A-Za-z]+)_\d+_\d+")
_FOR_OP_RE = re.compile(r"[Ff]or (?:OP )?([A-Za-z][A-Za-z0-9]*)\s*$")


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return re.sub(r"^/\S+:\d+: ", "", line)  # the C++ source path is noise for a user


def _op_in_message(message: str, ops: set[str]) -> str | None:
    m = _FOR_OP_RE.search(message)
    if m and m.group(1) in ops:
        return m.group(1)
    m = _ADAPTER_RE.search(message)
    if m:
        by_lower = {op.lower(): op for op in ops}
        return by_lower.get(m.group(1).lower())
    return None


def _isolate(model: onnx.ModelProto, target: int, suspects: set[str]) -> tuple[str, str] | None:
    """(op, node name) of the first main-graph node whose single-node model fails to convert.

    Why: the converter's assertion messages often name an adapter or nothing at all; a
    user needs to know which node stops the upgrade.
    """
    current = G.opset_version(model, "")
    for node in model.graph.node:
        if not K.is_default_domain(node) or node.op_type not in suspects:
            continue
        names = [i for i in node.input if i]
        inputs = [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.UNDEFINED, None) for n in dict.fromkeys(names)]
        outputs = [onnx.helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None) for o in node.output if o]
        single = onnx.helper.make_model(onnx.helper.make_graph([node], "single", inputs, outputs),
                                        opset_imports=[onnx.helper.make_opsetid("", current)])
        try:
            onnx.version_converter.convert_version(single, target)
        except Exception:  # this node is one the converter cannot take
            return node.op_type, node.name
    return None


def _converter_refusal(exc: Exception, model: onnx.ModelProto, current: int, target: int) -> str:
    message = _first_line(exc)
    changed = _changed_ops(model, current, target)
    op = _op_in_message(message, set(_default_domain_ops(model)))
    where = ""
    if op is None:
        found = _isolate(model, target, set(changed))
        if found:
            op, node = found
            where = f" (node '{node}')" if node else ""
    if op is not None:
        return (f"onnx's version converter cannot take {op}{where} from opset {current} to {target}: "
                f"{message}; the model keeps opset {current}")
    return f"onnx's version converter failed from opset {current} to {target}: {message}; the model keeps opset {current}"


# --- putting back what the converter drops -----------------------------------------------------

def _node_key(node: onnx.NodeProto) -> tuple[str, ...]:
    return tuple(node.output)


def _restore_metadata(converted: onnx.ModelProto, original: onnx.ModelProto) -> int:
    """Copy node metadata_props back; stamp nodes the converter created (in place). Returns how many new."""
    meta = {}
    for g in K.walk_graph_protos(original.graph):
        for node in g.node:
            meta[_node_key(node)] = list(node.metadata_props)
    created = 0
    for g in K.walk_graph_protos(converted.graph):
        readers: dict[str, list[str]] = {}
        for node in g.node:
            for name in node.input:
                readers.setdefault(name, []).append(node.name)
        for node in g.node:
            del node.metadata_props[:]
            props = meta.get(_node_key(node))
            if props is not None:
                node.metadata_props.extend(props)
                continue
            created += 1
            sources = sorted({r for o in node.output for r in readers.get(o, []) if r})
            for key, value in ((G.PROVENANCE_PASS, PASS_NAME), (G.PROVENANCE_RULE, RULE),
                               (G.PROVENANCE_FROM, ",".join(sources))):
                entry = node.metadata_props.add()
                entry.key, entry.value = key, value
    return created


def _assemble(converted: onnx.ModelProto, original: onnx.ModelProto, held: dict[str, onnx.TensorProto],
              target: int) -> onnx.ModelProto:
    """The converted skeleton with the weights, metadata and opset imports of ``original`` back (in place)."""
    for t in converted.graph.initializer:
        if t.name in held:
            t.CopyFrom(held[t.name])  # the one copy of the weights this pass makes
    # The converter runs shape inference and writes what it found into the declared graph
    # inputs and outputs (an output the model declares [a, b] became [2, 4]); the interface
    # is the model's, so the declarations are put back.
    for kind in ("input", "output"):
        declared = {vi.name: vi.type for vi in getattr(original.graph, kind)}
        for vi in getattr(converted.graph, kind):
            if vi.name in declared:
                vi.type.CopyFrom(declared[vi.name])
    versions = {o.domain: o.version for o in original.opset_import}
    versions["" if "" in versions or "ai.onnx" not in versions else "ai.onnx"] = target
    del converted.opset_import[:]
    for domain, version in versions.items():
        converted.opset_import.append(onnx.helper.make_opsetid(domain, version))
    del converted.metadata_props[:]
    converted.metadata_props.extend(original.metadata_props)
    for field in ("producer_name", "producer_version", "domain", "model_version", "doc_string"):
        setattr(converted, field, getattr(original, field))
    required = onnx.helper.find_min_ir_version_for([onnx.helper.make_opsetid("", target)], ignore_unknown=True)
    converted.ir_version = max(original.ir_version, required)
    return converted


# --- the conversion --------------------------------------------------------------------------

def refusal(model: onnx.ModelProto, target: int) -> list[str] | None:
    """Why ``model`` is not converted to ``target`` before trying ([] : already there), or None. Pure."""
    current = G.opset_version(model, "")
    latest = onnx.defs.onnx_opset_version()
    if current is None:
        return ["the model imports no default-domain (ai.onnx) opset; nothing to upgrade"]
    if target > latest:
        return [f"target opset {target} is newer than onnx {onnx.__version__} knows (up to {latest}); "
                f"the model keeps opset {current}"]
    if target < current:
        return [f"the model is already at opset {current}; upgrade-opset does not downgrade to {target}"]
    if target == current:
        return []
    if len(model.functions):
        names = ", ".join(sorted({f.name for f in model.functions}))
        return [f"the model has local functions ({names}), which onnx's version converter drops; "
                f"the model keeps opset {current}"]
    return None


def upgrade(model: onnx.ModelProto, target: int) -> tuple[onnx.ModelProto | None, list[str]]:
    """Convert ``model`` (not modified) to default-domain opset ``target``.

    Returns (the converted model, notes), or (None, notes) when nothing was done: the
    model is already at ``target``, or the conversion was refused (the notes say why).
    """
    refused = refusal(model, target)
    if refused is not None:
        return None, refused
    current = G.opset_version(model, "")
    skeleton, held = _skeleton(model)
    try:
        converted = onnx.version_converter.convert_version(skeleton, target)
    except Exception as exc:  # the converter raises RuntimeError/ValueError/InferenceError alike
        logger.debug("version converter failed", exc_info=True)
        return None, [_converter_refusal(exc, model, current, target)]
    problem = _checker_problem(_checkable(converted, held))
    if problem is not None and _checker_problem(_checkable(skeleton, held)) is None:
        return None, [f"the ONNX checker rejects the model converted from opset {current} to {target}: "
                      f"{problem}; the model keeps opset {current}"]
    created = _restore_metadata(converted, model)
    out = _assemble(converted, model, held, target)
    changed = _changed_ops(model, current, target)
    counts = _default_domain_ops(model)
    summary = ", ".join(f"{op} x{counts[op]} (v{a} -> v{b})" for op, (a, b) in changed.items())
    note = f"opset {current} -> {target}: " + (summary or "no op in the model changes definition")
    if created:
        note += f"; {created} node(s) added by the converter"
    return out, [note]


@register
class UpgradeOpset(Pass):
    name = PASS_NAME
    summary = ("Raise the default-domain opset to --target-opset N with onnx's version converter "
               "(never downgrades; refuses with the op it cannot convert).")
    default_order = None  # opt-in: `surgeon fix --target-opset N` puts it first in the pipeline

    def run(self, model: G.Model, ctx: PassContext, log: PassLog) -> bool:
        target = ctx.options.get(OPTION)
        if target is None:
            log.note("no target opset given (surgeon fix --target-opset N); nothing to do")
            return False
        exported = model.export()  # the skeleton: weights are stubs, which upgrade() holds back and restores
        notes = refusal(exported.skeleton, int(target))
        out = None
        if notes is None and ctx.permit(RULE, model.graph.name or "main"):
            out, notes = upgrade(exported.skeleton, int(target))
        for note in notes or []:
            log.note(note)
        if out is None:
            return False
        model.restore(G.Exported(out, exported.weights))
        log.count(RULE)
        return True
