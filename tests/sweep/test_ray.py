"""--engine ray: the same results as the local engine (apart from timings), and a sweep
spread over a two-node cluster started on this machine with ``ray start``.

Runs where the ``ray`` extra is installed (the test extra installs it, so CI runs these).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from zoo import conv_relu, manifest, matmul, results, sweep_cli

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install \"surgeon[ray]\")")

TIMING = ("seconds", "cached")


@pytest.fixture
def ray_env():
    """Ray's token authentication with a token of this test's own, given in the environment,
    so that nothing is read from or written to ~/.ray; Ray's session files in a temporary
    folder with a short path (its Unix sockets live there, and their paths are limited)."""
    tmp = tempfile.mkdtemp(prefix="ray")
    env = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(16), RAY_TMPDIR=tmp)
    env.pop("RAY_ADDRESS", None)
    yield env
    shutil.rmtree(tmp, ignore_errors=True)


def _comparable(data: dict) -> list:
    return [{"model": m["model"], "sha256": m["sha256"],
             "steps": [{k: v for k, v in s.items() if k not in TIMING} for s in m["steps"]]} for m in data["models"]]


def _zoo(tmp: Path, n: int = 2) -> Path:
    models = []
    for i in range(n):
        (conv_relu if i % 2 == 0 else matmul)(tmp / f"m{i}.onnx", **({"extra_sin": True} if i == 2 else {}))
        models.append({"path": f"m{i}.onnx"})
    return manifest(tmp / "zoo.yaml", models)


def test_ray_engine_gives_the_local_results(tmp_path, ray_env):
    zoo = _zoo(tmp_path, 3)
    local = sweep_cli(zoo, "--out", tmp_path / "local", "--jobs", "2")
    on_ray = sweep_cli(zoo, "--out", tmp_path / "ray", "--jobs", "2", "--engine", "ray", env=ray_env)
    assert local.returncode == 0 and on_ray.returncode == 0, on_ray.stdout + on_ray.stderr
    a, b = results(tmp_path / "local"), results(tmp_path / "ray")
    assert b["engine"] == "ray" and b["started_jobs"] == 3
    assert _comparable(a) == _comparable(b)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_start(*args: str, tmp: Path, name: str, env: dict) -> subprocess.Popen:
    """``ray start ... --block`` in its own session, so that exactly its processes can be ended."""
    exe = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"
    log = open(tmp / f"{name}.log", "w")
    return subprocess.Popen([exe, "start", "--block", *args], stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True, env=env)


def _stop(proc: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(20)
            if sig == signal.SIGTERM:
                time.sleep(1)  # ray's own children leave on SIGTERM; SIGKILL takes what is left of the group
        except subprocess.TimeoutExpired:
            continue


def test_two_node_cluster_runs_the_sweep_on_both(tmp_path, ray_env):
    port = _free_port()
    address = f"127.0.0.1:{port}"
    head = _ray_start("--head", "--include-dashboard=false", f"--port={port}", "--node-ip-address=127.0.0.1", "--num-cpus=1",
                      '--resources={"head_node": 1}', tmp=tmp_path, name="head", env=ray_env)
    second = None
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "head.log").read_text().count("Ray runtime started"):
            assert head.poll() is None and time.monotonic() < deadline, (tmp_path / "head.log").read_text()
            time.sleep(0.5)
        second = _ray_start(f"--address={address}", "--node-ip-address=127.0.0.1", "--num-cpus=1",
                            '--resources={"second_node": 1}', tmp=tmp_path, name="second", env=ray_env)
        probe = ("import ray,sys; ray.init(address=sys.argv[1], log_to_driver=False); "
                 "print(len([n for n in ray.nodes() if n['Alive']]))")
        while True:
            alive = subprocess.run([sys.executable, "-c", probe, address], capture_output=True, text=True,
                                   env=ray_env)
            if alive.stdout.strip() == "2":
                break
            assert second.poll() is None and time.monotonic() < deadline, (tmp_path / "second.log").read_text()
            time.sleep(1)
        zoo = _zoo(tmp_path, 4)
        res = sweep_cli(zoo, "--out", tmp_path / "out", "--engine", "ray", "--ray-address", address, env=ray_env)
        assert res.returncode == 0, res.stdout + res.stderr
        data = results(tmp_path / "out")
        nodes = {m["worker"].split(":")[0] for m in data["models"]}
        assert len(nodes) == 2, data["models"]  # spread over both nodes
        assert all(s["passed"] for m in data["models"] for s in m["steps"])
    finally:
        for proc in (second, head):
            if proc is not None:
                _stop(proc)
