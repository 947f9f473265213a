"""Output people can read and pipe: JSON on stdout, numbers never split, quiet quick errors.

Every command here runs in a subprocess with stdout and stderr captured, which is what a
pipe or a CI log gives it: no terminal.
"""

from __future__ import annotations

import json
import re

import pytest

from helpers import FIXTURES, run_cli


@pytest.mark.parametrize("args", [
    ["fix", str(FIXTURES / "tutorial_cnn.onnx"), "-o", "{tmp}/o.onnx"],
    ["compare", str(FIXTURES / "tutorial_cnn.onnx"), "--test", "reference"],
    ["scan", str(FIXTURES / "tutorial_cnn.onnx")],
    ["match", str(FIXTURES / "custom_ops_contrib.onnx")],
    ["bisect", str(FIXTURES / "bisect" / "overflow_chain.onnx"), "--test", "fp16", "-o", "{tmp}/b"],
], ids=lambda a: a[0])
def test_json_is_the_whole_stdout(args, tmp_path):
    proc = run_cli(*[a.replace("{tmp}", str(tmp_path)) for a in args], "--json")
    assert proc.returncode in (0, 1), proc.stderr
    data = json.loads(proc.stdout)  # nothing but the report: no table before or after it
    assert isinstance(data, dict) and data


def test_piped_table_never_splits_a_number(tmp_path):
    proc = run_cli("fix", str(FIXTURES / "tutorial_cnn.onnx"), "-o", str(tmp_path / "o.onnx"))
    assert proc.returncode == 0, proc.stderr
    fold = [line for line in proc.stdout.splitlines() if line.startswith("│") and "fold-conv-bn" in line]
    assert len(fold) == 1  # one line per pass: the row is not wrapped
    assert re.search(r"\d\.\d\de-\d\d", fold[0])  # its max abs error, whole


def test_version():
    proc = run_cli("--version")
    assert proc.returncode == 0 and re.fullmatch(r"surgeon \d+\.\d+\.\d+\S*\n", proc.stdout)


def test_model_path_after_a_list_option_is_not_swallowed(tmp_path):
    model = FIXTURES / "debug_multi_dynamic.onnx"
    proc = run_cli("compare", "--input-shapes", "a:2x8", "b:2x8", str(model), "--test", "reference", "--json")
    assert proc.returncode == 0, proc.stderr  # argparse would have said "the following arguments are required: model"
    assert json.loads(proc.stdout)["samples"] == ["a[2, 8], b[2, 8]"]


def test_quick_failure_prints_one_line_and_no_progress(tmp_path):
    proc = run_cli("fix", str(tmp_path / "missing.onnx"), "-o", str(tmp_path / "o.onnx"))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "does not exist" in proc.stderr


def test_progress_lines_on_stderr_for_long_work(monkeypatch, capsys):
    import time

    from surgeon.report import Progress

    clock = iter([0.0, 0.5, 3.0, 3.1, 7.0])
    monkeypatch.setattr(time, "monotonic", lambda: next(clock))
    with Progress("starting", interval=2.0) as p:  # stderr is captured: not a terminal
        p.update("a")  # 0.5 s in: too early
        p.update("b")  # 3.0 s: printed
        p.update("c")  # 3.1 s: throttled
        p.update("d")  # 7.0 s: printed
    assert capsys.readouterr().err.splitlines() == ["surgeon: b", "surgeon: d"]
