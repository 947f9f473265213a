"""The differential judge: ``surgeon.fix`` (no numeric verification) against the original in ONNX Runtime.

Written here rather than imported from surgeon, so that the code under test does not
grade itself: the original and the fixed model each run in ONNX Runtime with graph
optimizations off, on two samples per model (every dynamic dim at two sizes); the
second sample also overrides every initializer-backed input with another valid value,
so a pass that folded such a default gives a different output there.

Outcomes, one per graph (the first that applies):

- ``invalid``: the *original* does not load or run (a generator bug; never surgeon's);
- ``refused``: ``fix`` raised a SurgeonError (the CLI's exit 2);
- ``crash``: ``fix`` raised anything else, or a pass crashed (and was rolled back);
- ``rolled-back``: a pass failed a structural check (checker, interface) and was rolled back;
- ``interface-changed``: graph inputs (initializer-backed ones included) or outputs
  changed name, order or type;
- ``wrong-output``: the fixed model does not load, or an output differs beyond tolerance;
- ``rounding``: an output differs, but by no more than 4x what the original's own output
  moves when its float32 constants move by 4 ulps, or, against the original computed in
  float64, errs at most 4x as much as the original's own float32 output: the graph
  amplifies rounding (a LayerNorm with epsilon 1e-12 over a nearly constant row), and any
  other float32 evaluation of it differs that much;
- ``ort-noise``: an output differs from the original's in ONNX Runtime, but onnx's
  ReferenceEvaluator (an independent implementation) gives the same outputs for both.
  ONNX Runtime's CPU provider runs float16 ops in float32 between Casts it inserts and
  then removes Cast pairs, so removing a ``Cast`` to float16's own type can drop a
  rounding step that ONNX semantics keep;
- ``ok``.

Two empty outputs match whatever their shapes: the shape ONNX Runtime gives a zero-trip
Loop's scan output is its own guess from shape inference of the body.

Tolerances: float32 atol 1e-4 rtol 1e-3, float16 atol 1e-2 rtol 1e-2, integers and
booleans exact; NaN matches NaN at the same position.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import onnx

from surgeon.weights import iter_graph_tensors

TOLERANCE = {np.dtype(np.float32): (1e-4, 1e-3), np.dtype(np.float16): (1e-2, 1e-2),
             np.dtype(np.float64): (1e-7, 1e-6)}
KINDS = ("ok", "rounding", "ort-noise", "invalid", "refused", "crash", "rolled-back", "interface-changed", "wrong-output")


@dataclass
class Outcome:
    kind: str
    detail: str = ""
    culprits: list[str] = field(default_factory=list)  # passes after which the fault first shows
    fixed: onnx.ModelProto | None = field(default=None, repr=False)


def session(model: onnx.ModelProto):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def samples(model: onnx.ModelProto, sizes: Mapping[str, tuple], overrides: Mapping[str, np.ndarray],
            seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Two feeds: symbols at their first sizes with defaults, then at their second sizes with overrides."""
    inits = {t.name for t in model.graph.initializer}
    rng = np.random.default_rng(seed)
    out = []
    for k in range(2):
        feeds = {}
        for vi in model.graph.input:
            if vi.name in inits:
                continue
            tt = vi.type.tensor_type
            dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)
            shape = [d.dim_value if d.HasField("dim_value") else sizes[d.dim_param][k] for d in tt.shape.dim]
            feeds[vi.name] = rng.uniform(-1, 1, size=shape).astype(dtype)
        if k == 1:
            feeds.update(overrides)
        out.append(feeds)
    return out


def run(model: onnx.ModelProto, feeds: list[dict]) -> list[dict[str, Any]]:
    sess = session(model)
    names = [o.name for o in sess.get_outputs()]
    return [dict(zip(names, sess.run(names, f))) for f in feeds]


def differs(ref: list[dict], got: list[dict]) -> str | None:
    for i, (a, b) in enumerate(zip(ref, got)):
        for name, x in a.items():
            y = b.get(name)
            x, y = np.asarray(x), np.asarray(y)
            if x.size == 0 and y.size == 0 and x.dtype == y.dtype:
                continue
            if y.shape != x.shape or y.dtype != x.dtype:
                return f"sample {i} output '{name}': {y.dtype}{list(y.shape)} instead of {x.dtype}{list(x.shape)}"
            atol, rtol = TOLERANCE.get(x.dtype, (0, 0))
            if x.dtype.kind == "f":
                both_nan = np.isnan(x) & np.isnan(y)
                bad = ~(both_nan | (np.abs(x.astype(np.float64) - y) <= atol + rtol * np.abs(x.astype(np.float64))))
            else:
                bad = x != y
            if np.any(bad):
                err = np.max(np.abs(x.astype(np.float64) - y.astype(np.float64))) if x.dtype.kind in "fiu" else "-"
                return f"sample {i}{' (overrides)' if i else ''} output '{name}' differs (max abs error {err})"
    return None


def interface(model: onnx.ModelProto) -> tuple:
    """Inputs (every one, initializer-backed included) and outputs by name and type (output dims may be refined)."""
    ins = [(vi.name, vi.type.SerializeToString(deterministic=True)) for vi in model.graph.input]
    outs = [(vi.name, vi.type.tensor_type.elem_type) for vi in model.graph.output]
    return ins, outs


def _fix(model: onnx.ModelProto, passes=None, options=None, verify: bool = False, freeze: bool = False):
    from surgeon.pipeline import fix

    extra = {"freeze_initializer_inputs": True} if freeze else {}  # a checkout before the option still runs
    return fix(model, passes, verify=verify, options=options or {}, **extra)


def judge(model: onnx.ModelProto, sizes: Mapping[str, tuple], overrides: Mapping[str, np.ndarray],
          *, options: Mapping[str, Any] | None = None, attribute: bool = True, passes=None,
          verify: bool = False, freeze: bool = False) -> Outcome:
    """Fix ``model`` with ``passes`` (None: the default pipeline), ``--no-verify``, and grade the result.

    ``verify``: with the pipeline's numeric verification on (then a rollback may be the
    verifier's own doing: ONNX Runtime noise, rounding); ``freeze``: with
    ``freeze_initializer_inputs`` (the interface then loses them; the overriding sample
    is not fed).
    """
    from surgeon.errors import SurgeonError
    from surgeon.pipeline.runner import ROLLED_BACK

    feeds = samples(model, sizes, {} if freeze else overrides)
    try:
        ref = run(model, feeds)
    except Exception as exc:  # noqa: BLE001 - the generator made something ORT refuses
        return Outcome("invalid", f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
    try:
        fixed, report = _fix(model, passes, options=options, verify=verify, freeze=freeze)
    except SurgeonError as exc:
        return Outcome("refused", str(exc)[:300])
    except Exception as exc:  # noqa: BLE001
        return Outcome("crash", f"{type(exc).__name__}: {str(exc)[:300]}")
    for p in report.passes:
        if p.status == ROLLED_BACK:
            kind = "crash" if p.reason.startswith("crashed") else "rolled-back"
            return Outcome(kind, f"{p.name}: {p.reason[:300]}", [p.name], fixed)
    frozen = set(getattr(report, "frozen_inputs", ()))
    expected = interface(model)
    if frozen:
        expected = ([i for i in expected[0] if i[0] not in frozen], expected[1])
    if interface(fixed) != expected:
        detail = _interface_delta(model, fixed)
        return Outcome("interface-changed", detail, _culprits(model, feeds, ref, "interface", passes) if attribute else [], fixed)
    try:
        got = run(fixed, feeds)
    except Exception as exc:  # noqa: BLE001
        return Outcome("wrong-output", f"does not run: {str(exc).splitlines()[0][:300]}",
                       _culprits(model, feeds, ref, "output", passes) if attribute else [], fixed)
    problem = differs(ref, got)
    if problem and (_within_rounding(model, feeds, ref, got) or _closer_than_float32(model, feeds, ref, got)):
        return Outcome("rounding", problem, fixed=fixed)
    if problem and _reference_agrees(model, fixed, feeds):
        return Outcome("ort-noise", problem, fixed=fixed)
    if problem:
        return Outcome("wrong-output", problem, _culprits(model, feeds, ref, "output", passes) if attribute else [], fixed)
    return Outcome("ok", fixed=fixed)


def perturbed(model: onnx.ModelProto, seed: int = 0, ulps: float = 4.0) -> onnx.ModelProto:
    """The model with every float32 constant (initializers, Constant values, bodies too) moved by a few ulps."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    rng = np.random.default_rng(seed)

    def tensor(t: onnx.TensorProto) -> None:
        if t.data_type == onnx.TensorProto.FLOAT:
            a = onnx.numpy_helper.to_array(t).astype(np.float64)
            a *= 1 + ulps * 2.0**-23 * rng.uniform(-1, 1, a.shape)
            t.CopyFrom(onnx.numpy_helper.from_array(a.astype(np.float32), t.name))

    for t in iter_graph_tensors(out.graph):  # initializers and tensor attributes, bodies too
        tensor(t)
    return out


def as_double(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with every float32 tensor, type and Cast target made float64 (bodies too)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    f32, f64 = onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE

    def tensor(t: onnx.TensorProto) -> None:
        if t.data_type == f32:
            t.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(t).astype(np.float64), t.name))

    def graph(g: onnx.GraphProto) -> None:
        for vi in list(g.input) + list(g.output) + list(g.value_info):
            if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type == f32:
                vi.type.tensor_type.elem_type = f64
        for t in g.initializer:
            tensor(t)
        for n in g.node:
            for a in n.attribute:
                if a.type == onnx.AttributeProto.TENSOR:
                    tensor(a.t)
                elif a.name in ("to", "value_float", "value_floats") and n.op_type in ("Cast", "Constant"):
                    if a.name == "to" and a.i == f32:
                        a.i = f64
                    elif a.name != "to":
                        values = [a.f] if a.name == "value_float" else list(a.floats)
                        arr = np.array(values if a.name == "value_floats" else values[0], np.float64)
                        a.CopyFrom(onnx.helper.make_attribute("value", onnx.numpy_helper.from_array(arr)))
                for sub in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)):
                    graph(sub)

    graph(out.graph)
    return out


def _closer_than_float32(model: onnx.ModelProto, feeds, ref, got) -> bool:
    """Whether, against the original computed in float64 (onnx's ReferenceEvaluator), the fixed
    outputs err at most 4x as much as the original's own float32 outputs (cancellation in a
    LayerNorm over a nearly constant row errs as much whichever way the row was computed)."""
    from onnx.reference import ReferenceEvaluator  # ONNX Runtime has no float64 Conv

    wide = [{k: v.astype(np.float64) if v.dtype == np.float32 else v for k, v in f.items()} for f in feeds]
    try:
        evaluator = ReferenceEvaluator(as_double(model), new_ops=_contrib_ops())
        names = [o.name for o in model.graph.output]
        exact = [dict(zip(names, evaluator.run(names, f))) for f in wide]
    except Exception:  # noqa: BLE001 - no tie-break possible
        return False
    for r, g, e in zip(ref, got, exact):
        for name, x in r.items():
            x, y, z = np.asarray(x), np.asarray(g[name]), np.asarray(e[name])
            if x.dtype != np.float32 or x.shape != y.shape or z.shape != x.shape or np.any(np.isnan(x) != np.isnan(y)):
                if differs([{name: r[name]}], [{name: g[name]}]):
                    return False
                continue
            own = np.nan_to_num(np.abs(x.astype(np.float64) - z))
            fixed = np.nan_to_num(np.abs(y.astype(np.float64) - z))
            if np.any(fixed > 4 * own + 1e-4 + 1e-3 * np.abs(z)):
                return False
    return True


def _within_rounding(model: onnx.ModelProto, feeds, ref, got) -> bool:
    """Whether every output differs from the original's by no more than 4x what the original itself
    moves when its float32 constants move by 4 ulps (a fold rounds its results to float32 once)."""
    try:
        moved = run(perturbed(model), feeds)
    except Exception:  # noqa: BLE001
        return False
    for r, g, m in zip(ref, got, moved):
        for name, x in r.items():
            x, y, z = (np.asarray(v, dtype=np.float64) if np.asarray(v).dtype.kind == "f" else None
                       for v in (x, g[name], m[name]))
            if x is None or x.shape != y.shape:
                if differs([{name: r[name]}], [{name: g[name]}]):
                    return False
                continue
            if np.any(np.isnan(x) != np.isnan(y)) or z.shape != x.shape:
                return False  # (moved constants changed a shape: a Resize scale, no tie-break)
            ok = np.isnan(x) | (np.abs(x - y) <= 1e-4 + 1e-3 * np.abs(x))
            moved_by = np.abs(x - z)
            if not ok.all() and np.max(np.abs(x - y)[~ok]) > 4 * np.max(moved_by[np.isfinite(moved_by)], initial=0):
                return False
    return True


def _contrib_ops() -> list[type]:
    """Plain-numpy versions of the ONNX Runtime contrib ops the generator emits, for the ReferenceEvaluator."""
    from onnx.reference.op_run import OpRun

    class Gelu(OpRun):
        op_domain = "com.microsoft"

        def _run(self, x):
            from math import erf, sqrt

            return ((0.5 * x * (1 + np.vectorize(erf)(x / sqrt(2)))).astype(x.dtype),)

    class FastGelu(OpRun):
        op_domain = "com.microsoft"

        def _run(self, x, bias=None):
            x = x if bias is None else x + bias
            return ((0.5 * x * (1 + np.tanh(0.7978845608 * (x + 0.044715 * x**3)))).astype(x.dtype),)

    class QuickGelu(OpRun):
        op_domain = "com.microsoft"

        def _run(self, x, alpha=None):
            alpha = 1.702 if alpha is None else alpha
            return ((x / (1 + np.exp(-alpha * x))).astype(x.dtype),)

    class FusedMatMul(OpRun):
        op_domain = "com.microsoft"

        def _run(self, a, b, alpha=None, transA=None, transB=None, transBatchA=None, transBatchB=None):
            a = np.swapaxes(a, -1, -2) if transA else a
            b = np.swapaxes(b, -1, -2) if transB else b
            return ((np.matmul(a, b) * (1.0 if alpha is None else alpha)).astype(a.dtype),)

    return [Gelu, FastGelu, QuickGelu, FusedMatMul]


def _reference_agrees(model: onnx.ModelProto, fixed: onnx.ModelProto, feeds) -> bool:
    """Whether onnx's ReferenceEvaluator gives the same outputs for the original and the fixed model."""
    from onnx.reference import ReferenceEvaluator

    try:
        names = [o.name for o in model.graph.output]
        a, b = ReferenceEvaluator(model, new_ops=_contrib_ops()), ReferenceEvaluator(fixed, new_ops=_contrib_ops())
        ra = [dict(zip(names, a.run(names, f))) for f in feeds]
        rb = [dict(zip(names, b.run(names, f))) for f in feeds]
    except Exception:  # noqa: BLE001 - no tie-break possible
        return False
    return differs(ra, rb) is None


def _interface_delta(before: onnx.ModelProto, after: onnx.ModelProto) -> str:
    b, a = interface(before), interface(after)
    gone = [n for n, _ in b[0] if n not in dict(a[0])]
    if gone:
        return f"inputs removed: {', '.join(gone)}"
    return "inputs or outputs changed type or order"


def _culprits(model: onnx.ModelProto, feeds, ref, what: str, passes=None) -> list[str]:
    """The first pass of the pipeline (run one by one, as the pipeline runs them) after which it shows."""
    from surgeon.pipeline import registry

    names = registry.parse_pipeline(passes)
    current = model
    for round_no in (1, 2):
        for name in names:
            try:
                current, _ = _fix(current, [name])
            except Exception:  # noqa: BLE001
                return [name]
            if what == "interface" and interface(current) != interface(model):
                return [name]
            if what == "output":
                try:
                    if differs(ref, run(current, feeds)):
                        return [name]
                except Exception:  # noqa: BLE001
                    return [name]
    return []
