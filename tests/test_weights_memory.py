"""Weights held once: recipes that compute like numpy, pages handed back, unchanged weights copied file to file."""

from __future__ import annotations

import mmap
import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from surgeon import model as model_io
from surgeon import weights as W


def _mapped(tmp_path, array: np.ndarray, name: str = "w.bin") -> np.ndarray:
    """``array`` written to a file and read back as a view of that file's mapping."""
    path = tmp_path / name
    path.write_bytes(b"\0" * 4096 + array.tobytes())  # an offset, as in a real data file
    mapping = W.map_file(path)
    return np.frombuffer(memoryview(mapping), dtype=array.dtype, count=array.size, offset=4096).reshape(array.shape)


def _mapping_rss_kb(array: np.ndarray) -> int:
    """Resident kB of the mapping that holds ``array`` (from /proc/self/smaps)."""
    addr = array.ctypes.data
    with open("/proc/self/smaps") as f:
        inside = False
        for line in f:
            head = line.split()[0]
            if "-" in head and all(c in "0123456789abcdef-" for c in head):
                lo, hi = (int(x, 16) for x in head.split("-"))
                inside = lo <= addr < hi
            elif inside and line.startswith("Rss:"):
                return int(line.split()[1])
    raise AssertionError("mapping not found")


# --- recipes compute what numpy computes --------------------------------------------------

def _cases(n: int):
    """Seeded random shapes (rank 1 to 4, dims 1 to 7): a property checked on many cases."""
    rng = np.random.default_rng(12345)
    for _ in range(n):
        yield tuple(int(d) for d in rng.integers(1, 8, rng.integers(1, 5))), int(rng.integers(0, 2**16)), \
            int(rng.integers(1, 6))


@pytest.mark.parametrize("shape,seed,step", list(_cases(60)))
def test_transposed_recipe_equals_numpy_in_any_chunking(shape, seed, step):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(shape).astype(np.float32)
    perm = list(rng.permutation(len(shape)))
    d = W.transposed(a, perm)
    expect = np.transpose(a, perm)
    assert d.shape == expect.shape and d.dtype == expect.dtype
    assert np.array_equal(d.materialize(), expect)
    row = max(1, d.nbytes // d.shape[0])
    blocks = list(d.chunks(max_bytes=step * row))
    assert all(b.flags.c_contiguous for b in blocks)
    assert np.array_equal(np.concatenate(blocks), expect)


@pytest.mark.parametrize("shape,seed,_", list(_cases(40)))
def test_elementwise_and_reshaped_recipes_equal_numpy(shape, seed, _):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(shape).astype(np.float16)
    per_channel = rng.standard_normal(shape[-1:]).astype(np.float16)  # broadcasts along every row
    d = W.elementwise(np.multiply, [a, per_channel], "Mul")
    assert d is not None
    assert np.array_equal(np.asarray(d), a * per_channel)
    cast = W.elementwise(lambda x: x.astype(np.float32), [d], "Cast")
    assert cast.dtype == np.float32 and np.array_equal(cast.materialize(), (a * per_channel).astype(np.float32))
    flat = cast.reshape(-1)
    assert np.array_equal(flat.materialize(), (a * per_channel).astype(np.float32).reshape(-1))
    picks = rng.integers(0, flat.size, 5)
    assert np.array_equal(flat[picks], (a * per_channel).astype(np.float32).reshape(-1)[picks])


def test_recipe_answers_array_questions_with_its_values():
    a = np.arange(24, dtype=np.float32).reshape(4, 6)
    d = W.elementwise(lambda x: x * 2, [a], "double")
    assert d.size == 24 and d.ndim == 2 and d.nbytes == 96 and len(d) == 4
    assert np.array_equal(d[1], a[1] * 2) and np.array_equal(d[1:3], a[1:3] * 2)
    assert float(d.sum()) == float((a * 2).sum())  # ndarray methods: computed from the values
    assert np.array_equal(d * 2, a * 4) and bool(np.all((d == a * 2)))
    assert d.tobytes() == (a * 2).tobytes()
    with pytest.raises(ValueError):
        np.array(d, copy=False)  # it cannot be viewed without being computed


def test_elementwise_refuses_a_recipe_it_cannot_cut_per_row():
    column = W.transposed(np.ones((1, 6), np.float32))  # a [6, 1] recipe broadcast along axis 1
    assert W.elementwise(np.add, [column, np.ones((6, 4), np.float32)], "x") is not None  # cut with the rows
    row = W.transposed(np.ones((6, 1), np.float32))  # a [1, 6] recipe broadcast along axis 0: never cut
    assert W.elementwise(np.add, [row, np.ones((4, 6), np.float32)], "x") is None


def test_materialized_recipe_is_read_only_and_its_own_memory():
    a = np.ones((512, 1024), np.float32)  # 2 MB: an anonymous mapping of its own
    out = W.elementwise(np.negative, [a], "Neg").materialize()
    assert not out.flags.writeable
    assert np.array_equal(out, -a)


def test_held_wraps_large_recipes_and_computes_small_ones():
    big = W.transposed(np.ones((64, 64), np.float32))
    small = W.transposed(np.ones((4, 4), np.float32))
    held = W.held(big)
    assert isinstance(held, W.WeightValues) and held.array is big
    assert isinstance(W.held(small), np.ndarray) and not W.held(small).flags.writeable


# --- pages handed back, bytes found in their file -----------------------------------------

def test_file_extent_points_at_the_bytes(tmp_path):
    a = np.arange(3000, dtype=np.float32).reshape(100, 30)
    m = _mapped(tmp_path, a)
    path, offset = W.file_extent(m)
    with open(path, "rb") as f:
        f.seek(offset)
        assert f.read(m.nbytes) == a.tobytes()
    path, offset = W.file_extent(m[10:20])
    assert offset == 4096 + 10 * 30 * 4
    assert W.file_extent(m.T) is None  # not one contiguous range
    assert W.file_extent(a) is None  # in memory
    assert W.file_extent(W.transposed(m)) is None  # a recipe


@pytest.mark.skipif(not hasattr(mmap, "MADV_DONTNEED") or not os.path.exists("/proc/self/smaps"),
                    reason="needs Linux (madvise and /proc/self/smaps)")
def test_release_gives_the_pages_of_a_read_weight_back(tmp_path):
    a = np.random.default_rng(0).standard_normal((2048, 1024)).astype(np.float32)  # 8 MB
    m = _mapped(tmp_path, a)
    assert float(m.sum()) == pytest.approx(float(a.sum()), rel=1e-4)  # reads every page
    assert _mapping_rss_kb(m) > 6 * 1024
    W.release(m)
    assert _mapping_rss_kb(m) < 1024
    assert np.array_equal(m, a)  # the data is still there, read back from the page cache


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="needs Linux /proc/self/smaps")
def test_recipe_written_in_chunks_leaves_its_source_released(tmp_path):
    a = np.random.default_rng(1).standard_normal((2048, 1024)).astype(np.float32)
    m = _mapped(tmp_path, a)
    d = W.transposed(m)
    out = np.concatenate(list(d.chunks(max_bytes=1 << 20)))
    assert np.array_equal(out, a.T)
    assert _mapping_rss_kb(m) < 1024


# --- saving: unchanged weights go file to file --------------------------------------------

def _external_model(tmp_path) -> tuple:
    rng = np.random.default_rng(2)
    w = rng.standard_normal((256, 128)).astype(np.float32)
    v = rng.standard_normal((128, 64)).astype(np.float32)
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("MatMul", ["h", "v"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 256])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 64])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(v, "v")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    src = tmp_path / "in.onnx"
    onnx.save(m, str(src), save_as_external_data=True, all_tensors_to_one_file=True, location="in.onnx.data",
              size_threshold=1024)
    return src, w, v


def test_unchanged_weights_are_copied_file_to_file(tmp_path, monkeypatch):
    if not hasattr(os, "copy_file_range"):
        pytest.skip("os.copy_file_range is Linux-only")
    src, w, v = _external_model(tmp_path)
    copied = []
    real = os.copy_file_range

    def counting(*args):
        n = real(*args)
        copied.append(n)
        return n

    monkeypatch.setattr(os, "copy_file_range", counting)
    before = (tmp_path / "in.onnx.data").read_bytes()
    dst = tmp_path / "out.onnx"
    model_io.save(model_io.open_model(src), dst, external=True)
    assert sum(copied) == w.nbytes + v.nbytes  # every weight byte went through the kernel's copy
    back = onnx.load(str(dst))
    got = {t.name: numpy_helper.to_array(t) for t in back.graph.initializer}
    assert np.array_equal(got["w"], w) and np.array_equal(got["v"], v)
    assert (tmp_path / "in.onnx.data").read_bytes() == before  # the input is untouched


def test_save_without_the_kernel_copy_writes_the_same_bytes(tmp_path, monkeypatch):
    src, w, v = _external_model(tmp_path)
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    model_io.save(model_io.open_model(src), a, external=True)

    def unsupported(*args):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "copy_file_range", unsupported, raising=False)
    model_io.save(model_io.open_model(src), b, external=True)
    assert (tmp_path / "a.onnx.data").read_bytes() == (tmp_path / "b.onnx.data").read_bytes()
    assert a.read_bytes().replace(b"a.onnx.data", b"b.onnx.data") == b.read_bytes()


def test_embedded_weights_copied_from_the_model_file(tmp_path):
    rng = np.random.default_rng(3)
    w = rng.standard_normal((64, 32)).astype(np.float32)
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32])],
                          [numpy_helper.from_array(w, "w")])
    src = tmp_path / "in.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(src))
    model = model_io.open_model(src)
    weight = next(iter(model.export().weights.values()))
    assert W.file_extent(weight)[0] == str(src)  # a view into the model file itself
    dst = tmp_path / "out.onnx"
    model_io.save(model, dst)
    assert np.array_equal(numpy_helper.to_array(onnx.load(str(dst)).graph.initializer[0]), w)


def test_derived_weight_saved_equals_its_values(tmp_path):
    src, w, v = _external_model(tmp_path)
    model = model_io.open_model(src)
    const = next(t for t in model.graph.tensors().values() if t.name == "w")
    const._values = W.held(W.elementwise(lambda x: x * 3, [const.values], "times three"))
    dst = tmp_path / "out.onnx"
    model_io.save(model, dst, external=True)
    got = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(dst)).graph.initializer}
    assert np.array_equal(got["w"], w * 3) and np.array_equal(got["v"], v)
