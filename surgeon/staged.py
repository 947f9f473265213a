"""Run a weight-heavy model a slice at a time, so a run never holds all its weights at once.

Why: ONNX Runtime reads every weight of a model in one run, and a derived weight (a
recipe, surgeon.weights) must be materialized for the run's whole length. A verified fix of
a multi-GB model would then peak at its full weight bytes, or more. Cut into consecutive
slices of at most ``budget`` weight bytes, the model runs one slice at a time on every
sample: each slice gets its own session, its values go to the slices that read them, and
when a slice is done its session (with the derived weights it materialized) is dropped and
the pages of the mapped weights it read are handed back. Peak memory is then one slice's
weights plus the values that cross the cut, not the model.

It is the same computation: every node runs once, in order, on the same inputs; only the
session boundaries differ (ONNX Runtime cannot fuse across a cut, which the comparison
tolerances absorb). A model whose weights fit in one slice, whose nodes are not in
topological order, or whose values crossing a cut are not plain tensors runs whole.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np
import onnx

from surgeon import weights as W
from surgeon.errors import BackendError

if TYPE_CHECKING:
    from surgeon.graph_export import Exported

log = logging.getLogger(__name__)


class LoadFailure(BackendError):
    """ONNX Runtime cannot load the model (or a slice of it): the model, not a sample, is at fault."""


class RunFailure(BackendError):
    """A run failed on one sample; ``index`` says which."""

    def __init__(self, message: str, index: int):
        super().__init__(message)
        self.index = index

WHOLE_BYTES = 1 << 30  # models with at most this many weight bytes run whole (one session: fastest)
SLICE_BYTES = 256 << 20  # weight bytes of one slice (a slice peaks at about twice this: its weights, and ONNX Runtime's packed copies)


def _reads(node: onnx.NodeProto) -> list[str]:
    names = [n for n in node.input if n]
    for a in node.attribute:
        for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
            for inner in sub.node:
                names += _reads(inner)  # a superset of the body's outer-scope reads
    return names


def slices(exported: "Exported", budget: int | None = None) -> list[list[int]] | None:
    """Node indices in consecutive slices of at most ``budget`` weight bytes (a node reading
    more is a slice of its own), or None when the nodes are not in topological order."""
    budget = SLICE_BYTES if budget is None else budget
    g = exported.skeleton.graph
    sizes = {t.name: exported.weights[W.stub_key(t)].nbytes for t in g.initializer if W.stub_key(t)}
    known = {vi.name for vi in g.input} | {t.name for t in g.initializer}
    produced = {o for n in g.node for o in n.output if o}
    out: list[list[int]] = []
    current: list[int] = []
    held: set[str] = set()
    used = 0
    for i, node in enumerate(g.node):
        reads = _reads(node)
        if any(r in produced and r not in known for r in node.input if r):
            return None  # reads a value produced later: not sorted
        new = {r for r in reads if r in sizes and r not in held}
        cost = sum(sizes[r] for r in new)
        if current and used + cost > budget:
            out.append(current)
            current, held, used = [], set(), 0
            new = {r for r in reads if r in sizes}
            cost = sum(sizes[r] for r in new)
        current.append(i)
        held |= new
        used += cost
        known.update(o for o in node.output if o)
    if current:
        out.append(current)
    return out


def _slice_model(exported: "Exported", indices: list[int], inputs: list[str], outputs: list[str],
                 values: Mapping[str, Any]) -> "Exported":
    from surgeon.graph import Exported

    src = exported.skeleton
    declared = {vi.name: vi for vi in src.graph.input}
    nodes = [src.graph.node[i] for i in indices]
    reads = {r for n in nodes for r in _reads(n)}
    model = onnx.ModelProto()
    model.CopyFrom(src)
    g = model.graph
    del g.node[:]
    g.node.extend(nodes)
    del g.input[:]
    for name in inputs:
        if name in declared:
            g.input.append(declared[name])
        else:
            v = values[name]
            g.input.append(onnx.helper.make_tensor_value_info(name, onnx.helper.np_dtype_to_tensor_dtype(v.dtype),
                                                              [None] * v.ndim))
    inits = [t for t in src.graph.initializer if t.name in reads]
    for vi in src.graph.input:  # overridable defaults keep their listing
        if vi.name in reads and vi.name not in inputs and any(t.name == vi.name for t in inits):
            g.input.append(vi)
    del g.initializer[:]
    g.initializer.extend(inits)
    del g.value_info[:]
    del g.output[:]
    g.output.extend(onnx.helper.make_empty_tensor_value_info(n) for n in outputs)
    return Exported(model, weights_of(exported, inits, nodes))


def weights_of(exported: "Exported", initializers, nodes) -> dict[str, Any]:
    """The weights a part of ``exported`` reads: of its initializers, and of the tensors held
    in its nodes' attributes (a Constant node's value, bodies included)."""
    out = {}
    for t in initializers:
        key = W.stub_key(t)
        if key is not None:
            out[key] = exported.weights[key]
    for node in nodes:
        for a in node.attribute:
            tensors = ([a.t] if a.HasField("t") else []) + list(a.tensors)
            for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                tensors += list(W.iter_graph_tensors(sub))
            for t in tensors:
                key = W.stub_key(t)
                if key is not None:
                    out[key] = exported.weights[key]
    return out


def _plain(value: Any) -> bool:
    if not isinstance(value, np.ndarray):
        return False
    try:
        onnx.helper.np_dtype_to_tensor_dtype(value.dtype)
        return True
    except (KeyError, TypeError, ValueError):
        return False


def run(backend, exported: "Exported", samples: Sequence[Mapping[str, Any]], outputs: Sequence[str] | None = None,
        budget: int | None = None, whole: int | None = None, session=None) -> list[dict[str, Any]]:
    """``outputs`` (default: the graph outputs) of ``exported`` on every sample, a slice at a time.

    ``budget``: weight bytes per slice (SLICE_BYTES); ``whole``: a model with at most this
    many weight bytes runs in one session (WHOLE_BYTES); ``session``: that session, when the
    caller has one already (it is used only for a model that runs whole).

    Raises what ``backend.session`` and ``Session.run`` raise (BackendError). The mapped
    weights' pages are released after each slice, and after a whole run.
    """
    budget = SLICE_BYTES if budget is None else budget
    g = exported.skeleton.graph
    wanted = list(outputs) if outputs is not None else [vi.name for vi in g.output]
    cuts = slices(exported, budget) if exported.weight_bytes > max(budget, WHOLE_BYTES if whole is None else whole) \
        else None
    produced = {o for n in g.node for o in n.output if o}
    if cuts and any(n not in produced and not all(n in s for s in samples) for n in wanted):
        cuts = None  # an output that is a constant: the whole model's session says what it holds
    if not cuts or len(cuts) < 2:
        return _whole(backend, exported, samples, wanted, session)
    last_use: dict[str, int] = {}
    for k, indices in enumerate(cuts):
        for i in indices:
            for r in _reads(g.node[i]):
                last_use[r] = k
    for name in wanted:
        last_use[name] = len(cuts)
    initializers = {t.name for t in g.initializer}
    values = [dict(s) for s in samples]
    for k, indices in enumerate(cuts):
        nodes = [g.node[i] for i in indices]
        made = {o for n in nodes for o in n.output if o}
        ins = sorted({r for n in nodes for r in _reads(n) if r not in made and r not in initializers and
                      (r in values[0] if values else False)})
        if any(not _plain(values[0][n]) and n not in {vi.name for vi in g.input} for n in ins):
            log.debug("a value crossing a cut is not a plain tensor; the model runs whole")
            return _whole(backend, exported, samples, wanted)
        outs = sorted(o for o in made if last_use.get(o, -1) > k)
        if not outs:
            continue
        part = _slice_model(exported, indices, ins, outs, values[0] if values else {})
        session = _session(backend, part)
        try:
            for index, store in enumerate(values):
                got = _run(session, {n: store[n] for n in ins}, index)
                store.update({n: got[n] for n in outs})
        finally:
            del session
            W.release(part.weights.values())
        for store in values:
            for name in [n for n in store if last_use.get(n, len(cuts)) <= k and n not in wanted]:
                del store[name]
    return [{n: store[n] for n in wanted} for store in values]


def _whole(backend, exported: "Exported", samples, wanted: list[str], session=None) -> list[dict[str, Any]]:
    graph_outputs = [vi.name for vi in exported.skeleton.graph.output]
    model = exported
    if wanted != graph_outputs:
        session = None
        from surgeon.graph import Exported

        skeleton = onnx.ModelProto()
        skeleton.CopyFrom(exported.skeleton)
        del skeleton.graph.output[:]
        skeleton.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n) for n in wanted)
        model = Exported(skeleton, exported.weights)
    if session is None:
        session = _session(backend, model)
    try:
        return [{n: out[n] for n in wanted} for out in (_run(session, s, i) for i, s in enumerate(samples))]
    finally:
        del session
        W.release(exported.weights.values())


def _session(backend, model: "Exported"):
    try:
        return backend.session(model)
    except LoadFailure:
        raise
    except BackendError as exc:
        raise LoadFailure(str(exc)) from exc


def _run(session, feeds: Mapping[str, Any], index: int) -> dict[str, Any]:
    try:
        return session.run(feeds)
    except RunFailure:
        raise
    except BackendError as exc:
        raise RunFailure(str(exc), index) from exc


def probe(backend, exported: "Exported", session) -> "Probe":
    """``runs(feeds)`` for the sample makers: whether the model runs on a feed. A model that
    runs a slice at a time is probed that way (``session``, its whole-model session, is
    used only for a model that runs whole), and its pages are released after each probe."""
    if exported.weight_bytes <= max(SLICE_BYTES, WHOLE_BYTES):
        return Probe(session.run)
    return Probe(Session(backend, exported).run)


class Probe:
    """``runs(feeds)``: whether a feed runs (a BackendError is the answer "no"; anything else
    propagates), as :class:`surgeon.input_data.runs_on`. It keeps the outputs of the feeds that
    ran, so ``outputs(feeds)`` for a probed feed (the verifier's reference run on the samples
    it chose) does not run the model again: on a multi-GB model each run reads every weight."""

    def __init__(self, run_one: "Callable[[Mapping[str, Any]], dict[str, Any]]"):
        self.run_one = run_one
        self._ran: list[tuple[Mapping[str, Any], dict[str, Any]]] = []

    def __call__(self, feeds: Mapping[str, Any]) -> bool:
        try:
            self.run(feeds)
        except BackendError:
            return False
        return True

    def run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        """A session's ``run`` (for checks written against one), its outputs kept as a probe's."""
        out = self.run_one(feeds)
        self._ran.append((feeds, out))
        return out

    def ran_on(self, samples: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]] | None:
        """The outputs on every one of ``samples`` when each was run here (the same objects), else None."""
        found = {id(feeds): out for feeds, out in self._ran}
        if not all(id(s) in found for s in samples):
            return None
        return [found[id(s)] for s in samples]

    def outputs(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        """The outputs on ``feeds``: those of its probe when it was probed (the same object), else run now."""
        for probed, out in self._ran:
            if probed is feeds:
                return out
        return self.run_one(feeds)


class Session:
    """A session-like view of :func:`run` for one feed at a time (``.run(feeds)`` gives the
    graph outputs): for callers written against ``Backend.session`` that check a few feeds."""

    def __init__(self, backend, exported: "Exported", session=None):
        self.backend, self.exported, self.session = backend, exported, session  # session: as for run()

    def run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        return run(self.backend, self.exported, [feeds], session=self.session)[0]
