"""Random valid ONNX graphs built from the patterns exporters emit (for differential tests).

A graph is a *plan*: an opset, an IR version, an input spec and a list of blocks
``(kind, seed)``. Each block draws from its own ``random.Random(seed)``, so removing a
block from a plan leaves every other block as it was: a failing plan shrinks by
deleting blocks (hypothesis does that on the list; ``bench/fuzz_fix.py`` by hand).

Blocks are what PyTorch, Paddle and tf2onnx exports are made of: shape chains
(``Shape→Gather→Unsqueeze→Concat→Reshape``), Conv/ConvTranspose + BatchNormalization and
per-channel Mul/Add, neutral ops and their near misses (an ``Add 0`` that broadcasts to a
larger shape is *not* neutral), If/Loop bodies reading outer-scope values, decomposed
LayerNorm, Resize by scales or by sizes computed from ``Shape``, fp16 paths between
Casts, initializer-backed inputs (an overridable default that looks neutral, or is part
of a reshape target), MatMul+Add, duplicates, dead nodes and constant subgraphs.

The builder tracks every tensor's shape (ints, or a symbol for a dynamic dim) so that
each block knows what it may do; ``Graph.sizes`` gives two runtime values per symbol.
"""

from __future__ import annotations

import random

import onnx
from onnx import helper

from exporter_blocks import BLOCKS, WEIGHTS
from graph_builder import F16, F32, I64, MIN_IR, SYMBOL_SIZES, Builder, Graph, T  # noqa: F401 - the generator's API

def build(plan: tuple) -> Graph:
    """``plan``: (opset, ir, input spec, ((block, seed), ...)); see :func:`random_plan`."""
    opset, ir, spec, blocks = plan
    b = Builder(opset, ir)
    dtype, shape = spec
    x = T("x", dtype, list(shape))
    b.inputs.insert(0, helper.make_tensor_value_info("x", dtype, shape))
    for kind, seed in blocks:
        b.rng = random.Random(seed)
        y = BLOCKS[kind](b, x)
        if y is not None:
            x = y
            if b.rng.random() < 0.1:
                b.output(x)  # an intermediate result that is also a graph output
    if x.name == "x" or b.rng.random() < 0.1:
        x = T(b.one("Identity", [x.name]), x.dtype, x.shape)
    b.output(x)
    graph = helper.make_graph(b.nodes, "fuzz", b.inputs, b.outputs, initializer=b.inits)
    imports = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, 1) for d in sorted(b.domains)]
    model = helper.make_model(graph, opset_imports=imports, ir_version=ir, producer_name="graphgen")
    if b.rng.random() < 0.3:  # exporters often store inferred shapes as value_info (under their own dim names)
        try:
            inferred = onnx.shape_inference.infer_shapes(model)
            model.graph.value_info.extend(inferred.graph.value_info)
        except Exception:  # noqa: BLE001 - the model is valid without them
            pass
    sizes = {s: SYMBOL_SIZES[s] for s in shape if isinstance(s, str)}
    return Graph(model, plan, dict(b.overrides), sizes)


def random_plan(rng: random.Random, max_blocks: int = 6) -> tuple:
    opset = rng.randint(11, 21)
    ir = rng.randint(max(7, MIN_IR[opset]), 10)
    dims = [rng.choice(["N", 1, 2]), rng.choice([1, 2, 3, 4]), rng.choice(["H", 4, 5, 6]), rng.choice(["W", 4, 6, 8])]
    if rng.random() < 0.2:
        dims = [rng.choice(["N", 2]), rng.choice([3, 5]), rng.choice([4, 6])]
    dtype = F16 if rng.random() < 0.1 else F32
    kinds = sorted(BLOCKS) + [k for k, weight in WEIGHTS.items() for _ in range(weight - 1)]
    blocks = tuple((rng.choice(kinds), rng.getrandbits(31)) for _ in range(rng.randint(1, max_blocks)))
    return (opset, ir, (dtype, tuple(dims)), blocks)
