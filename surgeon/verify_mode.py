"""Whole-model comparisons or region checks: which one ``--verify auto`` chooses, and why.

Why a module of its own: the choice is made before anything runs, from onnx shape inference at
the samples' sizes (the bytes one run computes) and the memory available now, and the verifier
needs it whether or not any region is ever checked (:mod:`surgeon.verify_region` does those).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import onnx

from surgeon import weights as W
from surgeon.graph import Exported

def inferred_values(exported: Exported, sample: Mapping[str, Any]) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Name -> (static shape, dtype) of every value onnx shape inference can size on ``sample``
    (the model's inputs pinned to the sample's shapes). Values it cannot size are left out."""
    model = exported.for_checker()
    for vi in model.graph.input:
        value = sample.get(vi.name)
        if isinstance(value, np.ndarray) and vi.type.HasField("tensor_type"):
            dims = vi.type.tensor_type.shape
            dims.ClearField("dim")
            for d in value.shape:
                dims.dim.add().dim_value = int(d)
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception:  # noqa: BLE001 - no inference, nothing known without running
        return {}
    out = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output):
        tt = vi.type.tensor_type if vi.type.HasField("tensor_type") else None
        if tt is None or not tt.HasField("shape") or not tt.elem_type:
            continue
        if not all(d.HasField("dim_value") for d in tt.shape.dim):
            continue
        dtype = W.numpy_dtype(tt.elem_type)
        if dtype is not None:
            out[vi.name] = (tuple(int(d.dim_value) for d in tt.shape.dim), dtype)
    return out


MODES = ("auto", "whole", "local")
HEAVY_RUN_BYTES = 512 << 20  # values a whole-model run computes per sample, beyond which auto checks regions
MEMORY_SHARE = 0.8  # of the memory available now, what a whole-model run may take
LARGE_FEED_BYTES = 4 << 20  # samples this large (a 1024x1024 image is 12 MB) may make a run heavy


def available_memory() -> int | None:
    """Bytes the kernel says can be given to a process now (MemAvailable), or None where unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


@dataclass
class Choice:
    mode: str  # "whole" or "local"
    why: str
    inferred: list[dict[str, tuple]] | None = None  # per sample, for the recorder


def choose(mode: str, exported: Exported, samples: Sequence[Mapping[str, Any]]) -> Choice:
    """Whole-model or region checks. ``auto``: the whole model where one run fits in memory
    and is light; regions where its weights plus the values it computes would not fit in
    the memory available, or where it computes more than HEAVY_RUN_BYTES per sample (a
    high-resolution image model, whose every run takes seconds)."""
    if mode == "whole":
        return Choice("whole", "asked for (--verify whole)")
    if mode == "local":
        return Choice("local", "asked for (--verify local)")
    free = available_memory()
    fed = max((sum(v.nbytes for v in s.values() if isinstance(v, np.ndarray)) for s in samples), default=0)
    if fed < LARGE_FEED_BYTES and free is not None and exported.weight_bytes + 1024 * fed < 0.25 * free:
        # Small inputs and weights well within memory: a run is light (shape inference, tens of
        # ms on a transformer, would cost more than it tells)
        return Choice("whole", "a whole-model run fits in memory and is light")
    inferred = [inferred_values(exported, s) for s in samples]
    values = max((sum(int(np.prod(shape, dtype=np.int64)) * dtype.itemsize for shape, dtype in found.values())
                  for found in inferred), default=0)
    need = exported.weight_bytes + values
    if free is not None and need > MEMORY_SHARE * free:
        return Choice("local", f"a whole-model run needs about {need / 1e9:.1f} GB and {free / 1e9:.1f} GB are "
                               "available", inferred)
    if values > HEAVY_RUN_BYTES:
        return Choice("local", f"a whole-model run computes about {values / 1e9:.1f} GB of values per sample",
                      inferred)
    return Choice("whole", "a whole-model run fits in memory and is light", inferred)


