"""docs/sweep.md is executable: its ```sh blocks run, in order, and exit 0.

They run in a scratch folder laid out like the checkout (symlinks), with ``surgeon`` on PATH
meaning this checkout's cli.py, so what they write (``out/``) never lands in the checkout.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys

from helpers import ROOT

DOC = (ROOT / "docs" / "sweep.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"```sh\n(.*?)```", DOC, flags=re.S)


def test_sweep_doc_blocks_run(tmp_path):
    assert len(BLOCKS) >= 2
    work = tmp_path / "cwd"
    work.mkdir()
    for entry in ROOT.iterdir():
        if entry.name not in (".git", "out"):
            (work / entry.name).symlink_to(entry)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "surgeon"
    shim.write_text(f"#!/bin/sh\nexec {sys.executable} {ROOT / 'cli.py'} \"$@\"\n")
    shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    for block in BLOCKS:
        res = subprocess.run(["bash", "-e", "-c", block], cwd=work, env=env, capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, f"{block}\n{res.stdout}\n{res.stderr}"
    assert "0 regression(s)" in res.stdout and (work / "out" / "sweep" / "junit.xml").is_file()
