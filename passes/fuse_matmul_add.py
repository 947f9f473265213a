"""``fuse-matmul-add``: ``Add(MatMul(A, B), C)`` with 2-D ``A`` and ``B`` becomes ``Gemm(A, B, C)``.

Exporters write a fully connected layer on a flattened input as MatMul + Add (paddle2onnx
always does; PyTorch does when the weight is shared or transposed elsewhere). Gemm is
one node instead of two, is what TensorRT and ONNX Runtime map a dense layer to, and
keeps the bias inside the layer a debug report names.

Only where it is the same function: ``A`` and ``B`` have rank 2 (Gemm's inputs must; a
batched MatMul would need Reshapes around it and would add nodes), the element type is
float16/float/double, the MatMul's output is read by the Add alone (and is no graph
output), and ``C`` is a constant whose broadcast against ``[M, N]`` keeps that shape (a
``[N]`` or ``[1, N]`` bias, a scalar, or ``[M, N]`` with a static ``M``): Gemm broadcasts
``C`` one way only. Opset 7 or later (earlier Gemm had a ``broadcast`` attribute).
Summation order differs from MatMul-then-Add by rounding only. Ranks come from the
shapes fold-constants inferred (it runs earlier in the default pipeline); a MatMul whose
input rank is unknown is left alone.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_graphsurgeon as gs

from surgeon import graph_ops as K
from surgeon import graph as G
from surgeon.pipeline.base import GraphPass, PassContext, PassLog
from surgeon.pipeline.registry import register

logger = logging.getLogger(__name__)

PASS_NAME = "fuse-matmul-add"
_FLOATS = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))


def _rank2(t: gs.Tensor) -> bool:
    shape = K.shape_of(t)
    return shape is not None and len(shape) == 2


def _check(matmul: gs.Node, scope: K.Scope) -> tuple[gs.Node, gs.Tensor] | str | None:
    """(the Add, the bias C) when the pair fuses, a refusal note, or None (no match). Pure."""
    if len(matmul.inputs) != 2 or len(matmul.outputs) != 1:
        return None
    t = matmul.outputs[0]
    readers = list(t.outputs)
    if len(readers) != 1 or readers[0].op != "Add" or not K.is_default_domain(readers[0]) or len(readers[0].inputs) != 2:
        return None
    add = readers[0]
    if id(t) in scope.outputs or id(t) in scope.nested_outputs:
        return None
    if readers[0].inputs[0] is t and readers[0].inputs[1] is t:
        return None
    c = add.inputs[1] if add.inputs[0] is t else add.inputs[0]
    a, b = matmul.inputs
    if not (_rank2(a) and _rank2(b)):
        return None
    dtypes = {np.dtype(x.dtype) if x.dtype is not None and not isinstance(x.dtype, int) else None for x in (a, b)}
    if len(dtypes) != 1 or next(iter(dtypes)) not in _FLOATS:
        return f"MatMul {matmul.name} + Add {add.name} not fused: element type is not float16/float/double"
    value = K.constant(c, K.SMALL)
    if value is None:
        return f"MatMul {matmul.name} + Add {add.name} not fused: the bias {c.name} is not a constant"
    out_shape = [K.shape_of(a)[0], K.shape_of(b)[1]]
    if not K.broadcast_keeps_shape(out_shape, value.shape):
        return (f"MatMul {matmul.name} + Add {add.name} not fused: bias shape {list(value.shape)} "
                f"does not broadcast one way to {out_shape}")
    return add, c


def fuse(graph: gs.Graph, ctx: PassContext, log: PassLog) -> bool:
    candidates = [n for n in graph.nodes if n.op == "MatMul" and K.is_default_domain(n)]
    if not candidates:
        return False
    scope = K.Scope(graph)
    changed = False
    new_nodes: dict[int, gs.Node] = {}  # id(Add) -> Gemm taking its place
    for matmul in candidates:
        found = _check(matmul, scope)
        if found is None:
            continue
        if isinstance(found, str):
            log.note(found)
            continue
        add, c = found
        if not ctx.permit("matmul-add-to-gemm", matmul):
            continue
        a, b = matmul.inputs
        y = add.outputs[0]
        name = matmul.name or add.name or y.name
        K.detach(scope, matmul)
        K.detach(scope, add)
        gemm = gs.Node("Gemm", name=name, inputs=[a, b, c], outputs=[y], attrs={"alpha": 1.0, "beta": 1.0})
        G.stamp(gemm, PASS_NAME, "matmul-add-to-gemm", [matmul.name, add.name])
        new_nodes[id(add)] = gemm
        log.count("matmul-add-to-gemm")
        changed = True
    if changed:
        # Each Gemm takes its Add's place: it comes after both of its producers.
        graph.nodes = [new_nodes.get(id(n), n) for n in graph.nodes if id(n) not in scope.removed or id(n) in new_nodes]
        scope.removed = set()
    return changed


@register
class FuseMatmulAdd(GraphPass):
    name = PASS_NAME
    summary = "Fuse MatMul + Add of a constant bias into Gemm where both MatMul inputs are 2-D."
    default_order = 65
    candidate_ops = frozenset({"MatMul"})

    def run(self, model: G.Model, ctx: PassContext, log: PassLog) -> bool:
        if (model.opset("") or 1) < 7:
            return False  # Gemm's unidirectional bias broadcasting starts at opset 7
        if not any(n.op in self.candidate_ops for n in G.walk_nodes(model.graph)):
            return False
        with G.inferred_types(model):  # "both inputs are 2-D" is proven from shapes
            return super().run(model, ctx, log)

    def run_on_graph(self, graph: gs.Graph, ctx: PassContext, log: PassLog) -> bool:
        return fuse(graph, ctx, log)
