"""`surgeon fix` and `surgeon passes` from the command line, bad input included.

Every bad input must give exit code 2, exactly one line on stderr, no traceback, and
no output file.
"""

from __future__ import annotations

import hashlib
import json
import os

import onnx
import pytest

from helpers import FIXTURES, run_cli

CNN = FIXTURES / "tutorial_cnn.onnx"


def _one_line_error(proc, *needles):
    assert proc.returncode == 2, proc.stderr + proc.stdout
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def test_fix_default_pipeline_writes_model_and_report(tmp_path):
    out, rep = tmp_path / "o.onnx", tmp_path / "r.json"
    digest = hashlib.sha256(CNN.read_bytes()).hexdigest()
    proc = run_cli("fix", str(CNN), "-o", str(out), "--report", str(rep))
    assert proc.returncode == 0, proc.stderr
    assert hashlib.sha256(CNN.read_bytes()).hexdigest() == digest
    report = json.loads(rep.read_text())
    assert report["verification"] == "numeric"
    assert report["nodes_after"] <= report["nodes_before"]
    assert report["samples"] == ["input[2, 3, 16, 16]", "input[3, 3, 16, 16]"]
    assert "surgeon fix" in proc.stdout and "nodes" in proc.stdout
    onnx.checker.check_model(onnx.load(str(out)))
    assert onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_passes_lists_every_registered_pass():
    proc = run_cli("passes")
    assert proc.returncode == 0
    from surgeon.pipeline import registry

    for name in registry.all_passes():
        assert name in proc.stdout


@pytest.mark.parametrize("case", ["missing", "not_onnx", "truncated", "checker", "unknown_pass", "same_output",
                                  "missing_data", "outside_data", "bad_shape", "unknown_input"])
def test_bad_input(tmp_path, case):
    src = tmp_path / "m.onnx"
    src.write_bytes(CNN.read_bytes())
    out = tmp_path / "o.onnx"
    args = ["fix", str(src), "-o", str(out)]
    needle = []
    if case == "missing":
        args[1] = str(tmp_path / "none.onnx"); needle = ["does not exist"]
    elif case == "not_onnx":
        src.write_text("hello\n" * 20); needle = ["not an ONNX model"]
    elif case == "truncated":
        src.write_bytes(CNN.read_bytes()[:1000])
    elif case == "checker":
        m = onnx.load(str(CNN)); m.graph.node[0].input[0] = "ghost"; src.write_bytes(m.SerializeToString())
        needle = ["checker"]
    elif case == "unknown_pass":
        args += ["--passes", "cleanup,frobnicate"]; needle = ["unknown pass 'frobnicate'"]
    elif case == "same_output":
        args[3] = str(src); needle = ["is the input model"]
    elif case in ("missing_data", "outside_data"):
        m = onnx.load(str(CNN))
        onnx.save_model(m, str(src), save_as_external_data=True, location="m.bin", size_threshold=0)
        if case == "missing_data":
            os.unlink(tmp_path / "m.bin"); needle = ["does not exist"]
        else:
            m = onnx.load(str(src), load_external_data=False)
            for t in m.graph.initializer:
                for e in t.external_data:
                    if e.key == "location":
                        e.value = "/etc/passwd"
            src.write_bytes(m.SerializeToString()); needle = ["outside the model's folder"]
    elif case == "bad_shape":
        args += ["--input-shapes", "input:1xthreex16x16"]; needle = ["cannot parse input shape"]
    elif case == "unknown_input":
        args += ["--input-shapes", "images:1x3x16x16"]; needle = ["not an input of the model"]
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    proc = run_cli(*args)
    _one_line_error(proc, *needle)
    assert not out.exists()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_custom_op_model_processed_without_numeric_verification(tmp_path):
    out, rep = tmp_path / "o.onnx", tmp_path / "r.json"
    proc = run_cli("fix", str(FIXTURES / "custom_op.onnx"), "-o", str(out), "--report", str(rep))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(rep.read_text())
    # ONNX Runtime cannot run the custom op, so nothing could be compared; the one change
    # (a dead node removed) is proven structurally instead, and the report says both.
    assert report["verification"] == "proof"
    assert any("ONNX Runtime cannot load" in n and "proven structurally" in n for n in report["notes"])
    assert "verification: proof" in proc.stdout
    m = onnx.load(str(out))
    assert [n.op_type for n in m.graph.node if n.domain == "my.plugins"] == ["MyActivation"]
    assert {o.domain for o in m.opset_import} >= {"my.plugins"}


def test_input_shapes_pin_verification_but_keep_dynamic_dims(tmp_path):
    out, rep = tmp_path / "o.onnx", tmp_path / "r.json"
    proc = run_cli("fix", str(CNN), "-o", str(out), "--report", str(rep), "--input-shapes", "input:4x3x16x16")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(rep.read_text())["samples"] == ["input[4, 3, 16, 16]"]
    assert onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    proc = run_cli("fix", str(CNN), "-o", str(out), "--input-shapes", "input:[4,3,16,16]", "--fix-shapes")
    assert proc.returncode == 0, proc.stderr
    assert [d.dim_value for d in onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim] == [4, 3, 16, 16]


# --- --load-inputs that do not fit, and --strict on unverified outputs -------------------------

@pytest.mark.parametrize("case", ["misnamed", "dtype", "shape"])
def test_load_inputs_that_do_not_fit_the_model_are_usage_errors(tmp_path, case):
    import numpy as np

    data = {"misnamed": {"images": np.zeros((1, 3, 16, 16), np.float32)},
            "dtype": {"input": np.zeros((1, 3, 16, 16), np.float64)},
            "shape": {"input": np.zeros((1, 3, 32, 32), np.float32)}}[case]
    np.savez(tmp_path / "in.npz", **data)
    out = tmp_path / "o.onnx"
    proc = run_cli("fix", str(CNN), "-o", str(out), "--load-inputs", str(tmp_path / "in.npz"))
    _one_line_error(proc, {"misnamed": "'images'", "dtype": "float64", "shape": "axis 2"}[case])
    assert not out.exists()


def _corpus(name):
    from helpers import CORPUS

    path = CORPUS / name
    if not path.is_file():
        pytest.skip(f"corpus model {path} not found (needs ../shared/corpus beside the checkout)")
    return path


def test_token_ids_out_of_range_are_a_usage_error(tmp_path):
    import numpy as np

    model = _corpus("rnn_bilstm_gru_legacy_op13.onnx")  # an 8000-row embedding table
    np.savez(tmp_path / "in.npz", tokens=np.full((2, 5), 9000, np.int64), h0=np.zeros((4, 2, 256), np.float32),
             c0=np.zeros((4, 2, 256), np.float32))
    proc = run_cli("fix", str(model), "-o", str(tmp_path / "o.onnx"), "--load-inputs", str(tmp_path / "in.npz"))
    _one_line_error(proc, "'tokens'")
    assert "9000" in proc.stderr or "8000" in proc.stderr


def test_strict_fails_an_output_that_was_not_verified(tmp_path):
    model = FIXTURES / "evidence_nan_reference.onnx"  # NaN on every input: nothing can be verified numerically
    out = tmp_path / "o.onnx"
    proc = run_cli("fix", str(model), "-o", str(out), "--strict")
    assert proc.returncode == 1, proc.stderr
    assert out.exists()  # written, but the exit code and a warning say it was not verified
    assert "warning: the output was not verified numerically" in proc.stderr
    assert run_cli("fix", str(model), "-o", str(out), "--strict", "--no-verify").returncode == 2
