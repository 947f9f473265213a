"""The Llama-style decoder the memory benchmark mirrors, exported with the torch exporter.

Why a template: an 8 GB model cannot be exported on a 23 GB machine (the exporter holds
several copies of the weights), and a hand-built graph would not look like what users
get. So this script exports a *real* torch model with the real layer sizes but only two
layers, and keeps its graph without the weights (``bench/templates/llama_gqa_2l.onnx``,
a few hundred kB); ``bench/make_memory_models.py llama`` then repeats the second layer's
nodes as many times as asked and writes random fp16 weights layer by layer. Every node of
the benchmark model is a node the exporter wrote.

The module is written like Hugging Face's Llama code as users export it with a legacy
(tuple) KV cache, as optimum does: RMSNorm computed in float32, rotary embeddings from
``cos_cached``/``sin_cached`` buffers indexed by ``position_ids``, grouped-query attention
(``repeat_kv``), the causal mask built from ``attention_mask`` and the past length, a
SwiGLU MLP, and per-layer ``past_key``/``past_value`` inputs and ``present_*`` outputs. The rotary caches are
computed again by the generator with numpy, within one float16 step of torch's values.
Exported with ``dynamo=False`` (the TorchScript exporter, opset 17, constant folding on):
its Shape→Gather→Unsqueeze→Concat chains are the shape debris issue 20 names.

    python bench/llama_template.py [--out bench/templates/llama_gqa_2l.onnx] [--tiny]

Needs torch (``pip install torch==2.13.0`` here: a CPU wheel from local disk). ``--tiny``
exports small sizes (for looking at the graph). About 5 GB of memory at the real sizes.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE / "templates" / "llama_gqa_2l.onnx"

# Llama-3-8B-like sizes (grouped-query attention: 32 query heads, 8 key/value heads).
REAL = dict(vocab=32000, hidden=4096, heads=32, kv_heads=8, intermediate=14336, max_pos=4096, layers=2)
TINY = dict(vocab=128, hidden=64, heads=4, kv_heads=2, intermediate=128, max_pos=64, layers=2)


def build(cfg: dict):
    import torch
    from torch import nn

    hidden, heads, kv_heads = cfg["hidden"], cfg["heads"], cfg["kv_heads"]
    head_dim = hidden // heads

    class RMSNorm(nn.Module):
        def __init__(self, eps: float = 1e-5):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(hidden))
            self.eps = eps

        def forward(self, x):
            dtype = x.dtype
            x = x.to(torch.float32)
            variance = x.pow(2).mean(-1, keepdim=True)
            x = x * torch.rsqrt(variance + self.eps)
            return self.weight * x.to(dtype)

    class Rotary(nn.Module):
        def __init__(self, base: float = 10000.0):
            super().__init__()
            inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2).float() / head_dim))
            t = torch.arange(cfg["max_pos"]).float()
            emb = torch.cat((torch.outer(t, inv_freq),) * 2, dim=-1)
            self.register_buffer("cos_cached", emb.cos(), persistent=False)
            self.register_buffer("sin_cached", emb.sin(), persistent=False)

        def forward(self, x, seq_len):
            return self.cos_cached[:seq_len].to(x.dtype), self.sin_cached[:seq_len].to(x.dtype)

    def rotate_half(x):
        x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
        return torch.cat((-x2, x1), dim=-1)

    def repeat_kv(x, n_rep: int):
        b, h, s, d = x.shape
        return x[:, :, None, :, :].expand(b, h, n_rep, s, d).reshape(b, h * n_rep, s, d)

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.q_proj = nn.Linear(hidden, heads * head_dim, bias=False)
            self.k_proj = nn.Linear(hidden, kv_heads * head_dim, bias=False)
            self.v_proj = nn.Linear(hidden, kv_heads * head_dim, bias=False)
            self.o_proj = nn.Linear(heads * head_dim, hidden, bias=False)
            self.rotary_emb = Rotary()

        def forward(self, h, mask, position_ids, past_k, past_v):
            bsz, q_len, _ = h.size()
            q = self.q_proj(h).view(bsz, q_len, heads, head_dim).transpose(1, 2)
            k = self.k_proj(h).view(bsz, q_len, kv_heads, head_dim).transpose(1, 2)
            v = self.v_proj(h).view(bsz, q_len, kv_heads, head_dim).transpose(1, 2)
            kv_seq_len = k.shape[-2] + past_k.shape[-2]
            cos, sin = self.rotary_emb(v, seq_len=kv_seq_len)
            cos, sin = cos[position_ids].unsqueeze(1), sin[position_ids].unsqueeze(1)
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
            k = torch.cat([past_k, k], dim=2)
            v = torch.cat([past_v, v], dim=2)
            present = (k, v)
            k, v = repeat_kv(k, heads // kv_heads), repeat_kv(v, heads // kv_heads)
            attn = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(head_dim)
            attn = attn + mask
            attn = nn.functional.softmax(attn, dim=-1, dtype=torch.float32).to(q.dtype)
            out = torch.matmul(attn, v).transpose(1, 2).contiguous().reshape(bsz, q_len, hidden)
            return self.o_proj(out), present

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.gate_proj = nn.Linear(hidden, cfg["intermediate"], bias=False)
            self.up_proj = nn.Linear(hidden, cfg["intermediate"], bias=False)
            self.down_proj = nn.Linear(cfg["intermediate"], hidden, bias=False)

        def forward(self, x):
            return self.down_proj(nn.functional.silu(self.gate_proj(x)) * self.up_proj(x))

    class Layer(nn.Module):
        def __init__(self):
            super().__init__()
            self.self_attn = Attention()
            self.mlp = MLP()
            self.input_layernorm = RMSNorm()
            self.post_attention_layernorm = RMSNorm()

        def forward(self, h, mask, position_ids, past_k, past_v):
            attn, present = self.self_attn(self.input_layernorm(h), mask, position_ids, past_k, past_v)
            h = h + attn
            h = h + self.mlp(self.post_attention_layernorm(h))
            return h, present

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed_tokens = nn.Embedding(cfg["vocab"], hidden)
            self.layers = nn.ModuleList(Layer() for _ in range(cfg["layers"]))
            self.norm = RMSNorm()

        def causal_mask(self, attention_mask, bsz, seq, past, dtype):
            """transformers' _prepare_4d_causal_attention_mask, written out."""
            low = torch.finfo(dtype).min
            mask = torch.full((seq, seq), low)
            cond = torch.arange(mask.size(-1))
            mask.masked_fill_(cond < (cond + 1).view(mask.size(-1), 1), 0)
            mask = mask.to(dtype)
            mask = torch.cat([torch.zeros(seq, past, dtype=dtype), mask], dim=-1)
            causal = mask[None, None, :, :].expand(bsz, 1, seq, seq + past)
            expanded = attention_mask[:, None, None, :].expand(bsz, 1, seq, seq + past).to(dtype)
            inverted = 1.0 - expanded
            padding = inverted.masked_fill(inverted.to(torch.bool), low)
            return causal.masked_fill(padding.to(torch.bool), low)

        def forward(self, input_ids, attention_mask, position_ids, past):
            bsz, seq = input_ids.shape
            h = self.embed_tokens(input_ids)
            mask = self.causal_mask(attention_mask, bsz, seq, past[0].shape[2], h.dtype)
            presents = []
            for i, layer in enumerate(self.layers):
                h, present = layer(h, mask, position_ids, past[2 * i], past[2 * i + 1])
                presents.extend(present)
            return (self.norm(h), *presents)

    class LM(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = Model()
            self.lm_head = nn.Linear(hidden, cfg["vocab"], bias=False)

        def forward(self, input_ids, attention_mask, position_ids, *past):
            h, *presents = self.model(input_ids, attention_mask, position_ids, past)
            return (self.lm_head(h), *presents)

    return LM(), head_dim


def export(cfg: dict, out: Path) -> None:
    import numpy as np
    import onnx
    import torch

    torch.manual_seed(0)
    model, head_dim = build(cfg)
    for name, p in model.named_parameters():  # trained-looking norms: the exporter would share identical ones
        if name.endswith("norm.weight"):
            p.data.uniform_(0.5, 1.5)
    model = model.half().eval()
    layers = cfg["layers"]
    bsz, seq, past_len = 1, 3, 5
    ids = torch.randint(0, cfg["vocab"], (bsz, seq))
    mask = torch.ones(bsz, past_len + seq, dtype=torch.int64)
    pos = torch.arange(past_len, past_len + seq).unsqueeze(0)
    past = [torch.zeros(bsz, cfg["kv_heads"], past_len, head_dim, dtype=torch.float16) for _ in range(2 * layers)]
    past_names = [f"past_key_values.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]
    present_names = [f"present.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]
    names_in = ["input_ids", "attention_mask", "position_ids", *past_names]
    names_out = ["logits", *present_names]
    axes = {"input_ids": {0: "batch_size", 1: "sequence_length"},
            "attention_mask": {0: "batch_size", 1: "total_sequence_length"},
            "position_ids": {0: "batch_size", 1: "sequence_length"},
            "logits": {0: "batch_size", 1: "sequence_length"}}
    axes.update({n: {0: "batch_size", 2: "past_sequence_length"} for n in past_names})
    axes.update({n: {0: "batch_size", 2: "total_sequence_length"} for n in present_names})
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = Path(tmp) / "model.onnx"
        torch.onnx.export(model, (ids, mask, pos, *past), str(raw), input_names=names_in, output_names=names_out,
                          dynamic_axes=axes, opset_version=17, dynamo=False, do_constant_folding=True)
        del model
        proto = onnx.load(str(raw), load_external_data=True)
    # The template keeps the graph and every small constant; weights become empty tensors
    # with their dims (the generator writes them), marked so it can tell them apart. The
    # rotary caches (Constant nodes after the exporter's folding) are marked too: the
    # generator computes them again with rotary_caches().
    for t in proto.graph.initializer:
        if np.prod(t.dims) * 2 >= 4096 and t.data_type == onnx.TensorProto.FLOAT16:
            _strip(t, "weight")
    cos, sin = rotary_caches(cfg["max_pos"], head_dim)
    for node in proto.graph.node:
        if node.op_type == "Constant" and node.attribute[0].HasField("t"):
            t = node.attribute[0].t
            value = onnx.numpy_helper.to_array(t)
            for kind, cache in (("cos", cos), ("sin", sin)):
                # numpy's float32 cos/sin and torch's differ in the last bit at a few thousand
                # large angles; the generator's values are within one float16 step of the export's
                if value.shape == cache.shape and np.abs(value.astype(np.float32) - cache).max() <= 2.0 ** -10:
                    _strip(t, f"rotary:{kind}")
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(out))
    print(f"{out}: {len(proto.graph.node)} nodes, {len(proto.graph.initializer)} initializers, "
          f"{out.stat().st_size} bytes")


def _strip(t, mark: str) -> None:
    t.ClearField("raw_data")
    t.ClearField("external_data")
    t.ClearField("data_location")
    t.doc_string = mark


def rotary_caches(max_pos: int, head_dim: int, base: float = 10000.0):
    """The fp16 ``cos_cached``/``sin_cached`` values of :class:`Rotary` (numpy, as torch computes them in float32)."""
    import numpy as np

    inv_freq = (1.0 / (base ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim))).astype(np.float32)
    t = np.arange(max_pos, dtype=np.float32)
    emb = np.concatenate([np.outer(t, inv_freq)] * 2, axis=-1).astype(np.float32)
    return np.cos(emb).astype(np.float16), np.sin(emb).astype(np.float16)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=TEMPLATE)
    ap.add_argument("--tiny", action="store_true", help="small sizes, to look at the graph")
    args = ap.parse_args()
    export(TINY if args.tiny else REAL, args.out)


if __name__ == "__main__":
    main()
