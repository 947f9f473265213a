"""Which branches of data-dependent ``If`` nodes the samples take, and samples for the rest.

Why: a ``torch.cond`` export computes one branch or the other depending on the inputs.
A wrong rewrite inside a branch that no sample takes leaves every output as it was, and
the comparison "verifies" it (issue 18 planted one in such a model and it survived). So
the verifier asks, for every ``If`` of the main graph whose condition depends on a graph
input, which branch each sample takes: it evaluates the conditions alone (a copy of the
model whose outputs are the conditions, so ONNX Runtime runs only what they need). A
branch no sample takes is looked for with other samples (:func:`cover`); where none is
found, the branch is reported as not covered, and a change inside it (its computation
differs from the input model's, :func:`surgeon.equivalence.body_digests`) makes the
result "not verified".

Conditions inside bodies (an ``If`` in a ``Loop``) are not evaluated: they depend on
values computed per iteration, which marking cannot reach without running the body.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import onnx

from surgeon.errors import BackendError, InputDataError
from surgeon.graph_ops import proto_subgraphs, walk_proto_nodes

log = logging.getLogger(__name__)

THEN, ELSE = "then_branch", "else_branch"


@dataclass(frozen=True)
class DataIf:
    """An ``If`` of the main graph whose condition depends on graph inputs."""

    key: str  # its first output: stable across passes that rename nodes
    label: str  # how the report names it
    condition: str
    inputs: tuple[str, ...]  # the graph inputs its condition depends on


def data_dependent_ifs(model: onnx.ModelProto) -> list[DataIf]:
    """Every main-graph ``If`` whose condition some graph input reaches."""
    inits = {t.name for t in model.graph.initializer}
    sources: dict[str, frozenset[str]] = {vi.name: frozenset([vi.name]) for vi in model.graph.input
                                          if vi.name not in inits}
    found = []
    for node in model.graph.node:
        reads: frozenset[str] = frozenset()
        for name in node.input:
            reads |= sources.get(name, frozenset())
        for g in proto_subgraphs(node):  # a body reading a graph-input-dependent outer value
            for inner in walk_proto_nodes(g):
                for name in inner.input:
                    reads |= sources.get(name, frozenset())
        if node.op_type == "If" and node.input and node.output and sources.get(node.input[0]):
            label = f"If '{node.name}'" if node.name else f"the If writing '{node.output[0]}'"
            found.append(DataIf(node.output[0], label, node.input[0], tuple(sorted(sources[node.input[0]]))))
        if reads:
            for o in node.output:
                if o:
                    sources[o] = reads
    return found


def condition_model(skeleton: onnx.ModelProto, ifs: Sequence[DataIf]) -> onnx.ModelProto:
    """A copy of ``skeleton`` whose outputs are the conditions (everything else is dead code to ONNX Runtime)."""
    out = onnx.ModelProto()
    out.CopyFrom(skeleton)
    del out.graph.output[:]
    for name in dict.fromkeys(i.condition for i in ifs):
        out.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.BOOL, None))
    return out


def branches_taken(conditions: Sequence[dict[str, Any]], ifs: Sequence[DataIf]) -> dict[str, dict[str, list[int]]]:
    """If key -> branch -> the samples (indices) that take it."""
    taken: dict[str, dict[str, list[int]]] = {i.key: {THEN: [], ELSE: []} for i in ifs}
    for k, values in enumerate(conditions):
        for i in ifs:
            v = values.get(i.condition)
            if isinstance(v, np.ndarray) and v.size == 1:
                taken[i.key][THEN if bool(v.reshape(-1)[0]) else ELSE].append(k)
    return taken


@dataclass
class Coverage:
    """The samples after :func:`cover`, and the branches none of them takes."""

    samples: list[dict[str, Any]]
    ifs: list[DataIf]
    uncovered: list[tuple[DataIf, str]]  # (the If, THEN or ELSE)
    added: int = 0  # samples added to take a branch

    def notes(self) -> list[str]:
        out = []
        if self.added:
            out.append(f"{self.added} sample(s) added so that every branch of {len(self.ifs)} data-dependent If "
                       f"node(s) is taken")
        for i, branch in self.uncovered:
            out.append(f"the {branch.split('_')[0]} branch of {i.label} (its condition depends on "
                       f"{', '.join(repr(n) for n in i.inputs)}) is taken by no sample: a change inside it is not "
                       "verified; give --load-inputs with inputs that take it")
        return out


def cover(ifs: Sequence[DataIf], samples: list[dict[str, Any]], *,
          conditions: Callable[[list[dict[str, Any]]], list[dict[str, Any]]],
          candidates: Sequence[Callable[[], list[dict[str, Any]]]],
          runs: Callable[[dict[str, Any]], bool]) -> Coverage:
    """Add samples until every branch of ``ifs`` is taken, from ``candidates`` (tried in order).

    ``conditions(feeds_list)`` evaluates the conditions per sample; each candidate makes
    more samples (other seeds, other value ranges); a sample is added only when it takes
    a branch no sample takes yet and the whole model runs on it (``runs``).
    """
    ifs = list(ifs)
    samples = list(samples)
    if not ifs or not samples:
        return Coverage(samples, ifs, [])
    try:
        taken = branches_taken(conditions(samples), ifs)
    except BackendError as exc:
        log.debug("conditions could not be evaluated: %s", exc)
        return Coverage(samples, ifs, [])
    missing = {(i.key, b) for i in ifs for b in (THEN, ELSE) if not taken[i.key][b]}
    added = 0
    for make in candidates:
        if not missing:
            break
        try:
            more = make()
            values = conditions(more) if more else []
        except (BackendError, InputDataError):
            continue
        for feeds, cond in zip(more, values):
            now = branches_taken([cond], ifs)
            hits = {(k, b) for k, b in missing if now[k][b]}
            if hits and runs(feeds):
                samples.append(feeds)
                missing -= hits
                added += 1
    by_key = {i.key: i for i in ifs}
    return Coverage(samples, ifs, [(by_key[k], b) for k, b in sorted(missing)], added)


def changed_branches(uncovered: Sequence[tuple[DataIf, str]], before: onnx.ModelProto, before_weights,
                     after: onnx.ModelProto, after_weights) -> list[tuple[DataIf, str]]:
    """The uncovered branches whose computation differs between two skeletons (or whose If is gone)."""
    from surgeon.equivalence import body_digests

    def bodies(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
        return {n.output[0]: n for n in model.graph.node if n.op_type == "If" and n.output}

    def body(node: onnx.NodeProto, branch: str) -> onnx.GraphProto | None:
        return next((a.g for a in node.attribute if a.name == branch), None)

    old, new = bodies(before), bodies(after)
    out = []
    for i, branch in uncovered:
        a, b = old.get(i.key), new.get(i.key)
        if a is None:
            continue
        ga, gb = body(a, branch), (body(b, branch) if b is not None else None)
        if gb is None or body_digests(ga, before_weights) != body_digests(gb, after_weights):
            out.append((i, branch))
    return out
