"""Isolate adapter: which CUDA provider choices make ONNX Runtime on the GPU miss the tolerance.

The executed counterpart of TensorRT tactic isolation: the configuration under test (for example
ONNX Runtime's CUDA defaults, ``onnxrt-cuda``: TF32 on, exhaustive cuDNN search, all graph
optimizations) differs from the most conservative one in a few choices, and one or two of them
break the tolerance. The choices:

- ``tf32=1`` (conservative: off): TensorFloat-32 for Conv, MatMul and Gemm;
- ``algo-search=exhaustive`` or ``heuristic`` (conservative: ``default``, cuDNN's one implicit
  GEMM algorithm with no search: slow, but an algorithm picked by timing can be a Winograd or
  FFT one with larger rounding error);
- ``nhwc=1`` (conservative: off): channels-last kernels;
- each ONNX Runtime graph optimizer that fires on this model in a CUDA session (found as the
  ``onnxrt-optimizers`` target finds them, from ONNX Runtime's verbose log, here of a session on
  the CUDA provider), enabled one by one; the others are passed as ``disabled_optimizers``.

A subset is *applied*: the configuration is the conservative one with exactly those choices
taken from the configuration under test. The oracle runs it on the GPU and compares every
output with a CPU reference (ONNX Runtime without optimizations, or onnx's reference
evaluator) within the tolerances; ddmin does the rest. A CUDA provider that does not start is
never a verdict: the search stops with that sentence.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import onnx

from surgeon import backends
from surgeon.debug.isolate.ddmin import Subset, Verdict
from surgeon.debug.isolate.judge import judge
from surgeon.debug.isolate.ort_optimizers import KNOWN_RULES, OptimizerInventory, parse_transformer_log, validate_names
from surgeon.errors import UsageError

CONSERVATIVE = {"tf32": False, "algo_search": "default", "nhwc": False}


def provider_choices(config: Any) -> list[tuple[str, str, Any]]:
    """(label, option field, value under test) for each provider option that differs from the
    conservative configuration."""
    out = []
    if config.tf32:
        out.append(("tf32=1", "tf32", True))
    if config.algo_search != CONSERVATIVE["algo_search"]:
        out.append((f"algo-search={config.algo_search}", "algo_search", config.algo_search))
    if config.nhwc:
        out.append(("nhwc=1", "nhwc", True))
    return out


class CudaOptionsTarget:
    """Oracle over CUDA provider choices and ORT optimizers: applied subset -> does the GPU match?"""

    name = "cuda-options"

    def __init__(self, model: onnx.ModelProto, samples: list[dict[str, Any]], *, test: Any = "onnxrt-cuda",
                 reference: str = "onnxrt-noopt", optimizers: Sequence[str] | None = None,
                 atol: float | Mapping[str, float] | None = None, rtol: float | Mapping[str, float] | None = None,
                 nan_equal: bool = False, cpu_stand_in: bool = False, progress=None):
        if not samples:
            raise UsageError("isolate needs at least one input sample")
        self.model, self.samples = model, samples
        self.atol, self.rtol, self.nan_equal = atol, rtol, nan_equal
        if isinstance(test, str):
            name, _ = backends.split_spec(test)
            if name != "onnxrt-cuda":
                raise UsageError(f"--target cuda-options searches an onnxrt-cuda configuration, not '{test}'")
            test = backends.create(test, cpu_stand_in=True) if cpu_stand_in else backends.create(test)
        self.test = test
        self.config = test.options
        self.provider = provider_choices(self.config)
        say = progress or (lambda _m: None)
        self.inventory = OptimizerInventory((), ())
        opt_choices: list[str] = []
        if self.config.optimization != "disable":
            say("asking ONNX Runtime which optimizers it runs on this model on the CUDA provider")
            session = test.session(model)  # a CUDA provider that does not start stops here, with its reason
            self.inventory = parse_transformer_log(getattr(session, "log", ""))
            if optimizers:
                validate_names(optimizers, self.inventory)
                opt_choices = list(dict.fromkeys(optimizers))
            else:
                opt_choices = list(self.inventory.candidates())
        elif optimizers:
            raise UsageError("--optimizers needs graph optimizations on (the configuration has opt=disable)")
        self.optimizers = opt_choices
        self.choices = [label for label, _, _ in self.provider] + opt_choices
        ref_backend = backends.create(reference, threads=1) if reference == "onnxrt-noopt" else backends.create(reference)
        session = ref_backend.session(model)
        self.reference = [session.run(f) for f in samples]
        self.mechanism = (f"CUDA provider options (conservative: TF32 off, algo-search default, NHWC off) and ONNX "
                          f"Runtime disabled_optimizers on {test.describe()}, against {ref_backend.describe()}")

    def backend_for(self, subset: Subset) -> Any:
        """The backend of the configuration with exactly ``subset`` applied."""
        applied = set(subset)
        changes = dict(CONSERVATIVE)
        for i, (_, field, value) in enumerate(self.provider):
            if i in applied:
                changes[field] = value
        n = len(self.provider)
        enabled = {self.optimizers[i - n] for i in applied if i >= n}
        disabled = [name for name in self.inventory.known if name not in enabled]
        from surgeon.backends.onnxrt_cuda import OnnxRuntimeCudaBackend

        return OnnxRuntimeCudaBackend(options=self.config.with_changes(**changes), disabled_optimizers=disabled,
                                      cpu_stand_in=self.test.cpu_stand_in, warn_slow=False)

    def __call__(self, subset: Subset) -> Verdict:
        backend = self.backend_for(subset)
        return judge(subset, lambda: backend.session(self.model), self.samples, self.reference, atol=self.atol,
                     rtol=self.rtol, nan_equal=self.nan_equal)

    def describe(self, index: int) -> dict[str, Any]:
        if index < len(self.provider):
            label, field, value = self.provider[index]
            return {"choice": label, "kind": "provider option", "option": field, "under_test": value,
                    "conservative": CONSERVATIVE[field]}
        name = self.optimizers[index - len(self.provider)]
        return {"choice": name, "kind": "rewrite rule" if name in KNOWN_RULES else "graph transformer"}

    def label(self, index: int) -> str:
        return self.choices[index]

    def safe_backend(self, culprits: Subset) -> Any:
        """The configuration under test with the culprits reverted (everything else kept)."""
        return self.backend_for(tuple(i for i in range(len(self.choices)) if i not in set(culprits)))

    def write_avoid(self, culprits: Subset, art) -> tuple[str, str]:
        """``cuda_options.txt``: the configuration without the culprits, as a --test value and as
        ONNX Runtime's own provider options and disabled optimizers."""
        safe = self.safe_backend(culprits)
        reverted = [self.choices[i] for i in culprits if i < len(self.provider)]
        disabled_culprits = [self.choices[i] for i in culprits if i >= len(self.provider)]
        lines = [f"# the configuration under test without the culprits: {', '.join(self.choices[i] for i in culprits)}",
                 f"--test {safe.spec()}"]
        if disabled_culprits:
            lines.append(f"disabled_optimizers = {disabled_culprits!r}")
        lines.append(f"CUDAExecutionProvider options = {safe.options.provider_options()!r}")
        path = art.write_text("cuda_options.txt", "\n".join(lines) + "\n")
        how = f"--test {safe.spec()}" if reverted else ""
        if disabled_culprits:
            how += (" and " if how else "") + f"disabled_optimizers={disabled_culprits!r}"
        return str(path), how
