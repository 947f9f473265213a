"""Symbolic shape values: small integer/float/bool vectors whose entries are expressions over dims.

Why symbolic: with a dynamic batch the value of ``Shape(x)`` is not a constant, but many of
its uses are still decidable. ``Reshape(x, Concat(Shape(x)[0:2], [-1]))`` is ``Reshape(x,
[0, 0, -1])`` for every batch size, because entry 0 is *the same* number as dim 0 of the
Reshape's own input. To prove such equalities each entry of a shape vector is kept as an
:class:`Expr`: a rational coefficient times a product of atoms, where an atom is one
dimension ("dim 2 of tensor X", or a trusted ``dim_param`` symbol) or an opaque
sub-expression that is only equal to itself. An :class:`SVal` is a rank-0 or rank-1 value
made of such entries; :mod:`surgeon.evaluators` computes them op by op.

The ground floor of the core: numbers and fractions only, no graph.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

MAX_ENTRIES = 64  # shape vectors are short; anything longer is data, not a shape

# ---------------------------------------------------------------------------------------
# Expressions


@dataclass(frozen=True)
class Expr:
    """``coef * prod(atom ** exp)``; a constant has no atoms.

    Atoms stand for non-negative integers (dimensions), which is what makes
    ``floor(k * d) == k * d`` for integer ``k`` and ``d >= 0 != -1`` provable.
    """

    coef: Fraction
    atoms: tuple = ()  # sorted tuple of (key, exponent)

    @staticmethod
    def const(value) -> "Expr":
        return Expr(Fraction(value))

    @staticmethod
    def atom(key) -> "Expr":
        return Expr(Fraction(1), ((key, 1),))

    @property
    def is_const(self) -> bool:
        return not self.atoms

    @property
    def is_int(self) -> bool:
        return self.coef.denominator == 1 and all(e > 0 for _, e in self.atoms)

    @property
    def nonneg(self) -> bool:
        return self.coef >= 0

    def key(self):
        return ("expr", self.coef, self.atoms)

    def __repr__(self) -> str:  # readable notes
        if self.is_const:
            return str(self.coef)
        parts = [] if self.coef == 1 else [str(self.coef)]
        for k, e in self.atoms:
            parts.append(_key_str(k) + (f"^{e}" if e != 1 else ""))
        return "*".join(parts)


def _key_str(key) -> str:
    if key[0] == "sym":
        return key[1]
    if key[0] == "dim":
        return f"{key[1]}[{key[2]}]"
    return f"{key[0]}(...)"


def _combine(a: tuple, b: tuple, sign: int) -> tuple:
    exps: dict = {}
    order: dict = {}
    for k, e in a:
        exps[k] = exps.get(k, 0) + e
        order[k] = repr(k)
    for k, e in b:
        exps[k] = exps.get(k, 0) + sign * e
        order[k] = repr(k)
    return tuple(sorted(((k, e) for k, e in exps.items() if e != 0), key=lambda ke: order[ke[0]]))


def mul(a: Expr, b: Expr) -> Expr:
    if a.coef == 0 or b.coef == 0:
        return Expr.const(0)
    return Expr(a.coef * b.coef, _combine(a.atoms, b.atoms, 1))


def truediv(a: Expr, b: Expr) -> Expr | None:
    if b.coef == 0:
        return None
    if a.coef == 0:
        return Expr.const(0)
    return Expr(a.coef / b.coef, _combine(a.atoms, b.atoms, -1))


def add(a: Expr, b: Expr, sign: int = 1) -> Expr:
    if b.coef == 0:
        return a
    if a.coef == 0 and sign == 1:
        return b
    if a.atoms == b.atoms:
        c = a.coef + sign * b.coef
        return Expr.const(0) if c == 0 else Expr(c, a.atoms)
    op = "add" if sign == 1 else "sub"
    pair = (a.key(), b.key())
    if op == "add":
        pair = tuple(sorted(pair, key=repr))
    return Expr.atom((op, pair))


def trunc(a: Expr) -> Expr:
    """Integer part (Floor, Cast float→int, integer Div) of a non-negative quantity."""
    if a.is_const:
        return Expr.const(int(a.coef))  # int() of a Fraction truncates toward zero, like ONNX
    if a.is_int:
        return a
    return Expr.atom(("floor", a.key()))


def floor(a: Expr) -> Expr:
    if a.is_const:
        return Expr.const(a.coef.numerator // a.coef.denominator)
    return trunc(a)


def ceil(a: Expr) -> Expr:
    if a.is_const:
        return Expr.const(-((-a.coef.numerator) // a.coef.denominator))
    if a.is_int:
        return a
    return Expr.atom(("ceil", a.key()))


# ---------------------------------------------------------------------------------------
# Values


@dataclass(frozen=True)
class SVal:
    """A small int/float/bool tensor of rank 0 or 1 whose entries are expressions."""

    entries: tuple
    scalar: bool
    kind: str  # "int" | "float" | "bool"

    @property
    def is_const(self) -> bool:
        return all(e.is_const for e in self.entries)

    def ints(self) -> list[int]:
        return [int(e.coef) for e in self.entries]


def kind_of(dtype) -> str | None:
    dt = np.dtype(dtype)
    if dt == np.bool_:
        return "bool"
    if np.issubdtype(dt, np.integer):
        return "int"
    if np.issubdtype(dt, np.floating):
        return "float"
    return None


def const_sval(array: np.ndarray) -> SVal | None:
    kind = kind_of(array.dtype)
    if kind is None or array.ndim > 1 or array.size > MAX_ENTRIES:
        return None
    if kind == "float":
        if not np.all(np.isfinite(array)):
            return None
        entries = tuple(Expr.const(Fraction(float(v))) for v in array.ravel())
    else:
        entries = tuple(Expr.const(int(v)) for v in array.ravel())
    return SVal(entries, array.ndim == 0, kind)



def is_dim_product(e: Expr) -> bool:
    """True when ``e`` is a product of dims/symbols (so provably >= 0)."""
    return all(k[0] in ("dim", "sym") and p > 0 for k, p in e.atoms)

