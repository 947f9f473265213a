"""``surgeon fix``: the pass table (:func:`surgeon.fix_report.render_fix`) and the speed line."""

from __future__ import annotations

import sys
from typing import Any

from surgeon.fix_report import render_fix


def render_fix_result(result: Any, out: Any, err: Any = None) -> None:
    render_fix(result.report, out, err)
    if result.profile:
        from surgeon.debug.profile import where_timed

        out.print(f"{result.profile.headline()} {where_timed(result.profile_on or 'onnxrt')}; {result.profile.noise_line()}",
                  markup=False)
    if result.profile_error:
        print(f"surgeon: --profile: not timed: {result.profile_error}", file=sys.stderr)
