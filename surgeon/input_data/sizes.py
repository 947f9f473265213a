"""Which sizes samples are made at: the ladder of sizes tried for dynamic dims, the dims the
graph itself fixes, and a :class:`Plan` (sizes plus the integer constraints at those sizes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np
import onnx

from surgeon import input_ranges
from surgeon.errors import InputDataError
from surgeon.input_data.specs import (
    SEQUENCE_LENGTH, InputSpec, concrete_shape, image_layout, input_specs, pinned_sizes, symbols, tensor_specs,
)
from surgeon.input_data.values import make_feeds

# Scales tried for dynamic dims, in order. Each attempt gives every dynamic symbol two
# different sizes, and different symbols different sizes, so a pass that bakes in or
# mixes up a dimension is caught. Scale 32 comes first: image models downsample by 32,
# and at tiny sizes every feature map is 1x1, where a baked-in H/32 would go unnoticed.
# 256 covers audio-length dims (STFT windows); 1 covers models that need tiny sizes; 128
# (a 256-sample window, silero's 8 kHz chunk) only where nothing before it ran.
_SIZE_LADDER = (32, 8, 256, 1, 128)
# Dims only integer inputs carry (token ids, attention masks, positions) start small: a
# sequence of 8 tokens exercises the same graph as 64, and a language model's cost, its
# vocabulary projection above all, grows with every token of every verification run.
_TOKEN_LADDER = (4, 32, 8, 1, 16)
_BATCH_SIZES = (2, 3)


def _batch_symbols(specs: list[InputSpec]) -> set[str]:
    out = set()
    for s in specs:
        for leaf in tensor_specs(s):
            if leaf.shape and isinstance(leaf.shape[0], str):
                out.add(leaf.shape[0])
    return out


def _token_symbols(specs: list[InputSpec]) -> set[str]:
    """Dynamic dims that appear on integer or boolean tensor inputs only."""
    seen: dict[str, bool] = {}
    for s in specs:
        if not s.is_tensor or s.shape is None:
            continue
        integer = s.dtype.kind in "biu"
        for d in s.shape:
            if isinstance(d, str):
                seen[d] = seen.get(d, True) and integer
    return {d for d, only_integer in seen.items() if only_integer}


def size_attempts(specs: list[InputSpec], pins: Mapping[str, tuple[int, ...]],
                  fixed: Mapping[str, int] | None = None) -> list[list[dict[str, int]]]:
    """Candidate size assignments: each attempt is two assignments (sample A, sample B).

    ``fixed``: sizes the graph itself fixes (:func:`graph_sizes`); pinned shapes win over them.
    """
    fixed = {**dict(fixed or {}), **pinned_sizes(specs, pins)}
    free = [s for s in symbols(specs) if s not in fixed]
    batch = _batch_symbols(specs)
    tokens = _token_symbols(specs)
    attempts = []
    for scale, token_scale in zip(_SIZE_LADDER, _TOKEN_LADDER):
        pair = []
        for sample in (0, 1):
            sizes = dict(fixed)
            k = 0
            for sym in free:
                if sym in batch:
                    sizes[sym] = _BATCH_SIZES[sample]
                else:
                    sizes[sym] = (token_scale if sym in tokens else scale) * (2 + k + sample)
                    k += 1
            pair.append(sizes)
        attempts.append(pair)
        if not any(s not in batch for s in free):
            break  # only batch dims: larger scales would try the same sizes again
    return attempts


def graph_sizes(model: onnx.ModelProto, specs: list[InputSpec] | None = None) -> dict[str, tuple[int, str]]:
    """Dynamic dims whose size the graph fixes (an LSTM's W, a Conv's in-channels, a MatMul
    against a weight, a Reshape to a constant shape): symbol -> (size, why).

    Generated sizes for these dims would only make samples the model cannot run on.
    """
    specs = input_specs(model) if specs is None else specs
    shapes = {s.name: s.shape for s in specs if s.kind == "tensor" and s.shape is not None}
    if not any(isinstance(d, str) for dims in shapes.values() for d in dims):
        return {}
    return input_ranges.fixed_dims(model, shapes)


def fixed_sizes(model: onnx.ModelProto) -> dict[str, int]:
    """symbol -> size for the dims the graph fixes (:func:`graph_sizes` without the reasons),
    for :func:`size_attempts`' ``fixed``."""
    return {sym: size for sym, (size, _why) in graph_sizes(model).items()}


def tied_state_dims(specs: list[InputSpec], fixed: Mapping[str, int]) -> dict[str, str]:
    """Dims to try equal to the batch when nothing else runs: an input whose one dynamic dim is
    not its first (a recurrent state ``[layers, batch, hidden]``, silero's ``state[2, ?, 128]``)
    whose batch is a symbol of its own, tied to the one batch symbol of the other inputs."""
    batch = {s.shape[0] for s in specs if s.is_tensor and s.shape and isinstance(s.shape[0], str)} - set(fixed)
    if len(batch) != 1:
        return {}
    (b,) = batch
    tied = {}
    for s in specs:
        if not s.is_tensor or not s.shape:
            continue
        dynamic = [d for d in s.shape if isinstance(d, str) and d not in fixed]
        if len(dynamic) == 1 and s.shape[0] != dynamic[0] and dynamic[0] != b:
            tied[dynamic[0]] = b
    return tied


@dataclass(frozen=True)
class Plan:
    """Everything needed to make samples at one assignment of sizes."""

    sizes: dict[str, int]
    constraints: dict[str, input_ranges.Constraint]

    def problems(self) -> list[str]:
        return [f"input '{n}': {c.problem}" for n, c in self.constraints.items() if c.problem]


def plan_at(model: onnx.ModelProto, specs: list[InputSpec], sizes: Mapping[str, int], pins: Mapping[str, tuple[int, ...]],
            ranges: Mapping[str, tuple[float, float]], index: Any = None) -> Plan:
    names = [n for n in input_ranges.constrained_input_names(model) if n not in ranges]
    constraints: dict[str, input_ranges.Constraint] = {}
    if names:
        shapes, lengths = {}, {}
        for s in specs:
            try:
                if s.kind == "tensor" and s.dtype is not None:
                    shapes[s.name] = concrete_shape(s, sizes, pins)
                elif s.kind == "sequence" or (s.kind == "optional" and s.elem is not None and s.elem.kind == "sequence"):
                    lengths[s.name] = SEQUENCE_LENGTH
            except InputDataError:
                continue  # reported when the feed is made
        constraints = input_ranges.infer_constraints(model, shapes, lengths, names, index)
    return Plan(dict(sizes), constraints)


def plan_feeds(specs: list[InputSpec], plan: Plan, pins: Mapping[str, tuple[int, ...]], seed: int,
               ranges: Mapping[str, tuple[float, float]], images: bool = False) -> dict[str, Any]:
    return make_feeds(specs, plan.sizes, pins, np.random.default_rng(seed), ranges, plan.constraints, images)


# Realistic image sizes, tried in order: 224 (ImageNet classifiers; a multiple of 32, every
# usual stride), then 256 (a multiple of 64) and 320 (of 64 and 160: detectors' smaller sizes).
REALISTIC_IMAGE_SIZES = (224, 256, 320)


def realistic_plan(model: onnx.ModelProto, specs: list[InputSpec], sizes: Mapping[str, int],
                   pins: Mapping[str, tuple[int, ...]], ranges: Mapping[str, tuple[float, float]], index: Any,
                   fixed: Mapping[str, int], runs: Callable[[dict[str, Any]], bool] | None, seed: int) -> "Plan | None":
    """``sizes`` with image-like inputs at a realistic size and batch 1, or None.

    Why: small samples (64x96) keep verification cheap, but some models only do their
    real work at the sizes users run: a text detector's deepest features are 2x3 there,
    and every output of it is "nothing here". None when no input is image-like or when
    no realistic size runs (``runs`` probes; without it, 224 is taken). When height and
    width are static or pinned, the plan keeps ``sizes`` (they are the sizes users run).
    """
    spatial: set[str] = set()
    batch: set[str] = set()
    images = False
    for s in specs:
        layout = image_layout(s)
        if layout is None:
            continue
        images = True
        hw = s.shape[2:4] if layout == "nchw" else s.shape[1:3]
        spatial.update(d for d in hw if isinstance(d, str) and d not in fixed)
        if isinstance(s.shape[0], str) and s.shape[0] not in fixed:
            batch.add(s.shape[0])
    if not images:
        return None
    if not spatial:
        return plan_at(model, specs, sizes, pins, ranges, index)
    for size in REALISTIC_IMAGE_SIZES:
        cand = dict(sizes)
        cand.update({d: size for d in spatial})
        cand.update({d: 1 for d in batch})
        plan = plan_at(model, specs, cand, pins, ranges, index)
        if runs is None or runs(plan_feeds(specs, plan, pins, seed, ranges, images=True)):
            return plan
    return None
