"""The oracle both tools share in bench/bisect_vs_polygraphy.py (a `--check` command).

Exit 1 ("fails") when the model, run on seeded random inputs, gives a NaN/Inf under the
FP16 emulation backend where ONNX Runtime in float32 gives a finite value; exit 0
otherwise. Each call appends one line to ``--count FILE`` so oracle calls are counted the
same way for both tools. Dynamic dims take ``--dim SIZE`` (default 1).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--count")
    p.add_argument("--dim", type=int, default=1)
    args = p.parse_args()
    if args.count:
        with open(args.count, "a") as f:
            f.write("call\n")
    import onnx
    from onnx import helper

    from surgeon import backends

    model = onnx.load(args.model)
    inits = {t.name for t in model.graph.initializer}
    rng = np.random.default_rng(0)
    feeds = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        dtype = helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
        shape = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else args.dim for d in vi.type.tensor_type.shape.dim]
        if np.issubdtype(dtype, np.integer):
            feeds[vi.name] = rng.integers(1, 4, size=shape).astype(dtype)
        else:
            feeds[vi.name] = rng.uniform(-1, 1, size=shape).astype(dtype)
    ref = backends.create("onnxrt").session(model).run(feeds)
    test = backends.create("fp16").session(model).run(feeds)
    for name, r in ref.items():
        r, t = np.asarray(r), np.asarray(test[name])
        if r.dtype.kind == "f" and np.any(np.isfinite(r) & ~np.isfinite(t)):
            print(f"{name}: FP16 gives NaN/Inf where float32 is finite")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
