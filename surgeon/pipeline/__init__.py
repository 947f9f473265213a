"""Pass framework: the Pass contract, the registry and the verified pipeline."""

from surgeon.pipeline.base import Application, GraphPass, Pass, PassContext, PassLog, RewriteBudget
from surgeon.pipeline.registry import all_passes, default_pipeline, register
from surgeon.pipeline.runner import FixReport, PassReport, fix

__all__ = [
    "Application", "FixReport", "GraphPass", "Pass", "PassContext", "PassLog", "PassReport",
    "RewriteBudget", "all_passes", "default_pipeline", "fix", "register",
]
