"""Which constant folder is faster and stronger? onnxsim vs onnx-graphsurgeon on the corpus.

Prints one row per corpus model: non-Constant node count before, then after each
backend (onnxsim only, graphsurgeon only, onnxsim then graphsurgeon as fold-constants
does), with the time each took. Constant nodes are left out of the count because
graphsurgeon turns them into initializers and onnxsim (optimizer off) does not, which
says nothing about folding strength. Usage: ``python bench/fold_backends.py [CORPUS_DIR]``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from passes.fold_constants import fold_with_graphsurgeon, fold_with_onnxsim
from surgeon import graph as G
from surgeon import model as model_io

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"


def _compute_nodes(model) -> int:
    return sum(1 for n in G.iter_proto_nodes(model) if n.op_type != "Constant")


def _timed(fn, model) -> str:
    start = time.perf_counter()
    try:
        out = fn(model)
    except Exception as exc:  # noqa: BLE001 - a benchmark row records the failure
        return f"failed ({type(exc).__name__})"
    return f"{_compute_nodes(out)} ({time.perf_counter() - start:.2f} s)"


def main(folder: Path) -> None:
    backends = {"onnxsim": fold_with_onnxsim, "graphsurgeon": fold_with_graphsurgeon,
                "onnxsim+graphsurgeon": lambda m: fold_with_graphsurgeon(fold_with_onnxsim(m))}
    print("| model | nodes | " + " | ".join(backends) + " |")
    print("|---|---|" + "---|" * len(backends))
    for path in sorted(folder.glob("*.onnx")):
        model = model_io.load(path)
        cells = [_timed(fn, model) for fn in backends.values()]
        print(f"| {path.name} | {_compute_nodes(model)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else CORPUS)
