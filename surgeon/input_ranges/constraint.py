"""What values an integer input may take (:class:`Constraint`), how the constraints of several
uses combine (:func:`intersect`), and how a constraint on a value derived from the input
(``seen = scale * x + offset``, a :class:`Path`) becomes one on the input (:func:`through`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np


@dataclass(frozen=True)
class Constraint:
    """What values an integer input may take, and which use of it said so.

    ``lo``/``hi`` is where generated values are drawn from, which can be narrower than
    what is valid (``valid_lo``/``valid_hi``): a Tile's repeats may be any count, but
    small ones keep samples small. ``exact``: the one value to feed (flattened), for
    shape-like uses. ``distinct``: every element different (axes lists). ``problem``: no
    valid value could be made, and why.
    """

    lo: int | None = None  # the range samples are drawn from
    hi: int | None = None
    distinct: bool = False
    exact: tuple[float, ...] | None = None
    why: tuple[str, ...] = ()
    problem: str | None = None
    valid_lo: int | None = None  # what the graph accepts at all (loaded data is checked against it)
    valid_hi: int | None = None
    mask: bool = False  # a 0/1 mask: samples hold both values, ones first on the last axis
    choices: tuple[int, ...] = ()  # values the graph tests for (Equal with a constant): samples take them

    def describe(self) -> str:
        if self.problem:
            return self.problem
        if self.exact is not None:
            return f"exactly {list(self.exact)} ({'; '.join(self.why)})"
        if self.mask:
            return f"a 0/1 mask ({'; '.join(self.why)})"
        if self.choices:
            return f"one of {list(self.choices)} ({'; '.join(self.why)})"
        what = "distinct values" if self.distinct else "values"
        return f"{what} in [{self.lo}, {self.hi}] ({'; '.join(self.why)})"


def intersect(a: Constraint, b: Constraint) -> Constraint:
    if a.problem or b.problem:
        return a if a.problem else b
    why = a.why + tuple(w for w in b.why if w not in a.why)
    lo = b.lo if a.lo is None else a.lo if b.lo is None else max(a.lo, b.lo)
    hi = b.hi if a.hi is None else a.hi if b.hi is None else min(a.hi, b.hi)
    exact = a.exact if a.exact is not None else b.exact
    if a.exact is not None and b.exact is not None and a.exact != b.exact:
        return Constraint(why=why, problem=f"two uses need different exact values ({'; '.join(why)})")
    if exact is not None:
        bad = [v for v in exact if (lo is not None and v < lo) or (hi is not None and v > hi)]
        if bad:
            return Constraint(why=why, problem=f"the value one use needs ({list(exact)}) is outside the range another "
                                               f"allows ([{lo}, {hi}]): {'; '.join(why)}")
    if lo is not None and hi is not None and lo > hi:
        return Constraint(why=why, problem=f"no integer satisfies every use ({'; '.join(why)})")
    vlo = b.valid_lo if a.valid_lo is None else a.valid_lo if b.valid_lo is None else max(a.valid_lo, b.valid_lo)
    vhi = b.valid_hi if a.valid_hi is None else a.valid_hi if b.valid_hi is None else min(a.valid_hi, b.valid_hi)
    choices = tuple(dict.fromkeys(a.choices + b.choices))
    choices = tuple(c for c in choices if (lo is None or c >= lo) and (hi is None or c <= hi))
    mask = (a.mask or b.mask) and (lo is None or lo <= 0) and (hi is None or hi >= 1)
    return Constraint(lo, hi, a.distinct or b.distinct, exact, why, None, vlo, vhi, mask, choices)


@dataclass(frozen=True)
class Path:
    """How the value at a use relates to the input: ``seen = scale * x + offset``.

    ``exact_ok``: the elements reach the use in order and unmixed (no Concat, Gather,
    Slice on the way), so an exact value for the use is an exact value for the input.
    ``sure``: every element reaches the use unchanged in range (not only a Gather'd or
    Slice'd part, not clamped by Max/Min), so what the use accepts bounds what a user may
    feed; otherwise the bounds only guide generation.
    """

    scale: int = 1
    offset: int = 0
    exact_ok: bool = True
    via: tuple[str, ...] = ()
    sure: bool = True


def through(c: Constraint, path: Path) -> Constraint:
    """A constraint on ``seen = scale * x + offset`` as one on x."""
    if c.problem or (path.scale == 1 and path.offset == 0 and path.exact_ok):
        if c.problem and path.via:
            return replace(c, problem=f"{c.problem} (reached through {', '.join(path.via)})")
        return c
    via = (f"through {', '.join(path.via)}",) if path.via else ()
    if c.exact is not None:
        if not path.exact_ok:
            return Constraint(problem=f"{c.why[0]} needs an exact value, and it reaches there through "
                                      f"{', '.join(path.via)}: a valid value cannot be inferred")
        xs = []
        for v in c.exact:
            x, rem = divmod(v - path.offset, path.scale)
            if rem:
                return Constraint(problem=f"{c.why[0]} needs {list(c.exact)}, which no integer input gives")
            xs.append(x)
        return Constraint(exact=tuple(xs), why=c.why + via)
    new_lo, new_hi = _map_bounds(c.lo, c.hi, path)
    valid_lo, valid_hi = _map_bounds(c.valid_lo, c.valid_hi, path)
    choices = tuple(x for x, rem in (divmod(v - path.offset, path.scale) for v in c.choices) if not rem)
    return Constraint(new_lo, new_hi, c.distinct and path.exact_ok, None, c.why + via, None, valid_lo, valid_hi,
                      choices=choices)


def _map_bounds(lo: int | None, hi: int | None, path: Path) -> tuple[int | None, int | None]:
    bounds = [None if b is None else (b - path.offset) / path.scale for b in (lo, hi)]
    if path.scale < 0:
        bounds.reverse()
    return (None if bounds[0] is None else int(np.ceil(bounds[0])),
            None if bounds[1] is None else int(np.floor(bounds[1])))
