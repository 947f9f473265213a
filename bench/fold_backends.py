"""Does onnxsim add anything to surgeon's own constant folder? Both in the full default pipeline.

``fold-constants`` folds on the shared graph by default and takes onnxsim only as an option
(``fold_backend=onnxsim``: onnxsim on the skeleton first, kept only when ONNX Runtime loads
its result and it has fewer nodes). This runs the default pipeline (verification off, the
same rounds) both ways on every model of a folder and prints nodes and time per model, so
the default can be checked against onnxsim on real models.
Usage: ``python bench/fold_backends.py [MODEL_DIR]`` (default ../shared/corpus).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import surgeon
from surgeon import graph as G
from surgeon import model as model_io

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"


def _run(path: Path, backend: str) -> tuple[int, float]:
    model = model_io.open_model(path)
    start = time.perf_counter()
    fixed, _ = surgeon.fix(model, verify=False, options={"fold_backend": backend})
    return G.count_nodes(fixed), time.perf_counter() - start


def main(folder: Path) -> None:
    print("| model | nodes in | default (own folder) | with onnxsim | onnxsim adds |")
    print("|---|---|---|---|---|")
    for path in sorted(folder.glob("*.onnx")):
        nodes_in = G.count_nodes(model_io.open_model(path))
        (own, t_own), (sim, t_sim) = _run(path, "auto"), _run(path, "onnxsim")
        print(f"| {path.name} | {nodes_in} | {own} ({t_own:.2f} s) | {sim} ({t_sim:.2f} s) | {own - sim:+d} nodes removed |")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else CORPUS)
