"""Built-in rule packs of ``replace-custom-ops``, on by default.

Each module exports ``RULES``, the same contract as a user rule file.
"""

from passes.rulepacks import layernorm, ms_contrib, ms_standard

BUILTIN_PACKS = {"ms-contrib": ms_contrib.RULES, "ms-standard": ms_standard.RULES, "layernorm": layernorm.RULES}


def builtin_rules() -> list:
    return [r for rules in BUILTIN_PACKS.values() for r in rules]
