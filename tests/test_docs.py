"""The pages under docs/ are executable like the README: every ```sh block runs and exits 0.

Blocks run in a scratch folder laid out like the checkout (symlinks, so what they write
lands there), with ``surgeon`` on PATH being this checkout's ``cli.py`` run by the test's
interpreter.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from helpers import ROOT

DOCS = sorted((ROOT / "docs").glob("*.md"))
BLOCKS = [(page.name, i, block) for page in DOCS
          for i, block in enumerate(re.findall(r"```sh\n(.*?)```", page.read_text(encoding="utf-8"), flags=re.S))]


@pytest.fixture(scope="module")
def docs_env(tmp_path_factory):
    work = tmp_path_factory.mktemp("docs-cwd")
    for entry in ROOT.iterdir():
        if entry.name in (".git", "out", "build") or entry.name.endswith(".egg-info"):
            continue
        (work / entry.name).symlink_to(entry)
    bin_dir = tmp_path_factory.mktemp("docs-bin")
    shim = bin_dir / "surgeon"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{ROOT / "cli.py"}" "$@"\n')
    shim.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return work, env


@pytest.mark.parametrize("page, index, block", BLOCKS, ids=[f"{p}-{i}" for p, i, _ in BLOCKS])
def test_docs_block_runs(page, index, block, docs_env):
    cwd, env = docs_env
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, f"{page} block {index} failed:\n{block}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
