"""Region checks: verify a change on the part of the model it changed, not by running the whole model.

Why: on a high-resolution image model one whole-model run takes seconds, and on a
multi-GB model it reads every weight; the pipeline's whole-model check pays that for the
reference and again for every comparison. A change, though, only touches a few nodes. So
(``fix --verify local``, or ``auto`` where a whole-model run is heavy or does not fit):

1. **The region.** Nodes of the model before the change that the candidate no longer has,
   and nodes the candidate has that the model before did not (compared by their protos,
   weights by identity), plus the unchanged readers of a constant whose value changed.
   Its *outputs* are the values read outside it (or graph outputs): the same names on
   both sides, because the nodes outside are the same nodes. Its *inputs* are the values
   it reads from outside: graph inputs, or values of the input model.
2. **One reference run.** The inputs' values are recorded from the input model on the
   verification samples, once per name: every name the pending changes need is recorded
   by one run of the part of the input model that computes them (see :class:`Recorder`).
   An input that only feeds Shape/Size nodes needs only its shape (zeros are fed).
3. **The check.** The candidate's region is run on the recorded inputs and its outputs
   compared, with the pipeline's tolerances, with the input model's values of the same
   names, recorded in the same run. Where an output has no recording that stands for it,
   the region of the model before the change is run on the same inputs and compared with.

Why this proves the change: the nodes outside the region are the same nodes reading the
same names, so if the region's outputs agree, everything downstream agrees. The recorded
values are those of the *input* model; they stand for the current model's values because
every earlier change was checked the same way. A value computed inside an accepted region
and not compared (a new internal value, say) is *unverified*: a later region that needs it
grows back to its producer instead of using a recording.

What it does not prove, and the report says so: errors within tolerance that the rest of
the model would amplify (a whole-model comparison sees those), and anything outside the
samples. A change inside an If/Loop/Scan body, an opset change, or a region whose values
are not plain tensors is compared on the whole model instead.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import onnx

from surgeon import backends, staged
from surgeon import weights as W
from surgeon.comparison import diff_outputs, tolerance_for
from surgeon.errors import BackendError
from surgeon.graph import Exported
from surgeon.verify_mode import inferred_values

log = logging.getLogger(__name__)

_SHAPE_READERS = ("Shape", "Size")


def _has_bodies(node: onnx.NodeProto) -> bool:
    return any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) or a.HasField("g") or len(a.graphs)
               for a in node.attribute)


def _tensor_value(t: onnx.TensorProto, weights: Mapping[str, Any]) -> tuple:
    """What a constant holds, whatever its name: a weight's identity, or a small tensor's bytes."""
    key = W.stub_key(t)
    if key is not None:
        return ("weight", id(weights[key]))
    copy = onnx.TensorProto()
    copy.CopyFrom(t)
    copy.ClearField("name")
    copy.ClearField("doc_string")
    return ("bytes", copy.SerializeToString(deterministic=True))


def _node_key(node: onnx.NodeProto, weights: Mapping[str, Any], consts: Mapping[str, Any]) -> tuple:
    """What a node computes from what: op, attributes (weight stubs by the weight's identity),
    its inputs (a constant by its value, so that a constant renamed or moved from a Constant
    node to an initializer changes nothing) and its outputs; not its name or provenance."""
    attrs = []
    for a in node.attribute:
        if a.HasField("t") or len(a.tensors):
            a2 = onnx.AttributeProto()
            a2.CopyFrom(a)
            for t in ([a2.t] if a2.HasField("t") else []) + list(a2.tensors):
                key = W.stub_key(t)
                if key is not None:
                    t.external_data[0].value = f"id:{id(weights[key])}"
            a = a2
        attrs.append(a.SerializeToString(deterministic=True))
    inputs = tuple(("const", consts[n]) if n in consts else n for n in node.input)
    return (node.domain, node.op_type, inputs, tuple(node.output), tuple(attrs))


def _constants(exported: Exported) -> tuple[dict[str, Any], set[int]]:
    """Name -> value of every constant of the main graph (initializers, and outputs of Constant
    nodes holding a tensor), and the indices of those Constant nodes."""
    out = {t.name: _tensor_value(t, exported.weights) for t in exported.skeleton.graph.initializer}
    nodes = set()
    for i, n in enumerate(exported.skeleton.graph.node):
        if n.op_type == "Constant" and n.domain in ("", "ai.onnx") and len(n.attribute) == 1 \
                and n.attribute[0].name == "value" and n.attribute[0].HasField("t") and len(n.output) == 1:
            out[n.output[0]] = _tensor_value(n.attribute[0].t, exported.weights)
            nodes.add(i)
    return out, nodes


def _reads(node: onnx.NodeProto) -> list[str]:
    return [n for n in node.input if n]


@dataclass
class _State:
    """One side of a change: its nodes, who produces and who reads each name."""

    exported: Exported
    nodes: list[onnx.NodeProto]
    consts: dict[str, Any]
    producer: dict[str, int]
    readers: dict[str, list[int]]
    graph_inputs: set[str]
    graph_outputs: set[str]
    body_reads: set[str]  # names read inside If/Loop/Scan bodies (outer scope)
    constant_nodes: set[int]  # Constant nodes: their values are in ``consts``, they never join a region

    @classmethod
    def of(cls, exported: Exported) -> "_State":
        g = exported.skeleton.graph
        nodes = list(g.node)
        producer: dict[str, int] = {}
        readers: dict[str, list[int]] = {}
        body_reads: set[str] = set()
        for i, n in enumerate(nodes):
            for o in n.output:
                if o:
                    producer[o] = i
            for name in _reads(n):
                readers.setdefault(name, []).append(i)
            if _has_bodies(n):
                body_reads |= _outer_reads(n)
        consts, constant_nodes = _constants(exported)
        return cls(exported, nodes, consts, producer, readers, {vi.name for vi in g.input} - set(consts),
                   {vi.name for vi in g.output}, body_reads, constant_nodes)

    @property
    def computed(self) -> set[str]:
        """Names some node other than a Constant computes."""
        return {o for i, n in enumerate(self.nodes) if i not in self.constant_nodes for o in n.output if o}

    def keys(self, other: "_State") -> list[tuple]:
        """Node keys for comparing with ``other``: a constant input is keyed by its value where
        ``other`` does not compute that name (a constant folded from nodes keeps its name, and
        its readers are unchanged)."""
        computed = other.computed
        by_value = {n: v for n, v in self.consts.items() if n not in computed}
        return [_node_key(n, self.exported.weights, by_value) for n in self.nodes]


def _outer_reads(node: onnx.NodeProto) -> set[str]:
    """Every name read anywhere inside a node's bodies (a superset of its outer-scope reads)."""
    names: set[str] = set()
    for a in node.attribute:
        for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
            for n in sub.node:
                names.update(_reads(n))
                if _has_bodies(n):
                    names |= _outer_reads(n)
    return names


@dataclass
class Region:
    """What one change is checked on (see the module docstring)."""

    before: list[int]  # node indices in the model before the change
    candidate: list[int]  # node indices in the candidate
    inputs: list[str]  # values fed from the samples or the recording
    shape_only: set[str]  # inputs only Shape/Size read: any values of the right shape will do
    outputs: list[str]  # values compared
    constant_outputs: set[str] = field(default_factory=set)  # outputs that are a constant on one side
    unverified: set[str] = field(default_factory=set)  # values the candidate computes that were not compared

    @property
    def size(self) -> int:
        return len(self.before) + len(self.candidate)


def find_region(before: Exported, candidate: Exported, recordable: Iterable[str] | None = None,
                unverified: Iterable[str] = ()) -> Region | str:
    """The region of the change from ``before`` to ``candidate``, or why there is none to check alone.

    ``recordable``: names whose recorded input-model values stand for the current ones
    (None: any name not in ``unverified``); an input outside it makes the region grow back
    to its producer.
    """
    b, c = _State.of(before), _State.of(candidate)
    for attr in ("opset_import", "functions"):
        if [x.SerializeToString() for x in getattr(before.skeleton, attr)] != \
                [x.SerializeToString() for x in getattr(candidate.skeleton, attr)]:
            return f"the change edits the model's {attr.replace('_', ' ')}"
    unverified = set(unverified)
    recordable = None if recordable is None else set(recordable)
    bkeys, ckeys = b.keys(c), c.keys(b)
    b_computed, c_computed = b.computed, c.computed
    in_c, in_b = set(ckeys), set(bkeys)
    rb = {i for i, k in enumerate(bkeys) if k not in in_c and i not in b.constant_nodes}
    rc = {i for i, k in enumerate(ckeys) if k not in in_b and i not in c.constant_nodes}
    changed_consts = {name for name in set(b.consts) | set(c.consts) if b.consts.get(name) != c.consts.get(name)}
    # unchanged readers of a changed constant compute something else: they join the region on both sides
    for name in changed_consts:
        if name in b.consts and name in c.consts:
            rb.update(b.readers.get(name, ()))
            rc.update(c.readers.get(name, ()))
    if not rb and not rc and not changed_consts:
        return "nothing changed"

    def grow(name: str) -> bool:
        """Add the (unchanged) producer of ``name`` to both regions; False when there is none."""
        pb, pc = b.producer.get(name), c.producer.get(name)
        if pb is None or pc is None or bkeys[pb] != ckeys[pc]:
            return False
        rb.add(pb)
        rc.add(pc)
        return True

    while True:
        if any(_has_bodies(b.nodes[i]) for i in rb) or any(_has_bodies(c.nodes[i]) for i in rc):
            return "the change is inside an If/Loop/Scan body"
        # a constant on one side that the other side computes is a value the change made
        # (a fold); one the other side has under another name is only renamed or merged
        made_b = {o for i in rb for o in b.nodes[i].output if o} | ((set(b.consts) - set(c.consts)) & c_computed)
        made_c = {o for i in rc for o in c.nodes[i].output if o} | ((set(c.consts) - set(b.consts)) & b_computed)
        needed = set()
        for state, region, made in ((b, rb, made_b), (c, rc, made_c)):
            for i in region:
                for name in _reads(state.nodes[i]):
                    if name not in made and name not in state.consts:
                        needed.add(name)
        grown = False
        for name in sorted(needed):
            if name in b.graph_inputs and name in c.graph_inputs:
                continue
            ok = name not in unverified and (recordable is None or name in recordable)
            if not ok:
                if not grow(name):
                    return f"the value '{name}' the change reads was computed by an earlier change and cannot be recorded"
                grown = True
        if not grown:
            break
    outputs = {}
    for state, region, made, side in ((b, rb, made_b, "b"), (c, rc, made_c, "c")):
        outs = set()
        for name in made:
            outside = [i for i in state.readers.get(name, ()) if i not in region]
            if outside or name in state.graph_outputs or name in state.body_reads:
                outs.add(name)
        outputs[side] = outs
    if outputs["b"] != outputs["c"]:
        odd = sorted(outputs["b"] ^ outputs["c"])[:3]
        return f"the two sides of the change hand different values to the rest of the model ({', '.join(odd)})"
    readers_of = {}
    for state, region in ((b, rb), (c, rc)):
        for i in region:
            for pos, name in enumerate(state.nodes[i].input):
                if name in needed:
                    readers_of.setdefault(name, set()).add((state.nodes[i].op_type, pos))
    shape_only = {name for name, uses in readers_of.items() if all(op in _SHAPE_READERS and pos == 0 for op, pos in uses)}
    consts_out = {n for n in outputs["c"] if n in c.consts or n in b.consts}
    return Region(sorted(rb), sorted(rc), sorted(needed), shape_only, sorted(outputs["c"]), consts_out,
                  made_c - outputs["c"] - set(c.consts))


def region_model(exported: Exported, indices: Sequence[int], inputs: Sequence[str], outputs: Sequence[str],
                 types: Mapping[str, tuple[int, int]]) -> Exported:
    """A model of the nodes ``indices`` of ``exported`` (in its order) reading ``inputs`` and writing ``outputs``.

    ``types``: input name -> (ONNX element type, rank). Constants the nodes read come along
    (weights by reference); an output that is a constant is written by an Identity.
    """
    src = exported.skeleton
    g = onnx.GraphProto(name="region")
    nodes = [src.graph.node[i] for i in indices]
    read = {name for n in nodes for name in _reads(n)} | set(outputs)
    made = {o for n in nodes for o in n.output}
    # constants the region reads that Constant nodes of the model define come along
    defining = [n for n in src.graph.node if n.op_type == "Constant" and len(n.output) == 1
                and n.output[0] in read and n.output[0] not in made and n.output[0] not in inputs]
    nodes = defining + nodes
    g.node.extend(nodes)
    for t in src.graph.initializer:
        if t.name in read and t.name not in inputs:
            g.initializer.append(t)
    weights = staged.weights_of(exported, g.initializer, nodes)
    made = {o for n in nodes for o in n.output}
    for name in outputs:
        if name not in made and any(t.name == name for t in g.initializer):
            g.node.append(onnx.helper.make_node("Identity", [name], [f"{name}::region"]))
    for name in inputs:
        elem, rank = types[name]
        g.input.append(onnx.helper.make_tensor_value_info(name, elem, [None] * rank))
    for name in outputs:
        is_const = name not in made and any(t.name == name for t in g.initializer)
        g.output.append(onnx.helper.make_empty_tensor_value_info(f"{name}::region" if is_const else name))
    model = onnx.ModelProto()
    model.CopyFrom(src)
    model.graph.CopyFrom(g)
    return Exported(model, weights)


def _elem_type(value: Any) -> int | None:
    if not isinstance(value, np.ndarray):
        return None
    try:
        return onnx.helper.np_dtype_to_tensor_dtype(value.dtype)
    except (KeyError, TypeError, ValueError):
        return None


class Recorder:
    """Values of the input model's tensors on the verification samples, each recorded once.

    ``record(names)`` runs the part of the input model that computes the names not yet
    recorded (their ancestors only), with those names as outputs, once for all of them.
    ``runs`` counts those runs; ``recorded_bytes`` what is held.
    """

    def __init__(self, original: Exported, samples: Sequence[Mapping[str, Any]], backend=None,
                 inferred: Sequence[Mapping[str, tuple]] | None = None,
                 outputs: Sequence[Mapping[str, Any]] | None = None):
        self.original = original
        self.samples = list(samples)
        # Recorded with the same basic optimizations the regions run with: ONNX Runtime then
        # computes a region's unchanged nodes bit for bit as in the recording (fused kernels
        # would round differently), and one comparison settles those.
        self.backend = backend or backends.create("onnxrt", optimization="basic", memory_lean=True)
        self.runs = 0
        self._state = _State.of(original)
        # ``outputs``: the input model's graph outputs from the verifier's reference run,
        # recorded already (a region that writes a graph output needs no run for it)
        self.values: list[dict[str, Any]] = [
            {k: v for k, v in (outputs[i] if outputs is not None else {}).items() if k in self._state.producer}
            for i in range(len(self.samples))]
        self._inferred = list(inferred) if inferred is not None else None  # per sample: name -> (shape, dtype)

    def spec(self, index: int, name: str) -> tuple[tuple[int, ...], np.dtype] | None:
        """(shape, dtype) of a value on a sample, without running anything when inference knows it."""
        if name in self.values[index]:
            v = self.values[index][name]
            return (v.shape, v.dtype) if isinstance(v, np.ndarray) else None
        if name in self.samples[index]:
            v = self.samples[index][name]
            return (v.shape, v.dtype) if isinstance(v, np.ndarray) else None
        if self._inferred is None:
            self._inferred = [inferred_values(self.original, sample) for sample in self.samples]
        return self._inferred[index].get(name)

    @property
    def names(self) -> set[str]:
        """Every name the input model computes (what can be recorded)."""
        return set(self._state.producer) | self._state.graph_inputs

    @property
    def recorded_bytes(self) -> int:
        return sum(getattr(v, "nbytes", 0) for sample in self.values for v in sample.values())

    def record(self, names: Iterable[str]) -> None:
        state = self._state
        missing = sorted(n for n in set(names) if n not in self.values[0] and n in state.producer)
        if not missing:
            return
        cone, stack = set(), [state.producer[n] for n in missing]
        while stack:
            i = stack.pop()
            if i in cone:
                continue
            cone.add(i)
            for name in _reads(state.nodes[i]):
                if name in state.producer:
                    stack.append(state.producer[name])
            if _has_bodies(state.nodes[i]):
                stack.extend(state.producer[n] for n in _outer_reads(state.nodes[i]) if n in state.producer)
        order = sorted(cone)
        reads = {name for i in order for name in _reads(state.nodes[i])}
        reads |= {name for i in order if _has_bodies(state.nodes[i]) for name in _outer_reads(state.nodes[i])}
        inputs = [n for n in (vi.name for vi in self.original.skeleton.graph.input)
                  if n in reads and n in state.graph_inputs]
        part = _cone_model(self.original, order, inputs, missing)
        feeds = [{k: sample[k] for k in inputs if k in sample} for sample in self.samples]
        for store, got in zip(self.values, staged.run(self.backend, part, feeds)):
            store.update(got)
        self.runs += 1

    def value(self, index: int, name: str) -> Any:
        if name in self.values[index]:
            return self.values[index][name]
        return self.samples[index][name]


def _cone_model(original: Exported, order: list[int], inputs: list[str], outputs: list[str]) -> Exported:
    src = original.skeleton
    model = onnx.ModelProto()
    model.CopyFrom(src)
    g = model.graph
    nodes = [src.graph.node[i] for i in order]
    read = {name for n in nodes for name in _reads(n)} | {name for n in nodes if _has_bodies(n) for name in
                                                          _outer_reads(n)}
    del g.node[:]
    g.node.extend(nodes)
    keep_inputs = [vi for vi in src.graph.input if vi.name in inputs or (vi.name in read and vi.name not in inputs and
                                                                        any(t.name == vi.name for t in src.graph.initializer))]
    del g.input[:]
    g.input.extend(keep_inputs)
    inits = [t for t in src.graph.initializer if t.name in read]
    del g.initializer[:]
    g.initializer.extend(inits)
    weights = staged.weights_of(original, inits, nodes)
    del g.output[:]
    g.output.extend(onnx.helper.make_empty_tensor_value_info(n) for n in outputs)
    return Exported(model, weights)


@dataclass
class RegionResult:
    ok: bool
    reason: str = ""
    max_abs: float = 0.0
    max_rel: float = 0.0
    nodes: int = 0  # nodes run, both sides together
    unverified: frozenset[str] = frozenset()


def check_region(region: Region, before: Exported, candidate: Exported, recorder: Recorder, backend, *,
                 atol=None, rtol=None, describe=lambda i: f"sample {i + 1}",
                 unverified: Iterable[str] = ()) -> "RegionResult | str":
    """Run the candidate's side of ``region`` on the recorded inputs and compare its outputs
    with the input model's values of the same names, recorded in the same run as the inputs.
    Where an output has no recording that stands for it (a name an earlier change made, or
    left unverified), the side of the model before the change is run on the same inputs
    and compared with instead.

    A sentence instead of a result: the region cannot be checked alone (a value that is not a
    plain tensor, a side ONNX Runtime cannot load as a model of its own, the model before
    the change failing on the recorded values); the whole model is compared then. Only the
    candidate's side failing where the other runs is the change's fault.
    """
    samples = range(len(recorder.samples))
    shape_only = {n for n in region.shape_only if all(recorder.spec(i, n) is not None for i in samples)}
    unverified = set(unverified)
    recordable = recorder.names
    direct = all(o in recordable and o not in unverified for o in region.outputs)
    recorder.record([n for n in region.inputs if n not in shape_only] + (list(region.outputs) if direct else []))
    types = {}
    for name in region.inputs:
        spec = recorder.spec(0, name)
        elem = None if spec is None else _elem_type(np.empty(0, spec[1]))
        if elem is None:
            return f"the value '{name}' it reads is not a plain tensor"
        types[name] = (elem, len(spec[0]))
    feeds = []
    for i in samples:
        feed = {}
        for name in region.inputs:
            if name in shape_only:  # only its shape is read: zeros (calloc'd pages cost nothing until touched)
                shape, dtype = recorder.spec(i, name)
                feed[name] = np.zeros(shape, dtype)
            else:
                feed[name] = recorder.value(i, name)
        feeds.append(feed)
    results = []
    if direct:
        results.append([{o: recorder.value(i, o) for o in region.outputs} for i in samples])
    sides = (("before", before, region.before), ("candidate", candidate, region.candidate))
    for side, state, indices in sides[1:] if direct else sides:
        part = region_model(state, indices, region.inputs, region.outputs, types)
        try:
            got = staged.run(backend, part, feeds)
        except staged.RunFailure as exc:
            if side == "before":
                return f"the model before the change fails on its region's recorded values ({exc})"
            return RegionResult(False, f"on {describe(exc.index)}, the changed region fails: {exc}")
        except BackendError as exc:
            return f"ONNX Runtime cannot load the {side} side of the change alone ({exc})"
        results.append([{n: out[n] if n in out else out[f"{n}::region"] for n in region.outputs} for out in got])
    max_abs = max_rel = 0.0
    for i, (ref, out) in enumerate(zip(*results)):
        # Both sides often compute bit for bit the same values (a folded constant, a Resize
        # given scales instead of sizes): one fast comparison settles those. Floats within
        # tolerance are settled in blocks (a region's outputs are whole activations); the
        # rest goes to the comparison rule's exact path, which says why they differ.
        rest = {}
        for n, v in ref.items():
            if _identical(v, out[n]):
                continue
            quick = _quick_close(v, out[n], tolerance_for(v.dtype, _pick(atol, n), _pick(rtol, n))) \
                if isinstance(v, np.ndarray) else None
            if quick is None:
                rest[n] = v
            else:
                max_abs, max_rel = max(max_abs, quick[0]), max(max_rel, quick[1])
        for d in diff_outputs(rest, out, atol=atol, rtol=rtol, nan_equal=True, detail=False):
            max_abs, max_rel = max(max_abs, d.max_abs), max(max_rel, d.max_rel)
            if not d.passed:
                return RegionResult(False, f"value '{d.name}' differs on {describe(i)}: {d.reason}", max_abs, max_rel,
                                    region.size)
    return RegionResult(True, "", max_abs, max_rel, region.size, frozenset(region.unverified))


def _pick(value, name: str):
    return value.get(name) if isinstance(value, Mapping) else value


def _quick_close(ref: np.ndarray, out: Any, tol, step: int = 1 << 18) -> tuple[float, float] | None:
    """(max abs, max rel error) when every element of two float arrays is within ``tol``
    (``|out - ref| <= atol + rtol |ref|``, as surgeon.comparison's rule, in float32 blocks);
    None when the exact path must decide (another dtype, a NaN or Inf, a mismatch)."""
    if not isinstance(out, np.ndarray) or ref.dtype != out.dtype or ref.shape != out.shape or ref.dtype.kind != "f" \
            or ref.dtype.itemsize > 4 or not ref.size:
        return None
    a, b = ref.reshape(-1), out.reshape(-1)
    n0 = min(step, a.size)
    err, mag, bound = (np.empty(n0, np.float32) for _ in range(3))
    mask = np.empty(n0, bool)
    max_abs = max_rel = 0.0
    with np.errstate(invalid="ignore", over="ignore"):
        for start in range(0, a.size, step):
            x, y = a[start:start + step], b[start:start + step]
            n = x.size
            e, g, bd, mk = err[:n], mag[:n], bound[:n], mask[:n]
            np.subtract(y, x, out=e, dtype=np.float32)
            np.abs(e, out=e)
            np.abs(x, out=g, dtype=np.float32)
            np.multiply(g, tol.rtol, out=bd)
            bd += tol.atol
            np.less_equal(e, bd, out=mk)  # False for NaN
            if not mk.all():
                return None
            max_abs = max(max_abs, float(e.max()))
            np.greater(g, tol.atol, out=mk)  # relative error where |ref| > atol, as the rule reports it
            e *= mk
            np.divide(e, g, out=e, where=mk)
            max_rel = max(max_rel, float(e.max()))
    return max_abs, max_rel


def _identical(a: Any, b: Any) -> bool:
    return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape
            and bool(np.array_equal(a, b)))


class RegionChecks:
    """The verifier's region mode for one pipeline run: the recording and what is not verified.

    ``compare`` returns a :class:`RegionResult`, or a sentence saying why the change has no
    region to check alone (the verifier then compares the whole model).
    """

    def __init__(self, original: Exported, samples: Sequence[Mapping[str, Any]], backend, *, atol=None, rtol=None,
                 inferred: Sequence[Mapping[str, tuple]] | None = None, describe=lambda i: f"sample {i + 1}",
                 outputs: Sequence[Mapping[str, Any]] | None = None):
        self.recorder = Recorder(original, samples, backend, inferred=inferred, outputs=outputs)
        self.backend, self.atol, self.rtol, self.describe = backend, atol, rtol, describe
        self.unverified: set[str] = set()  # values accepted changes computed without comparing them

    def compare(self, before: Exported, candidate: Exported) -> "RegionResult | str":
        region = find_region(before, candidate, self.recorder.names, self.unverified)
        if isinstance(region, str):
            return region
        return check_region(region, before, candidate, self.recorder, self.backend, atol=self.atol, rtol=self.rtol,
                            describe=self.describe, unverified=self.unverified)

    def accept(self, unverified: Iterable[str]) -> None:
        self.unverified |= set(unverified)
