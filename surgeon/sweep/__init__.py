"""``surgeon sweep``: a zoo of models through fix, trt-check, scan, fp16 and profile, each
model in its own process, cached, on this machine or a Ray cluster (docs/sweep.md).

Layout: :mod:`.spec` (what to sweep, checked before any work), :mod:`.cache`,
:mod:`.isolation` (a warm process per job, time and memory limits), :mod:`.job` and
:mod:`.steps` (what runs in the job's process), :mod:`.local` and :mod:`.ray_engine`,
:mod:`.baseline` (regressions), :mod:`.outputs`; :mod:`.runner` ties them together.
"""

from surgeon.sweep.results import STEPS, ModelResult, Status, StepResult
from surgeon.sweep.runner import SweepResult, sweep

__all__ = ["STEPS", "ModelResult", "Status", "StepResult", "SweepResult", "sweep"]
