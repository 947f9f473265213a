"""The public API: cheap to import, one function per command, typed results with to_dict(),
errors in the library's terms that the command line words with its flags."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest

import surgeon
from helpers import FIXTURES, ROOT, run_cli
from surgeon.errors import UsageError

CNN = FIXTURES / "tutorial_cnn.onnx"
HEAVY = ("onnx", "onnxruntime", "numpy", "tensorrt", "tensorrt_rtx", "ray", "onnx_graphsurgeon", "polygraphy")


def test_import_is_cheap_and_the_api_is_there():
    code = ("import sys, surgeon; print(sorted(m for m in %r if m in sys.modules)); "
            "print(all(callable(getattr(surgeon, n)) for n in surgeon.__all__))" % (HEAVY,))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.splitlines() == ["[]", "True"]
    assert {"fix", "compare", "bisect", "scan", "isolate", "trt_check", "fp16", "profile", "sweep"} <= set(surgeon.__all__)


def test_fix_from_a_path(tmp_path):
    before = hashlib.sha256(CNN.read_bytes()).hexdigest()
    result = surgeon.fix(str(CNN), output=tmp_path / "o.onnx", report=tmp_path / "r.json")
    model, report = result  # unpacks as before
    assert report is result.report and result.verified and not result.unproven
    d = result.to_dict()
    assert d["nodes_before"] == 13 and d["nodes_after"] == 6 and (tmp_path / "r.json").is_file()
    assert surgeon.load(tmp_path / "o.onnx").graph.node  # written, and loads
    assert hashlib.sha256(CNN.read_bytes()).hexdigest() == before  # the input is never modified


def test_debug_functions_return_typed_results(tmp_path):
    scan = surgeon.scan(str(CNN))
    assert scan.clean and not scan.failed and scan.to_dict()["model"] == str(CNN)
    cmp = surgeon.compare(str(CNN), test="onnxrt-noopt", save_inputs=tmp_path / "in.npz")
    assert cmp.passed and cmp.to_dict()["verdict"] == "match" and (tmp_path / "in.npz").is_file()
    again = surgeon.compare(str(CNN), test="onnxrt-noopt", load_inputs=tmp_path / "in.npz")
    assert again.samples == cmp.samples  # the saved inputs were used
    trt = surgeon.trt_check(str(CNN), engine="matrix")
    assert trt.ready and trt.to_dict()["verdict"] == "ready"
    prof = surgeon.profile(str(CNN), iterations=3, warmup=1, threads=1)
    assert prof.to_dict()["iterations"] == 3 and prof.result.latency.runs == 3


def test_errors_in_library_terms_flags_on_the_command_line():
    from surgeon import cli_args

    with pytest.raises(UsageError) as err:
        surgeon.profile(str(CNN), iterations=0)
    assert str(err.value) == "iterations must be at least 1"
    assert err.value.worded(cli_args.flag_for) == "--iterations must be at least 1"
    with pytest.raises(UsageError) as err:
        surgeon.fix(str(CNN), verify=False, strict=True)
    assert str(err.value).startswith("strict asks for numeric verification, which verify=False turns off")
    res = run_cli("fix", str(CNN), "-o", "/tmp/never.onnx", "--strict", "--no-verify")
    assert res.returncode == 2 and "--strict asks for numeric verification, which --no-verify turns off" in res.stderr
    assert cli_args.flag_for("target=passes") == "--target passes" and cli_args.flag_for("value_ranges") == "--val-range"


def test_the_library_never_parses_command_line_strings():
    """The grammar of NAME:1x3x224x224 and friends lives in surgeon.cli_args, for cli.py only."""
    users = [p.relative_to(ROOT).as_posix() for p in (ROOT / "surgeon").rglob("*.py")
             if p.name != "cli_args.py" and "cli_args" in p.read_text(encoding="utf-8")]
    assert users == []
