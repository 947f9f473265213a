"""The one module that reads and writes model files.

Why it exists: ONNX models arrive with external data files, sometimes over the 2 GB
protobuf limit, sometimes broken. Loading validates everything a user can get wrong
(path, protobuf, external data locations, the checker) and turns it into one sentence.
Saving is atomic and never touches the input: the output and its data file are written
under temporary names in the destination folder and renamed into place last.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Iterator

import onnx
from google.protobuf.message import DecodeError
from onnx import external_data_helper

from surgeon.errors import ModelLoadError, ModelSaveError, UsageError

log = logging.getLogger(__name__)

# Protobuf cannot serialize a message of 2 GiB or more; stay clear of the edge.
PROTOBUF_LIMIT = 2**31 - 1
EXTERNAL_THRESHOLD = 1_800_000_000
# Tensors smaller than this stay inline when a model is saved with external data.
EXTERNAL_MIN_BYTES = 1024


def _iter_graph_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _iter_graph_tensors(attr.g)
            for sub in attr.graphs:
                yield from _iter_graph_tensors(sub)


def iter_all_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Every tensor that can carry external data: initializers and attributes, in subgraphs too."""
    yield from _iter_graph_tensors(model.graph)
    for function in model.functions:
        for node in function.node:
            for attr in node.attribute:
                if attr.HasField("t"):
                    yield attr.t


def _external_files(model: onnx.ModelProto) -> list[tuple[onnx.TensorProto, str]]:
    out = []
    for tensor in iter_all_tensors(model):
        if external_data_helper.uses_external_data(tensor):
            info = external_data_helper.ExternalDataInfo(tensor)
            out.append((tensor, info))
    return out


def external_data_paths(model_path: str | os.PathLike) -> set[Path]:
    """Resolved paths of the external data files a model file refers to."""
    model = onnx.load(str(model_path), load_external_data=False)
    base = Path(model_path).resolve().parent
    return {(base / info.location).resolve() for _, info in _external_files(model)}


def load(path: str | os.PathLike, *, check: bool = True) -> onnx.ModelProto:
    """Load a model and its external data, validating as a user would want.

    Raises ModelLoadError with one sentence for every way the file can be wrong.
    """
    p = Path(path)
    if not p.exists():
        raise ModelLoadError(f"model file '{p}' does not exist")
    if not p.is_file():
        raise ModelLoadError(f"'{p}' is not a file")
    try:
        with open(p, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ModelLoadError(f"cannot read '{p}': {exc.strerror}") from exc
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except DecodeError as exc:
        raise ModelLoadError(f"'{p}' is not an ONNX model (the protobuf cannot be parsed; truncated or another format)") from exc
    del data
    if not model.HasField("graph") or (not model.opset_import and model.ir_version == 0):
        raise ModelLoadError(f"'{p}' is not an ONNX model (no graph or opset imports)")
    if model.ir_version == 0:
        raise ModelLoadError(f"'{p}' is not an ONNX model (no IR version)")
    base = p.resolve().parent
    for tensor, info in _external_files(model):
        loc = info.location
        if not loc:
            raise ModelLoadError(f"tensor '{tensor.name}' in '{p}' uses external data but names no location")
        target = (base / loc).resolve()
        if os.path.isabs(loc) or base not in target.parents:
            raise ModelLoadError(
                f"external data location '{loc}' of tensor '{tensor.name}' points outside the model's folder '{base}'"
            )
        if not target.is_file():
            raise ModelLoadError(f"external data file '{target}' for tensor '{tensor.name}' does not exist")
        size = target.stat().st_size
        offset = int(info.offset or 0)
        length = int(info.length) if info.length else size - offset
        if offset + length > size:
            raise ModelLoadError(
                f"external data file '{target}' is too short for tensor '{tensor.name}' "
                f"(needs {offset + length} bytes, has {size})"
            )
    try:
        external_data_helper.load_external_data_for_model(model, str(base))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read the external data of '{p}': {exc}") from exc
    if check:
        check_model(model, what=f"'{p}'")
    return model


def payload_size(model: onnx.ModelProto) -> int:
    """Bytes of tensor data in the model (initializers and attributes, subgraphs too).

    A cheap stand-in for the serialized size: upb's ``ByteSize()`` serializes the whole
    message to measure it (tens of ms for a 20 MB model) and raises past 2 GB, while
    tensor data is what pushes a model over the protobuf limit.
    """
    total = 0
    for t in iter_all_tensors(model):
        total += _raw_nbytes(t) + sum(len(s) for s in t.string_data)
        total += 8 * (len(t.float_data) + len(t.int32_data) + len(t.int64_data) + len(t.double_data) + len(t.uint64_data))
    return total


_SUB_BYTE_BITS = {onnx.TensorProto.UINT4: 4, onnx.TensorProto.INT4: 4, onnx.TensorProto.FLOAT4E2M1: 4,
                  onnx.TensorProto.UINT2: 2, onnx.TensorProto.INT2: 2,
                  onnx.TensorProto.FLOAT6E2M3: 6, onnx.TensorProto.FLOAT6E3M2: 6}


def _element_bits() -> dict[int, int]:
    bits = {}
    for dtype in onnx.TensorProto.DataType.values():
        if dtype in (onnx.TensorProto.UNDEFINED, onnx.TensorProto.STRING):
            continue
        try:
            bits[dtype] = _SUB_BYTE_BITS.get(dtype) or 8 * onnx.helper.tensor_dtype_to_np_dtype(dtype).itemsize
        except (KeyError, ValueError, TypeError):
            continue
    return bits


_BITS = _element_bits()  # TensorProto data type -> bits per element in raw_data (constant)


def _raw_nbytes(t: onnx.TensorProto) -> int:
    """``len(t.raw_data)`` without reading it: upb copies a bytes field on every access.

    Valid raw data holds exactly ``prod(dims)`` packed elements; for a type without a
    known element size the field is read.
    """
    if not t.HasField("raw_data"):
        return 0
    n = 1
    for d in t.dims:
        n *= d
    bits = _BITS.get(t.data_type)
    return (n * bits + 7) // 8 if bits is not None else len(t.raw_data)


def check_model(model: onnx.ModelProto, *, what: str = "the model", full: bool = False) -> None:
    """Run the onnx checker; large models are checked from a temporary file."""
    try:
        if needs_external_data(model):
            with materialized(model) as path:
                onnx.checker.check_model(str(path), full_check=full)
        else:
            onnx.checker.check_model(model, full_check=full)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"the ONNX checker rejects {what}: {first}") from exc


def copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


SHAPE_ONLY_MIN_ELEMENTS = 1024  # tensors this large are data, never a shape a rule or inference reads


def shape_only_copy(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy for onnx shape inference whose large tensors keep type and dims but no data.

    Why: shape inference serializes the model into C++ and the inferred model back
    (several copies of every weight, tens of ms for a 20 MB model), yet it reads tensor
    *values* only for shape-like inputs (Reshape targets, Slice bounds, axes, scales:
    a few entries) and data propagation only for small integer vectors. The inferred
    copy is for reading types and dims; never save it or run it.
    """
    out = copy(model)
    for t in iter_all_tensors(out):
        if t.data_type == onnx.TensorProto.STRING or t.data_location == onnx.TensorProto.EXTERNAL:
            continue
        n = 1
        for d in t.dims:
            n *= d
        if n >= SHAPE_ONLY_MIN_ELEMENTS:
            for name in ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data"):
                t.ClearField(name)
    return out


def needs_external_data(model: onnx.ModelProto) -> bool:
    return payload_size(model) > EXTERNAL_THRESHOLD


def check_output_path(input_path: str | os.PathLike, output_path: str | os.PathLike) -> None:
    """Refuse an output that would overwrite the input model or one of its data files."""
    src, dst = Path(input_path).resolve(), Path(output_path).resolve()
    if src == dst or (dst.exists() and src.exists() and os.path.samefile(src, dst)):
        raise UsageError(f"the output path '{output_path}' is the input model; choose another -o")
    data_dst = dst.parent / (dst.name + ".data")
    try:
        inputs = external_data_paths(src)
    except Exception:  # the input was validated by load(); this is only a guard
        inputs = set()
    if dst in inputs or data_dst in inputs:
        raise UsageError(f"the output '{output_path}' would overwrite the input model's external data")
    if not dst.parent.is_dir():
        raise UsageError(f"the output folder '{dst.parent}' does not exist")


def _umask_mode() -> int:
    """0o666 minus the process umask: what a plain open() would have given the file."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def save(model: onnx.ModelProto, path: str | os.PathLike, *, external: bool | None = None) -> Path:
    """Write a model atomically; with external data when it is too large for one protobuf.

    The data file is named ``<OUT>.data`` and referenced by a relative location, so the
    pair can be moved together. The caller's model object is not modified.
    """
    dst = Path(path).resolve()
    if not dst.parent.is_dir():
        raise ModelSaveError(f"cannot write '{path}': folder '{dst.parent}' does not exist")
    if external is None:
        external = needs_external_data(model) or any(True for _ in _external_files(model))
    tmpdir = tempfile.mkdtemp(prefix=f".{dst.name}.", dir=dst.parent)
    try:
        tmp_model = Path(tmpdir) / dst.name
        data_name = dst.name + ".data"
        to_write = copy(model) if external else model
        if external:
            external_data_helper.convert_model_to_external_data(
                to_write, all_tensors_to_one_file=True, location=data_name, size_threshold=EXTERNAL_MIN_BYTES
            )
            onnx.save_model(to_write, str(tmp_model))  # writes the data file beside it
        else:
            with open(tmp_model, "wb") as f:
                f.write(model.SerializeToString())
        mode = _umask_mode()
        if external and (Path(tmpdir) / data_name).exists():
            os.chmod(Path(tmpdir) / data_name, mode)
            os.replace(Path(tmpdir) / data_name, dst.parent / data_name)
        os.chmod(tmp_model, mode)
        os.replace(tmp_model, dst)
    except (OSError, ValueError) as exc:
        raise ModelSaveError(f"cannot write '{path}': {exc}") from exc
    finally:
        for leftover in Path(tmpdir).glob("*"):
            leftover.unlink(missing_ok=True)
        os.rmdir(tmpdir)
    return dst


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Reports and other small outputs: temp file in the same folder, then rename."""
    dst = Path(path)
    if not dst.resolve().parent.is_dir():
        raise UsageError(f"cannot write '{path}': its folder does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", dir=dst.resolve().parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, dst)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def materialized(model: onnx.ModelProto) -> Iterator[Path]:
    """A temporary on-disk copy, for consumers that need a path (large models, subprocesses)."""
    with tempfile.TemporaryDirectory(prefix="surgeon-") as d:
        path = Path(d) / "model.onnx"
        if needs_external_data(model):
            m = copy(model)
            external_data_helper.convert_model_to_external_data(
                m, all_tensors_to_one_file=True, location="model.onnx.data", size_threshold=EXTERNAL_MIN_BYTES
            )
            onnx.save_model(m, str(path))
        else:
            path.write_bytes(model.SerializeToString())
        yield path
