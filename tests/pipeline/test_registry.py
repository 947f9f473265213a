"""Textual pipelines: a whole pass list, or +/- edits of the default pipeline."""

from __future__ import annotations

import re

import pytest

from helpers import FIXTURES, run_cli
from surgeon.errors import UnknownPassError, UsageError
from surgeon.pipeline.registry import default_pipeline, parse_pipeline


def test_a_plain_list_is_the_pipeline_and_none_is_the_default():
    assert parse_pipeline("cleanup, fold-constants") == ["cleanup", "fold-constants"]
    assert parse_pipeline(None) == default_pipeline()


def test_edits_add_after_the_defaults_and_remove_in_place():
    default = default_pipeline()
    assert "lower-einsum" not in default and "merge-duplicates" in default
    got = parse_pipeline("+lower-einsum,-merge-duplicates")
    assert got == [n for n in default if n != "merge-duplicates"] + ["lower-einsum"]
    assert parse_pipeline(["-cleanup"]) == [n for n in default if n != "cleanup"]


@pytest.mark.parametrize("text, needle", [
    ("cleanup,+lower-einsum", "mixes names with +/- edits"),
    ("+cleanup", "already runs cleanup"),
    ("-lower-einsum", "does not run lower-einsum"),
    ("-ALL", "removes every pass"),
    (" , ", "is empty"),
])
def test_bad_edits_are_usage_errors(text, needle):
    if text == "-ALL":
        text = ",".join("-" + n for n in default_pipeline())
    with pytest.raises(UsageError, match=re.escape(needle)):
        parse_pipeline(text)


def test_an_unknown_name_in_an_edit_is_named():
    with pytest.raises(UnknownPassError, match="unknown pass 'no-such-pass'"):
        parse_pipeline("+no-such-pass")


def test_fix_cli_takes_edits(tmp_path):
    out = tmp_path / "o.onnx"
    # a list starting with '-' is taken as the value of --passes, not as an option
    r = run_cli("fix", str(FIXTURES / "einsum_attention_legacy_op14.onnx"), "-o", str(out), "--passes",
                "-merge-duplicates,+lower-einsum", "--json")
    assert r.returncode == 0, r.stderr
    import json

    ran = {p["name"] for p in json.loads(r.stdout)["passes"]}
    assert "lower-einsum" in ran and "merge-duplicates" not in ran and "cleanup" in ran
