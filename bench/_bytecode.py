"""Byte-compile the checkout before timing it, as ``pip install`` leaves the peers.

The peers run from site-packages, compiled when pip installed them; surgeon runs from this
checkout, which ``PYTHONDONTWRITEBYTECODE=1`` (set on these machines) leaves uncompiled, so
every timed run would compile it again (about 0.1 s here). The ``__pycache__`` folders it
writes are ignored by git.
"""

from __future__ import annotations

import compileall
from pathlib import Path


def compile_checkout(root: Path) -> None:
    for part in ("surgeon", "passes"):
        compileall.compile_dir(root / part, quiet=1)
    compileall.compile_file(root / "cli.py", quiet=1)
