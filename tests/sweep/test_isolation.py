"""A job that crashes hard, runs out of memory or hangs is that model's result; the rest of
the sweep completes. The three are real: a rules file (user code the fix step imports)
that dereferences NULL through ctypes, one that allocates until the watchdog kills it, one
that sleeps past the time limit."""

from __future__ import annotations

import json
import time

from zoo import conv_relu, manifest, matmul, steps_by_model, sweep_cli

SEGFAULT = "import ctypes\nctypes.string_at(0)  # SIGSEGV\nRULES = []\n"
HOG = ("import time\nimport numpy as np\nhog = []\nfor _ in range(60):  # up to 6 GB, 100 MB at a time\n"
       "    hog.append(np.ones(100 * 2**20, dtype=np.uint8))\n    time.sleep(0.05)\nRULES = []\n")
HANG = "import time\ntime.sleep(600)\nRULES = []\n"


def test_crash_oom_and_timeout_are_results(tmp_path):
    for name, code in (("segfault", SEGFAULT), ("hog", HOG), ("hang", HANG)):
        (tmp_path / f"{name}_rules.py").write_text(code)
        conv_relu(tmp_path / f"{name}.onnx")
    matmul(tmp_path / "fine.onnx")
    zoo = manifest(tmp_path / "zoo.yaml", [
        {"path": "segfault.onnx", "fix": {"rules": ["segfault_rules.py"]}},
        {"path": "hog.onnx", "memory": "1G", "fix": {"rules": ["hog_rules.py"]}},
        {"path": "hang.onnx", "timeout": 8, "fix": {"rules": ["hang_rules.py"]}},
        {"path": "fine.onnx"}])
    out = tmp_path / "out"
    t0 = time.monotonic()
    res = sweep_cli(zoo, "--out", out, "--jobs", "2", "--steps", "fix,trt-check", "--junit", tmp_path / "j.xml")
    assert time.monotonic() - t0 < 300
    assert res.returncode == 1 and "Traceback" not in res.stdout + res.stderr, res.stderr
    by = steps_by_model(out)
    crash, oom, hang, fine = by["segfault"], by["hog"], by["hang"], by["fine"]
    assert crash["fix"]["status"] == "crashed" and "SIGSEGV" in crash["fix"]["message"]
    assert oom["fix"]["status"] == "out-of-memory" and "past the limit of 1024 MB" in oom["fix"]["message"]
    assert hang["fix"]["status"] == "timeout" and "8 s" in hang["fix"]["message"]
    for lost in (crash, oom, hang):  # the step after the lost one never ran
        assert lost["trt-check"]["status"] == "skipped"
    assert fine["fix"]["passed"] and fine["trt-check"]["passed"]
    text = (tmp_path / "j.xml").read_text()
    assert text.count("<error ") == 3 and text.count("<skipped ") == 3
    # lost jobs are not cached: the next run tries them again (and only them)
    again = sweep_cli(zoo, "--out", out, "--jobs", "2", "--steps", "fix", "--json")
    summary = json.loads(again.stdout.splitlines()[-1])["summary"]
    assert summary["started_jobs"] == 3
