"""The scan's report: findings and their severity (``will``/``could``), groups of alike
findings, chains of values beyond float16's range, and the order findings are shown in.
"""

from __future__ import annotations

from dataclasses import dataclass, field


WILL, COULD = "will", "could"

# consequence effects, most serious first (the ranking order)
EFFECT_RANK = {"nonfinite-outputs": 0, "outputs-differ": 1, "unchecked": 2, "absorbed": 3, "none": 4}


@dataclass
class Finding:
    # nan-inf | fp16-overflow | fp16-saturated | fp16-clamped | fp16-raised | fp16-near-max | fp16-underflow |
    # fp16-subnormal | scatter-duplicates | near-zero-division
    kind: str
    severity: str  # will | could
    node: str  # node name (or initializer name) first, always
    op_type: str
    tensor: str
    message: str
    pattern: str = ""  # grouping key beside kind: the op (and role) that repeats
    consequence: str = ""
    effect: str = "unchecked"  # key of EFFECT_RANK
    magnitude: float = 0.0  # for ranking within a group
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"node": self.node, "op_type": self.op_type, "severity": self.severity, "kind": self.kind,
                "tensor": self.tensor, "message": self.message, "consequence": self.consequence,
                "effect": self.effect, "pattern": self.pattern, **self.details}


@dataclass
class Group:
    """Findings of one severity, kind and op pattern."""

    severity: str
    kind: str
    pattern: str
    findings: list[Finding]

    @property
    def count(self) -> int:
        return len(self.findings)

    @property
    def worst(self) -> Finding:
        return self.findings[0]

    def where(self, limit: int = 3) -> str:
        if self.count == 1:
            return self.worst.node
        names = ", ".join(f.node for f in self.findings[:limit])
        return f"{self.count}× {self.pattern}: {names}" + (", …" if self.count > limit else "")

    def consequence(self) -> str:
        effects = {f.effect for f in self.findings}
        if len(effects) == 1 or self.count == 1:
            return self.worst.consequence
        counts = {e: sum(f.effect == e for f in self.findings) for e in sorted(effects, key=EFFECT_RANK.get)}
        return f"{self.worst.consequence}; " + ", ".join(f"{n} {e}" for e, n in counts.items())

    def to_dict(self) -> dict:
        return {"severity": self.severity, "kind": self.kind, "pattern": self.pattern, "count": self.count,
                "nodes": [f.node for f in self.findings], "worst": self.worst.message,
                "consequence": self.consequence()}


@dataclass
class Chain:
    """Connected nodes whose own float32 values are beyond float16's range, and who reads them.

    ``nodes``: in graph order, each ``{"node", "op_type", "tensor", "role", "max_abs"}`` with
    role ``starts`` (its inputs are within range), ``continues`` (fed by the chain) or
    ``reads`` (its own value is within range, but in FP16 it would read ±Inf; already-float32
    nodes say ``reads (float32)``). ``pin``: the nodes to keep in float32 so the chain's
    values are never float16 (the converted ones among them). ``harmless``: the FP16 run's
    outputs match without pinning it (None: not checked); ``why`` says how that was found.
    """

    nodes: list[dict]
    pin: list[str]
    harmless: bool | None = None
    why: str = ""

    @property
    def starts(self) -> list[str]:
        return [n["node"] for n in self.nodes if n["role"] == "starts"]

    def path(self) -> str:
        """``exp → add_one (→ log)``: the beyond-range nodes, then who reads them; a chain with
        several starts as ``24 starts (a, b, …) … 49 nodes … last``."""
        over = [n["node"] for n in self.nodes if n["role"] in ("starts", "continues")]
        readers = [n["node"] for n in self.nodes if n["role"].startswith("reads")]
        starts = self.starts
        if len(starts) > 1:
            text = (f"{len(starts)} starts ({', '.join(starts[:3])}{', …' if len(starts) > 3 else ''}), "
                    f"{len(over)} nodes beyond range, last {over[-1]}")
        else:
            text = " → ".join(over[:6]) + (f" → … ({len(over) - 6} more)" if len(over) > 6 else "")
        if readers:
            text += " (→ " + ", ".join(readers[:4]) + (", …" if len(readers) > 4 else "") + ")"
        return text

    def to_dict(self) -> dict:
        return {"starts": self.starts, "path": self.path(), "nodes": self.nodes, "pin": self.pin,
                "harmless": self.harmless, "why": self.why}


@dataclass
class ScanReport:
    findings: list[Finding]  # ranked: will first, then by consequence and magnitude
    tensors: int
    constants: int
    samples: int
    notes: list[str] = field(default_factory=list)
    fp16: dict = field(default_factory=dict)  # the emulated run: outputs vs reference, plan summary
    chains: list[Chain] = field(default_factory=list)  # values beyond float16's range, grouped
    pin: list[str] = field(default_factory=list)  # nodes to keep in float32: every chain that is not harmless
    pin_check: dict = field(default_factory=dict)  # the FP16 run with ``pin`` kept: does it match?

    @property
    def clean(self) -> bool:
        return not self.findings

    @property
    def will(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == WILL]

    @property
    def groups(self) -> list[Group]:
        out: dict[tuple[str, str, str], Group] = {}
        for f in self.findings:  # already ranked, so each group's first finding is its worst
            key = (f.severity, f.kind, f.pattern)
            if key not in out:
                out[key] = Group(f.severity, f.kind, f.pattern, [])
            out[key].findings.append(f)
        return list(out.values())

    def to_dict(self) -> dict:
        return {"clean": self.clean, "will": len(self.will), "could": len(self.findings) - len(self.will),
                "groups": [g.to_dict() for g in self.groups], "findings": [f.to_dict() for f in self.findings],
                "fp16": self.fp16, "tensors_inspected": self.tensors, "constants_inspected": self.constants,
                "samples": self.samples, "notes": self.notes, "fp16_range": {
                    "chains": [c.to_dict() for c in self.chains], "pin": self.pin, "pin_check": self.pin_check}}


def settle_could(findings: list[Finding], outputs_match: bool) -> None:
    """Activation-level "could" findings are cleared at once when the FP16 run matches the reference."""
    for f in findings:
        if f.kind in ("fp16-near-max", "fp16-underflow", "fp16-subnormal", "near-zero-division") and f.effect == "unchecked":
            if outputs_match:
                f.effect, f.consequence = "none", "none: the FP16 run's outputs match the reference"
            else:
                f.consequence = "not attributed: the FP16 run's outputs differ (see `surgeon bisect --test fp16`)"


def rank(findings: list[Finding]) -> list[Finding]:
    """Will before could; then the kind's worst consequence, then magnitude (groups keep this order)."""
    best: dict[tuple[str, str, str], tuple] = {}
    for f in findings:
        key = (f.severity, f.kind, f.pattern)
        mine = (EFFECT_RANK.get(f.effect, 2), -f.magnitude)
        best[key] = min(best.get(key, mine), mine)
    return sorted(findings, key=lambda f: (f.severity != WILL, best[(f.severity, f.kind, f.pattern)],
                                           (f.kind, f.pattern), EFFECT_RANK.get(f.effect, 2), -f.magnitude))
