"""Export the weight-heavy models issue 9's speed figures are measured on (not in the repo).

Random weights from transformers configs, exported with the torch exporter as users do:

- ``gpt2_6l_legacy_op14.onnx``: GPT-2 (the gpt2 config, ``n_layer=6``), legacy exporter,
  opset 14, weights embedded (~480 MB), dynamic batch and sequence;
- ``bert_base_legacy_op14.onnx``: a BERT-base-sized encoder (12 layers, hidden 768),
  legacy exporter, opset 14 (~420 MB);
- ``gpt2_wide_extdata_op14.onnx`` + ``.data``: a wider, deeper GPT-2 (hidden 2048,
  12 layers, ~2.4 GB of weights) saved with external data.

One model at a time (the machine is shared; the 2 GB export peaks at a few times its
weights). Writes into ``/work/models`` by default; existing files are kept unless
``--force``. Needs torch and transformers.

    python bench/make_large_exports.py [--out /work/models] [--only gpt2-6l bert-base gpt2-wide] [--force]
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
import warnings
from pathlib import Path


def _export_legacy(module, args, path: Path, names_in, names_out, axes) -> None:
    import torch

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), input_names=names_in, output_names=names_out,
                          dynamic_axes=axes, opset_version=14, dynamo=False, do_constant_folding=True)


def gpt2_6l(out: Path) -> list[Path]:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=6, attn_implementation="eager")).eval()
    model.config.use_cache = False

    class LM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lm = model

        def forward(self, input_ids, attention_mask):
            return self.lm(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits

    ids = torch.randint(0, 50257, (1, 8))
    path = out / "gpt2_6l_legacy_op14.onnx"
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
            "logits": {0: "batch", 1: "sequence"}}
    _export_legacy(LM().eval(), (ids, torch.ones_like(ids)), path, ["input_ids", "attention_mask"], ["logits"], axes)
    return [path]


def bert_base(out: Path) -> list[Path]:
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    model = BertModel(BertConfig(attn_implementation="eager")).eval()  # bert-base: 12 x 768, vocab 30522

    class Encoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bert = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            out = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
            return out.last_hidden_state, out.pooler_output

    ids = torch.randint(0, 30522, (1, 8))
    path = out / "bert_base_legacy_op14.onnx"
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes["last_hidden_state"] = {0: "batch", 1: "sequence"}
    axes["pooler_output"] = {0: "batch"}
    _export_legacy(Encoder().eval(), (ids, torch.ones_like(ids), torch.zeros_like(ids)), path, names,
                   ["last_hidden_state", "pooler_output"], axes)
    return [path]


def gpt2_wide(out: Path) -> list[Path]:
    """Over 2 GB: the exporter writes one file per tensor; onnx re-saves them as one data file."""
    import onnx
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=12, n_embd=2048, n_head=16, vocab_size=32000, attn_implementation="eager")
    model = GPT2LMHeadModel(cfg).eval()

    class LM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lm = model

        def forward(self, input_ids, attention_mask):
            return self.lm(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits

    ids = torch.randint(0, 32000, (1, 8))
    path = out / "gpt2_wide_extdata_op14.onnx"
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
            "logits": {0: "batch", 1: "sequence"}}
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        raw = Path(tmp) / "model.onnx"
        _export_legacy(LM().eval(), (ids, torch.ones_like(ids)), raw, ["input_ids", "attention_mask"], ["logits"], axes)
        del model
        gc.collect()
        proto = onnx.load(str(raw), load_external_data=True)
        onnx.save(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=path.name + ".data", size_threshold=1024)
    return [path, out / (path.name + ".data")]


KINDS = {"gpt2-6l": gpt2_6l, "bert-base": bert_base, "gpt2-wide": gpt2_wide}
TARGETS = {"gpt2-6l": "gpt2_6l_legacy_op14.onnx", "bert-base": "bert_base_legacy_op14.onnx",
           "gpt2-wide": "gpt2_wide_extdata_op14.onnx"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("/work/models"))
    ap.add_argument("--only", nargs="*", default=list(KINDS), choices=list(KINDS))
    ap.add_argument("--force", action="store_true", help="export again even if the file exists")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for kind in args.only:
        if (args.out / TARGETS[kind]).exists() and not args.force:
            print(f"{TARGETS[kind]}: exists, kept (--force to export again)")
            continue
        t0 = time.perf_counter()
        paths = KINDS[kind](args.out)
        gc.collect()
        size = sum(p.stat().st_size for p in paths) / 1e6
        print(f"{kind}: {', '.join(p.name for p in paths)} ({size:.0f} MB) in {time.perf_counter() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
