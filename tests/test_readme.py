"""The README and the docs are executable: every ```sh block runs and exits 0.

Blocks run in a throwaway virtual environment that sees the already-installed
dependencies (--system-site-packages), so the README's `pip install .` installs surgeon
there, and `surgeon` on PATH is that copy, without touching the developer's environment.
The one block that runs the test suite itself is the command `.ci/run` executes; it is
checked to be identical to `.ci/run`'s command rather than run recursively.
"""

from __future__ import annotations

import os
import re
import subprocess
import venv

import pytest

from helpers import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README = PAGES[0].read_text(encoding="utf-8")
# Each distinct block once: the front door repeats a few of the reference pages' commands.
BLOCKS = list(dict.fromkeys(b for page in PAGES for b in re.findall(r"```sh\n(.*?)```", page.read_text(encoding="utf-8"),
                                                                     flags=re.S)))


def _is_test_command(block: str) -> bool:
    return "pytest" in block


@pytest.fixture(scope="module")
def readme_cwd(tmp_path_factory):
    """A scratch folder laid out like the checkout (symlinks), so what the blocks write
    (``out/``, pip's build files) lands there and never in the checkout."""
    work = tmp_path_factory.mktemp("readme-cwd")
    for entry in ROOT.iterdir():
        if entry.name in (".git", "out", "build") or entry.name.endswith(".egg-info"):
            continue
        (work / entry.name).symlink_to(entry)
    return work


@pytest.fixture(scope="module")
def readme_env(tmp_path_factory):
    env_dir = tmp_path_factory.mktemp("readme-venv")
    venv.EnvBuilder(system_site_packages=True, with_pip=True).create(env_dir)
    env = dict(os.environ)
    env["PATH"] = f"{env_dir / 'bin'}{os.pathsep}{env['PATH']}"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env.pop("PYTHONPATH", None)
    return env


def test_readme_has_setup_and_test_commands():
    front = re.findall(r"```sh\n(.*?)```", README, flags=re.S)
    assert any("surgeon fix" in b and "pip install" in b for b in front)
    tests = [b for b in BLOCKS if _is_test_command(b)]
    assert len(tests) == 1
    ci = (ROOT / ".ci" / "run").read_text()
    assert tests[0].strip() in ci


@pytest.mark.parametrize("block", [b for b in BLOCKS if not _is_test_command(b)],
                         ids=lambda b: b.strip().splitlines()[0][:60])
def test_readme_block_runs(block, readme_env, readme_cwd):
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=readme_cwd, capture_output=True, text=True,
                          timeout=600, env=readme_env)
    assert proc.returncode == 0, f"README block failed:\n{block}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    if "pip install" in block:  # the installed command is the venv's own copy
        where = subprocess.run(["bash", "-c", "command -v surgeon"], env=readme_env, capture_output=True, text=True)
        assert where.stdout.startswith(readme_env["PATH"].split(os.pathsep)[0]), where.stdout
