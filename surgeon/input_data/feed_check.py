"""Loaded samples: do they fit the model? (:func:`check_feeds`)

Names, kinds, dtypes, ranks, static dims and integer ranges are checked, and optionally
one run, so that a file that does not fit is a usage error naming the input, not a
silent unverified result.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import onnx

from surgeon import input_ranges
from surgeon.errors import BackendError, InputDataError
from surgeon.input_data.specs import ML_FLOATS, ML_INTS, InputSpec, dtype_name, input_specs, spec_from_type
from surgeon.input_data.values import describe_feeds


def _fit_tensor(spec: InputSpec, value: Any, label: str, what: str) -> np.ndarray:
    if value is None or isinstance(value, (list, tuple, Mapping)):
        given = "absent (null)" if value is None else ("a sequence" if isinstance(value, (list, tuple)) else "a map")
        raise InputDataError(f"{label} is {given}, but {what} expects a tensor {spec.describe()}")
    arr = value if isinstance(value, np.ndarray) else np.asarray(value)
    want = spec.dtype
    if want is not None and arr.dtype != want:
        if arr.dtype.kind == "V" and want.itemsize == arr.dtype.itemsize and want.name in (ML_FLOATS | ML_INTS):
            arr = arr.view(want)  # np.save writes ml_dtypes arrays as raw bytes: the model says what they are
        elif want.kind == "O" and arr.dtype.kind in "US":
            arr = arr.astype(object)
        else:
            hint = (f" (numpy has no {want.name}: write it with ml_dtypes, e.g. x.astype(ml_dtypes.{want.name}))"
                    if want.name in (ML_FLOATS | ML_INTS) else "")
            raise InputDataError(f"{label} is {dtype_name(arr.dtype)}, but {what} expects {dtype_name(want)}{hint}")
    if spec.shape is not None:
        if arr.ndim != len(spec.shape):
            raise InputDataError(f"{label} has rank {arr.ndim} (shape {list(arr.shape)}), but {what} expects rank "
                                 f"{len(spec.shape)} ({spec.describe()})")
        for axis, (dim, have) in enumerate(zip(spec.shape, arr.shape)):
            if isinstance(dim, int) and dim != have:
                raise InputDataError(f"{label} has size {have} on axis {axis} (shape {list(arr.shape)}), but {what} "
                                     f"expects {dim} ({spec.describe()})")
    return arr


def _fit(spec: InputSpec, value: Any, label: str, what: str) -> Any:
    if spec.kind == "tensor":
        return _fit_tensor(spec, value, label, what)
    if spec.kind == "sequence":
        if not isinstance(value, (list, tuple)):
            given = "absent (null)" if value is None else f"a tensor {list(np.shape(value))}"
            raise InputDataError(f"{label} is {given}, but {what} expects a {spec.describe()}")
        return [_fit(spec.elem, v, f"{label}[{j}]", what) for j, v in enumerate(value)] if spec.elem else list(value)
    if spec.kind == "optional":
        return None if value is None else (_fit(spec.elem, value, label, what) if spec.elem else value)
    if spec.kind == "map":
        if not isinstance(value, Mapping):
            raise InputDataError(f"{label} is not a map, but {what} expects a {spec.describe()}")
        return dict(value)
    return value


def _check_ranges(model: onnx.ModelProto, specs: list[InputSpec], sample: Mapping[str, Any], label: str, what: str) -> None:
    """Integer inputs whose values the graph cannot accept (token ids beyond the embedding table)."""
    names = [n for n in input_ranges.int_input_names(model) if isinstance(sample.get(n), np.ndarray) and sample[n].size]
    if not names:
        return
    shapes = {s.name: tuple(np.shape(sample[s.name])) for s in specs if isinstance(sample.get(s.name), np.ndarray)}
    lengths = {s.name: len(sample[s.name]) for s in specs if isinstance(sample.get(s.name), (list, tuple))}
    for name, c in input_ranges.infer_constraints(model, shapes, lengths, names).items():
        if c.problem or (c.valid_lo is None and c.valid_hi is None):
            continue
        values = np.asarray(sample[name]).astype(np.int64)
        lo, hi = int(values.min()), int(values.max())
        if (c.valid_lo is not None and lo < c.valid_lo) or (c.valid_hi is not None and hi > c.valid_hi):
            bounds = f"[{'-inf' if c.valid_lo is None else c.valid_lo}, {'inf' if c.valid_hi is None else c.valid_hi}]"
            raise InputDataError(f"input '{name}'{label} holds values in [{lo}, {hi}], but {what} needs values in "
                                 f"{bounds}: {'; '.join(c.why)}")


def check_feeds(
    model: onnx.ModelProto,
    samples: Sequence[Mapping[str, Any]],
    what: str = "the model",
    *,
    run: bool = False,
    session: Any = None,
) -> list[dict[str, Any]]:
    """Check loaded samples against ``model``; return them in the form the backends take.

    Every problem is an :class:`InputDataError` whose one line names the input, what the
    model expects and what was given: an input that is missing or not the model's, a
    tensor where a sequence is expected (or the reverse), a dtype, rank or static size
    that differs, integer values outside what the graph accepts (inferred from its uses:
    a Gather's data size, a rank for axes). With ``run`` (or a ``session`` of any
    backend), each sample is also run once, and a sample the model cannot run on is an
    error too. Raw-byte arrays (how ``np.save`` writes bfloat16/float8/int4) are read as
    the model's element type; an optional input left out of a sample is fed as absent.
    """
    specs = input_specs(model)
    by_name = {s.name: s for s in specs}
    inits = {t.name: t for t in model.graph.initializer}
    overridable = {vi.name for vi in model.graph.input if vi.name in inits}
    out: list[dict[str, Any]] = []
    several = len(samples) > 1
    for i, sample in enumerate(samples):
        where = f" of sample {i}" if several else ""
        extra = [n for n in sample if n not in by_name and n not in overridable]
        missing = [n for n in by_name if n not in sample and by_name[n].kind != "optional"]
        if extra:
            hint = f"; no data was given for '{missing[0]}'" if missing else ""
            raise InputDataError(f"the input data{where} names '{extra[0]}', which is not an input of {what}; "
                                 f"its inputs are: {', '.join(by_name) or '(none)'}{hint}")
        if missing:
            raise InputDataError(f"the input data{where} has no data for input '{missing[0]}' "
                                 f"({by_name[missing[0]].describe()}) of {what}; it has: {', '.join(sample) or '(nothing)'}")
        fitted: dict[str, Any] = {}
        for name, spec in by_name.items():
            fitted[name] = _fit(spec, sample.get(name), f"input '{name}'{where}", what)
        for name in sample:
            if name in overridable:
                t = inits[name]
                want = spec_from_type(name, onnx.helper.make_tensor_type_proto(t.data_type, list(t.dims)))
                fitted[name] = _fit(want, sample[name], f"input '{name}'{where}", what)
        _check_ranges(model, specs, fitted, where, what)
        out.append(fitted)
    if run or session is not None:
        _run_each(model, out, what, session)
    return out


def _run_each(model: onnx.ModelProto, samples: list[dict[str, Any]], what: str, session: Any) -> None:
    if session is None:
        from surgeon import backends

        try:
            session = backends.create("onnxrt").session(model)
        except BackendError:
            return  # the model cannot be loaded here at all: only the structural checks apply
    for i, feeds in enumerate(samples):
        try:
            session.run(feeds)
        except BackendError as exc:
            where = f"sample {i} of the input data" if len(samples) > 1 else "the input data"
            raise InputDataError(f"{what} cannot run on {where} ({describe_feeds(feeds)}): {exc}") from exc
