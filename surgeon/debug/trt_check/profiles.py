"""Optimization-profile shapes for the build: given, pinned, or probed the way the verifier probes.

Why not "every dynamic dim = 1": builds depend on shapes. With every dynamic dim set to
1, real models fail to build that build fine at real sizes (a convolution's output
goes negative; measured on openwakeword's melspectrogram). So the sizes come from the
user (``--profile NAME:MIN/OPT/MAX``, ``--input-shapes`` for a fixed size) or from the
verifier's probing (:func:`surgeon.input_data.verification_samples`): two sizes per
dynamic dim that ONNX Runtime actually runs, taken as min and max (opt = the first).
A one-sized profile is only used when the user asks for it or when nothing else runs,
and then the report says so.

Dims are resolved per symbol as the verifier does: dims that share a real name are
equal, unnamed dims (``?``, ``-1``, empty) are each their own symbol and get different
sizes. TensorRT, however, takes two dims whose ``dim_param`` is the same text ("?" for
both H and W) as equal; :func:`same_named_dims` finds those, so a build that fails on
them can be retried with distinct names.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np
import onnx

from surgeon import input_data
from surgeon.errors import InputDataError

Shape = tuple[int, ...]


@dataclass
class Profile:
    inputs: dict[str, tuple[Shape, Shape, Shape]] = field(default_factory=dict)
    source: str = ""
    notes: list[str] = field(default_factory=list)
    one_sized: bool = False

    def for_worker(self) -> list[dict]:
        return [{n: [list(s) for s in shapes] for n, shapes in self.inputs.items()}] if self.inputs else []

    def to_dict(self) -> dict:
        return {"source": self.source, "one_sized": self.one_sized, "notes": self.notes,
                "inputs": {n: {"min": list(a), "opt": list(b), "max": list(c)} for n, (a, b, c) in self.inputs.items()}}


def _dynamic(spec: input_data.InputSpec) -> bool:
    return spec.shape is not None and any(isinstance(d, str) for d in spec.shape)


def build_profile(model: onnx.ModelProto, *, input_shapes: Mapping[str, Shape] | None = None,
                  profile: Mapping[str, tuple[Shape, Shape, Shape]] | None = None, seed: int = 0,
                  runs: Callable[[dict], bool] | None = None) -> Profile:
    """The profile for ``model``'s dynamic inputs; see the module docstring for where sizes come from."""
    specs = [s for s in input_data.input_specs(model) if s.is_tensor]
    pins = dict(input_shapes or {})
    given = dict(profile or {})
    input_data.check_pins(specs, pins)
    input_data.check_pins(specs, {n: p[1] for n, p in given.items()})
    for n in given:
        input_data.check_pins(specs, {n: given[n][0]})
        input_data.check_pins(specs, {n: given[n][2]})
    both = set(pins) & set(given)
    if both:
        raise InputDataError(f"input '{sorted(both)[0]}' is given both in --input-shapes and --profile")
    dynamic = [s for s in specs if _dynamic(s)]
    prof = Profile()
    sources = []
    for s in dynamic:
        if s.name in given:
            prof.inputs[s.name] = given[s.name]
        elif s.name in pins:
            p = tuple(pins[s.name])
            prof.inputs[s.name] = (p, p, p)
    if given:
        sources.append("--profile")
    if any(s.name in pins for s in dynamic):
        sources.append("--input-shapes (one size, as asked)")
    rest = [s for s in dynamic if s.name not in prof.inputs]
    if rest:
        probe_pins = {**pins, **{n: p[1] for n, p in given.items()}}
        samples, note = ([], None)
        if runs is not None:
            samples, note = input_data.verification_samples(model, probe_pins, seed, runs, realistic=False)
        why = ("ONNX Runtime cannot load this model" if runs is None else
               "none of the generated sizes ran in ONNX Runtime (inputs may need particular values)")
        if samples:
            sources.append("probed: sizes ONNX Runtime runs, as the verifier picks them")
            for s in rest:
                shapes = [tuple(np.shape(sample[s.name])) for sample in samples]
                lo = tuple(min(d) for d in zip(*shapes))
                hi = tuple(max(d) for d in zip(*shapes))
                prof.inputs[s.name] = (lo, shapes[0], hi)
            if note:
                prof.notes.append(note)
        else:
            pair = input_data.size_attempts(specs, probe_pins, input_data.fixed_sizes(model))[0]
            sources.append(f"guessed: the verifier's first sizes, not run ({why})")
            for s in rest:
                a = input_data.concrete_shape(s, pair[0], probe_pins)
                b = input_data.concrete_shape(s, pair[1], probe_pins)
                prof.inputs[s.name] = (tuple(map(min, a, b)), a, tuple(map(max, a, b)))
            prof.notes.append(f"the profile's sizes were not confirmed by a run ({why}); give --profile for realistic sizes")
    prof.source = "; ".join(sources) if sources else "no dynamic inputs"
    one_sized = [n for n, (a, _b, c) in prof.inputs.items() if a == c]
    if prof.inputs and len(one_sized) == len(prof.inputs):
        prof.one_sized = True
        if not all(s.name in pins for s in dynamic):
            prof.notes.append("one-sized profile: only one size of the dynamic dims could be used, so a build failure at "
                              "other sizes would go unnoticed; give --profile NAME:MIN/OPT/MAX")
    return prof


def same_named_dims(model: onnx.ModelProto, prof: Profile) -> list[dict]:
    """Groups of dims that share a ``dim_param`` text but get different sizes in ``prof`` (TensorRT takes them as equal)."""
    groups: dict[str, list[tuple[str, int]]] = {}
    inits = {t.name for t in model.graph.initializer}
    for vi in model.graph.input:
        if vi.name in inits or vi.type.WhichOneof("value") != "tensor_type":
            continue
        for axis, d in enumerate(vi.type.tensor_type.shape.dim):
            if d.HasField("dim_param") and d.dim_param:
                groups.setdefault(d.dim_param, []).append((vi.name, axis))
    out = []
    for name, members in groups.items():
        if len(members) < 2:
            continue
        sizes = {(n, a): tuple(prof.inputs[n][k][a] for k in range(3)) for n, a in members if n in prof.inputs}
        if len(set(sizes.values())) > 1:
            out.append({"dim_param": name, "dims": [f"{n}[{a}]" for n, a in members],
                        "sizes": {f"{n}[{a}]": list(v) for (n, a), v in sizes.items()}})
    return out


def with_distinct_dim_names(model: onnx.ModelProto, groups: list[dict]) -> onnx.ModelProto:
    """A copy of a skeleton whose same-named input dims get distinct names (``x_dim2``, ``x_dim3``)."""
    out = copy.deepcopy(model)
    targets = {d for g in groups for d in g["dims"]}
    for vi in out.graph.input:
        for axis, d in enumerate(vi.type.tensor_type.shape.dim):
            if f"{vi.name}[{axis}]" in targets:
                d.dim_param = f"{vi.name}_dim{axis}"
    return out
