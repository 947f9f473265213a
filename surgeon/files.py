"""Small outputs written atomically (reports, manifests, caches), without loading onnx.

Why apart from :mod:`surgeon.model`: code that writes only text (a sweep whose every step
came from its cache, a report) should not pay for importing onnx to do so.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from surgeon.errors import UsageError


def umask_mode() -> int:
    """0o666 minus the process umask: what a plain open() would have given the file."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Reports and other small outputs: temp file in the same folder, then rename."""
    dst = Path(path)
    if not dst.resolve().parent.is_dir():
        raise UsageError(f"cannot write '{path}': its folder does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", dir=dst.resolve().parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, umask_mode())
        os.replace(tmp, dst)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
