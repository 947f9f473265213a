"""The error-growth profile: how the error builds up along one path of the model.

Why: when the first tensor beyond tolerance does not fail on its own (fed reference
inputs) and only fails together with a long stretch of upstream nodes, no node there is a
culprit: every FP16 rounding (or every slightly changed weight) adds a little, and the sum
crosses the tolerance somewhere. Naming the node where it happens to cross is wrong, and a
list of "culprits that each need 300 upstream nodes" sends the user after propagators.
What helps instead is the profile: the error of each tensor along a path from the input,
through that point, to the failing output, and where it first exceeds the tolerance. A
slow climb is accumulation (keep those layers in higher precision, or loosen the
tolerance); a sudden jump further down is a node worth testing alone, which the driver
does (:func:`jump_candidates`).

The path is a longest chain from a graph input to the point (the route with the most
layers to accumulate over), then a shortest route on to a failing output. Pure functions
over a :class:`~surgeon.debug.bisect.extract.GraphView` and the errors an oracle measured.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from surgeon.debug.bisect.extract import GraphView

JUMP = 10.0  # a node whose error (in tolerances) is this many times its path input's is tested alone
JUMP_TESTS = 2  # at most this many such tests per profile


def path(view: GraphView, point: int, failing_sinks: set[int] | frozenset[int]) -> list[int]:
    """Dag indices from a graph input through ``point`` to a node making a failing output."""
    back = view.dag.chain_to(point)
    return back + view.dag.path_between(point, failing_sinks)[1:]


def path_tensors(view: GraphView, nodes: Sequence[int], failing_outputs: set[str]) -> list[str]:
    """The tensor each node hands to the next one on the path; for the last node, the failing
    graph output it makes (else its first output)."""
    names = []
    for a, b in zip(nodes, nodes[1:]):
        outs = [o for o in view.node(a).output if o]
        reads = set(view.reads[view.searchable[b]])
        names.append(next((o for o in outs if o in reads), outs[0]))
    outs = [o for o in view.node(nodes[-1]).output if o]
    names.append(next((o for o in outs if o in failing_outputs), outs[0]))
    return names


def rows(view: GraphView, nodes: Sequence[int], tensors: Sequence[str], errors: Mapping[str, Mapping[str, Any]],
         point: int) -> list[dict]:
    """One row per path node: its tensor's worst error against the reference (absolute,
    relative, and in multiples of the tolerance, which compares across tensors of different
    scale, e.g. before and after a normalization), and the growth of that multiple over the
    previous row (``None`` where the previous error was 0 or unmeasured)."""
    out: list[dict] = []
    prev: float | None = None
    for k, t in zip(nodes, tensors):
        node = view.node(k)
        row: dict[str, Any] = {"node": view.label(k), "op_type": node.op_type, "tensor": t,
                               "point": k == point}
        e = errors.get(t)
        if e is None:
            row["compared"] = False
            prev = None
        else:
            bad = e["mismatches"] > 0
            ratio = e.get("tol_ratio", 0.0)
            row.update({"compared": True, "max_abs": e["max_abs"], "max_rel": e["max_rel"], "tol_ratio": ratio,
                        "outside": e["mismatches"], "elements": e["elements"], "exceeds": bad,
                        "nonfinite": e.get("nan_mismatches", 0) + e.get("inf_mismatches", 0),
                        "growth": (ratio / prev) if prev else None})
            prev = ratio
        out.append(row)
    return out


def first_exceeding(profile: Sequence[Mapping[str, Any]]) -> int | None:
    return next((i for i, r in enumerate(profile) if r.get("exceeds")), None)


def jump_candidates(profile: Sequence[Mapping[str, Any]], after: int) -> list[int]:
    """Row indices past ``after`` where the error is beyond tolerance and jumps by ``JUMP``x
    or more (or turns non-finite) over the previous row: the largest jumps first."""
    found = []
    for i in range(after + 1, len(profile)):
        r = profile[i]
        if not r.get("exceeds"):
            continue
        g = r.get("growth")
        if (g is not None and g >= JUMP) or (r.get("nonfinite") and not profile[i - 1].get("nonfinite")):
            found.append((g if g is not None else float("inf"), i))
    return [i for _, i in sorted(found, reverse=True)[:JUMP_TESTS]]


def condense(profile: Sequence[Mapping[str, Any]], limit: int) -> list[tuple[int, Mapping[str, Any]] | None]:
    """At most ``limit`` rows (with ``None`` where rows were left out): the ends, the rows around
    the first one beyond tolerance and around the point, the jumps, evenly spaced rows between."""
    n = len(profile)
    if n <= limit:
        return list(enumerate(profile))
    keep = {0, 1, n - 2, n - 1}
    first = first_exceeding(profile)
    for centre in [first] + [i for i, r in enumerate(profile) if r.get("point")]:
        if centre is not None:
            keep |= {i for i in range(centre - 2, centre + 3) if 0 <= i < n}
    growths = sorted(((r.get("growth") or 0.0, i) for i, r in enumerate(profile)), reverse=True)
    keep |= {i for g, i in growths[:2] if g >= JUMP}
    spare = (limit - len(keep)) // 2  # each evenly spaced row may bring an "…" row with it
    if spare > 0:
        step = n / (spare + 1)
        keep |= {int(step * (j + 1)) for j in range(spare)}
    for i in sorted(keep):  # a gap of one row costs as much as its "…": show the row
        if i + 2 in keep and i + 1 not in keep:
            keep.add(i + 1)
    out: list[tuple[int, Mapping[str, Any]] | None] = []
    last = -1
    for i in sorted(keep):
        if i > last + 1:
            out.append(None)
        out.append((i, profile[i]))
        last = i
    if last < n - 1:
        out.append(None)
    return out


def cells(index: int, row: Mapping[str, Any]) -> list[str]:
    """Table cells of one row: #, node, op, tensor, max abs, max rel, x tolerance, outside, note."""
    if not row.get("compared"):
        return [str(index), row["node"], row["op_type"], row["tensor"], "-", "-", "-", "not compared", ""]
    note = []
    if row.get("point"):
        note.append("bisect's first diverging node")
    if row.get("growth") is not None and row["growth"] >= JUMP and row.get("exceeds"):
        note.append(f"jump x{row['growth']:.3g}")
    return [str(index), row["node"], row["op_type"], row["tensor"], f"{row['max_abs']:.3g}", f"{row['max_rel']:.3g}",
            f"{row.get('tol_ratio', 0.0):.3g}", f"{row['outside']}/{row['elements']}", "; ".join(note)]


COLUMNS = ["#", "node", "op", "tensor", "max abs err", "max rel err", "x tol", "outside tol", "note"]


def markdown(profile: Sequence[Mapping[str, Any]], limit: int = 30) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    first = first_exceeding(profile)
    for item in condense(profile, limit):
        if item is None:
            lines.append("| … |" + " |" * (len(COLUMNS) - 1))
            continue
        i, r = item
        c = cells(i, r)
        if i == first:
            c[-1] = "; ".join(x for x in ("**first beyond tolerance**", c[-1]) if x)
        lines.append("| " + " | ".join(x.replace("|", "\\|") for x in c) + " |")
    return "\n".join(lines)
