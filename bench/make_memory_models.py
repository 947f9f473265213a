"""The large models of the memory benchmark (bench/memory_vs_peers.py), written weight by weight.

No model here is ever whole in memory: each weight is generated and written to the
external data file on its own (the generator's peak is one weight), so they can be made
on the 23 GB machine the benchmark runs on, beside other work.

- ``llama``: a Llama-style decoder as the torch exporter writes it, with ``--layers``
  layers (default 19: 8.8 GB of fp16 weights, over 8 GiB). The graph is the one
  ``bench/llama_template.py`` exported from a real torch module (two layers at the real
  sizes: hidden 4096, 32 query / 8 key-value heads, MLP 14336, vocabulary 32000); its
  second layer's nodes are repeated for every further layer, renamed the way the exporter
  names them, reading the previous layer's output and its own ``past_key_values.{i}.*``.
  Weights are random (normal, std 0.02; norms in [0.5, 1.5]); the rotary caches are
  computed as the module computes them. Also writes ``<name>.inputs.npz``: two samples of
  token ids, masks (one with left padding), positions and a *filled* KV cache
  (``surgeon fix --load-inputs``, and the equivalence check of the benchmark).
- ``convbn``: ``--blocks`` (35) blocks of 4096-channel 1x1 Conv + BatchNormalization +
  Relu (2.2 GiB of float32 weights in one external data file), then the flatten an
  exporter writes for ``x.view(x.size(0), -1)``: Shape -> Gather -> Unsqueeze -> Concat ->
  Reshape, with a dynamic batch.
- ``image``: a U-Net-style segmentation network (working at half resolution after a
  stride-2 stem, like ISNet) with a fixed 1x3x1024x1024 input, exported
  by the torch exporter (Conv+BN fused as exporters do), its weights then stored as
  float16 with a Cast to float32 before each use, as in imgly's background-removal
  models. Needs torch.

    python bench/make_memory_models.py {llama,convbn,image} [--out /work/models/memory] [--layers N] [--blocks N]
"""

from __future__ import annotations

import argparse
import re
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

HERE = Path(__file__).resolve().parent
ALIGN = 4096


class DataWriter:
    """Appends tensors to one external data file and points their protos at it."""

    def __init__(self, path: Path):
        self.path = path
        self.file = open(path, "wb")
        self.offset = 0

    def add(self, tensor: TensorProto, write_blocks) -> None:
        """``write_blocks``: an iterator of arrays whose bytes, in order, are the tensor's data."""
        pad = (-self.offset) % ALIGN
        self.file.write(b"\0" * pad)
        self.offset += pad
        start = self.offset
        for block in write_blocks:
            data = np.ascontiguousarray(block).tobytes()
            self.file.write(data)
            self.offset += len(data)
        tensor.ClearField("raw_data")
        tensor.data_location = TensorProto.EXTERNAL
        del tensor.external_data[:]
        for key, value in (("location", self.path.name), ("offset", str(start)), ("length", str(self.offset - start))):
            tensor.external_data.add(key=key, value=value)

    def close(self) -> None:
        self.file.close()


def _blocks(rng, shape, dtype, scale: float, shift: float = 0.0, kind: str = "normal", block: int = 1 << 24):
    """Random values of ``shape`` in blocks of ``block`` elements (never the whole tensor at once)."""
    total = int(np.prod(shape))
    for start in range(0, total, block):
        n = min(block, total - start)
        if kind == "normal":
            values = rng.standard_normal(n, dtype=np.float32) * scale + shift
        else:
            values = rng.uniform(shift - scale, shift + scale, n).astype(np.float32)
        yield values.astype(dtype)


# --- llama -------------------------------------------------------------------------------

def _layer_of(name: str) -> int | None:
    m = re.match(r"/model/layers\.(\d+)/", name)
    return int(m.group(1)) if m else None


def _toposort(nodes: list, graph_inputs: set[str], initializers: set[str]) -> list:
    """Kahn's order, keeping the given order where it is already valid."""
    produced = {o for n in nodes for o in n.output}
    ready = set(graph_inputs) | set(initializers) | {""}
    waiting = list(nodes)
    out = []
    while waiting:
        rest = []
        for n in waiting:
            if all(i in ready or i not in produced for i in n.input):
                out.append(n)
                ready.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(waiting):
            raise RuntimeError("the replicated graph has a cycle")
        waiting = rest
    return out


def llama(out: Path, layers: int = 19, seed: int = 0) -> list[Path]:
    import sys

    sys.path.insert(0, str(HERE))
    from llama_template import TEMPLATE, rotary_caches

    if layers < 2:
        raise SystemExit("--layers must be at least 2")
    template = onnx.load(str(TEMPLATE))
    g = template.graph
    nodes = list(g.node)
    consumers: dict[str, list] = defaultdict(list)
    for n in nodes:
        for i in n.input:
            consumers[i].append(n)
    # Which layer each node belongs to: its scope name, or (anonymous Constants, the
    # exporter's onnx::X tensors) the one layer all its readers belong to.
    owner: dict[int, int | None] = {}
    for n in reversed(nodes):
        layer = _layer_of(n.name)
        if layer is None and not n.name.startswith("/"):
            readers = {owner.get(id(c), _layer_of(c.name)) for o in n.output for c in consumers[o]}
            layer = readers.pop() if len(readers) == 1 else None
        owner[id(n)] = layer
    block = [n for n in nodes if owner[id(n)] == 1]
    produced = {o for n in block for o in n.output}
    block_inits = [t for t in g.initializer if consumers[t.name] and all(owner[id(c)] == 1 for c in consumers[t.name])]
    # What layer 1 reads from layer 0 is its hidden state; the exporter's shared constants
    # (the rotary caches, folded once) stay shared by every layer.
    layer0_outputs = {o for n in nodes if owner[id(n)] == 0 and n.op_type != "Constant" for o in n.output}

    block_init_names = {t.name for t in block_inits}

    def renamer(i: int):
        def rename(name: str) -> str:
            m = re.fullmatch(r"(past_key_values|present)\.1\.(key|value)", name)
            if m:
                return f"{m.group(1)}.{i}.{m.group(2)}"
            if name in produced or name in block_init_names:
                if i == 1:
                    return name
                if "layers.1" in name:
                    return name.replace("/model/layers.1/", f"/model/layers.{i}/").replace("model.layers.1.",
                                                                                         f"model.layers.{i}.")
                return f"{name}__layer{i}"
            if name in layer0_outputs and i > 1:  # the previous layer's result
                twin = name.replace("/model/layers.0/", "/model/layers.1/")
                if twin not in produced:
                    raise RuntimeError(f"layer 1 reads '{name}' of layer 0 and has no '{twin}' of its own")
                return renamer(i - 1)(twin)
            return name
        return rename

    copies, new_inits = [], []
    for i in range(1, layers):
        rename = renamer(i)
        for n in block:
            c = onnx.NodeProto()
            c.CopyFrom(n)
            if n.name.startswith("/model/layers.1/"):
                c.name = n.name.replace("/model/layers.1/", f"/model/layers.{i}/")
            elif i > 1:
                c.name = f"{n.name}__layer{i}"
            c.input[:] = [rename(x) for x in n.input]
            c.output[:] = [rename(x) for x in n.output]
            copies.append(c)
        for t in block_inits:
            c = TensorProto()
            c.CopyFrom(t)
            c.name = rename(t.name)
            new_inits.append(c)
    last = renamer(layers - 1)
    rest = []
    for n in nodes:
        if owner[id(n)] == 1:
            continue
        c = onnx.NodeProto()
        c.CopyFrom(n)
        if owner[id(n)] is None:  # after the layers: read the last layer's result
            c.input[:] = [last(x) if x in produced else x for x in n.input]
        rest.append(c)
    inits = [t for t in g.initializer if t not in block_inits] + new_inits
    inputs, outputs = list(g.input), list(g.output)
    for kind, items, pattern in (("input", inputs, "past_key_values.1."), ("output", outputs, "present.1.")):
        template_vis = [vi for vi in items if vi.name.startswith(pattern)]
        for i in range(2, layers):
            for vi in template_vis:
                c = onnx.ValueInfoProto()
                c.CopyFrom(vi)
                c.name = vi.name.replace(pattern, pattern.replace(".1.", f".{i}."))
                items.append(c)
    ordered = _toposort(rest + copies, {vi.name for vi in inputs}, {t.name for t in inits})
    graph = helper.make_graph(ordered, g.name, inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=list(template.opset_import), ir_version=template.ir_version,
                              producer_name=template.producer_name, producer_version=template.producer_version)
    path = out / f"llama_gqa_{layers}l_fp16.onnx"
    data = out / (path.name + ".data")
    rng = np.random.default_rng(seed)
    writer = DataWriter(data)
    try:
        for t in model.graph.initializer:
            if t.doc_string != "weight":
                continue
            norm = t.name.endswith("norm.weight")
            writer.add(t, _blocks(rng, tuple(t.dims), np.float16, 0.5 if norm else 0.02, 1.0 if norm else 0.0,
                                  "uniform" if norm else "normal"))
            t.doc_string = ""
    finally:
        writer.close()
    head_dim = inputs[3].type.tensor_type.shape.dim[3].dim_value
    for n in model.graph.node:
        if n.op_type == "Constant" and n.attribute[0].t.doc_string.startswith("rotary:"):
            t = n.attribute[0].t
            cos, sin = rotary_caches(t.dims[0], head_dim)
            t.raw_data = (cos if t.doc_string == "rotary:cos" else sin).tobytes()
            t.doc_string = ""
    onnx.save(model, str(path))
    samples = llama_inputs(model, layers, head_dim, seed)
    np.savez(out / f"{path.stem}.inputs.npz", **samples)
    return [path, data, out / f"{path.stem}.inputs.npz"]


def llama_inputs(model: onnx.ModelProto, layers: int, head_dim: int, seed: int) -> dict[str, np.ndarray]:
    """Two samples with a filled KV cache: (batch 1, 4 new tokens, 12 cached) and (batch 2, 3 new, 7 cached,
    the second row left-padded by 2), in the ``sample<i>/NAME`` layout of surgeon's .npz files."""
    rng = np.random.default_rng(seed + 1)
    kv_heads = model.graph.input[3].type.tensor_type.shape.dim[1].dim_value
    vocab = next(t.dims[0] for t in model.graph.initializer if t.name == "model.embed_tokens.weight")
    out: dict[str, np.ndarray] = {}
    for s, (batch, seq, past) in enumerate(((1, 4, 12), (2, 3, 7))):
        mask = np.ones((batch, past + seq), np.int64)
        position = np.tile(np.arange(past, past + seq, dtype=np.int64), (batch, 1))
        if batch > 1:
            mask[1, :2] = 0
            position[1] -= 2
        feeds = {"input_ids": rng.integers(0, vocab, (batch, seq), dtype=np.int64), "attention_mask": mask,
                 "position_ids": position}
        for i in range(layers):
            for kv in ("key", "value"):
                feeds[f"past_key_values.{i}.{kv}"] = rng.standard_normal((batch, kv_heads, past, head_dim)).astype(
                    np.float16)
        out.update({f"sample{s}/{k}": v for k, v in feeds.items()})
    return out


# --- convbn ------------------------------------------------------------------------------

def convbn(out: Path, blocks: int = 35, channels: int = 4096, seed: int = 0) -> list[Path]:
    path = out / f"convbn_{blocks}x{channels}.onnx"
    data = out / (path.name + ".data")
    rng = np.random.default_rng(seed)
    writer = DataWriter(data)
    nodes, inits = [], []
    x = "input"
    try:
        for i in range(blocks):
            weight = TensorProto(name=f"conv{i}.weight", data_type=TensorProto.FLOAT, dims=[channels, channels, 1, 1])
            writer.add(weight, _blocks(rng, (channels, channels, 1, 1), np.float32, (2.0 / channels) ** 0.5))
            params = {"conv": rng.normal(0, 0.05, channels), "scale": rng.uniform(0.8, 1.2, channels),
                      "bias": rng.normal(0, 0.1, channels), "mean": rng.normal(0, 0.1, channels),
                      "var": rng.uniform(0.5, 1.5, channels)}
            small = {}
            for key, value in params.items():
                t = TensorProto(name=f"bn{i}.{key}" if key != "conv" else f"conv{i}.bias", data_type=TensorProto.FLOAT,
                                dims=[channels])
                writer.add(t, [value.astype(np.float32)])
                small[key] = t.name
                inits.append(t)
            inits.append(weight)
            nodes.append(helper.make_node("Conv", [x, weight.name, small["conv"]], [f"/block{i}/conv/Conv_output_0"],
                                          name=f"/block{i}/conv/Conv", kernel_shape=[1, 1]))
            nodes.append(helper.make_node("BatchNormalization", [f"/block{i}/conv/Conv_output_0", small["scale"],
                                                                 small["bias"], small["mean"], small["var"]],
                                          [f"/block{i}/bn/BatchNormalization_output_0"],
                                          name=f"/block{i}/bn/BatchNormalization", epsilon=1e-5))
            x = f"/block{i}/relu/Relu_output_0"
            nodes.append(helper.make_node("Relu", [f"/block{i}/bn/BatchNormalization_output_0"], [x],
                                          name=f"/block{i}/relu/Relu"))
    finally:
        writer.close()
    # x.view(x.size(0), -1), as the TorchScript exporter writes it for a dynamic batch
    nodes += [
        helper.make_node("Shape", [x], ["/Shape_output_0"], name="/Shape"),
        helper.make_node("Constant", [], ["/Constant_output_0"], name="/Constant",
                         value=helper.make_tensor("c0", TensorProto.INT64, [], [0])),
        helper.make_node("Gather", ["/Shape_output_0", "/Constant_output_0"], ["/Gather_output_0"], name="/Gather",
                         axis=0),
        helper.make_node("Constant", [], ["onnx::Unsqueeze_axes"], name="Constant_axes",
                         value=helper.make_tensor("c1", TensorProto.INT64, [1], [0])),
        helper.make_node("Unsqueeze", ["/Gather_output_0", "onnx::Unsqueeze_axes"], ["/Unsqueeze_output_0"],
                         name="/Unsqueeze"),
        helper.make_node("Constant", [], ["/Constant_1_output_0"], name="/Constant_1",
                         value=helper.make_tensor("c2", TensorProto.INT64, [1], [-1])),
        helper.make_node("Concat", ["/Unsqueeze_output_0", "/Constant_1_output_0"], ["/Concat_output_0"],
                         name="/Concat", axis=0),
        helper.make_node("Reshape", [x, "/Concat_output_0"], ["output"], name="/Reshape"),
    ]
    graph = helper.make_graph(nodes, "convbn", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                              ["batch", channels, 8, 8])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", channels * 64])],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8,
                              producer_name="pytorch", producer_version="2.13.0")
    onnx.save(model, str(path))
    return [path, data]


# --- image -------------------------------------------------------------------------------

def image(out: Path, size: int = 1024, seed: int = 0) -> list[Path]:
    """A U-Net (stem, 5 levels of 16..256 channels, bilinear upsampling) exported at a fixed size,
    its weights then stored as fp16 with a Cast each."""
    import tempfile
    import warnings

    import torch
    from torch import nn

    torch.manual_seed(seed)

    def block(cin, cout):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                             nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

    class UNet(nn.Module):
        """A stride-2 stem (the network works at half resolution, as ISNet does), five levels,
        bilinear upsampling to each skip's size, and a full-resolution refinement."""

        def __init__(self, widths=(16, 32, 64, 128, 256)):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, stride=2, padding=1), nn.BatchNorm2d(widths[0]),
                                      nn.ReLU(inplace=True))
            self.down = nn.ModuleList()
            cin = widths[0]
            for w in widths:
                self.down.append(block(cin, w))
                cin = w
            self.up = nn.ModuleList(block(widths[i + 1] + widths[i], widths[i]) for i in reversed(range(len(widths) - 1)))
            self.refine = nn.Sequential(nn.Conv2d(widths[0] + 3, 8, 3, padding=1), nn.ReLU(inplace=True))
            self.head = nn.Conv2d(8, 1, 1)

        def forward(self, image):
            x = self.stem(image)
            skips = []
            for i, stage in enumerate(self.down):
                x = stage(x if i == 0 else nn.functional.max_pool2d(x, 2))
                skips.append(x)
            for stage, skip in zip(self.up, reversed(skips[:-1])):
                x = nn.functional.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
                x = stage(torch.cat([x, skip], dim=1))
            x = nn.functional.interpolate(x, size=image.shape[-2:], mode="bilinear", align_corners=False)
            return torch.sigmoid(self.head(self.refine(torch.cat([x, image], dim=1))))

    net = UNet().eval()
    for m in net.modules():  # trained-looking statistics, so folding them changes the weights
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    path = out / f"unet_{size}_fp16w.onnx"
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = Path(tmp) / "unet.onnx"
        torch.onnx.export(net, (torch.rand(1, 3, size, size),), str(raw), input_names=["input"], output_names=["mask"],
                          opset_version=17, dynamo=False, do_constant_folding=True)
        model = onnx.load(str(raw))
    # float16 storage: each float weight becomes fp16, read through a Cast back to float32
    g = model.graph
    new_inits, casts = [], []
    for t in g.initializer:
        if t.data_type == TensorProto.FLOAT and np.prod(t.dims) >= 16:
            value = onnx.numpy_helper.to_array(t).astype(np.float16)
            half = onnx.numpy_helper.from_array(value, f"{t.name}_fp16")
            new_inits.append(half)
            casts.append(helper.make_node("Cast", [half.name], [t.name], name=f"{t.name}_cast", to=TensorProto.FLOAT))
        else:
            new_inits.append(t)
    del g.initializer[:]
    g.initializer.extend(new_inits)
    nodes = casts + list(g.node)
    del g.node[:]
    g.node.extend(nodes)
    onnx.save(model, str(path))
    return [path]


KINDS = {"llama": llama, "convbn": convbn, "image": image}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kind", choices=list(KINDS))
    ap.add_argument("--out", type=Path, default=Path("/work/models/memory"))
    ap.add_argument("--layers", type=int, default=19, help="llama: decoder layers (19: 8.8 GB)")
    ap.add_argument("--blocks", type=int, default=35, help="convbn: Conv+BN+Relu blocks (35: 2.2 GiB)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if args.kind == "llama":
        paths = llama(args.out, args.layers)
    elif args.kind == "convbn":
        paths = convbn(args.out, args.blocks)
    else:
        paths = image(args.out)
    size = sum(p.stat().st_size for p in paths) / 1e9
    print(f"{args.kind}: {', '.join(p.name for p in paths)} ({size:.2f} GB) in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
