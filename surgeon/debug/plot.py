"""One PNG per mismatching output: how large the errors are, and where the worst ones sit.

Left: a histogram of log10 absolute error (finite elements). Right: where the error is,
as a 2-D map (the last two axes, maximum over the leading ones; a 1-D output is drawn as
error against index), with the worst elements marked. NaN/Inf mismatches are drawn at
the largest finite error so they stand out. Uses matplotlib's Agg backend (no display).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from surgeon.comparison import OutputDiff

_WORST = 5


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "output"


def _error_map(ref: np.ndarray, test: np.ndarray) -> np.ndarray:
    r, t = ref.astype(np.float64), test.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.abs(t - r)
    bad = ~np.isfinite(err) & ~(np.isnan(r) & np.isnan(t))
    finite = err[np.isfinite(err)]
    top = float(finite.max()) if finite.size else 1.0
    err = np.where(bad, top if top > 0 else 1.0, np.nan_to_num(err, nan=0.0))
    return err


def plot_output(folder: str | Path, name: str, ref: np.ndarray, test: np.ndarray, diff: OutputDiff,
                taken: set[str] | None = None) -> Path:
    """Write ``<folder>/<name>.png`` and return its path; ``taken`` (file names written by this
    run) keeps two outputs whose names sanitize alike from overwriting each other."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    err = _error_map(np.asarray(ref), np.asarray(test))
    fig, (ax_h, ax_m) = plt.subplots(1, 2, figsize=(11, 4))
    positive = err[err > 0]
    if positive.size:
        ax_h.hist(np.log10(positive), bins=50, color="tab:red")
    ax_h.set_xlabel("log10 |test - ref|")
    ax_h.set_ylabel("elements")
    ax_h.set_title(f"{diff.mismatches} of {diff.elements} outside atol={diff.atol:g} rtol={diff.rtol:g}")

    worst = np.argsort(err.ravel())[::-1][:_WORST]
    worst_idx = [np.unravel_index(int(i), err.shape) for i in worst] if err.ndim else []
    if err.ndim <= 1:
        flat = err.reshape(-1)
        ax_m.plot(np.arange(flat.size), flat, lw=0.8)
        for i in worst:
            ax_m.plot(int(i), flat[int(i)], "kx")
        ax_m.set_xlabel("index")
        ax_m.set_ylabel("|test - ref|")
    else:
        grid = err.reshape(-1, *err.shape[-2:]).max(axis=0)
        im = ax_m.imshow(grid, aspect="auto", cmap="magma", interpolation="nearest")
        fig.colorbar(im, ax=ax_m, label="|test - ref| (max over leading axes)")
        for idx in worst_idx:
            ax_m.plot(idx[-1], idx[-2], "c+", ms=10)
        ax_m.set_xlabel(f"axis {err.ndim - 1}")
        ax_m.set_ylabel(f"axis {err.ndim - 2}")
    ax_m.set_title("worst at " + ", ".join(str(list(map(int, i))) for i in worst_idx[:3]))
    fig.suptitle(f"{name}: max abs {diff.max_abs:.3g}, NaN mismatches {diff.nan_mismatches}, Inf mismatches {diff.inf_mismatches}")
    fig.tight_layout()
    stem, i = _safe(name), 1
    while taken is not None and f"{stem}.png" in taken:
        i += 1
        stem = f"{_safe(name)}_{i}"
    if taken is not None:
        taken.add(f"{stem}.png")
    path = Path(folder) / f"{stem}.png"
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    tmp.replace(path)
    return path
