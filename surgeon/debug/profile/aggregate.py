"""From per-run kernel durations to the tables: per kernel, per op type, per ONNX origin.

Every figure is over the measured runs (warm-up runs left out): a kernel's median and
p90 are of its time per run (summed when it runs several times in one run, as inside a
Loop body); a share is the kernel's total time over all measured runs divided by the
total run time, so shares of top-level kernels add up to the part of the run spent in
kernels, and the rest is the runtime's own work between them.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from surgeon.debug.profile.fusion_map import Origin
from surgeon.debug.profile.result import GroupTime, KernelTime


@dataclass
class Observed:
    """One kernel's record in one run (any backend)."""

    name: str
    op_type: str
    dur_ms: float
    key: object = None  # what makes two kernels with one name distinct (ORT's node index)
    parent: str | None = None
    detail: dict | None = None


def _stats(per_run: np.ndarray, total_run: float) -> tuple[float, float, float | None]:
    share = float(per_run.sum() / total_run) if total_run > 0 else None
    return float(np.median(per_run)), float(np.percentile(per_run, 90)), share


def _origin_label(nodes: Sequence[str]) -> str:
    if len(nodes) == 1:
        return nodes[0]
    return f"{nodes[0]} … {nodes[-1]} ({len(nodes)} nodes)"


def tables(runs: Sequence[Sequence[Observed]], run_ms: Sequence[float],
           origin_of: Callable[[str, str, object, int], Origin]
           ) -> tuple[list[KernelTime], list[GroupTime], list[GroupTime], list[GroupTime]]:
    """Kernels (slowest first), op types, origin groups, and op types inside control-flow
    bodies (``"FusedGemm (inside If)"``; their time is part of their parent's) over ``runs``.

    ``origin_of(name, op_type, key, occurrence)`` maps a kernel back to ONNX nodes;
    ``occurrence`` ranks kernels that share a name by when they first ran.
    """
    n = len(runs)
    total_run = float(np.sum(run_ms))
    names_keys: dict[str, list] = defaultdict(list)  # top-level name -> distinct keys, in order first seen
    info: dict[tuple, Observed] = {}
    per_run: dict[tuple, np.ndarray] = {}
    calls: dict[tuple, np.ndarray] = {}
    for r, run in enumerate(runs):
        for k in run:
            ident = (k.name, k.key, k.parent)
            if ident not in info:
                info[ident] = k
                per_run[ident] = np.zeros(n)
                calls[ident] = np.zeros(n)
                if k.parent is None and k.key not in names_keys[k.name]:
                    names_keys[k.name].append(k.key)
            per_run[ident][r] += k.dur_ms
            calls[ident][r] += 1
    kernels: list[KernelTime] = []
    display: dict[tuple, str] = {}
    origin_map: dict[tuple, Origin] = {}
    for ident, k in info.items():
        keys = names_keys.get(k.name, [])
        occurrence = keys.index(k.key) if k.parent is None and k.key in keys else 0
        label = f"{k.name}#{occurrence + 1}" if k.parent is None and len(keys) > 1 else k.name
        display[ident] = label
        origin = origin_of(k.name, k.op_type, k.key, occurrence)
        origin_map[ident] = origin
        median, p90, share = _stats(per_run[ident], total_run)
        kernels.append(KernelTime(label, k.op_type, median, p90, share, float(np.median(calls[ident])),
                                  list(origin.nodes), list(origin.op_types), origin.how, k.parent, dict(k.detail or {})))
    kernels.sort(key=lambda x: -x.median_ms)

    def grouped(key_of: Callable[[tuple], tuple[str, tuple[str, ...]]], nested: bool = False) -> list[GroupTime]:
        sums: dict[str, np.ndarray] = {}
        members: dict[str, int] = defaultdict(int)
        nodes_of: dict[str, tuple[str, ...]] = {}
        for ident in info:
            if (ident[2] is not None) != nested:
                continue  # a body's kernels are inside their parent's time already
            key, nodes = key_of(ident)
            sums.setdefault(key, np.zeros(n))
            sums[key] += per_run[ident]
            members[key] += 1
            nodes_of[key] = nodes
        out = []
        for key, arr in sums.items():
            median, p90, share = _stats(arr, total_run)
            out.append(GroupTime(key, members[key], median, p90, share, list(nodes_of[key])))
        out.sort(key=lambda g: -g.median_ms)
        return out

    op_types = grouped(lambda ident: (info[ident].op_type, ()))

    def by_origin(ident):
        nodes = origin_map[ident].nodes
        return (_origin_label(nodes), nodes) if nodes else (f"(not mapped) {display[ident]}", ())

    origins = grouped(by_origin)
    op_of = {ident[0]: k.op_type for ident, k in info.items()}
    bodies = grouped(lambda ident: (f"{info[ident].op_type} (inside {op_of.get(ident[2], ident[2])})", ()), nested=True)
    return kernels, op_types, origins, bodies
