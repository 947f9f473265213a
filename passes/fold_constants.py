"""``fold-constants``: evaluate what does not depend on the inputs, and infer shapes.

Folding happens on the pipeline's shared graph, so a model with nothing to fold costs a
walk over its nodes, and one with a few foldable nodes costs one small ONNX Runtime run
of exactly those nodes (weights handed over in memory), whatever the model's size:

1. ``Constant`` nodes become initializers (their tensor is shared, not copied);
2. ``Shape``/``Size`` of a tensor whose dims inference knows statically, and ``Gather``
   or ``Slice`` of a ``Shape`` picking only static dims, become constants: the core's
   per-op evaluators (:mod:`surgeon.evaluators`) compute them, no session needed;
3. every other standard node whose inputs are all constants is evaluated, all of them
   in one ONNX Runtime session; bodies of If/Loop/Scan are included (their nodes may
   read constants of an enclosing graph);
4. onnx shape inference fills in the dtype and shape of values that lack one.

A node computed from a weight whose result is itself weight-sized (a Transpose, Cast,
reshape or per-channel Mul of a weight: exports that keep ``MatMul(x, Transpose(W))``, or fp16
storage with a ``Cast`` to float32) is not run at all: its result becomes a recipe over the
weight (:mod:`surgeon.weights`), evaluated in blocks of rows when the model is written, so
the folded weight and its source are never both in memory.

What is never folded: quantization nodes (QuantizeLinear/DequantizeLinear keep explicit
quantization visible), random and control-flow ops, custom domains, initializers a user
may override (IR ≥ 4 initializers listed as graph inputs), and results over
``LARGE_RESULT`` bytes that are larger than what they are computed from (an Expand that
would store a 1 GB tensor). A graph input or output never changes.

onnxsim is an option (``fold_backend=onnxsim``) rather than the default: it folds the
same things here (bench/fold_backends.py), imports PyTorch when it is installed (seconds
per run), and its result is kept only if ONNX Runtime still loads it.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from surgeon import graph as G
from surgeon import graph_ops as K
from surgeon import weights as W
from surgeon.symbolic import Expr
from surgeon.errors import BackendError, UsageError
from surgeon.evaluators import Evaluator
from surgeon.pipeline.base import Pass, PassContext, PassLog
from surgeon.pipeline.registry import register

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "onnxsim")
LARGE_RESULT = 64 << 20
NEVER_FOLD = frozenset({
    "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear",
    "RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli",
    "If", "Loop", "Scan",
    "SequenceConstruct", "SequenceEmpty", "SequenceInsert", "SequenceErase", "SequenceAt", "SequenceLength",
    "SplitToSequence", "ConcatFromSequence", "SequenceMap", "Optional", "OptionalGetElement", "OptionalHasElement",
})


def _first_line(exc: BaseException) -> str:
    """One short line; long library messages keep their start and their (telling) end."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else f"{text[:60]} ... {text[-120:]}"


def _is_constant(t: gs.Tensor) -> bool:
    return isinstance(t, gs.Constant) and not G.is_overridable(t)


def _dims(t: gs.Tensor) -> list[Expr] | None:
    """Dims as expressions: the static ones as numbers, each dynamic one equal only to itself."""
    shape = t.shape
    if shape is None:
        return None
    return [Expr.const(int(d)) if isinstance(d, (int, np.integer)) and d >= 0 else Expr.atom(("dim", f"{t.name}@{id(t)}", i))
            for i, d in enumerate(shape)]


def _shape_value(evaluator: Evaluator, node: gs.Node) -> np.ndarray | None:
    """The value of a Shape/Size (or a Gather/Slice of one) that depends only on static dims, else None.

    ``Gather(Shape(x), 1)`` is a constant when dim 1 is static, whatever the batch is;
    the core's evaluators (:mod:`surgeon.evaluators`) say so without running anything.
    """
    out = node.outputs[0]
    dtype = np.int64 if node.op in ("Shape", "Size") else out.dtype
    if dtype is None or not np.issubdtype(np.dtype(dtype), np.integer):
        return None
    value = evaluator.value(out)
    if value is None or not value.is_const or value.kind != "int":
        return None
    arr = np.array(value.ints(), dtype=dtype)
    return arr.reshape(()) if value.scalar else arr


# --- results computed as recipes over weights (never run, never resident) ------------------

RECIPE_MIN_BYTES = 1 << 20  # a result this large is derived lazily; smaller ones are run in ONNX Runtime
_FLOATS = (np.float16, np.float32, np.float64)
_ARITHMETIC = {"Mul": np.multiply, "Add": np.add, "Sub": np.subtract, "Div": np.divide}


def _static_target(node: gs.Node, data_shape: tuple[int, ...], arg: np.ndarray | None) -> tuple[int, ...] | None:
    """The output shape of a Reshape/Flatten/Squeeze/Unsqueeze of a constant (ONNX's rules), or None."""
    rank = len(data_shape)
    try:
        if node.op == "Reshape":
            if arg is None or int(node.attrs.get("allowzero", 0)):
                return None
            target = [int(d) for d in arg.reshape(-1)]
            target = [data_shape[i] if d == 0 else d for i, d in enumerate(target)]
            return W._resolve_shape(target, int(np.prod(data_shape, dtype=np.int64)))
        if node.op == "Flatten":
            axis = int(node.attrs.get("axis", 1))
            axis += rank if axis < 0 else 0
            return (int(np.prod(data_shape[:axis], dtype=np.int64)), int(np.prod(data_shape[axis:], dtype=np.int64)))
        axes = arg if arg is not None else node.attrs.get("axes")
        if node.op == "Squeeze":
            if axes is None:
                return tuple(d for d in data_shape if d != 1)
            drop = {int(a) + (rank if int(a) < 0 else 0) for a in np.asarray(axes).reshape(-1)}
            return None if any(data_shape[a] != 1 for a in drop) else tuple(d for i, d in enumerate(data_shape) if i not in drop)
        if node.op == "Unsqueeze" and axes is not None:
            out_rank = rank + np.asarray(axes).size
            add = sorted(int(a) + (out_rank if int(a) < 0 else 0) for a in np.asarray(axes).reshape(-1))
            shape = list(data_shape)
            for a in add:
                shape.insert(a, 1)
            return tuple(shape)
    except (ValueError, IndexError):
        return None
    return None


def _recipe(node: gs.Node, args: list) -> "np.ndarray | W.Derived | None":
    """The node's single output as a recipe (or a view) over its weight input, or None to run it.

    Only ops whose numpy form is ONNX's exactly: float-to-float Cast (round to nearest
    even, as ONNX Runtime's), Transpose, the reshaping ops, Identity, and Mul/Add/Sub/Div/Neg
    on floats of one dtype.
    """
    data = args[0] if args else None
    if data is None or len(node.outputs) != 1 or any(a is None for a in args[1:2] if node.op in _ARITHMETIC):
        return None
    op = node.op
    if op == "Identity":
        return data
    if op == "Transpose":
        return W.transposed(data, node.attrs.get("perm"))
    if op == "Cast":
        to = onnx_dtype(node.attrs.get("to"))
        if to is None or to.type not in _FLOATS or data.dtype.type not in _FLOATS:
            return None
        return W.elementwise(lambda x: x.astype(to), [data], f"Cast to {to}")
    if op in ("Reshape", "Flatten", "Squeeze", "Unsqueeze"):
        arg = args[1] if len(args) > 1 else None
        if arg is not None and W.is_derived(arg):
            return None
        shape = _static_target(node, tuple(data.shape), None if arg is None else np.asarray(arg))
        return None if shape is None or not shape else W.reshaped(data, shape)
    if op == "Neg" and data.dtype.type in _FLOATS:
        return W.elementwise(np.negative, [data], "Neg")
    if op in _ARITHMETIC and len(args) == 2:
        a, b = args
        if a.dtype != b.dtype or a.dtype.type not in _FLOATS:
            return None
        return W.elementwise(_ARITHMETIC[op], [a, b], op)
    return None


def onnx_dtype(code) -> np.dtype | None:
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(int(code)))
    except (TypeError, ValueError, KeyError):
        return None


def _result_bytes(node: gs.Node, args: list) -> int:
    """What a recipe's result would weigh: its inputs' largest (the ops above keep the size or
    change the element width)."""
    return max((a.nbytes for a in args if hasattr(a, "nbytes")), default=0)


_REFUSED = object()  # _Folder._as_recipe: foldable, but its result is not to be stored


class _Folder:
    """One run of the folder over a model (local state, never kept on the pass)."""

    def __init__(self, model: G.Model, ctx: PassContext, log: PassLog):
        self.model, self.ctx, self.log = model, ctx, log
        self.known: set[int] = set()  # ids of Variables that folding will make constant
        self.plan: list[tuple[gs.Graph, gs.Node]] = []  # nodes to evaluate with ONNX Runtime, in order
        self.direct: list[tuple[gs.Graph, gs.Node, list[np.ndarray]]] = []  # values known without running
        self.lazy: dict[int, object] = {}  # ids of Variables computed as recipes over weights -> recipe

    def _inputs_known(self, node: gs.Node) -> bool:
        return all(t.is_empty() or _is_constant(t) or id(t) in self.known for t in node.inputs)

    def collect(self) -> None:
        evaluator = Evaluator(opset=self.model.opset() or 1, dims=_dims, constant=lambda t: K.constant(t, max_elements=64))  # shapes and scalars, not weights
        for g in G.iter_graphs(self.model.graph):
            for node in g.nodes:
                if not K.is_default_domain(node) or node.op in NEVER_FOLD or any(True for _ in G.subgraphs(node)):
                    continue
                if not node.outputs or any(t.is_empty() for t in node.outputs):
                    continue
                value = None
                if node.op == "Constant" and isinstance(node.attrs.get("value"), gs.Constant):
                    value = [node.attrs["value"].values]
                elif node.op in ("Shape", "Size", "Gather", "Slice") and len(node.outputs) == 1:
                    v = _shape_value(evaluator, node)
                    value = None if v is None else [v]
                if value is None and self._inputs_known(node):
                    value = self._as_recipe(node)
                    if value is _REFUSED:
                        continue
                if value is not None:
                    self.direct.append((g, node, value))
                elif self._inputs_known(node):
                    self.plan.append((g, node))
                else:
                    continue
                self.known.update(id(t) for t in node.outputs)

    def _as_recipe(self, node: gs.Node) -> list | None:
        """A weight-sized result over weights, as a recipe (see :func:`_recipe`), or None."""
        if node.op not in ("Identity", "Transpose", "Cast", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Neg",
                           *_ARITHMETIC):
            return None
        args = []
        for t in node.inputs:
            if t.is_empty():
                args.append(None)
            elif id(t) in self.lazy:
                args.append(self.lazy[id(t)])
            elif _is_constant(t) and not any(t is o for o in node.outputs):
                args.append(t.values if G.is_weight(t) else np.asarray(t.values))
            else:
                return None  # an input another folding step computes: ONNX Runtime runs it
        if not any(W.is_derived(a) or (G.is_weight(t) and isinstance(a, np.ndarray))
                   for t, a in zip(node.inputs, args) if a is not None) or _result_bytes(node, args) < RECIPE_MIN_BYTES:
            return None
        try:
            value = _recipe(node, args)
        except (ValueError, TypeError):
            return None
        if value is None:
            return None
        source_bytes = sum(a.nbytes for a in args if a is not None)
        if value.nbytes > LARGE_RESULT and value.nbytes > source_bytes:
            self.log.note(f"{node.op} '{node.name}' not folded: its result ({value.nbytes >> 20} MB) "
                          "would be stored in the model, larger than what it is computed from")
            return _REFUSED
        self.lazy[id(node.outputs[0])] = value
        return [value]

    def evaluate(self) -> dict[int, np.ndarray]:
        """Values of every planned node's outputs (by id of the Variable); failures leave them out."""
        values: dict[int, np.ndarray] = {}
        for _, node, vals in self.direct:
            for t, v in zip(node.outputs, vals):
                values[id(t)] = v
        nodes = [n for _, n in self.plan]
        if not nodes:
            return {}
        try:
            results = _run(self.model, nodes, values)
        except BackendError as exc:
            # One node ONNX Runtime cannot evaluate must not stop the rest: node by node.
            logger.info("folding in one run failed (%s); node by node", exc)
            results = {}
            for node in nodes:
                if not all(t.is_empty() or _is_constant(t) or id(t) in results or id(t) in values for t in node.inputs):
                    continue
                try:
                    results.update(_run(self.model, [node], {**values, **results}))
                except BackendError as err:
                    self.log.note(f"{node.op} '{node.name}' not folded: {err}")
        return results

    def apply(self, results: dict[int, np.ndarray]) -> bool:
        changed = False
        self.removed: set[int] = set()
        self.graph_outputs = {id(o) for o in self.model.graph.outputs}
        self.body_outputs = {id(o): g for g in G.iter_graphs(self.model.graph) if g is not self.model.graph
                             for o in g.outputs}
        for g, node, vals in self.direct:
            changed |= self._replace(g, node, vals, "Constant node made initializer" if node.op == "Constant"
                                     else "constant folded")
        for g, node in self.plan:
            vals = [results.get(id(t)) for t in node.outputs]
            if any(v is None for v in vals):
                continue
            inputs = sum(t.values.nbytes for t in node.inputs if isinstance(t, gs.Constant))
            if any(v.nbytes > LARGE_RESULT and v.nbytes > inputs for v in vals):
                self.log.note(f"{node.op} '{node.name}' not folded: its result ({max(v.nbytes for v in vals) >> 20} MB) "
                              "would be stored in the model, larger than what it is computed from")
                continue
            changed |= self._replace(g, node, vals, "constant folded")
        if self.removed:
            for g in G.iter_graphs(self.model.graph):
                g.nodes = [n for n in g.nodes if id(n) not in self.removed]
        return changed

    def _replace(self, g: gs.Graph, node: gs.Node, vals: list[np.ndarray], what: str) -> bool:
        outputs = list(node.outputs)
        if node.op == "Constant" and any(self._is_graph_output(t) for t in outputs):
            return False  # it already is the cheapest way to produce a graph output
        if not self.ctx.permit("fold", node):
            return False
        for t, value in zip(outputs, vals):
            value = W.held(value if W.is_derived(value) else W.frozen(np.asarray(value)))
            if self._is_graph_output(t):
                # A graph output must be produced by a node: one Constant node instead.
                const = gs.Constant(f"{t.name}__value", value)
                new = gs.Node("Constant", name=f"{node.name or t.name}__folded", attrs={"value": const}, outputs=[t])
                G.stamp(new, "fold-constants", "fold", node.name)
                node.outputs.remove(t)
                g.nodes.append(new)
                continue
            const = gs.Constant(t.name, value)
            K.replace_all_uses(t, const)
            body = self.body_outputs.get(id(t))
            if body is not None:  # a body may return an initializer (a Loop's constant condition)
                body.outputs = [const if o is t else o for o in body.outputs]
        node.inputs.clear()
        node.outputs.clear()
        self.removed.add(id(node))
        self.log.count(what)
        return True

    def _is_graph_output(self, t: gs.Tensor) -> bool:
        """An output of the main graph: produced by a node there, for engines that refuse constant outputs."""
        return id(t) in self.graph_outputs


def _run(model: G.Model, nodes: list[gs.Node], known: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    """Evaluate ``nodes`` (inputs: constants, or values in ``known``) in one ONNX Runtime session."""
    from surgeon import backends

    produced = {id(t) for n in nodes for t in n.outputs}
    feeds_from_known: dict[str, np.ndarray] = {}
    for n in nodes:
        for t in n.inputs:
            if not t.is_empty() and not isinstance(t, gs.Constant) and id(t) not in produced:
                feeds_from_known[t.name] = known[id(t)]
    outputs = [t for n in nodes for t in n.outputs]
    exported = G.extract(model, nodes, outputs, inputs_as_constants=feeds_from_known)
    session = backends.create("onnxrt", optimization="disable", memory_lean=True).session(exported)
    result = session.run({})
    return {id(t): result[t.name] for t in outputs if t.name in result}


def _infer_shapes(model: G.Model, log: PassLog) -> int:
    """Record inferred dtypes and shapes on values that lack them; how many gained one."""
    try:
        found = G.infer_value_info(model)
    except Exception as exc:  # noqa: BLE001 - inference helps, it is never required
        log.note(f"shape inference failed ({_first_line(exc)})")
        return 0
    return len(G.annotate_types(model, found))


def fold_with_onnxsim(model: G.Model, log: PassLog) -> bool:
    """onnxsim's folding and shape inference on the skeleton (weights enter as inputs, so they are not folded).

    Its result replaces the graph only when ONNX Runtime loads it and it has fewer nodes.
    """
    import onnxsim

    from surgeon import backends

    before = model.export()
    skeleton = before.for_checker()
    stub_inputs = {t.name for t in before.skeleton.graph.initializer if W.stub_key(t)}
    overridable = any(G.is_overridable(t) for t in model.graph.tensors().values())
    out, _ = onnxsim.simplify(skeleton, check_n=0, perform_optimization=False, include_subgraph=True, certify=False,
                              initializers_as_constants=not overridable, mutable_initializer=overridable)
    stubs = [t for t in before.skeleton.graph.initializer if W.stub_key(t)]
    keep_inputs = [vi for vi in out.graph.input if vi.name not in stub_inputs or vi.name in model.listed_initializers]
    del out.graph.input[:]
    out.graph.input.extend(keep_inputs)
    out.graph.initializer.extend(stubs)
    candidate = G.Exported(out, dict(before.weights))
    if G.count_nodes(out) >= G.count_nodes(before.skeleton):
        return False
    try:
        backends.create("onnxrt", optimization="disable", memory_lean=True).session(candidate)
    except BackendError as exc:
        log.note(f"onnxsim's result was discarded: ONNX Runtime cannot load it ({exc})")
        return False
    removed = G.count_nodes(before.skeleton) - G.count_nodes(out)
    model.restore(candidate)
    log.count("constant folded (onnxsim)", removed)
    return True


@register
class FoldConstants(Pass):
    name = "fold-constants"
    summary = "Fold what does not depend on the inputs (Constant nodes, static shapes, constant subgraphs) and infer shapes."
    default_order = 30

    def run(self, model: G.Model, ctx: PassContext, log: PassLog) -> bool:
        choice = ctx.options.get("fold_backend", "auto") or "auto"
        if choice not in BACKENDS:
            raise UsageError(f"unknown fold backend '{choice}'; choose one of {', '.join(BACKENDS)}")
        changed = False
        if choice == "onnxsim":
            try:
                changed = fold_with_onnxsim(model, log)
            except Exception as exc:  # noqa: BLE001 - onnxsim's failure is reported; our folder still runs
                log.note(f"onnxsim could not fold this model ({_first_line(exc)})")
        gained = _infer_shapes(model, log)
        for _ in range(4):  # a fold can make a Shape static, which makes more foldable
            folder = _Folder(model, ctx, log)
            folder.collect()
            if not (folder.plan or folder.direct):
                break
            if not folder.apply(folder.evaluate()):
                break
            changed = True
            gained += _infer_shapes(model, log)
        if gained:
            log.count("shape inferred", gained)
        return changed or bool(gained)
