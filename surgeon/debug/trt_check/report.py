"""What ``trt-check`` found: failures with remedies, the engine that answered, the profile used.

One report object for three channels: the terminal table (:func:`render`), the JSON
file (``to_dict``) and the exit code (``ready``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from surgeon import graph_ops as K


@dataclass
class Remedy:
    """What to do about one failure: ``kind`` is fix-pass / fix-opset / rule-pack / plugin-rule / dims / keep-on-ort /
    bisect / export.

    ``fix``: when the remedy is a ``surgeon fix`` command, what it runs (``passes``: a pass
    list or None for the default pipeline; ``target_opset``); ``command`` is then that
    command, and trt-check applies it in memory and checks the model again (``check``: the
    sentence saying what happened; ``verified``: the failure was gone afterwards).
    """

    kind: str
    text: str
    command: str = ""
    exists: bool = True  # False: names a pass or tool that does not exist yet
    verified: bool = False  # True: trt-check applied it in a working copy and the failure was gone
    fix: dict | None = None
    check: str = ""

    def to_dict(self) -> dict:
        out = {"kind": self.kind, "text": self.text, "exists": self.exists, "verified": self.verified}
        if self.command:
            out["command"] = self.command
        if self.fix is not None:
            out["fix"] = self.fix
        if self.check:
            out["check"] = self.check
        return out


@dataclass
class Failure:
    node: str  # the node's original name ('' when unnamed), or '' for a model-level failure
    working_name: str
    op: str
    domain: str
    path: str  # "main graph" or "If_0.then_branch > ..."
    phase: str
    code: str
    message: str
    func: str = ""
    parse_round: int = 0  # which parse found it (1 = the first, single parse)
    downstream_of_cut: bool = False
    target: str = ""  # build target (compute capability) for build failures
    remedy: Remedy | None = None

    @property
    def qualified_op(self) -> str:
        return self.op if K.is_default_domain(self) else f"{self.domain}::{self.op}"

    @property
    def label(self) -> str:
        if not self.working_name and not self.node:
            return "(model)"
        return self.node or f"(unnamed {self.op})"

    def to_dict(self) -> dict:
        return {"node": self.node, "working_name": self.working_name, "op": self.op, "domain": self.domain,
                "path": self.path, "phase": self.phase, "code": self.code, "message": self.message, "func": self.func,
                "parse_round": self.parse_round, "downstream_of_cut": self.downstream_of_cut, "target": self.target,
                "remedy": self.remedy.to_dict() if self.remedy else None}


@dataclass
class BuildTarget:
    target: str  # "default" or "sm86"
    ok: bool
    seconds: float
    engine_bytes: int = 0
    messages: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"target": self.target, "ok": self.ok, "seconds": round(self.seconds, 3), "engine_bytes": self.engine_bytes,
                "messages": self.messages}


@dataclass
class TrtCheckReport:
    model: str
    engine: dict[str, Any]  # name, version, mode ("executed" / "static"), what
    failures: list[Failure] = field(default_factory=list)
    parses: int = 0
    first_parse_failures: int = 0
    parse_ok: bool | None = None
    parse_seconds: float = 0.0
    build_attempted: bool = False
    build_skipped: str = ""
    builds: list[BuildTarget] = field(default_factory=list)
    profile: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ready(self) -> bool:
        return not self.failures and self.parse_ok is not False and all(b.ok for b in self.builds)

    @property
    def build_ok(self) -> bool | None:
        return all(b.ok for b in self.builds) if self.builds else None

    @property
    def verdict(self) -> str:
        return "ready" if self.ready else "not ready"

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "verdict": self.verdict,
            "ready": self.ready,
            "engine": self.engine,
            "parse": {"ok": self.parse_ok, "parses": self.parses, "first_parse_failures": self.first_parse_failures,
                      "seconds": round(self.parse_seconds, 4)},
            "build": {"attempted": self.build_attempted, "ok": self.build_ok, "skipped": self.build_skipped,
                      "targets": [b.to_dict() for b in self.builds]},
            "profile": self.profile,
            "failures": [f.to_dict() for f in self.failures],
            "notes": self.notes,
            "seconds": round(self.seconds, 3),
        }


def _short(text: str, n: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def engine_line(engine: dict[str, Any]) -> str:
    how = "executed" if engine.get("mode") == "executed" else "static data, nothing executed"
    return f"{engine.get('label', engine.get('name'))} {engine.get('version', '')} ({how}: {engine.get('what', '')})".replace("  ", " ")


def render(report: TrtCheckReport, console: Any) -> None:
    from surgeon.report import table

    if report.failures:
        rows = []
        for i, f in enumerate(report.failures, 1):
            where = f"\n in {f.path}" if f.path and f.path != "main graph" else ""
            flag = " (after a cut)" if f.downstream_of_cut else ""
            rows.append([str(i), f.label + where, f.qualified_op, f.phase + (f" {f.target}" if f.target else "") + flag,
                         f.code, _short(f.message, 220)])
        console.print(table(f"surgeon trt-check: {len(report.failures)} failure(s)", ["#", "node", "op", "phase", "code", "error"], rows))
        console.print("remedies:", markup=False)
        for i, f in enumerate(report.failures, 1):
            if not f.remedy:
                continue
            tags = ("" if f.remedy.exists else " [names a pass that does not exist yet]") + (" [checked on a working copy]" if f.remedy.verified else "")
            console.print(f"  {i}. {f.remedy.text}{tags}" + (f"\n     $ {f.remedy.command}" if f.remedy.command else "")
                          + (f"\n     {f.remedy.check}" if f.remedy.check else ""), markup=False)
    if report.profile.get("inputs"):
        prof_rows = [[name, "x".join(map(str, p["min"])), "x".join(map(str, p["opt"])), "x".join(map(str, p["max"]))]
                     for name, p in report.profile["inputs"].items()]
        console.print(table(f"profile ({report.profile.get('source', '')})", ["input", "min", "opt", "max"], prof_rows))
    for b in report.builds:
        console.print(f"build {b.target}: {'ok' if b.ok else 'FAILED'} in {b.seconds:.2f} s"
                      + (f", engine {b.engine_bytes} bytes" if b.ok and b.engine_bytes else ""), markup=False)
    if report.build_skipped:
        console.print(f"build: not run ({report.build_skipped})", markup=False)
    for note in report.notes:
        console.print(f"note: {note}", markup=False)
    console.print(f"engine: {engine_line(report.engine)}", markup=False)
    if report.ready:
        if report.builds:
            built = "parses and builds"
        elif report.engine.get("mode") == "executed":
            built = "parses (not built)"
        else:
            built = "passes the static checks (nothing executed)"
        console.print(f"[bold green]READY[/]: {report.model} {built} ({report.seconds:.2f} s)")
    else:
        extra = ""
        if report.parses > 1:
            extra = f"; {report.parses} parses found them (a single parse reports {report.first_parse_failures})"
        console.print(f"[bold red]NOT READY[/]: {len(report.failures)} failure(s){extra} ({report.seconds:.2f} s)")
