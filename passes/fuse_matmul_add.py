"""``fuse-matmul-add``: ``Add(MatMul(A, B), C)`` with 2-D ``A`` and ``B`` becomes ``Gemm(A, B, C)``.

Exporters write a fully connected layer on a flattened input as MatMul + Add (paddle2onnx
always does; PyTorch does when the weight is shared or transposed elsewhere). Gemm is
one node instead of two, is what TensorRT and ONNX Runtime map a dense layer to, and
keeps the bias inside the layer a debug report names.

Only where it is the same function: ``A`` and ``B`` have rank 2 (Gemm's inputs must; a
batched MatMul would need Reshapes around it and would add nodes, so it is never
matched: the pass only ever turns two nodes into one), the element type is
float16/float/double, the MatMul's output is read by the Add alone (and is no graph
output), and ``C`` is a constant whose broadcast against ``[M, N]`` keeps that shape (a
``[N]`` or ``[1, N]`` bias, a scalar, or ``[M, N]`` with a static ``M``): Gemm broadcasts
``C`` one way only. Opset 7 or later (earlier Gemm had a ``broadcast`` attribute).
Summation order differs from MatMul-then-Add by rounding only. Ranks come from onnx
shape inference (the types are put on the graph for the pass and taken away after); a
MatMul whose input rank is unknown is left alone.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from surgeon import graph as G
from surgeon import graph_ops as K
from surgeon.pipeline.registry import register
from surgeon.rewrite import Match, RulePass, Node, Rule, RuleContext, fail, ok

PASS_NAME = "fuse-matmul-add"
_FLOATS = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))


class MatMulAddToGemm(Rule):
    name = "matmul-add-to-gemm"
    pattern = Node("Add", Node("MatMul", "a", "b", bind="matmul"), "c", bind="add")

    def match(self, node: gs.Node, scope: K.Scope) -> Match | None:
        """Only a MatMul of two rank-2 inputs read by this Add alone: then the fusion removes a node."""
        m = super().match(node, scope)
        if m is None:
            return None
        t = m["matmul"].outputs[0]
        if len(t.outputs) != 1 or scope.escapes(t) or m["c"] is t or len(m["matmul"].outputs) != 1:
            return None
        if any(K.shape_of(x) is None or len(K.shape_of(x)) != 2 for x in (m["a"], m["b"])):
            return None
        return m

    def check(self, m: Match, ctx: RuleContext):
        what = f"MatMul {m['matmul'].name} + Add {m['add'].name} not fused"
        dtypes = {ctx.dtype(x) for x in (m["a"], m["b"])}
        if len(dtypes) != 1 or next(iter(dtypes)) not in _FLOATS:
            return fail(f"{what}: element type is not float16/float/double")
        value = K.constant(m["c"], K.SMALL)
        if value is None:
            return fail(f"{what}: the bias {m['c'].name} is not a constant")
        out_shape = [K.shape_of(m["a"])[0], K.shape_of(m["b"])[1]]
        if not K.broadcast_keeps_shape(out_shape, value.shape):
            return fail(f"{what}: bias shape {list(value.shape)} does not broadcast one way to {out_shape}")
        return ok()

    def rewrite(self, m: Match, b) -> list[gs.Tensor]:
        name = m["matmul"].name or m["add"].name or None
        return [b.op("Gemm", [m["a"], m["b"], m["c"]], {"alpha": 1.0, "beta": 1.0}, name=name)]

    def note(self, node, reason: str) -> str:
        return reason


RULES = [MatMulAddToGemm()]


@register
class FuseMatmulAdd(RulePass):
    """A dense layer written as MatMul + Add becomes one Gemm (rank-2 operands only)."""

    name = PASS_NAME
    summary = "Fuse MatMul + Add of a constant bias into Gemm where both MatMul inputs are 2-D."
    default_order = 65

    rules, needs_types, sweeps = tuple(RULES), True, 1  # "both inputs are 2-D" is proven from shapes

    def applies(self, model: G.Model) -> bool:
        # Gemm's unidirectional bias broadcasting starts at opset 7
        return (model.opset("") or 1) >= 7 and any(n.op == "MatMul" and K.is_default_domain(n)
                                                   for n in G.walk_nodes(model.graph))
