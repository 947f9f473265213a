"""``surgeon bisect``: find the node where a backend (or a second model) first goes wrong,
and cut the model down to the smallest subgraph that still fails.

Three parts that are tested alone (DESIGN.md, "Debug algorithms"): ``strategy`` (a pure
search state machine), ``oracle`` (model → verdict), ``artifacts`` (the resumable OUTDIR);
``extract`` turns node sets into models, ``noise`` judges whether marked tensors can be
trusted on this backend, ``growth`` profiles accumulated error, and ``reduce`` drives the
whole thing.
"""

from surgeon.debug.bisect.reduce import BisectResult, bisect_model, repro_text  # noqa: F401
