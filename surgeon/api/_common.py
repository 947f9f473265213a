"""What every API function does around its algorithm: input samples, output paths, reports.

Why one module: every command takes its inputs the same three ways (loaded from a file
and checked against the model, or generated and seeded, optionally saved for Polygraphy)
and refuses an output path that would overwrite its input before any work. Written once
here, the commands agree on it and the CLI never has to.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Mapping, Sequence

from surgeon.errors import BackendError

Shapes = Mapping[str, tuple[int, ...]]
Ranges = Mapping[str, tuple[float, float]]
Tolerance = "float | Mapping[str, float] | None"
Progress = Callable[[str], None]


def check_outputs(model_path: str | os.PathLike, *paths: str | os.PathLike | None) -> None:
    """Refuse (before any work) an output that would overwrite the input model or its data."""
    from surgeon import model as model_io

    for path in paths:
        if path:
            model_io.check_output_path(model_path, path)


def write_report(path: str | os.PathLike | None, data: dict) -> None:
    """The JSON report, written atomically, where one was asked for."""
    if path:
        from surgeon.report import write_json

        write_json(str(path), data)


def reference_session(backend_name: str, model: Any):
    """A session of the reference backend for checking loaded inputs, or None when it cannot
    load the model (the command then reports that itself)."""
    from surgeon import backends

    try:
        return backends.create(backend_name).session(model)
    except BackendError:
        return None


def probe_runs(backend_name: str, model: Any):
    """``runs(feeds)`` for input_data.make_samples: whether the reference backend accepts a feed."""
    from surgeon import backends, input_data

    return input_data.runs_on(backends.create(backend_name).session(model))


def input_samples(model: Any, label: str, *, load_inputs: str | os.PathLike | None = None,
                  save_inputs: str | os.PathLike | None = None, input_shapes: Shapes | None = None,
                  value_ranges: Ranges | None = None, iterations: int = 1, seed: int = 0,
                  reference: str = "onnxrt", probe: bool = True) -> list[dict[str, Any]]:
    """The input samples a command runs on: loaded from a file, or generated and seeded.

    A loaded file must fit the model (names, kinds, dtypes, ranks, static dims, integer
    ranges, and one run on the reference backend). Generated samples are probed on the
    reference backend (``probe``) so that a size the model cannot run is never chosen.
    """
    from surgeon import input_files
    from surgeon.input_data import check_feeds, make_samples

    if load_inputs:
        feeds = input_files.load_inputs(load_inputs)
        feeds = check_feeds(model, feeds, f"'{label}'", session=reference_session(reference, model))
    else:
        runs = probe_runs(reference, model) if probe else None
        feeds = make_samples(model, input_shapes=dict(input_shapes or {}), value_ranges=dict(value_ranges or {}),
                             iterations=iterations, seed=seed, runs=runs)
    if save_inputs:
        input_files.save_inputs(save_inputs, feeds)
    return feeds


def given_samples(samples: Sequence[Mapping[str, Any]] | None) -> list[dict[str, Any]] | None:
    return None if samples is None else [dict(s) for s in samples]
