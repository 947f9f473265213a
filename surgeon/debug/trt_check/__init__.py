"""``surgeon trt-check``: will TensorRT take this model? Which nodes fail, why, and what to do.

The check, in order (each part is its own module and tested alone):

1. ``engines``: who answers. Full TensorRT, TensorRT-RTX (its parser and builder run on
   a CPU-only machine) or, where neither imports, the static onnx-tensorrt matrix
   (``matrix``). The report always names the engine and whether it was executed.
2. ``parse_loop``: parse, cut the failing nodes out (``graph_edit``), parse again, until
   every failing node is found; node names, body paths, the parser's error codes and text.
3. The domain trap (our own finding): the parser matches ops by name and ignores the
   domain, so ``com.example::Relu`` is silently built as ``Relu``.
4. ``build_step``: when the model parses, ``build_serialized_network`` with a realistic
   optimization profile (``profiles``), once per ``--target-cc`` for TensorRT-RTX.
5. ``remedies``: a concrete remedy per failure; one that is a ``surgeon fix`` command is
   run in memory and the model checked again with the same engine (``remedy_check``).

TensorRT work happens in a worker process (``surgeon.backends.trt.TrtWorker``) reading
small candidate files from a ``workspace`` where the weights were written once.
"""

from __future__ import annotations

import time
from typing import Callable, Mapping

import onnx

from surgeon import graph_ops as K
from surgeon import input_data
from surgeon.debug.trt_check import build_step, engines, graph_edit, matrix, parse_loop, profiles, remedies, remedy_check
from surgeon.debug.trt_check.report import Failure, TrtCheckReport, render  # noqa: F401
from surgeon.debug.trt_check.workspace import Workspace

Shape = tuple[int, ...]


def domain_trap(index: graph_edit.NodeIndex, known: Callable[[str], bool], failing: set[str]) -> list[Failure]:
    """Custom-domain nodes whose op name the parser imports as a built-in op (it ignores the domain)."""
    out = []
    for name in index.order:
        ref = index.refs[name]
        if K.is_default_domain(ref) or name in failing or not known(ref.op_type):
            continue
        out.append(Failure(node=ref.original, working_name=ref.name, op=ref.op_type, domain=ref.domain, path=ref.where,
                           phase="domain", code="DOMAIN_IGNORED",
                           message=f"{ref.qualified_op} is imported as the standard ONNX {ref.op_type}: the TensorRT "
                                   f"parser matches ops by name and ignores the domain, so this node is silently built "
                                   f"as {ref.op_type} whatever it computes (surgeon's own finding)"))
    return out


def _ort_probe(model: onnx.ModelProto) -> Callable[[dict], bool] | None:
    """``runs(feeds)`` on ONNX Runtime, or None where ONNX Runtime cannot load the model."""
    from surgeon import backends
    from surgeon.errors import BackendError

    try:
        session = backends.create("onnxrt").session(model)
    except BackendError:
        return None
    return input_data.runs_on(session)


def check(
    model: onnx.ModelProto,
    *,
    model_path: str = "model.onnx",
    engine: str = "auto",
    input_shapes: Mapping[str, Shape] | None = None,
    profile: Mapping[str, tuple[Shape, Shape, Shape]] | None = None,
    build: bool = True,
    target_cc: list[str] | None = None,
    matrix_version: str | None = None,
    seed: int = 0,
    timeout: float = 600.0,
    progress: Callable[[str], None] | None = None,
    check_remedies: bool = True,
) -> TrtCheckReport:
    """Check ``model`` (never modified) and return the report; usage errors raise before any work.

    ``check_remedies``: run each remedy that is a ``surgeon fix`` command in memory and
    check the result again with the same engine (the report says whether it removed the
    failure)."""
    t0 = time.perf_counter()
    say = progress or (lambda _m: None)
    name = engines.resolve(engine)
    targets = engines.parse_target_cc(target_cc, name)
    if matrix_version is not None and name != "matrix":
        from surgeon.errors import UsageError

        raise UsageError("--matrix-version applies to --engine matrix only")
    specs = [s for s in input_data.input_specs(model) if s.is_tensor]
    input_data.check_pins(specs, dict(input_shapes or {}))
    for k in range(3):  # min, opt and max must fit the model's inputs before any work
        input_data.check_pins(specs, {n: p[k] for n, p in (profile or {}).items()})
    version = matrix.resolve_version(matrix_version) if name == "matrix" else None
    # the worker imports TensorRT while the weights are written out and the nodes named
    eng = engines.ExecutedEngine(name, timeout=timeout) if name != "matrix" else None

    def once(m: onnx.ModelProto) -> TrtCheckReport:
        return _check_once(m, model_path, eng, version, targets, build=build, input_shapes=input_shapes,
                           profile=profile, seed=seed, say=say)

    try:
        report = once(model)
        dry = remedies.builtin_dry_run(model, report.failures)
        for f in report.failures:
            if f.remedy is None:
                f.remedy = remedies.remedy_for(f, engine=name, replaceable=dry.replace, model_path=model_path,
                                               opset_for=dry.opset)
        if check_remedies and report.failures:
            label = report.engine.get("label", name) if report.engine.get("mode") == "executed" else "the static matrix"
            remedy_check.check_remedies(model, report, once, label, say)
    finally:
        if eng is not None:
            eng.close()
    report.seconds = time.perf_counter() - t0
    return report


def _check_once(model: onnx.ModelProto, model_path: str, eng: "engines.ExecutedEngine | None", version: str | None,
                targets: list[tuple[int, int]], *, build: bool, input_shapes: Mapping[str, Shape] | None,
                profile: Mapping[str, tuple[Shape, Shape, Shape]] | None, seed: int,
                say: Callable[[str], None]) -> TrtCheckReport:
    """One check of ``model`` with an engine already started (parse loop, domain trap, build)."""
    report = TrtCheckReport(model=model_path, engine={})
    say("writing the weights once into a private folder")
    with Workspace(model) as ws:
        skeleton = ws.skeleton
        index = graph_edit.NodeIndex(skeleton, graph_edit.assign_unique_names(skeleton))
        if eng is None:
            _static(report, skeleton, index, version, build)
        else:
            eng.workspace = ws
            _executed(report, model, skeleton, index, eng, targets, build=build, input_shapes=input_shapes,
                      profile=profile, seed=seed, say=say)
    return report


def _static(report: TrtCheckReport, skeleton: onnx.ModelProto, index: graph_edit.NodeIndex, version: str, build: bool) -> None:
    report.engine = matrix.describe(version)
    failures = matrix.check(skeleton, index, version)
    known = matrix.supported_ops(version)
    report.failures = failures + domain_trap(index, known.__contains__, {f.working_name for f in failures})
    report.build_skipped = "static engine: nothing is parsed or built; '--engine trt-rtx' or 'trt' executes a real parser and builder"
    report.notes.append("static answer from the published matrix: a model that passes here can still fail TensorRT's "
                        "importer or builder")
    dims = profiles.same_named_dims(skeleton, _distinct_probe(skeleton))
    for g in dims:
        report.notes.append(f"dims {', '.join(g['dims'])} are all named '{g['dim_param']}': TensorRT takes them as equal")
    rtx = matrix.data()["tensorrt_rtx"]
    for _path, _graph, node in graph_edit.walk(skeleton.graph):
        ref = index.refs[node.name]
        known = rtx["ops"].get(ref.op_type) if K.is_default_domain(ref) else None
        if known and (not known.get("attribute") or any(a.name == known["attribute"] for a in node.attribute)):
            report.notes.append(f"{ref.display} ({ref.op_type}): with TensorRT-RTX ({rtx['measured_with'].split(' on ')[0]}, "
                                f"measured) {known['text']}")


def _distinct_probe(model: onnx.ModelProto) -> profiles.Profile:
    """A stand-in profile giving every unnamed/same-named dim its own size (to find same-named dims statically)."""
    specs = [s for s in input_data.input_specs(model) if s.is_tensor and s.shape is not None]
    sizes = input_data.size_attempts(specs, {})[0][0] if input_data.symbols(specs) else {}
    prof = profiles.Profile()
    for s in specs:
        shape = tuple(d if isinstance(d, int) else sizes.get(d, 1) for d in s.shape)
        prof.inputs[s.name] = (shape, shape, shape)
    return prof


def _executed(report: TrtCheckReport, model: onnx.ModelProto, skeleton: onnx.ModelProto, index: graph_edit.NodeIndex,
              eng: engines.ExecutedEngine, targets: list[tuple[int, int]], *, build: bool,
              input_shapes: Mapping[str, Shape] | None, profile: Mapping[str, tuple[Shape, Shape, Shape]] | None,
              seed: int, say: Callable[[str], None]) -> None:
    name = eng.name
    say(f"starting {report_label(name)}")
    report.engine = eng.describe()
    eng.check_targets(targets)
    eng.supports_ops = sorted({r.op_type for r in index.refs.values() if not K.is_default_domain(r)})
    loop = parse_loop.find_all(skeleton, index, eng.parse, progress=say)
    report.parses, report.first_parse_failures = loop.parses, loop.first_parse_failures
    report.parse_ok, report.parse_seconds = loop.clean, loop.seconds
    report.failures.extend(loop.failures)
    report.notes.extend(loop.notes)
    if loop.failures and loop.rest_parses:
        report.notes.append(f"with the {len(loop.cut)} failing node(s) cut out, the rest of the model parses")
    supports = loop.supports
    report.failures.extend(domain_trap(index, lambda op: supports.get(op, False), {f.working_name for f in loop.failures}))
    if not build:
        report.build_skipped = "--no-build"
    elif not loop.clean:
        report.build_skipped = "the model does not parse; the build runs once the parse failures are fixed"
    else:
        say("choosing the optimization profile")
        prof = profiles.build_profile(model, input_shapes=input_shapes, profile=profile, seed=seed,
                                      runs=_ort_probe(model) if _needs_probe(model, input_shapes, profile) else None)
        report.profile = prof.to_dict()
        report.notes.extend(prof.notes)
        report.build_attempted = True
        results, failures, notes = build_step.run_builds(skeleton, index, prof, targets, eng.build, say=say,
                                                         shapes_of=_ort_shapes(model, prof, seed))
        report.builds, report.notes = results, report.notes + notes
        report.failures.extend(failures)
    if eng.worker.restarts:
        report.notes.append(f"the {report_label(name)} worker crashed and was restarted {eng.worker.restarts} time(s)")


def _ort_shapes(model: onnx.ModelProto, prof: profiles.Profile, seed: int) -> Callable[[list[str]], list | None]:
    """``shapes_of(tensor names)``: their shapes at the profile's min/opt/max, from ONNX Runtime runs of the model.

    Used when a node the builder rejects is cut out: its outputs become inputs, and the
    next build needs profile sizes for them. ``None`` where ONNX Runtime cannot run it.
    """
    import numpy as np

    from surgeon import backends
    from surgeon.debug.bisect import extract
    from surgeon.errors import SurgeonError

    specs = [s for s in input_data.input_specs(model) if s.is_tensor]

    def shapes_of(names: list[str]) -> list | None:
        try:
            marked = extract.with_outputs(model, names, extract.inferred_types(model))
            session = backends.create("onnxrt").session(marked)
            points = []
            for k in range(3):
                rng = np.random.default_rng(seed + k)
                feeds = {s.name: input_data.random_array(s.dtype, tuple(prof.inputs[s.name][k]) if s.name in prof.inputs
                                                         else tuple(s.shape), rng) for s in specs}
                got = session.run(feeds)
                points.append({n: tuple(np.shape(got[n])) for n in names})
            return points
        except (SurgeonError, KeyError, TypeError):
            return None

    return shapes_of


def _needs_probe(model: onnx.ModelProto, input_shapes, profile) -> bool:
    specs = [s for s in input_data.input_specs(model) if s.is_tensor and s.shape is not None]
    covered = set(input_shapes or {}) | set(profile or {})
    return any(isinstance(d, str) for s in specs if s.name not in covered for d in s.shape)


def report_label(name: str) -> str:
    from surgeon.backends.trt import label

    return label(name)
