"""The build step: ``build_serialized_network`` with the profile, per target, and what its errors mean.

Why a separate phase: some failures appear only when the builder runs (an If whose
branches hold LSTMs: an internal error in graphScope.cpp; NonMaxSuppression: "no
runners"; FP32 Attention: no kernel), and some only at particular shapes (the profile).
The builder reports them as log lines, not records, so this module classifies them:
``profile`` when the message is about input dimensions or the optimization profile,
``build`` otherwise; the failing node is the one whose (unique, working) name the
message mentions, if any.

A profile failure on dims that share a name ("?" for both H and W) is retried once with
the dims renamed apart in a working copy; if that builds, the report says the remedy
was checked.
"""

from __future__ import annotations

import re
from typing import Callable

import onnx

from surgeon.backends.trt import builder_reason
from surgeon.debug.trt_check import graph_edit, profiles
from surgeon.debug.trt_check.report import BuildTarget, Failure, Remedy

_PROFILE_MARKERS = ("optimization profile", "IOptimizationProfile", "kMIN", "kMAX", "different constant values",
                    "cannot be negative", "build-time output dimension", "dynamic or shape inputs")
_ERROR_CODE = re.compile(r"Error Code (\d+): ([A-Za-z ]+?)(?: \(|$)")


def classify(message: str) -> str:
    return "profile" if any(m in message for m in _PROFILE_MARKERS) else "build"


def code_of(message: str) -> str:
    m = _ERROR_CODE.search(message)
    if m:
        return f"{m.group(2).strip().upper().replace(' ', '_')} ({m.group(1)})"
    return "CRASH" if message.startswith("the ") and "crashed" in message else "BUILD_FAILED"


def locate(message: str, index: graph_edit.NodeIndex) -> graph_edit.NodeRef | None:
    """The node whose working name the builder's message mentions (longest match wins).

    TensorRT names a node's layers after it, with ``_0``, ``_1``... when one node makes
    several layers (``nms_0 has no runners``).
    """
    best = None
    for name, ref in index.refs.items():
        if len(name) < 2 or name not in message:
            continue
        if re.search(rf"(?<![\w/.]){re.escape(name)}(?:_\d+)?(?![\w/])", message) and (best is None or len(name) > len(best.name)):
            best = ref
    return best


def target_label(target: tuple[int, int] | None) -> str:
    return f"sm{target[0]}{target[1]}" if target else "default"


def _same_named_failure(first: str, same_named: list[dict], skeleton: onnx.ModelProto, prof_for_worker: list[dict],
                        target: tuple | None, label: str, build: Callable, notes: list[str], ref=None) -> Failure:
    groups = ", ".join(f"{' and '.join(g['dims'])} are all named '{g['dim_param']}'" for g in same_named)
    failure = Failure(node="", working_name="", op="", domain="", path="", phase="profile", code="SAME_NAMED_DIMS",
                      message=f"{groups}; TensorRT takes dims with the same name as equal, so shapes where they differ "
                              f"are refused: {first}", target=label if target else "")
    retry = build(profiles.with_distinct_dim_names(skeleton, same_named), prof_for_worker, target)
    renamed = "; ".join(f"{d} -> {d.replace('[', '_dim').rstrip(']')}" for g in same_named for d in g["dims"])
    failure.remedy = Remedy(
        "dims", f"give these dims distinct names ({renamed}); a 'name-dims' pass does not exist yet "
        "(onnx.tools.update_model_dims.update_inputs_outputs_dims does it), or pin them with --input-shapes",
        exists=False, verified=bool(retry.get("built")))
    notes.append(f"with those dims renamed apart the same build {'passes' if retry.get('built') else 'still fails'} "
                 f"for {label} (checked on a working copy)")
    return failure


ShapesOf = Callable[[list[str]], "list[dict[str, tuple]] | None"]


def run_builds(skeleton: onnx.ModelProto, index: graph_edit.NodeIndex, prof: profiles.Profile,
               targets: list[tuple[int, int]], build: Callable[[onnx.ModelProto, list[dict], tuple | None], dict],
               *, shapes_of: ShapesOf | None = None, max_rounds: int = 8,
               say: Callable[[str], None] = lambda _m: None) -> tuple[list[BuildTarget], list[Failure], list[str]]:
    """Build once per target; returns per-target results, failures and notes.

    The builder stops at its first error. When that error names a node of the main graph,
    the node is cut out (as the parse loop does) and the rest is built again, to find the
    next one; the cut node's outputs become inputs, whose profile sizes ``shapes_of``
    gives (tensor names -> their shapes at the profile's min/opt/max, from a run of the
    model). Without it, or for a node inside a body, the search stops and says so.

    Dims that share a name but get different sizes in the profile can still build when
    their ranges overlap (TensorRT then assumes them equal, and the engine refuses
    inputs where they differ). So, after a passing build, one more build at a single
    shape where they differ shows whether TensorRT refuses it.
    """
    results: list[BuildTarget] = []
    failures: list[Failure] = []
    notes: list[str] = []
    same_named = profiles.same_named_dims(skeleton, prof)
    for target in targets or [None]:
        label = target_label(target)
        say(f"building for {label}")
        r = build(skeleton, prof.for_worker(), target)
        messages = [m for _s, m in r.get("messages", [])]
        results.append(BuildTarget(label, bool(r.get("built")), float(r.get("build_seconds", 0.0)),
                                   int(r.get("engine_bytes", 0)), messages[:5]))
        if r.get("built"):
            continue
        first = builder_reason(messages)
        if same_named and "different constant values" in first:
            failures.append(_same_named_failure(first, same_named, skeleton, prof.for_worker(), target, label, build, notes))
            continue
        ref = locate(first, index)
        found = [_build_failure(first, ref, label if target else "")]
        if ref is not None and target == (targets or [None])[0]:
            more, more_notes = _build_after_cuts(skeleton, index, prof, target, build, ref, shapes_of, max_rounds, say)
            found.extend(_build_failure(m, r_, label if target else "", downstream=d) for m, r_, d in more)
            notes.extend(more_notes)
        failures.extend(sorted(found, key=lambda f: (f.downstream_of_cut, _position(index, f.working_name))))
    if same_named and results and all(b.ok for b in results):
        point = _differing_point(prof, same_named)
        if point is not None:
            target = (targets or [None])[0]
            say("building once more at a shape where same-named dims differ")
            one = [{n: [list(s)] * 3 for n, s in point.items()}]
            r = build(skeleton, one, target)
            messages = [m for _s, m in r.get("messages", [])]
            if not r.get("built") and messages and "different constant values" in messages[0]:
                shape = ", ".join(f"{n}={'x'.join(map(str, s))}" for n, s in point.items())
                failures.append(_same_named_failure(f"at {shape}: {messages[0]}", same_named, skeleton, one, target,
                                                    target_label(target), build, notes))
                notes.append("the profile built only because its ranges for those dims overlap: TensorRT assumed them "
                             "equal, and the engine would refuse inputs where they differ")
    return results, failures, notes


def _position(index: graph_edit.NodeIndex, working_name: str) -> int:
    """Graph order, so the report does not depend on which independent node the builder happened to meet first."""
    return index.order.index(working_name) if working_name in index.refs else len(index.order)


def _build_failure(message: str, ref: graph_edit.NodeRef | None, target: str, downstream: bool = False) -> Failure:
    return Failure(node=ref.original if ref else "", working_name=ref.name if ref else "", op=ref.op_type if ref else "",
                   domain=ref.domain if ref else "", path=ref.where if ref else "", phase=classify(message),
                   code=code_of(message), message=message, target=target, downstream_of_cut=downstream)


def _build_after_cuts(skeleton, index, prof, target, build, ref, shapes_of, max_rounds, say):
    """Cut each located failing node and build again; the later failures, and why the search stopped."""
    found: list[tuple[str, graph_edit.NodeRef | None, bool]] = []
    types = graph_edit.value_infos(skeleton)
    cut: list[str] = []
    cut_outputs: set[str] = set()
    while len(cut) < max_rounds:
        if ref.path:
            return found, [f"the builder's failing node {ref.display} is inside {ref.where}; later build failures were not searched"]
        if shapes_of is None:
            return found, ["the builder stops at its first error; later build failures were not searched "
                           "(ONNX Runtime cannot run the model to size the cut node's outputs)"]
        node = next(n for _p, _g, n in graph_edit.walk(skeleton.graph) if n.name == ref.name)
        outputs = [o for o in node.output if o]
        points = shapes_of(outputs)
        if points is None:
            return found, [f"the builder stops at its first error; later build failures were not searched (the outputs "
                           f"of {ref.display} could not be sized by a run of the model)"]
        cut.append(ref.name)
        cut_outputs.update(outputs)
        model, _ = graph_edit.cut(skeleton, cut, types)
        extra = {}
        for o in outputs:
            if o in {i.name for i in model.graph.input}:
                seen = [tuple(points[k][o]) for k in range(3)]
                extra[o] = [list(map(min, *seen)), list(seen[1]), list(map(max, *seen))]
        profile = [{**(prof.for_worker()[0] if prof.inputs else {}), **extra}]
        say(f"building again with {len(cut)} failing node(s) cut out")
        r = build(model, profile, target)
        if r.get("built"):
            return found, [f"with the {len(cut)} failing node(s) cut out, the rest of the model builds"]
        messages = [m for _s, m in r.get("messages", [])]
        first = builder_reason(messages)
        nxt = locate(first, index)
        found.append((first, nxt, nxt is not None and nxt.name in graph_edit.downstream(skeleton, cut_outputs)))
        if nxt is None or nxt.name in cut:
            return found, []
        ref = nxt
    return found, [f"stopped after cutting {max_rounds} nodes; there may be more build failures"]


def _differing_point(prof: profiles.Profile, same_named: list[dict]) -> dict[str, tuple] | None:
    """The first of min/opt/max at which some same-named dims differ, as one shape per input."""
    for k in (1, 0, 2):
        point = {n: shapes[k] for n, shapes in prof.inputs.items()}
        for g in same_named:
            values = {point[d.rsplit("[", 1)[0]][int(d.rsplit("[", 1)[1].rstrip("]"))] for d in g["dims"]
                      if d.rsplit("[", 1)[0] in point}
            if len(values) > 1:
                return point
    return None
