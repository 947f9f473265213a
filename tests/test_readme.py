"""The README is executable: every ```sh block runs and exits 0.

The one block that runs the test suite itself is the command `.ci/run` executes; it is
checked to be identical to `.ci/run`'s command rather than run recursively.
"""

from __future__ import annotations

import re
import subprocess

import pytest

from helpers import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"```sh\n(.*?)```", README, flags=re.S)


def _is_test_command(block: str) -> bool:
    return "pytest" in block


def test_readme_has_setup_and_test_commands():
    assert any("surgeon fix" in b and "pip install" in b for b in BLOCKS)
    tests = [b for b in BLOCKS if _is_test_command(b)]
    assert len(tests) == 1
    ci = (ROOT / ".ci" / "run").read_text()
    assert tests[0].strip() in ci


@pytest.mark.parametrize("block", [b for b in BLOCKS if not _is_test_command(b)],
                         ids=lambda b: b.strip().splitlines()[0][:60])
def test_readme_block_runs(block):
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"README block failed:\n{block}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
