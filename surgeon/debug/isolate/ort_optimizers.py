"""Isolate adapter: which ONNX Runtime graph optimizer(s) make ORT diverge.

A choice is one optimizer name that ORT accepts in ``disabled_optimizers``: a graph
transformer (``ConstantFolding``, ``MatMulAddFusion``, ``GeluFusionL1`` ...) or a rewrite
rule inside the rule-based transformers (``ConvBNFusion``, ``EliminateIdentity`` ...).
A subset is *enabled*; everything else known is passed as ``disabled_optimizers``, at
optimization level "all". The oracle compares against a reference run (ORT with
optimizations off, or onnx's reference evaluator) within the user's tolerances.

ORT has no public list of optimizer names and they change between versions (1.20 has
``GeluFusion``, later versions ``GeluFusionL1``/``GeluFusionL2``), so the transformer
names come from ORT itself: a session created at verbose log level reports each
transformer it runs and whether it modified the graph. Rewrite rules are not logged one
by one; their names are taken from ORT's source (``graph_transformer_utils.cc``,
``GenerateRewriteRules``) and offered when their rule-based transformer modified the graph.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import onnx

from surgeon import model as model_io
from surgeon import backends
from surgeon.debug.isolate.ddmin import Subset, Verdict
from surgeon.debug.isolate.judge import judge
from surgeon.errors import BackendError, UsageError

log = logging.getLogger(__name__)

# Rewrite rules per rule-based transformer (ORT's GenerateRewriteRules, 1.17 .. 1.2x).
RULES_BY_TRANSFORMER: dict[str, tuple[str, ...]] = {
    "Level1_RuleBasedTransformer": (
        "EliminateIdentity", "EliminateSlice", "UnsqueezeElimination", "EliminateDropout", "ExpandElimination",
        "CastElimination", "CastChainElimination", "PreShapeNodeElimination", "NoopElimination", "DivMulFusion",
        "FuseReluClip", "GemmSumFusion", "GemmTransposeFusion", "NotWhereFusion", "ConvAddFusion", "ConvMulFusion",
        "ConvBNFusion", "PadFusion", "MatmulBNFusion", "LabelEncoderFusion",
    ),
    "Level2_RuleBasedTransformer": ("ClipQuantFusion", "ReluQuantFusion", "GemmTransposeFusion"),
}
KNOWN_RULES = tuple(dict.fromkeys(r for rules in RULES_BY_TRANSFORMER.values() for r in rules))

_MODIFIED = re.compile(r"GraphTransformer (\S+) modified: (\d) with status")


@dataclass(frozen=True)
class OptimizerInventory:
    """What ORT runs on this model: every transformer name seen, and those that changed it."""

    transformers: tuple[str, ...]
    fired: tuple[str, ...]  # transformers (rule-based ones included) that modified the graph

    @property
    def known(self) -> tuple[str, ...]:
        """Every name ORT accepts here: transformers plus rewrite rules."""
        return tuple(dict.fromkeys(self.transformers + KNOWN_RULES))

    def candidates(self) -> tuple[str, ...]:
        """Names worth searching: transformers that fired, and rules of rule-based ones that fired."""
        names: list[str] = []
        for t in self.fired:
            if t in RULES_BY_TRANSFORMER:
                names.extend(RULES_BY_TRANSFORMER[t])
            else:
                names.append(t)
        return tuple(dict.fromkeys(names))


def parse_transformer_log(text: str) -> OptimizerInventory:
    """Transformer names from ORT's verbose session log (``GraphTransformer X modified: 1 ...``)."""
    seen: dict[str, bool] = {}
    for name, modified in _MODIFIED.findall(text):
        seen[name] = seen.get(name, False) or modified == "1"
    return OptimizerInventory(tuple(seen), tuple(n for n, m in seen.items() if m))


def _capture_fd2(fn) -> str:
    """Run ``fn`` with the process-level stderr redirected to a temp file; return what it wrote.

    ORT's C++ logger writes to file descriptor 2 directly, below Python's sys.stderr.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            fn()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        return tmp.read().decode("utf-8", errors="replace")


def discover(model: onnx.ModelProto) -> OptimizerInventory:
    """Ask ORT which graph transformers it runs on ``model`` at level "all" and which fire."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 0
    so.intra_op_num_threads = 1

    def create():
        try:
            if model_io.needs_external_data(model):
                with model_io.materialized(model) as path:
                    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
            else:
                ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise BackendError(f"ONNX Runtime cannot load the model: {str(exc).splitlines()[0]}") from exc

    inventory = parse_transformer_log(_capture_fd2(create))
    log.info("ORT transformers: %d seen, fired: %s", len(inventory.transformers), ", ".join(inventory.fired))
    return inventory


def validate_names(names: Sequence[str], inventory: OptimizerInventory) -> None:
    """Every user-given optimizer name must be one ORT accepts here, else one clear sentence."""
    known = inventory.known
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise UsageError(f"'{name}' is not an ONNX Runtime optimizer name this version accepts{hint}")


class OrtOptimizersTarget:
    """Oracle over ORT optimizers: enabled subset → does ORT (level all) still match the reference?"""

    name = "onnxrt-optimizers"

    def __init__(
        self,
        model: onnx.ModelProto,
        samples: list[dict[str, Any]],
        *,
        reference: str = "onnxrt-noopt",
        optimizers: Sequence[str] | None = None,
        atol: float | Mapping[str, float] | None = None,
        rtol: float | Mapping[str, float] | None = None,
        nan_equal: bool = False,
        inventory: OptimizerInventory | None = None,
    ):
        if not samples:
            raise UsageError("isolate needs at least one input sample")
        self.model, self.samples = model, samples
        self.atol, self.rtol, self.nan_equal = atol, rtol, nan_equal
        self.inventory = inventory or discover(model)
        if optimizers:
            validate_names(optimizers, self.inventory)
            self.choices = list(dict.fromkeys(optimizers))
        else:
            self.choices = list(self.inventory.candidates())
        self.reference_name = reference
        ref_backend = backends.create(reference) if reference != "onnxrt-noopt" else backends.create(reference, threads=1)
        session = ref_backend.session(model)
        self.reference = [session.run(f) for f in samples]
        self.mechanism = f"ONNX Runtime disabled_optimizers, level all, against {ref_backend.describe()}"

    def disabled_for(self, subset: Subset) -> list[str]:
        enabled = {self.choices[i] for i in subset}
        return [n for n in self.inventory.known if n not in enabled]

    def __call__(self, subset: Subset) -> Verdict:
        backend = backends.create("onnxrt", optimization="all", disabled_optimizers=self.disabled_for(subset), threads=1)
        return judge(subset, lambda: backend.session(self.model), self.samples, self.reference, atol=self.atol,
                     rtol=self.rtol, nan_equal=self.nan_equal)

    def describe(self, index: int) -> dict[str, Any]:
        name = self.choices[index]
        kind = "rewrite rule" if name in KNOWN_RULES else "graph transformer"
        return {"optimizer": name, "kind": kind}

    def label(self, index: int) -> str:
        return self.choices[index]

    def write_avoid(self, culprits: Subset, art) -> tuple[str, str]:
        """``disabled_optimizers.txt``: one name a line, ready for ``disabled_optimizers=``."""
        names = [self.choices[i] for i in culprits]
        path = art.write_text("disabled_optimizers.txt", "\n".join(names) + "\n")
        return str(path), f"onnxruntime.InferenceSession(MODEL, disabled_optimizers={names!r})"
