"""Renderers: a command's typed result as terminal tables and lines (the JSON form is the
result's own ``to_dict()``). One module per command; they print, and decide nothing.

The fix, compare, trt-check, fp16 and profile renderers live beside their reports
(:mod:`surgeon.fix_report`, :mod:`surgeon.debug.compare_run`,
:mod:`surgeon.debug.trt_check.report`, :mod:`surgeon.precision.report`,
:mod:`surgeon.debug.profile.render`); the rest are here.
"""
