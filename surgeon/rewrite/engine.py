"""Applying rules to a model: find, check, permit, rewrite, rewire, count.

The engine owns everything a rule should not have to get right: outputs keep their
names (the last new node writes into the original output tensor, so value_info, graph
outputs and outer-scope uses stay valid), a rewrite that returns an existing tensor
bypasses the match (:func:`surgeon.graph_ops.bypass`), producers left without readers go,
new nodes are stamped with provenance and placed where the match was, custom domains get
their opset import, plugin outputs get value_info so shape inference continues past them,
and every If/Loop/Scan body is visited. What ``check`` bound reaches ``rewrite`` in the
match; a refusal becomes the rule's note.

A sweep visits each graph's nodes in order and applies at most one rule per node; the
edits are recorded on one :class:`~surgeon.graph_ops.Scope` per graph and ``graph.nodes``
is rebuilt once at the end, so a sweep costs the graph, not the graph times the number of
applications. Sweeps repeat (with freshly inferred types, where asked) until one applies
nothing, so a contrib op whose input type was only known after lowering its producer is
handled in the same pass run.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Sequence

import onnx
import onnx_graphsurgeon as gs

from surgeon import graph as G
from surgeon import graph_ops as K
from surgeon.graph import Model
from surgeon.graph_ops import infer_shapes
from surgeon.pipeline.base import PassContext, PassLog
from surgeon.rewrite.builder import Builder, Names
from surgeon.rewrite.result import Refused, as_result
from surgeon.rewrite.rule import STANDARD_DOMAINS, Match, Rule, RuleContext, Scope, node_domain, op_label

log = logging.getLogger(__name__)

MAX_SWEEPS = 8


class RewriteFailed(Exception):
    """A rule's rewrite raised or returned something unusable; the match is left alone."""


class FindingStatus(str, Enum):
    """What became of one match (a ``str``: reports and JSON show the value)."""

    REPLACE = "replace"  # replaced (or, in a dry run, would be)
    REFUSED = "refused"  # the rule's check (or its output contract) said no
    FAILED = "failed"  # the rewrite raised or returned something unusable; the match is left alone

    def __str__(self) -> str:
        return self.value

    __format__ = str.__format__


@dataclass
class Finding:
    """One match of one rule at one node, and what became of it."""

    graph: str
    node: str
    op: str
    rule: str
    status: FindingStatus
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    reason: str = ""


@dataclass
class MatchReport:
    """What ``surgeon match`` lists: matches, refusals and custom ops no rule touched."""

    findings: list[Finding]
    untouched: dict[str, int]
    rules: list[str]

    def to_dict(self) -> dict:
        return {"rules": self.rules, "findings": [asdict(f) for f in self.findings], "untouched": self.untouched}


# --- model-level facts -------------------------------------------------------------------

def _vi_type(vi: onnx.ValueInfoProto) -> tuple[int, tuple | None] | None:
    if vi.type.WhichOneof("value") != "tensor_type":
        return None
    tt = vi.type.tensor_type
    shape = None
    if tt.HasField("shape"):
        shape = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tt.shape.dim)
    return tt.elem_type, shape


def infer_types(model: Model) -> dict[str, tuple[int, tuple | None]]:
    """Tensor name → (elem type, dims) from onnx shape inference (subgraphs included).

    Inference runs on the skeleton (weights as typed inputs) and stops at ops it has no
    schema for (custom domains); their outputs are simply absent.
    """
    skeleton = model.export().for_checker()
    try:
        inferred = infer_shapes(skeleton)
    except Exception as exc:  # inference is a help for rules, never a requirement
        log.debug("shape inference failed: %s", exc)
        inferred = skeleton
    types: dict[str, tuple[int, tuple | None]] = {}

    def visit(g: onnx.GraphProto) -> None:
        for vi in list(g.input) + list(g.output) + list(g.value_info):
            t = _vi_type(vi)
            if t is not None and t[0]:
                types.setdefault(vi.name, t)
        for init in g.initializer:
            types.setdefault(init.name, (init.data_type, tuple(init.dims)))
        for node in g.node:
            for sub in G.proto_subgraphs(node):
                visit(sub)

    visit(inferred.graph)
    return types


def rule_context(model: Model) -> RuleContext:
    return RuleContext(opsets=dict(model.opsets), types=infer_types(model))


def _untouched(graph: gs.Graph, pass_name: str | None) -> dict[str, int]:
    counts: Counter = Counter()
    for g in G.iter_graphs(graph):
        for n in g.nodes:
            if node_domain(n) in STANDARD_DOMAINS:
                continue
            if pass_name and G.meta(n).get(G.PROVENANCE_PASS) == pass_name:
                continue  # a plugin node this pass made earlier, not a custom op it found
            counts[op_label(n)] += 1
    return dict(sorted(counts.items()))


def _graph_label(g: gs.Graph, root: gs.Graph) -> str:
    return "main" if g is root else (g.name or "subgraph")


# --- matching ------------------------------------------------------------------------------

def _by_root(rules: Sequence[Rule]) -> tuple[dict[tuple[str, str], list[Rule]], list[Rule]]:
    """Rules by the (domain, op) their pattern's root must have; the rules that can start anywhere.

    Asking every rule at every node is most of a sweep's time on a large graph.
    """
    index: dict[tuple[str, str], list[Rule]] = {}
    anywhere: list[Rule] = []
    for rule in rules:
        roots = rule.root_ops() if hasattr(rule, "root_ops") else None
        if roots is None:
            anywhere.append(rule)
        for key in roots or ():
            index.setdefault(key, []).append(rule)
    return index, anywhere


def _rules_at(node: gs.Node, rules: Sequence[Rule], index) -> list[Rule]:
    """The rules that may match at ``node``, in their given order."""
    by_root, anywhere = index
    mine = by_root.get((node_domain(node), node.op), [])
    if not anywhere:
        return mine
    chosen = {id(r) for r in mine} | {id(r) for r in anywhere}
    return [r for r in rules if id(r) in chosen]


def _candidates(scope: Scope, node: gs.Node, rules: Sequence[Rule], ctx: RuleContext):
    """(rule, match, refusal reason) for each rule whose pattern starts at ``node``."""
    for rule in rules:
        try:
            match = rule.match(node, scope)
            if match is None:
                continue
            reason = rule.outputs_problem(match) or None
            if reason is None:
                result = as_result(rule.check(match, ctx))
                if isinstance(result, Refused):
                    reason = result.reason
                else:
                    match = match.with_bound(result.values)
        except Exception as exc:  # a user rule's bug must not take the run down
            log.debug("rule %s crashed on %s", rule.name, node.name, exc_info=True)
            yield rule, None, f"rule raised {type(exc).__name__}: {exc}"
            continue
        yield rule, match, reason


def _finding(g: gs.Graph, root: gs.Graph, node: gs.Node, rule: Rule, match: Match | None, status: FindingStatus,
             reason: str = "") -> Finding:
    return Finding(
        graph=_graph_label(g, root), node=node.name, op=op_label(node), rule=rule.name, status=status,
        inputs=[t.name for t in match.inputs] if match else [], outputs=[t.name for t in match.outputs] if match else [],
        reason=reason,
    )


def find_matches(model: onnx.ModelProto, rules: Sequence[Rule]) -> MatchReport:
    """Dry run: what the rules would replace in ``model`` (which is not modified).

    The rules are applied to a copy, sweep after sweep as the pass does, so a match that
    only becomes possible after another (a contrib op whose input type is known once its
    producer is lowered) is listed too; refusals are those of the last sweep.
    """
    ctx = PassContext(pass_name="match")
    findings: list[Finding] = []
    work = Model.from_proto(model)
    untouched = _untouched(work.graph, None)
    _run(work, rules, ctx, PassLog(), findings)
    return MatchReport(findings, untouched_after(untouched, findings), [r.name for r in rules])


def untouched_after(before: dict[str, int], findings: list[Finding]) -> dict[str, int]:
    """Custom ops of the input that no listed replacement consumes."""
    left = Counter(before)
    for f in findings:
        if f.status is FindingStatus.REPLACE and f.op in left:
            left[f.op] -= 1
    return {k: v for k, v in sorted(left.items()) if v > 0}


# --- rewriting ---------------------------------------------------------------------------

def _index_of(items, obj) -> int:
    for i, x in enumerate(items):
        if x is obj:
            return i
    raise ValueError("not found")


def _bypass(match: Match, x: gs.Tensor) -> list[gs.Node] | None:
    """The rewrite returned an existing tensor for the match's one output: remove the match.

    :func:`surgeon.graph_ops.bypass` keeps the output's name where it is a graph output;
    where it cannot (the output would copy a graph input), None: an Identity is made.
    """
    scope, y = match.scope, match.outputs[0]
    if any(n is K.producer(x) for n in match.nodes) or scope.bypass_refusal(x, y):
        return None
    for n in match.nodes:
        if n is not match.root:
            K.detach(scope, n)
    K.bypass(scope, match.root, x, y)
    _drop_dead(scope, match.inputs)
    return []


def _drop_dead(scope: K.Scope, inputs: Sequence[gs.Tensor]) -> None:
    """Producers the replacement left without readers go (nodes of this graph, no bodies)."""
    for t in inputs:
        K.drop_if_dead(scope, t)


def _apply(rule: Rule, match: Match, ctx: RuleContext, names: Names, pass_name: str, plog: PassLog) -> list[gs.Node]:
    """Replace ``match`` by the rule's rewrite (edits recorded on ``match.scope``); returns the new nodes."""
    b = Builder(match, ctx, names)
    new_nodes = _replace(rule, match, ctx, b, pass_name)
    for line in b.notes:
        plog.note(line)
    if any(K.has_subgraphs(n) for n in list(match.nodes) + new_nodes):
        match.scope.forget_bodies()
    return new_nodes


def _replace(rule: Rule, match: Match, ctx: RuleContext, b: Builder, pass_name: str) -> list[gs.Node]:
    try:
        produced = rule.rewrite(match, b)
    except Exception as exc:
        b.discard()
        raise RewriteFailed(f"rewrite raised {type(exc).__name__}: {exc}") from exc
    if isinstance(produced, gs.Tensor):
        produced = [produced]
    produced = list(produced or [])
    if len(produced) != len(match.outputs) or not all(isinstance(t, gs.Tensor) for t in produced):
        b.discard()
        raise RewriteFailed(f"rewrite returned {len(produced)} tensor(s) for {len(match.outputs)} output(s) "
                            f"({', '.join(t.name for t in match.outputs)})")
    new_ids = {id(n) for n in b.nodes}
    if not b.nodes and len(produced) == 1:
        done = _bypass(match, produced[0])
        if done is not None:
            return done
    pairs: list[tuple[gs.Tensor, gs.Tensor]] = []
    for old, new in zip(match.outputs, produced):
        producer = new.inputs[0] if isinstance(new, gs.Variable) and new.inputs else None
        if producer is None or id(producer) not in new_ids or any(new is p for _, p in pairs):
            new = b.op("Identity", [new])  # an existing tensor passed through, or one used twice
        pairs.append((old, new))
    scope = match.scope
    scope.place(b.nodes, match.root)
    for n in match.nodes:
        K.detach(scope, n)
    for old, new in pairs:
        producer = new.inputs[0]
        producer.outputs[_index_of(producer.outputs, new)] = old
        for n in b.nodes:
            for i, t in enumerate(n.inputs):
                if t is new:
                    n.inputs[i] = old
        if node_domain(producer) not in STANDARD_DOMAINS and old.dtype is None:
            known = ctx.types.get(old.name)  # value_info lets shape inference continue past a plugin
            if known:
                old.dtype = onnx.helper.tensor_dtype_to_np_dtype(known[0])
                old.shape = [d if isinstance(d, int) else (None if d == "?" else d) for d in known[1]] \
                    if known[1] is not None else None
    for n in b.nodes:
        K.stamp(n, pass_name, rule.name, [m.name for m in match.nodes])
    _drop_dead(scope, match.inputs)
    return b.nodes


def _out_of_order(scope: K.Scope, placed: list[tuple[list[gs.Node], list[gs.Tensor]]]) -> bool:
    """New nodes sit where the root was; a reader of an earlier matched output may come before them."""
    for nodes, outputs in placed:
        first = min((scope.position(n) for n in nodes if scope.contains(n)), default=None)
        if first is not None and any(scope.contains(c) and scope.position(c) < first for t in outputs for c in t.outputs):
            return True
    return False


def _sweep(graph: gs.Graph, rules: Sequence[Rule], rctx: RuleContext, names: Names, ctx: PassContext,
           plog: PassLog, asked: dict[str, bool]) -> tuple[list[Finding], dict[str, int]]:
    """One pass over every graph; returns (findings, new custom domains → opset version)."""
    findings, domains = [], {}
    index = _by_root(rules)
    for g in list(G.iter_graphs(graph)):
        scope = Scope(g)  # one per graph and sweep: edits are recorded on it, graph.nodes rebuilt at the end
        placed: list[tuple[list[gs.Node], list[gs.Tensor]]] = []
        for node in list(g.nodes):
            if not scope.contains(node):
                continue  # replaced or removed by an earlier application in this sweep
            for rule, match, reason in _candidates(scope, node, _rules_at(node, rules, index), rctx):
                if reason is not None:
                    if reason:  # fail("") is no near miss: the check found nothing to say
                        findings.append(_finding(g, graph, node, rule, match, FindingStatus.REFUSED, reason))
                    continue
                label = node.name or (node.outputs[0].name if node.outputs else node.op)
                key = f"{id(rule)}:{label}"  # two rules of one name (two inputs of a node) ask apart
                if key not in asked:  # each application is numbered once, however many sweeps
                    asked[key] = ctx.permit(rule.name, label)
                if not asked[key]:
                    break
                finding = _finding(g, graph, node, rule, match, FindingStatus.REPLACE)
                try:
                    new_nodes = _apply(rule, match, rctx, names, ctx.pass_name, plog)
                except RewriteFailed as exc:
                    findings.append(_finding(g, graph, node, rule, match, FindingStatus.FAILED, str(exc)))
                    continue
                findings.append(finding)
                plog.count(rule.name)
                for n in new_nodes:
                    d = node_domain(n)
                    if d not in STANDARD_DOMAINS:
                        domains.setdefault(d, int(rule.domains.get(d, 1)))
                        if hasattr(plog, "opaque_ops"):
                            plog.opaque_ops(op_label(n))
                if new_nodes:
                    placed.append((new_nodes, list(match.outputs)))
                break
        reorder = _out_of_order(scope, placed)
        scope.finish()
        if reorder:
            g.toposort(recurse_subgraphs=False)
    return findings, domains


def _run(model: Model, rules: Sequence[Rule], ctx: PassContext, plog: PassLog, applied: list[Finding],
         infer: bool = True, sweeps: int = MAX_SWEEPS) -> tuple[bool, list[Finding]]:
    """Sweeps until one applies nothing (at most ``sweeps``); ``applied`` collects the replacements made."""
    changed, last = False, []
    asked: dict[str, bool] = {}
    for _ in range(sweeps):
        rctx = rule_context(model) if infer else RuleContext(opsets=dict(model.opsets))
        found, domains = _sweep(model.graph, rules, rctx, Names(lambda: G.all_names(model.graph)), ctx, plog, asked)
        done = [f for f in found if f.status is FindingStatus.REPLACE]
        last = [f for f in found if f.status is not FindingStatus.REPLACE]
        applied.extend(done)
        if not done:
            break
        for domain, version in domains.items():
            model.opsets.setdefault(domain, version)
        changed = True
    applied.extend(last)
    return changed, last


def _may_match(model: Model, rules: Sequence[Rule]) -> bool:
    """False when the model lacks op types every rule needs (see ``Rule.required_ops``)."""
    present = {(node_domain(n), n.op) for n in G.walk_nodes(model.graph)}
    for rule in rules:
        required = rule.required_ops() if hasattr(rule, "required_ops") else None
        if required is None or all(alternatives & present for alternatives in required):
            return True
    return False


def apply_rules(model: Model, rules: Sequence[Rule], ctx: PassContext, plog: PassLog, *, infer: bool = True,
                untouched: bool = True, sweeps: int = MAX_SWEEPS) -> bool:
    """Apply ``rules`` everywhere in ``model`` (in place); whether anything changed.

    ``infer``: give the rules types from onnx shape inference, once per sweep (a pass
    that works from the types on the graph passes False). ``untouched``: note the custom
    ops no rule replaced (``replace-custom-ops`` does; a pass of standard ops does not).
    ``sweeps``: 1 for rules whose one in-order sweep reaches the fixed point (a node sees
    what the rewrites before it made, so chains go at once); the pipeline repeats passes.
    """
    changed = False
    if _may_match(model, rules):
        # Otherwise nothing can match: skip inferring types, a large share of the time.
        by_name = {r.name: r for r in rules}
        changed, last = _run(model, rules, ctx, plog, [], infer, sweeps)
        for f in last:
            rule = by_name[f.rule]
            if f.status is FindingStatus.REFUSED:
                plog.note(rule.note(_Named(f.node, f.op), f.reason))
            else:
                plog.note(f"{f.node}: rule {f.rule} {f.status}: {f.reason}")
    if untouched:
        for label, count in _untouched(model.graph, ctx.pass_name).items():
            plog.note(f"untouched custom op: {label} x{count}")
    return changed


@dataclass(frozen=True)
class _Named:
    """What a refusal note needs of the node it was made at (the node may be gone since)."""

    name: str
    op: str
    outputs: tuple = ()
