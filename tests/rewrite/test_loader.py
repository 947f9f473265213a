"""Loading user rule files and entry-point rule packs; every malformed file is one RuleError."""

import textwrap

import pytest

from helpers import FIXTURES, run_cli
from surgeon.errors import RuleError
from surgeon.rewrite import Rule, loader, load_rule_file, load_rule_files

GOOD = """
from surgeon.rewrite import Op, rule
RULES = [rule("neg-to-mul", Op("Neg"), lambda m, b: [b.op("Mul", [m.inputs[0], b.const(-1.0)])])]
"""


def _write(tmp_path, text, name="rules.py"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def test_good_file_loads(tmp_path):
    rules = load_rule_file(_write(tmp_path, GOOD))
    assert [r.name for r in rules] == ["neg-to-mul"] and isinstance(rules[0], Rule)


def test_fixture_rule_file_loads():
    assert [r.name for r in load_rule_file(FIXTURES / "rules" / "trt_plugin_rules.py")] == ["trt-group-norm-plugin"]


@pytest.mark.parametrize("text,needle", [
    ("X = 1\n", "defines no RULES"),
    ("RULES = [\n", "syntax error at line"),
    ("RULES = 'neg'\n", "RULES must be a list of rules, got str"),
    ("RULES = [42]\n", "RULES[0] is a int, not a surgeon.rewrite.Rule"),
    ("from surgeon.rewrite import Rule\nclass R(Rule):\n    name = 'r'\nRULES = [R]\n", "put an instance (R())"),
    ("import no_such_module_xyz\n", "failed to import: ModuleNotFoundError"),
    ("from surgeon.rewrite import Rule\nclass R(Rule):\n    name = 'r'\nRULES = [R()]\n", "neither a pattern"),
])
def test_malformed_files_raise_one_sentence(tmp_path, text, needle):
    with pytest.raises(RuleError, match=None) as info:
        load_rule_file(_write(tmp_path, text))
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_missing_and_non_python_files(tmp_path):
    with pytest.raises(RuleError, match="does not exist"):
        load_rule_file(tmp_path / "nope.py")
    with pytest.raises(RuleError, match="not a Python file"):
        load_rule_file(_write(tmp_path, GOOD, "rules.txt"))


def test_duplicate_names_across_files(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    with pytest.raises(RuleError, match="two rules are named 'neg-to-mul'"):
        load_rule_files([_write(a, GOOD), _write(b, GOOD)])


def test_entry_point_packs(monkeypatch, tmp_path):
    class EP:
        def __init__(self, name, obj):
            self.name, self.value, self._obj = name, f"pkg:{name}", obj

        def load(self):
            return self._obj

    rules = load_rule_file(_write(tmp_path, GOOD))
    monkeypatch.setattr(loader, "entry_points", lambda group: [EP("pack", rules)] if group == "surgeon.rules" else [])
    assert [r.name for r in loader.installed_packs()] == ["neg-to-mul"]
    monkeypatch.setattr(loader, "entry_points", lambda group: [EP("broken", object())])
    with pytest.raises(RuleError, match="rule pack 'broken' .* has no RULES"):
        loader.installed_packs()


def test_cli_malformed_rule_file_is_exit_2_one_line(tmp_path):
    bad = _write(tmp_path, "RULES = [\n")
    out = tmp_path / "o.onnx"
    for args in (["match", str(FIXTURES / "custom_ops_groupnorm.onnx"), "--rules", str(bad)],
                 ["fix", str(FIXTURES / "custom_ops_groupnorm.onnx"), "-o", str(out), "--rules", str(bad)]):
        proc = run_cli(*args)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "syntax error at line 1" in lines[0] and "Traceback" not in proc.stderr
    assert not out.exists()
