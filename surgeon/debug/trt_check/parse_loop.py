"""Every failing node, not only the first: parse, cut what failed, parse again.

Why a loop: one parse of the ONNX-TensorRT parser reports either every failure its
static checkers find, or, once those pass, only the first node its importer cannot
convert (measured on TensorRT-RTX 1.7.1; the importer stops there). So each round
cuts the failing nodes out (:func:`graph_edit.cut`) and parses the rest, until the
parser accepts what is left or nothing more can be located.

Errors that name no node (ScatterElements with a reduction is reported as node -1
with no name) are located by the op in the parser's function name
(``importScatterElements``): with one candidate of that op it is that node; with
several, each is parsed with the others cut out, and those that reproduce the error
are the failing ones.

The loop is written against a ``parse(model) -> ParseOutcome`` callable, so it is
tested with a fake parser as well as the real one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

import onnx

from surgeon.backends.trt import parser_error_text
from surgeon.debug.trt_check import graph_edit
from surgeon.debug.trt_check.report import Failure


@dataclass
class ParseOutcome:
    ok: bool
    errors: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    supports: dict[str, bool] = field(default_factory=dict)


ParseFn = Callable[[onnx.ModelProto], ParseOutcome]


@dataclass
class LoopResult:
    failures: list[Failure] = field(default_factory=list)
    parses: int = 0
    first_parse_failures: int = 0
    seconds: float = 0.0
    clean: bool = False  # the original model parsed with nothing cut
    rest_parses: bool = False  # what is left after cutting every failing node parses
    cut: list[str] = field(default_factory=list)
    guessed_types: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    supports: dict[str, bool] = field(default_factory=dict)


_FUNC_OP = re.compile(r"^(?:import|check)([A-Z][A-Za-z0-9_]*)$")
_NOT_OPS = {"FallbackPluginImporter", "LocalFunctionImporter", "Model", "Graph", "Node", "Subgraph"}


def op_from_func(func: str) -> str | None:
    """``importScatterElements`` -> ``ScatterElements`` (the parser names its functions after ops)."""
    m = _FUNC_OP.match(func or "")
    if not m or m.group(1) in _NOT_OPS:
        return None
    return m.group(1)


def _same_error(a: dict, b: dict) -> bool:
    return a.get("func") == b.get("func") and a.get("code") == b.get("code")


def _failure(err: dict, ref: graph_edit.NodeRef | None, round_no: int, downstream: bool) -> Failure:
    if ref is None:
        op = err.get("op", "") or (op_from_func(err.get("func", "")) or "")
        return Failure(node="", working_name="", op=op, domain="", path="", phase="parse", code=err.get("code", "UNKNOWN"),
                       message=parser_error_text(err, op), func=err.get("func", ""), parse_round=round_no)
    return Failure(node=ref.original, working_name=ref.name, op=ref.op_type, domain=ref.domain, path=ref.where,
                   phase="parse", code=err.get("code", "UNKNOWN"), message=parser_error_text(err, ref.op_type),
                   func=err.get("func", ""), parse_round=round_no, downstream_of_cut=downstream)


def find_all(skeleton: onnx.ModelProto, index: graph_edit.NodeIndex, parse: ParseFn, *, max_rounds: int = 64,
             progress: Callable[[str], None] | None = None) -> LoopResult:
    """Parse ``skeleton`` (unique node names) until every failing node is found; see the module docstring."""
    say = progress or (lambda _m: None)
    result = LoopResult()
    types = graph_edit.value_infos(skeleton)
    cut: list[str] = []
    cut_outputs: set[str] = set()
    current = skeleton
    for round_no in range(1, max_rounds + 1):
        say(f"parse {round_no} ({len(cut)} node(s) cut)")
        outcome = parse(current)
        result.parses += 1
        result.seconds += outcome.seconds
        if round_no == 1:
            result.supports = dict(outcome.supports)
        if outcome.ok:
            result.clean = round_no == 1
            result.rest_parses = True
            break
        if round_no == 1:
            result.first_parse_failures = len({e.get("node_name") or f"#{e.get('node')}:{e.get('func')}" for e in outcome.errors}) or 1
        tainted = graph_edit.downstream(skeleton, cut_outputs) if cut_outputs else set()
        new: list[str] = []
        progressed = False
        for err in outcome.errors or [{"code": "UNKNOWN", "desc": "the parser failed without an error record"}]:
            refs = _locate(err, index, cut, current, types, parse, result)
            if refs is None:
                result.failures.append(_failure(err, None, round_no, False))
                continue
            for ref in refs:
                if ref.name in cut or ref.name in new:
                    continue
                result.failures.append(_failure(err, ref, round_no, ref.name in tainted))
                new.append(ref.name)
                progressed = True
        if not progressed:
            if round_no > 1 or result.failures:
                result.notes.append("the parser reported a failure that names no node; later failures (if any) were not searched")
            break
        cut.extend(new)
        current, guessed = graph_edit.cut(skeleton, cut, types)
        result.guessed_types.extend(g for g in guessed if g not in result.guessed_types)
        for name in new:
            node = _node(skeleton, name)
            if node is not None:
                cut_outputs.update(o for o in node.output if o)
    else:
        result.notes.append(f"stopped after {max_rounds} parses; there may be more failing nodes")
    result.cut = cut
    if result.guessed_types:
        result.notes.append("types of tensors from cut custom ops were guessed from their first input: "
                            + ", ".join(result.guessed_types[:5]) + ("…" if len(result.guessed_types) > 5 else ""))
    return result


def _node(model: onnx.ModelProto, name: str) -> onnx.NodeProto | None:
    for _p, _g, node in graph_edit.walk(model.graph):
        if node.name == name:
            return node
    return None


def _locate(err: dict, index: graph_edit.NodeIndex, cut: list[str], current: onnx.ModelProto,
            types: dict, parse: ParseFn, result: LoopResult) -> list[graph_edit.NodeRef] | None:
    name = err.get("node_name") or ""
    ref = index.get(name) if name else None
    if ref is not None:
        return [ref]
    op = err.get("op") or op_from_func(err.get("func", ""))
    if not op:
        return None
    candidates = [r for r in index.by_op(op) if r.name not in cut]
    if len(candidates) <= 1:
        return candidates or None
    # Several nodes of that op: parse with all but one cut; those that reproduce the error fail.
    failing = []
    for cand in candidates:
        others = [c.name for c in candidates if c.name != cand.name]
        probe, _ = graph_edit.cut(current, others, types)
        outcome = parse(probe)
        result.parses += 1
        result.seconds += outcome.seconds
        if any(_same_error(e, err) for e in outcome.errors):
            failing.append(cand)
    return failing or None
