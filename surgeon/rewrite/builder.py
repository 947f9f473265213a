"""How a rule's rewrite makes new nodes without touching the graph itself.

The builder only creates nodes and constants; it records them so the engine can insert
them in one place, stamp their provenance, declare new domains and, if the rewrite
fails half way, disconnect them again. Names are generated from the matched root node
and made unique against every name in the model, subgraphs included.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np
import onnx_graphsurgeon as gs

from surgeon import weights as W
from surgeon.graph_ops import meta, unique_name
from surgeon.rewrite.rule import Match, RuleContext


class Names:
    """Unique node and tensor names within one model (ONNX needs unique tensor names)."""

    def __init__(self, taken: "set[str] | Callable[[], set[str]]"):
        self._taken = taken  # or how to collect them: most sweeps need no new name at all

    @property
    def taken(self) -> set[str]:
        if callable(self._taken):
            self._taken = self._taken()
        return self._taken

    def fresh(self, base: str) -> str:
        return unique_name(base, self.taken)


class Builder:
    """Makes the replacement of one match. ``ctx`` gives opsets and types to the rewrite."""

    def __init__(self, match: Match, ctx: RuleContext, names: Names):
        self.match = match
        self.ctx = ctx
        self.names = names
        self.nodes: list[gs.Node] = []
        self.notes: list[str] = []  # what the report should say about this replacement
        self._free = {n.name for n in match.nodes if n.name}  # names of matched nodes: they go, a new node may take one
        base = match.root.name or (match.root.outputs[0].name if match.root.outputs else match.root.op)
        self._base = f"{base}/{match.rule}"

    @property
    def opset(self) -> int:
        return self.ctx.opset

    def op(
        self,
        op_type: str,
        inputs: Sequence[gs.Tensor | None],
        attrs: Mapping[str, Any] | None = None,
        *,
        domain: str = "",
        outputs: int = 1,
        name: str | None = None,
    ) -> gs.Variable | list[gs.Variable]:
        """Add a node; returns its output (or a list when ``outputs`` > 1).

        ``None`` in ``inputs`` is an omitted optional input.
        """
        node_name = self._node_name(name or f"{self._base}/{op_type}")
        outs = [gs.Variable(self.names.fresh(f"{node_name}_out{i}" if outputs > 1 else f"{node_name}_out"))
                for i in range(outputs)]
        ins = [gs.Variable.empty() if t is None else t for t in inputs]
        node = gs.Node(op_type, name=node_name, attrs=dict(attrs or {}), inputs=ins, outputs=outs,
                       domain=domain or None)
        self.nodes.append(node)
        return outs[0] if outputs == 1 else outs

    def const(self, value: Any, dtype: Any = None, name: str = "const") -> gs.Constant:
        """An initializer; ``dtype`` defaults to the array's own (pass the input's dtype)."""
        array = np.asarray(value, dtype=dtype)
        return gs.Constant(self.names.fresh(f"{self._base}/{name}"), array)

    def like(self, tensor: gs.Tensor, value: Any, name: str = "const") -> gs.Constant:
        """A constant with ``tensor``'s element type (the rule's check made sure it is known)."""
        dtype = self.ctx.dtype(tensor)
        if dtype is None:
            raise ValueError(f"the element type of '{tensor.name}' is unknown")
        return self.const(value, dtype, name)

    def named(self, base: str, value: Any, dtype: Any = None) -> gs.Constant:
        """An initializer named ``base`` (or ``base_1`` ...), for values that replace a named weight.

        A recipe (:class:`surgeon.weights.Derived`, a weight computed from others) stays one:
        it is computed when the model is written or run, never held beside its source."""
        if W.is_derived(value) and (dtype is None or np.dtype(dtype) == value.dtype):
            return gs.Constant(self.names.fresh(base), W.held(value))
        return gs.Constant(self.names.fresh(base), np.asarray(value, dtype=dtype))

    def copy_of(self, node: gs.Node, inputs: Sequence[gs.Tensor | None], attrs: Mapping[str, Any] | None = None,
                outputs: int | None = None) -> gs.Variable | list[gs.Variable]:
        """A node like the matched ``node`` (its op, domain, name, attributes and provenance) reading ``inputs``.

        ``node`` must be part of the match: it goes, so its name is free for the copy.
        """
        count = len(node.outputs) if outputs is None else outputs
        outs = [gs.Variable.empty() if i < len(node.outputs) and not node.outputs[i].name  # omitted stays omitted
                else gs.Variable(self.names.fresh(f"{node.name or self._base}_out{i}")) for i in range(count)]
        ins = [gs.Variable.empty() if t is None else t for t in inputs]
        copy = gs.Node(node.op, name=self._node_name(node.name) if node.name else "", attrs=dict(node.attrs if attrs is None else attrs), inputs=ins,
                       outputs=outs, domain=node.domain)
        meta(copy).update(meta(node))
        self.nodes.append(copy)
        return outs[0] if count == 1 else outs

    def _node_name(self, base: str) -> str:
        """``base`` itself when a matched node had that name (it goes with the match), else a fresh one."""
        if base in self._free:
            self._free.discard(base)
            return base
        return self.names.fresh(base)

    def note(self, message: str) -> None:
        """A line for the pass report (a shared weight cloned, say); kept only if the rewrite succeeds."""
        self.notes.append(message)

    def discard(self) -> None:
        """Disconnect everything made so far (the rewrite failed)."""
        for node in self.nodes:
            node.inputs.clear()
            node.outputs.clear()
        self.nodes.clear()
