"""The sample makers: seeded samples for the debug tools (:func:`make_samples`) and for
verification (:func:`verification_samples`), a given seed giving the same data everywhere.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Mapping

import numpy as np
import onnx

from surgeon import input_ranges
from surgeon.errors import BackendError, InputDataError
from surgeon.input_data.exercise import exercise
from surgeon.input_data.sizes import (
    graph_sizes, plan_at, plan_feeds, realistic_plan, size_attempts, tied_state_dims,
)
from surgeon.input_data.specs import InputSpec, check_pins, checked_ranges, input_specs, pinned_sizes, symbols

log = logging.getLogger(__name__)


def _absent_variant(specs: list[InputSpec], feeds: Mapping[str, Any]) -> dict[str, Any] | None:
    """The same feed with every optional input absent (None), or None without optionals."""
    optional = [s.name for s in specs if s.kind == "optional"]
    if not optional:
        return None
    return {k: (None if k in optional else v) for k, v in feeds.items()}


def _override_variant(model: onnx.ModelProto, feeds: Mapping[str, Any], seed: int) -> dict[str, Any] | None:
    """``feeds`` plus other values for the overridable defaults (IR >= 4 initializers listed as inputs).

    A pass that read such a default as a constant computes something else once it is
    fed: this sample shows it. Floats get the default plus a random 0.25 to 1 (arrays, 0-d
    included), integers the default's entries reversed (a reshape target stays a valid
    one), booleans their negation. Only defaults held in the skeleton (not weight stubs)
    are fed; None when there are none.
    """
    if model.ir_version < 4:
        return None
    listed = {vi.name for vi in model.graph.input}
    rng = np.random.default_rng(seed + 7919)
    extra: dict[str, Any] = {}
    for t in model.graph.initializer:
        if t.name not in listed or t.data_location == onnx.TensorProto.EXTERNAL:
            continue
        try:
            value = onnx.numpy_helper.to_array(t)
        except (ValueError, TypeError):
            continue
        if value.dtype == np.bool_:
            extra[t.name] = np.logical_not(value)
        elif value.dtype.kind in "iu":
            extra[t.name] = value.reshape(-1)[::-1].reshape(value.shape).copy()
        elif value.dtype.kind == "f":
            # shifted up, so a default that must stay positive (an epsilon, a variance) still is
            extra[t.name] = np.asarray(value + rng.uniform(0.25, 1, value.shape), dtype=value.dtype)
    return {**feeds, **extra} if extra else None


def _no_sample_note(problems: list[str], what: str) -> str:
    if problems:
        return f"{what}: no valid sample could be made ({'; '.join(dict.fromkeys(problems))}); give --load-inputs"
    return f"{what}; give --input-shapes or --load-inputs"


class runs_on:  # noqa: N801 - used as a function: runs = runs_on(session)
    """``runs(feeds)`` for the sample makers: whether ``session`` runs a feed.

    A BackendError is the answer "no" (the probe tries sizes until one runs); any other
    exception is a bug and propagates. ``runs.outputs(feeds)`` runs it for its outputs:
    :func:`make_samples` uses that to check the samples are evidence (:func:`exercise`).
    """

    def __init__(self, session: Any):
        self.session = session

    def __call__(self, feeds: dict[str, Any]) -> bool:
        try:
            self.session.run(feeds)
            return True
        except BackendError:
            return False

    def outputs(self, feeds: dict[str, Any]) -> dict[str, Any]:
        return self.session.run(feeds)


def verification_samples(
    model: onnx.ModelProto,
    pins: Mapping[str, tuple[int, ...]] | None,
    seed: int,
    runs: Callable[[dict[str, Any]], bool],
    value_ranges: Mapping[str, tuple[float, float]] | None = None,
    *,
    images: bool = False,
    realistic: bool = True,
) -> tuple[list[dict[str, Any]], str | None]:
    """Seeded feeds at two sizes for every dynamic dim, the first sizes the model runs at.

    ``runs(feeds)`` tells whether the model accepts a feed. Returns the samples and a
    note when fewer than two sizes could be exercised, or, with no samples, why none
    could be made (per input, when an integer input has no value the graph accepts).
    Dims the weights fix take that size. When the model has optional inputs and also
    runs with them absent, a sample with every optional absent is added; when it has
    image-like inputs with dynamic height and width, the second sample is at a realistic
    size (224, else 256 or 320, batch 1) with image-like content (see :func:`realistic_plan`).
    ``value_ranges`` (``--val-range``) overrides the values of the inputs it names;
    ``images`` fills image-like inputs with :func:`image_array` content in every sample;
    ``realistic=False`` leaves the realistic-size sample out (an engine profile's range).
    """
    pins = dict(pins or {})
    specs = input_specs(model)
    check_pins(specs, pins)
    try:
        ranges = checked_ranges(specs, value_ranges)
        return _verification_samples(model, specs, pins, seed, runs, ranges, images, realistic)
    except InputDataError as exc:  # a model we cannot feed is verified structurally, not refused
        return [], str(exc)


def _verification_samples(model, specs, pins, seed, runs, ranges, images=False, realistic=True):
    graph = {sym: size for sym, (size, _why) in graph_sizes(model, specs).items()}
    fixed = {**graph, **pinned_sizes(specs, pins)}
    index = input_ranges.index_model(model)

    def finish(samples: list[dict[str, Any]], note: str | None, sizes: Mapping[str, int]):
        """The optional-absent and realistic-size samples. With two sizes, the realistic sample
        takes the second one's place (its sizes differ from the first's all the same, at less
        cost than a third sample: 224x224 at batch 1 is fewer pixels than 96x128 at batch 3)."""
        pair = len(samples) == 2
        plan = realistic_plan(model, specs, sizes, pins, ranges, index, fixed, runs, seed + 1) if realistic else None
        if plan is not None and plan.sizes != dict(sizes):
            big = plan_feeds(specs, plan, pins, seed + 1, ranges, images=True)
            samples = [samples[0], big] if pair else samples + [big]
        absent = _absent_variant(specs, samples[0])
        if absent is not None and runs(absent):
            samples = samples + [absent]
        overridden = _override_variant(model, samples[-1], seed)
        if overridden is not None and runs(overridden):
            samples = samples + [overridden]
        return samples, note

    if all(s in fixed for s in symbols(specs)):
        plan = plan_at(model, specs, fixed, pins, ranges, index)
        feeds = plan_feeds(specs, plan, pins, seed, ranges, images)
        if plan.problems() and not runs(feeds):
            return [], _no_sample_note(plan.problems(), "the model does not run on generated inputs")
        # Without known problems the verifier's own reference run reports why a feed fails.
        return finish([feeds], None, plan.sizes)
    problems: list[str] = []
    tried = []
    for pair in size_attempts(specs, pins, graph):
        plans = [plan_at(model, specs, sizes, pins, ranges, index) for sizes in pair]
        feeds = [plan_feeds(specs, p, pins, seed + i, ranges, images) for i, p in enumerate(plans)]
        if all(runs(f) for f in feeds):
            return finish(feeds, None, plans[1].sizes)
        problems.extend(plans[0].problems())
        tried.append(plans[0])
    for plan in tried:  # fall back to the first single assignment that runs
        f = plan_feeds(specs, plan, pins, seed, ranges, images)
        if runs(f):
            return finish([f], "only one size of the dynamic dimensions could be run; give --input-shapes or --load-inputs",
                          plan.sizes)
    tied = tied_state_dims(specs, fixed)
    if tied:  # recurrent states: [layers, batch, hidden] whose batch is a dim of its own
        attempts = [[{**sizes, **{d: sizes[b] for d, b in tied.items()}} for sizes in pair]
                    for pair in size_attempts(specs, pins, graph)]
        for pair in attempts:
            plans = [plan_at(model, specs, sizes, pins, ranges, index) for sizes in pair]
            feeds = [plan_feeds(specs, p, pins, seed + i, ranges, images) for i, p in enumerate(plans)]
            if all(runs(f) for f in feeds):
                return finish(feeds, None, plans[1].sizes)
        for pair in attempts:
            plan = plan_at(model, specs, pair[0], pins, ranges, index)
            f = plan_feeds(specs, plan, pins, seed, ranges, images)
            if runs(f):
                return finish([f], "only one size of the dynamic dimensions could be run; give --input-shapes or "
                              "--load-inputs", plan.sizes)
    return [], _no_sample_note(problems, "no generated input sizes run on the model")


def input_problems(model: onnx.ModelProto, input_shapes: Mapping[str, tuple[int, ...]] | None = None) -> list[str]:
    """Why generated samples may not run: per integer input, the use no valid value could be made for.

    Computed at the first generated sizes; an empty list means every constrained input got a valid value.
    """
    pins = dict(input_shapes or {})
    specs = input_specs(model)
    try:
        graph = {sym: size for sym, (size, _why) in graph_sizes(model, specs).items()}
        sizes = {**graph, **pinned_sizes(specs, pins)}
        if any(s not in sizes for s in symbols(specs)):
            sizes = size_attempts(specs, pins, graph)[0][0]
        return plan_at(model, specs, sizes, pins, {}).problems()
    except InputDataError as exc:
        return [str(exc)]


def make_samples(
    model: onnx.ModelProto,
    *,
    input_shapes: Mapping[str, tuple[int, ...]] | None = None,
    value_ranges: Mapping[str, tuple[float, float]] | None = None,
    iterations: int = 1,
    seed: int = 0,
    runs: Callable[[dict[str, Any]], bool] | None = None,
    realistic: bool = False,
) -> list[dict[str, Any]]:
    """Seeded input samples for compare/bisect/isolate (the same seed gives the same data).

    Dynamic dims not pinned get the first generated sizes the model accepts (``runs``
    probes that; without it the smallest sizes are used); dims the weights fix get that
    size. Sample *i* uses seed + i. Integer inputs without a ``value_ranges`` entry get
    values inferred from their uses (indices, masks, shapes). ``realistic``: image-like
    inputs at a realistic size with image-like content (:func:`realistic_plan`), where
    one runs.
    """
    pins = dict(input_shapes or {})
    specs = input_specs(model)
    check_pins(specs, pins)
    ranges = checked_ranges(specs, value_ranges)
    graph = {sym: size for sym, (size, _why) in graph_sizes(model, specs).items()}
    sizes = {**graph, **pinned_sizes(specs, pins)}
    index = input_ranges.index_model(model)
    if any(s not in sizes for s in symbols(specs)):
        candidates = [pair[0] for pair in size_attempts(specs, pins, graph)]
        plan = plan_at(model, specs, candidates[0], pins, ranges, index)
        if runs is not None:
            for cand in candidates:
                p = plan_at(model, specs, cand, pins, ranges, index)
                if runs(plan_feeds(specs, p, pins, seed, ranges)):
                    plan = p
                    break
    else:
        plan = plan_at(model, specs, sizes, pins, ranges, index)
    images = False
    if realistic:
        better = realistic_plan(model, specs, plan.sizes, pins, ranges, index, sizes, runs, seed)
        if better is not None:
            plan, images = better, True
    samples = [plan_feeds(specs, plan, pins, seed + i, ranges, images=images) for i in range(max(1, iterations))]
    outputs = getattr(runs, "outputs", None)
    if outputs is None or realistic:
        return samples
    try:
        references = [outputs(f) for f in samples]
    except BackendError:
        return samples  # the caller's own reference run reports why
    from surgeon import evidence

    dependent = evidence.input_dependent_outputs(model)
    found = exercise(model, samples, references,
                     make=lambda v: make_samples(model, input_shapes=pins, value_ranges={**v.ranges, **ranges},
                                                 iterations=iterations, seed=seed, realistic=v.images,
                                                 runs=lambda f: runs(f)),  # a plain probe: no second exercise
                     run=outputs, judge=lambda refs, feeds: evidence.assess(refs, feeds, dependent=dependent),
                     given=ranges)
    if found.variant is not None:
        log.info("generated samples: %s", found.note())
    return found.samples
