"""Export the transformer and the detector the FP16 benchmark runs on (random weights, seeded).

``python bench/fp16_models.py [--out /work/models/fp16]`` writes:

- ``encoder_outliers_op14.onnx``: a 4-layer pre-LN transformer encoder (hidden 128, 4 heads,
  GELU MLP, classifier head) exported at opset 14, where PyTorch decomposes LayerNorm into
  ReduceMean / Sub / Pow / ReduceMean / Add / Sqrt / Div. Two embedding channels carry
  values around ±600, the "outlier features" trained transformers develop (BERT, OPT, T5):
  ``Pow(x - mean, 2)`` then reaches ~3.6e5, beyond float16's 65504, in every LayerNorm.
- ``detector_decode_op17.onnx``: a small conv backbone (Conv/BN/SiLU, stride 32) with a
  YOLO-style head and decode for a 640x640 image: boxes as xyxy in pixels
  ((sigmoid * 2 - 0.5 + grid) * stride, (sigmoid * 2)^2 * anchor), class scores, and the box
  area in square pixels (used to drop tiny boxes), which exceeds 65504 for large anchors.

Both are small (under 2 MB) and run in ONNX Runtime in well under a second.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def _encoder():
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, d: int, heads: int):
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
            self.fc1, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
            self.heads = heads

        def forward(self, x):
            b, t, d = x.shape
            q, k, v = self.qkv(self.ln1(x)).chunk(3, dim=-1)
            split = lambda z: z.reshape(b, t, self.heads, d // self.heads).transpose(1, 2)  # noqa: E731
            q, k, v = split(q), split(k), split(v)
            att = torch.softmax(q @ k.transpose(-1, -2) / (d // self.heads) ** 0.5, dim=-1)
            x = x + self.proj((att @ v).transpose(1, 2).reshape(b, t, d))
            return x + self.fc2(torch.nn.functional.gelu(self.fc1(self.ln2(x))))

    class Encoder(nn.Module):
        def __init__(self, vocab=1000, d=128, layers=4, heads=4, classes=10):
            super().__init__()
            self.emb = nn.Embedding(vocab, d)
            self.pos = nn.Parameter(torch.randn(1, 64, d) * 0.02)
            self.blocks = nn.ModuleList(Block(d, heads) for _ in range(layers))
            self.ln, self.head = nn.LayerNorm(d), nn.Linear(d, classes)
            with torch.no_grad():
                self.emb.weight[:, 7] = 600.0  # outlier channels (same sign: they survive the mean)
                self.emb.weight[:, 91] = -450.0

        def forward(self, tokens):
            x = self.emb(tokens) + self.pos[:, : tokens.shape[1]]
            for blk in self.blocks:
                x = blk(x)
            return self.head(self.ln(x)[:, 0])

    torch.manual_seed(0)
    return Encoder().eval(), (torch.randint(0, 1000, (2, 32)),), ["tokens"], ["logits"]


def _detector():
    import torch
    from torch import nn

    def cbs(cin, cout, s):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, s, 1, bias=False), nn.BatchNorm2d(cout), nn.SiLU())

    class Detector(nn.Module):
        def __init__(self, classes=4, anchors=((116, 90), (156, 198), (373, 326))):
            super().__init__()
            self.backbone = nn.Sequential(cbs(3, 8, 2), cbs(8, 16, 2), cbs(16, 32, 2), cbs(32, 32, 2), cbs(32, 64, 2))
            self.na, self.nc = len(anchors), classes
            self.head = nn.Conv2d(64, self.na * (5 + classes), 1)
            self.register_buffer("anchors", torch.tensor(anchors, dtype=torch.float32).view(1, self.na, 1, 1, 2))
            self.stride = 32.0
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.uniform_(-0.1, 0.1)
                    m.running_var.uniform_(0.5, 2.0)

        def forward(self, images):
            p = self.head(self.backbone(images))
            b, _, h, w = p.shape
            p = p.view(b, self.na, 5 + self.nc, h, w).permute(0, 1, 3, 4, 2)
            ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
            grid = torch.stack((xs, ys), -1).view(1, 1, h, w, 2)
            s = p.sigmoid()
            xy = (s[..., :2] * 2 - 0.5 + grid) * self.stride
            wh = (s[..., 2:4] * 2) ** 2 * self.anchors
            boxes = torch.cat((xy - wh / 2, xy + wh / 2), -1).reshape(b, -1, 4)
            area = (wh[..., 0] * wh[..., 1]).reshape(b, -1)
            scores = (s[..., 4:5] * s[..., 5:]).reshape(b, -1, self.nc)
            return boxes, scores, area

    torch.manual_seed(0)
    return Detector().eval(), (torch.rand(1, 3, 640, 640),), ["images"], ["boxes", "scores", "area"]


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/work/models/fp16")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, make, opset in (("encoder_outliers_op14", _encoder, 14), ("detector_decode_op17", _detector, 17)):
        model, inputs, in_names, out_names = make()
        path = out / f"{name}.onnx"
        torch.onnx.export(model, inputs, str(path), input_names=in_names, output_names=out_names, opset_version=opset,
                          dynamo=False)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
