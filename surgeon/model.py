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
from typing import TYPE_CHECKING, Iterator

import onnx
from google.protobuf.message import DecodeError
from onnx import external_data_helper

from surgeon import weight_wire
from surgeon import weights as W
from surgeon.errors import ModelLoadError, ModelSaveError, UsageError
from surgeon.files import umask_mode, write_text_atomic  # noqa: F401  (model_io.write_text_atomic)

if TYPE_CHECKING:
    from surgeon.graph import Exported, Model

log = logging.getLogger(__name__)

# Protobuf cannot serialize a message of 2 GiB or more; stay clear of the edge.
PROTOBUF_LIMIT = 2**31 - 1
EXTERNAL_THRESHOLD = 1_800_000_000
# Tensors smaller than this stay inline when a model is saved with external data.
EXTERNAL_MIN_BYTES = 1024


def iter_all_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Every tensor that can carry external data: initializers and attributes, in subgraphs too."""
    yield from W.iter_graph_tensors(model.graph)
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
    """Resolved paths of the external data files a model file refers to (weights are not read)."""
    model = onnx.ModelProto()
    model.ParseFromString(weight_wire.split_file(model_path)[0])
    base = Path(model_path).resolve().parent
    return {(base / info.location).resolve() for _, info in _external_files(model)}


def _check_path(p: Path) -> None:
    if not p.exists():
        raise ModelLoadError(f"model file '{p}' does not exist")
    if not p.is_file():
        raise ModelLoadError(f"'{p}' is not a file")


def _not_onnx(p: Path) -> ModelLoadError:
    return ModelLoadError(f"'{p}' is not an ONNX model (the protobuf cannot be parsed; truncated or another format)")


def _check_header(model: onnx.ModelProto, p: Path) -> None:
    if not model.HasField("graph") or (not model.opset_import and model.ir_version == 0):
        raise ModelLoadError(f"'{p}' is not an ONNX model (no graph or opset imports)")
    if model.ir_version == 0:
        raise ModelLoadError(f"'{p}' is not an ONNX model (no IR version)")


def _external_targets(model: onnx.ModelProto, p: Path) -> list[tuple[onnx.TensorProto, Path, int]]:
    """(tensor, data file, offset) of every real external payload, validated for safety and size."""
    base = p.resolve().parent
    out = []
    for tensor, info in _external_files(model):
        loc = info.location
        if loc.startswith(W.STUB_PREFIX):
            continue
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
        out.append((tensor, target, offset))
    return out


def load(path: str | os.PathLike, *, check: bool = True) -> onnx.ModelProto:
    """Load a whole model (weights in protobuf) and its external data, validating as a user would want.

    For the debug commands, which hand ModelProtos to backends. ``surgeon fix`` uses
    :func:`open_model`, which keeps the weights out of protobuf. Both repair in memory
    what the checker rejects but that does not touch the computation
    (:mod:`surgeon.repair`; logged as a warning, the file is not touched) before the
    checker is asked. Raises ModelLoadError with one sentence for every way the file can
    be wrong.
    """
    return load_repaired(path, check=check)[0]


def load_repaired(path: str | os.PathLike, *, check: bool = True) -> tuple[onnx.ModelProto, dict[str, int]]:
    """:func:`load`, and what was repaired in memory (empty: the model is the file's), for
    callers that would otherwise hand the file itself to a backend."""
    p = Path(path)
    _check_path(p)
    try:
        with open(p, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ModelLoadError(f"cannot read '{p}': {exc.strerror}") from exc
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except DecodeError as exc:
        raise _not_onnx(p) from exc
    del data
    _check_header(model, p)
    _external_targets(model, p)
    try:
        external_data_helper.load_external_data_for_model(model, str(p.resolve().parent))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read the external data of '{p}': {exc}") from exc
    repairs = _repair(model, p, warn=True)
    if check:
        check_model(model, what=f"'{p}'")
    return model, repairs


def _repair(model: onnx.ModelProto, p: Path, *, warn: bool) -> dict[str, int]:
    """The one lenient open: :func:`surgeon.repair.repair` on what was read.

    With ``warn``, a repair of something the checker or ONNX Runtime would have refused
    is logged as a warning (naming unnamed nodes alone is not worth a line); ``fix``
    reports its repairs in its report instead.
    """
    from surgeon import repair

    try:
        done = repair.repair(model)
    except ModelLoadError as exc:
        raise ModelLoadError(f"'{p}' cannot be opened: {exc}") from None
    if warn and set(done) & repair.REFUSED:
        log.warning("'%s' was repaired in memory (the file is unchanged): %s", p, repair.describe(done))
    return done


def open_model(path: str | os.PathLike) -> "Model":
    """Open a model for the fix pipeline: the skeleton parsed, every weight a read-only mapped view.

    Only what is needed to read the model safely is checked here (path, protobuf,
    external data locations and sizes), and what :func:`load` repairs is repaired on the
    skeleton (``Model.repairs`` says what, for the fix report); the onnx checker's verdict
    is the pipeline's business. Nothing of the
    file is copied: embedded weights are views into the memory-mapped file, external
    data views into the memory-mapped data files.
    """
    from surgeon.graph import Model

    p = Path(path)
    _check_path(p)
    try:
        skeleton_bytes, arrays = weight_wire.split_file(p)
    except OSError as exc:
        raise ModelLoadError(f"cannot read '{p}': {exc.strerror}") from exc
    except (ValueError, IndexError) as exc:
        raise _not_onnx(p) from exc
    skeleton = onnx.ModelProto()
    try:
        skeleton.ParseFromString(skeleton_bytes)
    except DecodeError as exc:
        raise _not_onnx(p) from exc
    _check_header(skeleton, p)
    repairs = _repair(skeleton, p, warn=False)
    mapped: dict[Path, object] = {}
    external = _external_targets(skeleton, p)
    for tensor, target, offset in external:
        try:
            array = weight_wire.map_external(tensor, target, offset, mapped)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot read the external data of tensor '{tensor.name}' in '{p}': {exc}") from exc
        key = f"{W.STUB_PREFIX}{len(arrays)}"
        arrays[key] = array
        del tensor.external_data[:]
        tensor.external_data.add(key="location", value=key)
    try:
        model = Model(skeleton, arrays)
    except Exception as exc:  # graphsurgeon's importer on a structurally broken graph
        raise ModelLoadError(f"'{p}' cannot be read as a graph: {type(exc).__name__}: {exc}") from exc
    model.source_external = bool(external)
    model.repairs = repairs
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


def save(model: "onnx.ModelProto | Model | Exported", path: str | os.PathLike, *, external: bool | None = None) -> Path:
    """Write a model atomically; with external data when asked or too large for one protobuf.

    The data file is named ``<OUT>.data`` and referenced by a relative location, so the
    pair can be moved together. The caller's model object is not modified. Weights are
    streamed from their arrays into the file (one write each, never a whole-model copy in
    memory): a Model or Exported is written as it is; a ModelProto with weights embedded
    is written directly when small, otherwise split first.
    """
    from surgeon.graph import Model

    dst = Path(path).resolve()
    if not dst.parent.is_dir():
        raise ModelSaveError(f"cannot write '{path}': folder '{dst.parent}' does not exist")
    if isinstance(model, onnx.ModelProto):
        if external is None:
            external = needs_external_data(model) or any(True for _ in _external_files(model))
        if not external:
            return _atomic(dst, path, lambda tmp: tmp.write_bytes(model.SerializeToString()))
        model = Model.from_proto(model)
    exported = model.export() if isinstance(model, Model) else model
    if external is None:
        external = exported.weight_bytes + payload_size(exported.skeleton) > EXTERNAL_THRESHOLD
    data_name = dst.name + ".data"
    if external:
        return _atomic(dst, path, lambda tmp: _write_external(exported, tmp, data_name), data_name)
    return _atomic(dst, path, lambda tmp: _write_embedded(exported, tmp))


def _atomic(dst: Path, path, write, data_name: str | None = None) -> Path:
    """Write into a temporary folder beside ``dst``, then rename the data file and the model into place."""
    tmpdir = tempfile.mkdtemp(prefix=f".{dst.name}.", dir=dst.parent)
    try:
        tmp_model = Path(tmpdir) / dst.name
        write(tmp_model)
        mode = umask_mode()
        if data_name and (Path(tmpdir) / data_name).exists():
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


def _raw_view(array) -> memoryview:
    import numpy as np

    return memoryview(np.ascontiguousarray(array).reshape(-1).view(np.uint8))


_DATA_ALIGN = 4096  # page-aligned payloads can be memory-mapped by readers (ONNX Runtime, us)
_COPY_BLOCK = 8 << 20  # bytes per copy step when the kernel cannot copy file to file


def _pwrite_all(fd: int, data: memoryview, pos: int) -> int:
    """Write all of ``data`` at ``pos`` (a single write may stop short); returns the bytes written."""
    done = 0
    while done < data.nbytes:
        done += os.pwrite(fd, data[done:], pos + done)
    return done


def _copy_range(src: int, src_pos: int, dst: int, dst_pos: int, count: int) -> None:
    """``count`` bytes from one file to another without passing through this process's memory.

    ``os.copy_file_range`` lets the kernel copy (or share extents, on filesystems that can);
    where it is unavailable (another OS, files on different filesystems before Linux 5.3)
    the bytes go through one bounded buffer.
    """
    copy = getattr(os, "copy_file_range", None)
    while count > 0 and copy is not None:
        try:
            n = copy(src, dst, count, src_pos, dst_pos)
        except OSError:
            break
        if n <= 0:
            break
        src_pos, dst_pos, count = src_pos + n, dst_pos + n, count - n
    while count > 0:
        block = os.pread(src, min(count, _COPY_BLOCK), src_pos)
        if not block:
            raise OSError(f"unexpected end of file while copying {count} more bytes")
        _pwrite_all(dst, memoryview(block), dst_pos)
        src_pos, dst_pos, count = src_pos + len(block), dst_pos + len(block), count - len(block)


def _put_weight(fd: int, pos: int, array, sources: dict[str, int]) -> int:
    """Write one weight's bytes at ``pos``; returns how many were written.

    - a weight no pass changed (a view into the input's file) is copied file to file;
    - a derived weight (a recipe) is evaluated a block of rows at a time, its sources'
      pages released after;
    - an array in memory is written from memory.
    ``sources``: open read descriptors by path, shared across the weights of one save.
    """
    extent = W.file_extent(array)
    if extent is not None:
        path, offset = extent
        if path not in sources:
            sources[path] = os.open(path, os.O_RDONLY)
        _copy_range(sources[path], offset, fd, pos, array.nbytes)
        return array.nbytes
    if isinstance(array, W.Derived):
        written = 0
        for chunk in array.chunks():
            written += _pwrite_all(fd, _raw_view(chunk), pos + written)
        return written
    written = _pwrite_all(fd, _raw_view(array), pos)
    W.release(array)
    return written


@contextlib.contextmanager
def _source_files() -> Iterator[dict[str, int]]:
    opened: dict[str, int] = {}
    try:
        yield opened
    finally:
        for fd in opened.values():
            os.close(fd)


def _write_embedded(exported: "Exported", tmp: Path) -> None:
    """The skeleton, then the main-graph initializers streamed as a second ``graph`` field.

    Protobuf merges a repeated occurrence of a message field into the first, so a
    reader sees one graph whose initializer list is the concatenation; this lets each
    weight go from its source to the file without a serialized copy of the model.
    """
    skeleton = copy(exported.skeleton)
    root = list(skeleton.graph.initializer)
    for t in W.iter_graph_tensors(skeleton.graph, initializers=False):
        key = W.stub_key(t)
        if key is not None:
            t.ClearField("external_data")
            t.ClearField("data_location")
            t.raw_data = _raw_view(exported.weights[key]).tobytes()
    entries = []
    for t in root:
        key = W.stub_key(t)
        if key is None:
            entries.append((t.SerializeToString(), None))
            continue
        head = onnx.TensorProto()
        head.CopyFrom(t)
        head.ClearField("external_data")
        head.ClearField("data_location")
        entries.append((head.SerializeToString(), exported.weights[key]))
    del skeleton.graph.initializer[:]
    sizes = []
    for head, raw in entries:
        n = len(head) + (0 if raw is None else 1 + len(weight_wire.encode_varint(raw.nbytes)) + raw.nbytes)
        sizes.append(n)
    graph_len = sum(1 + len(weight_wire.encode_varint(n)) + n for n in sizes)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with _source_files() as sources:
            pos = _pwrite_all(fd, memoryview(skeleton.SerializeToString()), 0)
            if entries:
                pos += _pwrite_all(fd, memoryview(b"\x3a" + weight_wire.encode_varint(graph_len)), pos)  # field 7 (graph), length-delimited
            for (head, raw), n in zip(entries, sizes):
                pos += _pwrite_all(fd, memoryview(b"\x2a" + weight_wire.encode_varint(n) + head), pos)  # field 5 (initializer)
                if raw is not None:
                    pos += _pwrite_all(fd, memoryview(b"\x4a" + weight_wire.encode_varint(raw.nbytes)), pos)  # field 9 (raw_data)
                    pos += _put_weight(fd, pos, raw, sources)
    finally:
        os.close(fd)


def _write_external(exported: "Exported", tmp: Path, data_name: str) -> None:
    """Every weight into ``data_name`` (page-aligned, written once even if shared), then the skeleton."""
    skeleton = copy(exported.skeleton)
    written: dict[str, tuple[int, int]] = {}
    offset = 0
    fd = os.open(tmp.parent / data_name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with _source_files() as sources:
            for t in W.iter_graph_tensors(skeleton.graph):
                key = W.stub_key(t)
                if key is None:
                    continue
                if key not in written:
                    offset += (-offset) % _DATA_ALIGN  # the gap reads as zeros
                    length = _put_weight(fd, offset, exported.weights[key], sources)
                    written[key] = (offset, length)
                    offset += length
                start, length = written[key]
                del t.external_data[:]
                t.external_data.add(key="location", value=data_name)
                t.external_data.add(key="offset", value=str(start))
                t.external_data.add(key="length", value=str(length))
    finally:
        os.close(fd)
    tmp.write_bytes(skeleton.SerializeToString())


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
