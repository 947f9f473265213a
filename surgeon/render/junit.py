"""``surgeon sweep --junit``: JUnit XML, one test case per model and step.

Written with the standard library's ElementTree: the format is a handful of elements, and
what CI systems read is the common subset (GitLab, Jenkins, GitHub test reporters):
``testsuites > testsuite > testcase`` with ``failure``, ``error`` or ``skipped`` inside.
A step whose verdict fails is a ``failure``; a crash, timeout, out-of-memory kill or a
refusal of its options is an ``error``; a step not run is ``skipped``; a regression
against the baseline is a ``failure`` of its step's case.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any


def junit_xml(result: Any) -> str:
    regressions: dict[tuple[str, str], list[str]] = {}
    for r in result.regressions:
        regressions.setdefault((r.model, r.step), []).append(r.message)
    suites = ET.Element("testsuites", name="surgeon sweep")
    suite = ET.SubElement(suites, "testsuite", name="surgeon sweep")
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    total = 0.0
    for m in result.models:
        for s in m.steps:
            counts["tests"] += 1
            total += s.seconds
            case = ET.SubElement(suite, "testcase", classname=f"surgeon.sweep.{m.name}", name=s.step,
                                 time=f"{s.seconds:.3f}", file=m.path)
            bad = regressions.get((m.name, s.step), [])
            status = s.status.value
            if status == "skipped":
                counts["skipped"] += 1
                ET.SubElement(case, "skipped", message=s.message)
            elif status != "ok":
                counts["errors"] += 1
                ET.SubElement(case, "error", message=f"{status}: {s.message}", type=status).text = s.message
            elif not s.passed or bad:
                counts["failures"] += 1
                text = "\n".join([f"regression: {b}" for b in bad] + ([f"{s.verdict}: {s.message}"] if not s.passed else []))
                first = f"regression: {bad[0]}" if bad else f"{s.verdict}: {s.message}"
                ET.SubElement(case, "failure", message=first, type="regression" if bad else s.verdict or "").text = text
            out = ET.SubElement(case, "system-out")
            out.text = "\n".join([f"verdict: {s.verdict}", f"input: {s.input}", *(f"report: {r}" for r in s.reports)])
    for el in (suites, suite):
        for k, v in counts.items():
            el.set(k, str(v))
        el.set("time", f"{total:.3f}")
    ET.indent(suites)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"
