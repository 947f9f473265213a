"""The one ``--check`` contract: a user's command as the oracle of ``bisect`` and ``isolate``.

Modelled on Polygraphy's ``CheckCmdArgs`` (``polygraphy debug``): the command decides by
its exit status whether a candidate model is good or bad. What Polygraphy leaves out and
debugging TensorRT needs, and what each of our tools used to do its own way (bisect: a
shell string with ``{model}`` and a timeout; isolate: no shell, the path appended, 125 =
cannot tell, no timeout), is fixed here once:

- **Shell.** The command is one string run by ``/bin/sh`` (pipes, ``&&``, ``||`` work), in
  the directory surgeon was started from, so relative paths in it mean what they mean to
  the user.
- **Placeholders.** ``{model}`` is replaced by the candidate's path, ``{inputs}`` by an
  ``.npz`` of the input values the candidate is run on, one entry per sample
  (``sample<i>/<name>``, Polygraphy-compatible through ``surgeon/input_files.py``); both are
  shell-quoted. A command without ``{model}`` gets the path appended as its last argument
  (Polygraphy's ``--check`` always names the artifact). Only these two tokens are replaced:
  braces elsewhere (Python one-liners) are left alone.
- **Exit status.** 0 = good (the failure is not there); 125 = cannot tell (``git bisect
  run``'s "skip"); anything else = bad. A candidate the command cannot judge is counted as
  not failing, as Zeller's delta debugging and Polygraphy's ``--ignore-fail-code`` do, and
  the tools report how many there were.
- **Timeout.** ``timeout`` seconds (default 600) per run; a run past it is killed with its
  whole process group (a shell's children too) and counts as bad, as a crash does: a
  build that hangs is the failure being looked for as often as one that aborts.

The result carries the last line of the command's output, so a report can say why.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from surgeon.errors import UsageError

if TYPE_CHECKING:
    import onnx

log = logging.getLogger(__name__)

GOOD, BAD, UNRESOLVED = "good", "bad", "unresolved"
EXIT_UNRESOLVED = 125
DEFAULT_TIMEOUT = 600.0

HELP = ("shell command as the oracle: exit 0 = good, 125 = cannot tell, other = bad; '{model}' is replaced by the "
        "candidate's path (appended when absent), '{inputs}' by an .npz of its input values; runs past "
        "--check-timeout count as bad (see docs/check.md)")
TIMEOUT_HELP = "--check: seconds one run may take before it counts as bad (default 600)"


@dataclass(frozen=True)
class CheckResult:
    """One run: ``outcome`` (good, bad, unresolved), the exit status (None: timed out), why."""

    outcome: str
    returncode: int | None
    detail: str
    seconds: float

    @property
    def bad(self) -> bool:
        return self.outcome == BAD


def _last_line(*texts: str) -> str:
    for text in texts:
        lines = [line for line in (text or "").strip().splitlines() if line.strip()]
        if lines:
            return lines[-1].strip()[:200]
    return ""


@dataclass(frozen=True)
class CheckCommand:
    """A ``--check`` command; see the module docstring for the contract."""

    command: str
    timeout: float | None = DEFAULT_TIMEOUT

    def __post_init__(self) -> None:
        if not self.command or not self.command.strip():
            raise UsageError("--check is empty")
        if self.timeout is not None and self.timeout <= 0:
            raise UsageError("--check-timeout must be a positive number of seconds")

    @property
    def wants_inputs(self) -> bool:
        return "{inputs}" in self.command

    def line(self, model: str | os.PathLike, inputs: str | os.PathLike | None = None) -> str:
        """The shell line for a candidate at ``model`` (and its inputs file)."""
        cmd = self.command
        if "{inputs}" in cmd:
            if inputs is None:
                raise UsageError("this --check command uses '{inputs}', which this tool cannot provide")
            cmd = cmd.replace("{inputs}", shlex.quote(str(inputs)))
        if "{model}" in cmd:
            return cmd.replace("{model}", shlex.quote(str(model)))
        return f"{cmd} {shlex.quote(str(model))}"

    def repro(self, model: str = "reduced.onnx", inputs: str = "inputs.npz") -> str:
        """The command as a user reruns it on a saved candidate (relative names, as in a bundle)."""
        return self.line(model, inputs if self.wants_inputs else None)

    def run_line(self, line: str) -> CheckResult:
        """Run an already substituted shell line under the contract's timeout and exit-status rules."""
        t0 = time.perf_counter()
        # a session of its own: on timeout the shell and everything it started are killed
        proc = subprocess.Popen(line, shell=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        try:
            out, err = proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.communicate()
            return CheckResult(BAD, None, f"the check command ran past {self.timeout:g} s (counted as bad)",
                               time.perf_counter() - t0)
        seconds = time.perf_counter() - t0
        tail = _last_line(err, out)
        rc = proc.returncode
        if rc == 0:
            return CheckResult(GOOD, 0, "the check command exits 0", seconds)
        if rc == EXIT_UNRESOLVED:
            return CheckResult(UNRESOLVED, rc, "the check command cannot tell (exit 125)" + (f": {tail}" if tail else ""),
                               seconds)
        return CheckResult(BAD, rc, f"exit status {rc}" + (f": {tail}" if tail else ""), seconds)

    def run(self, model: "onnx.ModelProto", inputs: Sequence[Mapping[str, Any]] | None = None, *,
            workdir: str | os.PathLike | None = None) -> CheckResult:
        """Save ``model`` (and its input values, when the command asks for them) to a private
        temporary folder, run the command on it, remove the folder."""
        from surgeon import model as model_io

        with tempfile.TemporaryDirectory(prefix="surgeon-check-", dir=workdir) as d:
            path = Path(d) / "candidate.onnx"
            model_io.save(model, path)
            ipath = None
            if self.wants_inputs:
                if inputs is None:
                    raise UsageError("this --check command uses '{inputs}', which this tool cannot provide")
                from surgeon import input_files

                ipath = Path(d) / "inputs.npz"
                input_files.save_inputs(ipath, list(inputs))
            line = self.line(path, ipath)
            log.info("check: %s", line)
            return self.run_line(line)
