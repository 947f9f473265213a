"""Which ONNX nodes each ONNX Runtime kernel came from.

ONNX Runtime rewrites the graph when it loads it (constant folding, Conv+BN+activation
fusion, MatMul+Add → Gemm, NCHWc layout, Gelu/LayerNorm/attention fusions) and names
the new nodes its own way (``/fc/Gemm`` stays, ``/MatMulAddFusion``, ``..._nchwc``,
``fused /fc_pos/Gemm``, ``ReorderOutput``). Names alone cannot say which original nodes a
fused kernel replaced, so the mapping follows the data: the optimized graph (saved with
``SessionOptions.optimized_model_filepath``) is compared with the original by *tensor*
names, which ORT keeps for every tensor that still exists.

1. Tensors present in both graphs are anchors. Optimized nodes connected through
   tensors the original does not have (``reorder_token_3``) form one cluster: they run
   together in place of some original subgraph.
2. Each kernel's original nodes are found by walking the original graph backwards from
   the anchors it produces, through tensors the optimized graph no longer has, stopping
   at tensors it still has (produced elsewhere, a graph input, or a constant). Within a
   cluster the kernels claim nodes in graph order; a kernel's name also gives anchors
   where ORT derives it from an original one (``<tensor>_nchwc``, ``<node>/...Fusion/``).
   A kernel left with no node (``ReorderOutput``, a layout conversion) was added by ORT.
3. Original nodes no cluster reaches were removed at load (folded into a constant or
   eliminated); they are listed as such.

Kernels inside If/Loop/Scan bodies are matched by node name only.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

import onnx

from surgeon import graph_ops as K

_UNNAMED = re.compile(r"^(?P<op>[A-Za-z0-9_]+)_(?P<index>\d+)$")


def node_label(node: onnx.NodeProto, index: int) -> str:
    """ORT's name for a node: its name, or ``<op>_<index>`` when it has none."""
    return node.name or f"{node.op_type}_{index}"


@dataclass(frozen=True)
class Origin:
    nodes: tuple[str, ...]  # original ONNX node labels, in graph order
    op_types: tuple[str, ...]  # their op types, same order
    how: str  # "same", "fused", "rewritten", "by name", "unmapped"


@dataclass
class KernelOrigins:
    """Lookup of kernel name → Origin, plus the original nodes no kernel came from."""

    by_kernel: dict[str, Origin] = field(default_factory=dict)
    # ORT gives several fused nodes the same name (every "BiasGelu"); their origins in the
    # optimized graph's order, matched to the kernels in the order they first ran
    duplicates: dict[str, list[Origin]] = field(default_factory=dict)
    removed: list[tuple[str, str]] = field(default_factory=list)  # (label, op_type) removed at load
    by_name: dict[str, str] = field(default_factory=dict)  # any original node label (any depth) → op type
    unnamed: dict[int, tuple[str, str]] = field(default_factory=dict)  # top-level index → (op, first output)
    output_to_kernel: dict[str, str] = field(default_factory=dict)
    tensor_producer: dict[str, str] = field(default_factory=dict)  # any depth: tensor → node label

    def origin(self, kernel: str, op_type: str | None = None, node_index: int | None = None,
               occurrence: int = 0) -> Origin:
        """``occurrence``: among kernels sharing this name, the rank of this one's first run."""
        if kernel in self.duplicates:
            same = self.duplicates[kernel]
            if occurrence < len(same):
                return same[occurrence]
            return Origin((), (), "unmapped")
        if kernel in self.by_kernel:
            return self.by_kernel[kernel]
        m = _UNNAMED.match(kernel)
        if m and node_index is not None and node_index in self.unnamed:
            op, out = self.unnamed[node_index]
            owner = self.output_to_kernel.get(out)
            if op == m.group("op") and owner in self.by_kernel:
                return self.by_kernel[owner]
        # Kernels in If/Loop/Scan bodies (and any the dataflow did not cover) by name: the
        # node's own name, ORT's "fused <node>", or "<output tensor>_nchwc" (layout kernels)
        for candidate in (kernel, kernel.removeprefix("fused ")):
            if candidate in self.by_name:
                return Origin((candidate,), (self.by_name[candidate],), "by name")
        if kernel.endswith("_nchwc") and kernel[: -len("_nchwc")] in self.tensor_producer:
            node = self.tensor_producer[kernel[: -len("_nchwc")]]
            return Origin((node,), (self.by_name.get(node, "?"),), "by name")
        return Origin((), (), "unmapped")


def _labels(graph: onnx.GraphProto) -> list[str]:
    return [node_label(n, i) for i, n in enumerate(graph.node)]


def _tensors(graph: onnx.GraphProto) -> set[str]:
    names = {v.name for v in graph.input} | {t.name for t in graph.initializer}
    names |= {t.values.name for t in graph.sparse_initializer}
    for n in graph.node:
        names.update(o for o in n.output if o)
    return names


def _find(parent: dict[int, int], i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def _name_anchors(name: str, producer: dict[str, int], node_outputs: dict[str, list[str]]) -> list[str]:
    """Original tensors a fused kernel's name points at. ORT names a layout kernel
    ``<tensor>_nchwc`` and most fused nodes after the node they grew from
    (``<node>/MatMulScaleFusion/``, ``<node>/QuickGeluFusion/``, ``fused <node>``)."""
    name = name.removeprefix("fused ")
    if name.endswith("_nchwc") and name[: -len("_nchwc")] in producer:
        return [name[: -len("_nchwc")]]
    cuts = [i for i, ch in enumerate(name) if ch == "/" and i > 0] + [len(name)]
    for cut in reversed(cuts):
        if name[:cut] in node_outputs:
            return node_outputs[name[:cut]]
    return []


def _constant_nodes(g: onnx.GraphProto) -> set[int]:
    """Top-level nodes whose value does not depend on the graph inputs (ORT folds them)."""
    inputs = {v.name for v in g.input}
    known = {t.name for t in g.initializer if t.name not in inputs}
    const: set[int] = set()
    for i, n in enumerate(g.node):  # graph order is topological
        ins = [t for t in n.input if t]
        has_body = any(a.HasField("g") or len(a.graphs) for a in n.attribute)
        if n.op_type == "Constant" or (ins and not has_body and not n.op_type.startswith("Random")
                                       and all(t in known for t in ins)):
            const.add(i)
            known.update(o for o in n.output if o)
    return const


def map_kernels(original: onnx.ModelProto, optimized: onnx.ModelProto | None) -> KernelOrigins:
    """Kernel origins for a session whose optimized graph is ``optimized`` (None: no
    graph optimization, every kernel is an original node)."""
    g = original.graph
    labels = _labels(g)
    result = KernelOrigins()
    result.by_name = {}
    for i, n in enumerate(g.node):
        result.by_name[labels[i]] = n.op_type
    for n in K.walk_proto_nodes(g):
        if n.name and n.name not in result.by_name:
            result.by_name[n.name] = n.op_type
    for i, n in enumerate(g.node):
        for o in n.output:
            result.tensor_producer[o] = labels[i]
    for n in K.walk_proto_nodes(g):
        if n.name:
            for o in n.output:
                result.tensor_producer.setdefault(o, n.name)
    result.unnamed = {i: (n.op_type, n.output[0] if n.output else "") for i, n in enumerate(g.node) if not n.name}
    if optimized is None:
        for i, n in enumerate(g.node):
            result.by_kernel[labels[i]] = Origin((labels[i],), (n.op_type,), "same")
            for o in n.output:
                result.output_to_kernel[o] = labels[i]
        return result

    og = optimized.graph
    orig_tensors = _tensors(g)
    opt_tensors = _tensors(og)
    producer = {o: i for i, n in enumerate(g.node) for o in n.output if o}
    constant = _constant_nodes(g)
    node_outputs = {labels[i]: [o for o in n.output if o] for i, n in enumerate(g.node)}
    # Unnamed optimized nodes are original nodes ORT left alone; the trace names them by
    # their ORT node index, which a saved graph does not carry, so they are found through
    # their first output instead (see KernelOrigins.origin).
    opt_keys = [n.name or f"#out:{n.output[0] if n.output else i}" for i, n in enumerate(og.node)]

    # 1. clusters of optimized nodes joined through tensors the original does not have
    parent = {i: i for i in range(len(og.node))}
    opt_producer = {o: i for i, n in enumerate(og.node) for o in n.output if o}
    for j, n in enumerate(og.node):
        for t in n.input:
            if t and t not in orig_tensors and t in opt_producer:
                a, b = _find(parent, opt_producer[t]), _find(parent, j)
                if a != b:
                    parent[a] = b
    clusters: dict[int, list[int]] = {}
    for i in range(len(og.node)):
        clusters.setdefault(_find(parent, i), []).append(i)

    # 2. walk the original graph back from each kernel's anchors, kernels of a cluster in
    #    graph order, each claiming the nodes the earlier ones did not
    reached: set[int] = set()
    origins: dict[int, Origin] = {}
    for members in clusters.values():
        members.sort()
        produced = {o for i in members for o in og.node[i].output if o}

        def walk(anchors: list[str], claimed: set[int]) -> set[int]:
            found: set[int] = set()
            stack = [producer[t] for t in anchors]
            while stack:
                k = stack.pop()
                if k in found or k in claimed:
                    continue
                found.add(k)
                for t in g.node[k].input:
                    if not t or t not in producer:
                        continue  # graph input, initializer or optional input left empty
                    if t in opt_tensors and t not in produced:
                        continue  # still in the optimized graph: another kernel's output, or a constant
                    if producer[t] in constant:
                        continue  # folded into an initializer at load (ORT may rename it)
                    stack.append(producer[t])
            return found

        claimed: set[int] = set()
        own: dict[int, set[int]] = {}
        for i in members:
            n = og.node[i]
            anchors = [o for o in n.output if o in producer] + _name_anchors(n.name, producer, node_outputs)
            own[i] = walk(anchors, claimed)
            claimed |= own[i]
        rest = walk([t for t in produced if t in producer], set()) - claimed
        if rest:  # nodes between the kernels' anchors: to the last kernel that has any
            last = max((i for i in members if own[i]), default=members[-1])
            own[last] |= rest
        for i in members:
            n = og.node[i]
            ordered = sorted(own[i])
            reached.update(ordered)
            nodes = tuple(labels[k] for k in ordered)
            ops = tuple(g.node[k].op_type for k in ordered)
            kept = len(nodes) == 1 and (n.name == nodes[0] if n.name else not g.node[ordered[0]].name)
            if kept and ops == (n.op_type,):
                how = "same"
            elif len(nodes) > 1:
                how = "fused"
            elif nodes:
                how = "rewritten"
            else:
                how = "added by ONNX Runtime"
            origins[i] = Origin(nodes, ops, how)
    names = Counter(opt_keys)
    for i in range(len(og.node)):  # graph order, so that duplicates line up with execution order
        key = opt_keys[i]
        if names[key] > 1:
            result.duplicates.setdefault(key, []).append(origins[i])
        else:
            result.by_kernel[key] = origins[i]
        for o in og.node[i].output:
            result.output_to_kernel.setdefault(o, key)
    # 3. original nodes no kernel came from
    result.removed = [(labels[k], g.node[k].op_type) for k in range(len(g.node)) if k not in reached]
    return result
