"""A proof, without running anything, that two skeletons compute the same function.

Many rewrites only tidy a graph: they remove Identity and dead nodes, sort, rename, or
turn a Constant node into an initializer. Running ONNX Runtime to check them costs a
session and a run per sample on the whole model (seconds on a 500 MB model) and proves
less than this: each graph output is given a canonical digest built bottom-up from the
op, domain, number of outputs, attributes and the digests of its inputs, where an
Identity is its input, a constant is its content (a weight: its shared array), a graph
input is its name and names of intermediate values play no part. Equal digests for every output (in order)
mean the same computation; the digests of unreachable (dead) nodes are never computed.

Anything the digest does not capture makes the proof fail, and the pipeline falls back
to numeric verification: it is sound, not complete.
"""

from __future__ import annotations

import hashlib
from typing import Mapping

import numpy as np
import onnx

from surgeon import weights as W
from surgeon.graph_ops import proto_outer_reads

_STANDARD = ("", "ai.onnx")


class _Digests:
    def __init__(self, weights: Mapping[str, np.ndarray], by_value: frozenset[str] = frozenset()):
        self.weights = weights
        self.by_value = by_value  # stub keys digested by content (tensors the other side holds embedded)

    def constant(self, t: onnx.TensorProto) -> bytes:
        key = W.stub_key(t)
        if key is not None and key not in self.by_value:
            return _h(b"weight", str(id(self.weights[key])).encode())
        # By value: the same numbers in float_data or raw_data are the same constant.
        try:
            array = self.weights[key] if key is not None else onnx.numpy_helper.to_array(t)
        except Exception:  # noqa: BLE001 - a tensor numpy cannot hold: its serialized form, without the name
            clean = onnx.TensorProto()
            clean.CopyFrom(t)
            clean.ClearField("name")
            clean.ClearField("doc_string")
            return _h(b"const-proto", clean.SerializeToString(deterministic=True))
        content = repr(array.tolist()).encode() if array.dtype == object else np.ascontiguousarray(array).tobytes()
        return _h(b"const", str(t.data_type).encode(), repr(tuple(array.shape)).encode(), content)

    def graph(self, g: onnx.GraphProto, env: dict[str, bytes], root: bool) -> list[bytes]:
        """Digests of ``g``'s outputs; ``env`` holds the digests of enclosing-scope values."""
        env = dict(env)
        for i, vi in enumerate(g.input):
            env[vi.name] = _h(b"input", vi.name.encode() if root else str(i).encode())
        for t in g.initializer:
            # An initializer listed as an input is its name (a user may feed it) and its default.
            env[t.name] = _h(env[t.name], self.constant(t)) if t.name in env else self.constant(t)
        producer: dict[str, tuple[onnx.NodeProto, int]] = {}
        for node in g.node:
            for i, o in enumerate(node.output):
                if o:
                    producer[o] = (node, i)
        memo: dict[int, list[bytes]] = {}

        def value(name: str) -> bytes:
            if not name:
                return _h(b"absent")
            if name in env:
                return env[name]
            hit = producer.get(name)
            if hit is None:
                return _h(b"unknown", name.encode())
            node, index = hit
            return outputs_of(node)[index]

        def outputs_of(root_node: onnx.NodeProto) -> list[bytes]:
            # Iterative depth-first evaluation: deep graphs would overflow the recursion limit.
            stack = [root_node]
            while stack:
                node = stack[-1]
                if id(node) in memo:
                    stack.pop()
                    continue
                pending = [producer[x][0] for x in node.input
                           if x and x not in env and x in producer and id(producer[x][0]) not in memo]
                if pending:
                    stack.extend(pending)
                    continue
                stack.pop()
                memo[id(node)] = self.node(node, [value(x) for x in node.input], env, value)
            return memo[id(root_node)]

        return [value(o.name) for o in g.output]

    def node(self, node: onnx.NodeProto, inputs: list[bytes], env: dict[str, bytes], value) -> list[bytes]:
        domain = "" if node.domain == "ai.onnx" else node.domain
        if domain in _STANDARD and node.op_type == "Identity" and len(inputs) == 1 and len(node.output) == 1:
            return [inputs[0]]
        if domain in _STANDARD and node.op_type == "Constant" and len(node.attribute) == 1 \
                and node.attribute[0].name == "value":
            return [self.constant(node.attribute[0].t)]
        # How many outputs a node has can be part of what it computes (a Split without sizes
        # cuts its input into as many pieces as it has outputs); trailing absent ones are none.
        outputs = list(node.output)
        while outputs and not outputs[-1]:
            outputs.pop()
        parts = [domain.encode(), node.op_type.encode(), str(len(outputs)).encode(), *inputs]
        for attr in sorted(node.attribute, key=lambda a: a.name):
            parts.append(attr.name.encode())
            if attr.type == onnx.AttributeProto.GRAPH:
                parts.extend(self._body(attr.g, node, env, value))
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    parts.extend(self._body(sub, node, env, value))
            elif attr.type == onnx.AttributeProto.TENSOR:
                parts.append(self.constant(attr.t))
            elif attr.doc_string:
                clean = onnx.AttributeProto()
                clean.CopyFrom(attr)
                clean.ClearField("doc_string")
                parts.append(clean.SerializeToString(deterministic=True))
            else:
                parts.append(attr.SerializeToString(deterministic=True))
        base = _h(*parts)
        return [_h(base, str(i).encode()) for i in range(len(node.output))]

    def _body(self, body: onnx.GraphProto, node: onnx.NodeProto, env: dict[str, bytes], value) -> list[bytes]:
        outer = dict(env)
        for name in proto_outer_reads(body):
            outer[name] = value(name)
        return self.graph(body, outer, root=False)


def _h(*parts: bytes) -> bytes:
    digest = hashlib.blake2b(digest_size=16)
    for p in parts:
        digest.update(len(p).to_bytes(4, "little"))
        digest.update(p)
    return digest.digest()


def output_digests(model: onnx.ModelProto, weights: Mapping[str, np.ndarray],
                   by_value: frozenset[str] = frozenset()) -> tuple[bytes, ...]:
    """One digest for the opset imports and output names, then one per graph output.

    Opset imports take part: the same op under another opset may mean another thing.
    ``by_value``: keys of ``weights`` to digest by content, for tensors the other side
    holds embedded (a file read back; never needed between two exports).
    """
    opsets = sorted({("" if o.domain == "ai.onnx" else o.domain): o.version for o in model.opset_import}.items())
    head = _h(repr(opsets).encode(), *(o.name.encode() for o in model.graph.output))
    return (head, *_Digests(weights, by_value).graph(model.graph, {}, root=True))



def body_digests(body: onnx.GraphProto, weights: Mapping[str, np.ndarray]) -> tuple[bytes, ...]:
    """Digests of a control-flow body's outputs, each value it reads from enclosing scopes taken by name.

    Tells whether a pass changed what a branch computes (:mod:`surgeon.coverage`) while
    renames, Identity and dead nodes inside it leave the digests as they were.
    """
    env = {name: _h(b"outer", name.encode()) for name in proto_outer_reads(body)}
    return tuple(_Digests(weights).graph(body, env, root=False))
