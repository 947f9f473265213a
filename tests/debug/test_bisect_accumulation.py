"""`surgeon bisect` on error that accumulates: no culprit is named where no small set of
nodes introduces the error; the error growth along the path is reported instead; a true
culprit (one that fails alone, or with a few neighbours) is still named exactly."""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import subprocess
import sys

import numpy as np
import onnx
import pytest

from helpers import FIXTURES, ROOT, run_cli
from surgeon import backends
from surgeon.debug.bisect import bisect_model, growth
from surgeon.debug.bisect.strategy import Dag, Search

spec = importlib.util.spec_from_file_location("make_bisect_fixtures", FIXTURES / "make_bisect_fixtures.py")
F = importlib.util.module_from_spec(spec)
spec.loader.exec_module(F)

FP16_TOL = dict(atol=1e-2, rtol=1e-2)  # float16's defaults, stated


def _samples(lo: float, hi: float, n: int = 1):
    rng = np.random.default_rng(0)
    return [{"x": rng.uniform(lo, hi, (2, 8)).astype(np.float32)} for _ in range(n)]


def _fp16(model, **kw):
    return bisect_model(model, _samples(10, 20), ref=backends.create("onnxrt"), test=backends.create("fp16"), **FP16_TOL, **kw)


def _against(a, b, **kw):
    ref = backends.create("onnxrt")
    return bisect_model(a, _samples(-1, 1, 2), ref=ref, test=ref, against=b, **kw)


def _check_profile(acc: dict) -> list[dict]:
    rows = acc["growth"]
    first = acc["first_beyond_tolerance"]["index"]
    assert rows[first]["node"] == acc["node"] and rows[first]["point"] is True
    assert all(not r["exceeds"] for r in rows[:first]) and all(r["exceeds"] for r in rows[first:])
    return rows


def test_fp16_rounding_that_accumulates_names_no_culprit():
    # 60 Muls by 1 + 2**-12: FP16 rounds the weight to 1.0, every node loses 2.4e-4; on
    # inputs in [10, 20] the relative error crosses rtol=1e-2 after ~40 nodes
    r = _fp16(F.drift_chain(60))
    assert r.failed and r.culprits == []
    (acc,) = r.accumulation
    assert acc["introduced"] is False and acc["upstream_nodes"] > 16
    assert r.diagnosis == {"kind": "accumulation",
                           "message": f"the error accumulates over {acc['upstream_nodes'] + 1} nodes; no single culprit"}
    rows = _check_profile(acc)
    assert [x["node"] for x in rows] == [f"m{i}" for i in range(60)]  # the whole chain, input to output
    assert rows[-1]["tensor"] == "y" and rows[-1]["max_abs"] > 10 * rows[0]["max_abs"]  # grows along the way
    assert not any(x["growth"] and x["growth"] >= growth.JUMP for x in rows)  # no jump: pure accumulation
    assert r.reduced_verified and len(r.reduced_nodes) == acc["upstream_nodes"] + 1
    profile_steps = [s for s in r.steps if s["kind"] == "profile"]
    assert len(profile_steps) == 1 and profile_steps[0]["nodes"] == 60


def test_a_true_single_culprit_in_the_same_chain_is_still_named_alone():
    # node 20 multiplies by 1e5 and overflows FP16 before the drift reaches the tolerance
    r = _fp16(F.drift_chain(60, fault=20))
    assert [(c["node"], c["introduced"]) for c in r.culprits] == [("m20", True)]
    assert r.accumulation == [] and r.diagnosis["kind"] == "culprit"
    assert r.reduced_nodes == ["m20"] and not any(s["kind"] == "profile" for s in r.steps)


def test_a_culprit_past_the_accumulation_point_is_found_on_the_growth_path():
    # the drift crosses the tolerance near node 41; node 60 overflows by itself further down,
    # where the first-divergence search (which sets descendants aside) cannot see it
    r = _fp16(F.drift_chain(80, fault=60))
    assert [(c["node"], c["introduced"]) for c in r.culprits] == [("m60", True)]
    assert "error-growth path" in r.culprits[0]["verdict"]
    (acc,) = r.accumulation
    rows = acc["growth"]
    assert rows[60]["node"] == "m60" and rows[60]["nonfinite"] > 0
    assert r.diagnosis["kind"] == "mixed" and r.reduced_nodes == ["m60"] and r.reduced_verified


def test_against_a_copy_whose_every_constant_is_shifted():
    a = F.chain(60)  # Adds; B adds 1e-3 more at every node: the error after node i is (i + 1) * 1e-3
    r = _against(a, F.shifted(a, 1e-3), atol=0.0205, rtol=0.0)
    assert r.culprits == []
    (acc,) = r.accumulation
    assert (acc["node"], acc["upstream_nodes"]) == ("n20", 20)
    rows = _check_profile(acc)
    assert rows[20]["max_abs"] == pytest.approx(0.021, abs=1e-5) and rows[19]["max_abs"] == pytest.approx(0.020, abs=1e-5)
    assert r.samples == 2


def test_a_culprit_that_needs_one_neighbour_stays_a_culprit_unless_max_context_says_otherwise():
    a = F.chain(60)
    b = F.shifted(a, 0.006, ["n29", "n30"])  # each 0.006 < atol 0.01 alone; 0.012 together
    r = _against(a, b, atol=0.01, rtol=0.0)
    assert [(c["node"], c["introduced"]) for c in r.culprits] == [("n30", False)]
    assert r.culprits[0]["subgraph"] == ["n29", "n30"] and r.accumulation == []
    # its profile: 0.006 (0.6x the tolerance) at n29, 0.012 from n30 on, no jump to test
    rows = r.culprits[0]["growth"]
    assert r.culprits[0]["first_beyond_tolerance"]["node"] == "n30"
    assert rows[29]["tol_ratio"] == pytest.approx(0.6, rel=1e-3) and rows[-1]["tol_ratio"] == pytest.approx(1.2, rel=1e-3)
    strict = _against(a, b, atol=0.01, rtol=0.0, max_context=0)
    assert strict.culprits == [] and strict.accumulation[0]["upstream_nodes"] == 1


def test_check_oracles_never_classify_accumulation():
    # a shell oracle has no values to profile: a node failing only with the whole prefix is reported as before
    ref = backends.create("onnxrt")
    r = bisect_model(F.chain(30), _samples(-1, 1), ref=ref, test=ref, check="grep -q n0 {model} && grep -q n29 {model} && exit 1 || exit 0")
    assert r.mode == "prefixes" and r.accumulation == [] and not any(s["kind"] == "profile" for s in r.steps)
    assert [(c["node"], c["introduced"]) for c in r.culprits] == [("n29", False)]
    assert len(r.culprits[0]["subgraph"]) == 30 and "growth" not in r.culprits[0]


def _repro(outdir) -> subprocess.CompletedProcess:
    text = (outdir / "REPRO.md").read_text()
    command = text.split("```sh\n", 1)[1].split("\n```", 1)[0]
    if command.startswith("surgeon "):
        command = f"{shlex.quote(sys.executable)} {shlex.quote(str(ROOT / 'cli.py'))}" + command[len("surgeon"):]
    return subprocess.run(command, shell=True, cwd=outdir, capture_output=True, text=True, timeout=120)


def test_cli_reports_accumulation_in_terminal_report_and_repro_and_resumes(tmp_path):
    onnx.save(F.drift_chain(60), tmp_path / "m.onnx")
    out = tmp_path / "out"
    argv = ["bisect", str(tmp_path / "m.onnx"), "--test", "fp16", "--val-range", "x:[10,20]", "-o", str(out)]
    r = run_cli(*argv)
    assert r.returncode == 1, r.stderr
    assert "no single culprit" in r.stdout and "error growth through" in r.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["culprits"] == [] and report["diagnosis"]["kind"] == "accumulation"
    acc = report["accumulation"][0]
    i = acc["first_beyond_tolerance"]["index"]
    point = next(line for line in r.stdout.splitlines() if re.search(rf"│ {i}\s+│ {acc['node']}\s+│ Mul", line))
    assert "first" in point and "culprits" not in r.stdout  # the row where it crosses, marked (wraps at 80 columns)
    assert len(acc["growth"]) == 60 and acc["first_beyond_tolerance"]["node"] == acc["node"]
    repro = (out / "REPRO.md").read_text()
    assert repro.startswith("# Reproducing the failure\n\n**The error accumulates over")
    assert "| # | node | op | tensor | max abs err | max rel err | x tol |" in repro and "**first beyond tolerance**" in repro
    assert _repro(out).returncode == 1  # the accumulating stretch still fails on its own
    again = run_cli(*argv)  # every verdict, the profile included, comes from bisect-state.json
    second = json.loads((out / "report.json").read_text())
    assert again.returncode == 1 and second["oracle_calls"] == 0
    assert second["accumulation"] == report["accumulation"]


def test_cli_max_context_must_not_be_negative(tmp_path):
    r = run_cli("bisect", str(FIXTURES / "bisect" / "branches.onnx"), "--test", "fp16", "--max-context", "-1",
                "-o", str(tmp_path / "o"))
    assert r.returncode == 2 and "--max-context" in r.stderr and "Traceback" not in r.stderr


# -- the pure parts --------------------------------------------------------------------------

def test_strategy_marks_suspects_that_need_more_context_than_allowed():
    n = 40
    dag = Dag.build([[i - 1] if i else [] for i in range(n)], [n - 1])
    bad = dag.descendants([30])
    needs = set(range(5, 31))  # node 30 fails only with nodes 5..29 present: 25 upstream nodes
    for limit, accumulates in ((16, True), (25, False), (None, False)):
        search = Search(dag, max_context=limit)
        while (cand := search.next_candidate()) is not None:
            search.record(cand.nodes & bad if cand.kind == "mark" else needs <= cand.nodes)
        (c,) = search.culprits
        assert (c.node, c.introduced, c.upstream, c.accumulates) == (30, False, 25, accumulates)


def test_growth_path_goes_through_the_longest_chain_to_a_failing_sink():
    # 0 -> 1 -> 2 -> 4 (sink) and 0 -> 3 -> 4; 4 -> 5 (sink), 2 -> 6 (sink)
    dag = Dag.build([[], [0], [1], [0], [2, 3], [4], [2]], [5, 6])
    assert dag.chain_to(4) == [0, 1, 2, 4]
    assert dag.path_between(2, {5}) == [2, 4, 5] and dag.path_between(2, {6, 5}) == [2, 6]
    assert dag.path_between(5, {6}) == [5]


def test_condense_keeps_the_ends_the_crossing_and_the_point():
    rows = [{"node": f"n{i}", "op_type": "Mul", "tensor": f"t{i}", "compared": True, "max_abs": i * 0.01,
             "max_rel": 0.0, "outside": int(i >= 141), "elements": 16, "exceeds": i >= 141, "growth": None,
             "point": i == 141} for i in range(300)]
    shown = growth.condense(rows, 16)
    kept = [item[0] for item in shown if item is not None]
    assert {0, 1, 139, 140, 141, 142, 143, 298, 299} <= set(kept) and len(kept) <= 16
    assert shown.count(None) >= 2 and kept == sorted(kept)
    assert [item[0] for item in growth.condense(rows[:10], 16)] == list(range(10))
    assert "| 141 | n141 |" in growth.markdown(rows)
