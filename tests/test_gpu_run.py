"""bench/gpu_run.py, the one command of the GPU run, exercised end to end on the CPU stand-in
(--cpu) with one small model: every part runs, every figure is labelled as not a GPU result, and
the planted TF32 divergence is found by bisect and isolate through the stand-in's TF32 emulation.
Without a CUDA build the CLI's onnxrt-cuda runs must be the one-sentence refusal."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

from helpers import FIXTURES, ROOT
from surgeon.backends.onnxrt_cuda import unavailable_reason


def test_gpu_run_dry_run_exercises_every_part(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(FIXTURES / "tutorial_cnn.onnx", models / "tutorial_cnn.onnx")  # no manifest: seeded samples
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_run.py"), "--cpu", "--models", str(models),
                           "--out", str(out), "--budget", "300"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    R = json.loads((out / "gpu_results.json").read_text())
    assert R["meta"]["gpu"] is False and "NOT GPU results" in R["meta"]["mode"]
    P = R["parts"]
    failed = {k: v.get("error") for k, v in P.items() if v.get("error") or v.get("stopped")}
    assert not failed, failed
    row = P["compare"]["models"]["tutorial_cnn.onnx"]
    assert not row.get("error") and row["tf32"]["verdict"] in ("within-tolerance", "no-effect")
    assert P["bisect"]["configs"]["onnxrt-cuda"]["named_the_planted_node"] is True
    assert P["bisect"]["configs"]["onnxrt-cuda:tf32=0"]["failed"] is False
    assert P["isolate"]["culprit_sets"] == [["tf32=1"]] and P["isolate"]["ddmin_within_one_at_a_time"] is True
    if unavailable_reason() is not None:  # no CUDA build: the CLI refuses, in one sentence
        for part in ("bisect", "isolate"):
            cli = P[part]["cli"]
            assert cli["rc"] == 2 and "onnxruntime-gpu" in cli["stderr_tail"], cli
    prof = P["profile"]["models"]["tutorial_cnn.onnx [manifest]"]
    assert prof["method"] == "synchronized-node-events" and prof["node_sum_ms"] > 0 and prof["ratio"] > 0
    methods = P["profile-methods"]["models"]["tutorial_cnn.onnx [manifest]"]["methods"]
    for name in ("synchronized-node-events", "host-node-events", "ort-model-run"):
        assert methods[name]["node_sum_ms"] > 0 and methods[name]["ratio"] > 0, (name, methods[name])
    assert "CPU stand-in" in methods["cupti-gpu-busy"]["skipped"]  # no GPU kernels, said so, not made up
    assert "ratio" in P["fix-profile"]["models"]["tutorial_cnn.onnx"]
    f16 = P["fp16"]["models"]["tutorial_cnn.onnx"]
    assert f16["emulation"]["passed"] is True and "agree" in f16 and f16["explanation"]
    md = (out / "gpu_results.md").read_text()
    assert "CPU STAND-IN" in md and "## fp16" in md and "## isolate" in md
