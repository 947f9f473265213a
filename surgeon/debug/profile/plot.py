"""Bar charts of a profile: the top-K kernels and the op types (both models with --against).

matplotlib is imported here only, with the Agg backend (no display needed).
"""

from __future__ import annotations

from pathlib import Path

from surgeon.debug.profile.result import Comparison, ModelProfile
from surgeon.errors import UsageError


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _short(text: str, n: int = 48) -> str:
    return text if len(text) <= n else "…" + text[-(n - 1):]


def _folder(folder: str | Path) -> Path:
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot use '{folder}' as the plot folder: {exc.strerror or exc}") from exc
    return folder


def _barh(plt, path: Path, title: str, labels: list[str], series: list[tuple[str, list[float]]]) -> Path:
    height = max(2.5, 0.35 * len(labels) + 1.2)
    fig, ax = plt.subplots(figsize=(10, height))
    width = 0.8 / max(1, len(series))
    ys = range(len(labels))
    for j, (name, values) in enumerate(series):
        ax.barh([y + j * width for y in ys], values, height=width, label=name)
    ax.set_yticks([y + width * (len(series) - 1) / 2 for y in ys])
    ax.set_yticklabels([_short(l) for l in labels], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("median time per run (ms)")
    ax.set_title(title)
    if len(series) > 1:
        ax.legend()
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=100)
    except OSError as exc:
        raise UsageError(f"cannot write the plot '{path}': {exc.strerror or exc}") from exc
    finally:
        plt.close(fig)
    return path


def plot_profile(p: ModelProfile, folder: str | Path, top: int = 15, prefix: str = "") -> list[Path]:
    plt = _pyplot()
    folder = _folder(folder)
    kernels = [k for k in p.kernels if k.parent is None][:top]
    ops = p.op_types[:top]
    return [
        _barh(plt, folder / f"{prefix}top_kernels.png", f"top {len(kernels)} kernels: {Path(p.model).name} ({p.backend})",
              [f"{k.name} [{k.op_type}]" for k in kernels], [(p.backend, [k.median_ms for k in kernels])]),
        _barh(plt, folder / f"{prefix}op_types.png", f"op types: {Path(p.model).name} ({p.backend})",
              [g.key for g in ops], [(p.backend, [g.median_ms for g in ops])]),
    ]


def plot_comparison(c: Comparison, folder: str | Path, top: int = 15) -> list[Path]:
    plt = _pyplot()
    folder = _folder(folder)
    paths = plot_profile(c.a, folder, top, prefix="a_") + plot_profile(c.b, folder, top, prefix="b_")
    diff = c.op_diff[:top]
    paths.append(_barh(plt, folder / "op_types_a_vs_b.png",
                       f"op types: A = {Path(c.a.model).name}, B = {Path(c.b.model).name}",
                       [d.op_type for d in diff], [("A", [d.a_ms for d in diff]), ("B", [d.b_ms for d in diff])]))
    return paths
