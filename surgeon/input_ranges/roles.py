"""Roles: (op type, input index) -> the constraint on the value a node reads there.

A Gather's indices must lie within the data's size on its axis, axes within the rank, a
Reshape target must fit the data, a TopK ``k`` within the axis, and so on for every
standard op (and a few ``com.microsoft`` and ``ai.onnx.ml`` ones) that reads an integer
with a meaning. A use whose demand cannot be met or worked out is a ``problem`` with the
reason.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import onnx

from surgeon import graph_ops as K
from surgeon.input_ranges.constraint import Constraint
from surgeon.input_ranges.shapes import ShapeOf
from surgeon.input_ranges.uses import attr_value, label


@dataclass(frozen=True)
class Use:
    node: onnx.NodeProto
    index: int
    shape_of: ShapeOf
    seen_shape: tuple[int, ...]  # the input's own concrete shape (for exact values)
    seq_len: Callable[[str], "int | None"]

    def dim(self, input_index: int, axis: int) -> tuple[int | None, str]:
        """Size of the node's input ``input_index`` on ``axis`` (negative counts from the back)."""
        name = self.node.input[input_index] if input_index < len(self.node.input) else ""
        shape = self.shape_of(name) if name else None
        if shape is None:
            return None, f"the shape of '{name}' is unknown"
        r = len(shape)
        if not -r <= axis < r:
            return None, f"axis {axis} is outside the rank {r} of '{name}'"
        d = shape[axis % r]
        return d, "" if d is not None else f"the size of '{name}' on axis {axis % r} is unknown"

    def rank(self, input_index: int) -> tuple[int | None, str]:
        name = self.node.input[input_index] if input_index < len(self.node.input) else ""
        shape = self.shape_of(name) if name else None
        return (None, f"the rank of '{name}' is unknown") if shape is None else (len(shape), "")


_SAME = "same"


def _need(use: Use, what: str, lo: int | None, hi: int | None, *, distinct: bool = False,
          valid: tuple[int | None, int | None] | str = _SAME) -> Constraint:
    """Draw from [lo, hi]; ``valid``: what the op accepts at all (default: the same range)."""
    vlo, vhi = (lo, hi) if valid == _SAME else valid
    return Constraint(lo, hi, distinct, why=(f"{what} of {label(use.node)}",), valid_lo=vlo, valid_hi=vhi)


def _fail(use: Use, what: str, reason: str) -> Constraint:
    return Constraint(problem=f"used as {what} of {label(use.node)}, but {reason}")


def _index_into(use: Use, data_index: int, axis: int, what: str, *, negatives: bool = True) -> Constraint:
    d, why = use.dim(data_index, axis)
    if d is None:
        return _fail(use, what, why)
    if d == 0:
        return _fail(use, what, f"'{use.node.input[data_index]}' is empty on axis {axis}: no index is valid")
    return _need(use, f"{what} (size {d})", -d if negatives else 0, d - 1)


def _axes(use: Use, data_index: int, what: str, extra_rank: int = 0) -> Constraint:
    r, why = use.rank(data_index)
    if r is None:
        return _fail(use, what, why)
    r += extra_rank
    n = int(np.prod(use.seen_shape)) if use.seen_shape else 1
    if n > r:
        return _fail(use, what, f"{n} distinct axes cannot fit rank {r}")
    return _need(use, f"{what} (rank {r})", -r, r - 1, distinct=n > 1)


def _exact(use: Use, what: str, values: list[int]) -> Constraint:
    n = int(np.prod(use.seen_shape)) if use.seen_shape else 1
    if len(values) != n:
        return _fail(use, what, f"it needs {len(values)} values and has {n}")
    return Constraint(exact=tuple(values), why=(f"{what} of {label(use.node)}",))


def _reshape_shape(use: Use) -> Constraint:
    k = int(np.prod(use.seen_shape)) if use.seen_shape else 1
    data = use.shape_of(use.node.input[0])
    if data is not None and len(data) == k and all(d is not None for d in data):
        return _exact(use, "the target shape", list(data))  # the data's own shape: always valid
    return _exact(use, "the target shape", [1] * (k - 1) + [-1] if k else [])  # valid for any element count


def _expand_shape(use: Use) -> Constraint:
    k = int(np.prod(use.seen_shape)) if use.seen_shape else 1
    return _exact(use, "the target shape", [1] * k)  # ones broadcast against anything


def _split_sizes(use: Use, data_index: int, what: str, parts: int | None = None) -> Constraint:
    axis = int(attr_value(use.node, "axis", 0))
    d, why = use.dim(data_index, axis)
    if d is None:
        return _fail(use, what, why)
    k = parts if parts is not None else (int(np.prod(use.seen_shape)) if use.seen_shape else 1)
    if k <= 0:
        return _fail(use, what, "it has no elements")
    base, extra = divmod(d, k)
    return _exact(use, f"{what} (size {d} on axis {axis})", [base + (1 if i < extra else 0) for i in range(k)])


def _squeeze_axes(use: Use) -> Constraint:
    shape = use.shape_of(use.node.input[0])
    if shape is None:
        return _fail(use, "the axes", f"the shape of '{use.node.input[0]}' is unknown")
    ones = [i for i, d in enumerate(shape) if d == 1]
    k = int(np.prod(use.seen_shape)) if use.seen_shape else 1
    if len(ones) < k:
        return _fail(use, "the axes", f"'{use.node.input[0]}' has {len(ones)} dims of size 1 and {k} are needed")
    return _exact(use, "the axes (dims of size 1)", ones[:k])


def _sequence_position(use: Use, insert: bool) -> Constraint:
    n = use.seq_len(use.node.input[0])
    if n is None:
        return _fail(use, "the position", f"the length of the sequence '{use.node.input[0]}' is unknown")
    return _need(use, f"the position (sequence of {n})", -n, n if insert else n - 1)


def _gather_nd(use: Use, data_index: int, batch_dims: int) -> Constraint:
    shape = use.shape_of(use.node.input[data_index])
    if shape is None or any(d is None for d in shape[batch_dims:]):
        return _fail(use, "the indices", f"the shape of '{use.node.input[data_index]}' is unknown")
    if not shape[batch_dims:] or min(shape[batch_dims:]) == 0:
        return _fail(use, "the indices", f"'{use.node.input[data_index]}' has an empty dim")
    d = min(shape[batch_dims:])  # valid on every indexed axis
    return _need(use, f"the indices (smallest indexed size {d})", -d, d - 1)


def _kv_length(use: Use) -> Constraint:
    r, why = use.rank(1)
    if r is None:
        return _fail(use, "nonpad_kv_seqlen", why)
    d, why = use.dim(1, -2 if r == 4 else 1)
    if d is None:
        return _fail(use, "nonpad_kv_seqlen", why)
    return _need(use, f"nonpad_kv_seqlen (KV length {d})", 1, d, valid=(0, d))


def _resize_input(use: Use) -> Constraint | None:
    """roi, scales, sizes of Resize: linear and cubic modes resize only the last two dims."""
    node, i = use.node, use.index
    shape = use.shape_of(node.input[0])
    k = int(np.prod(use.seen_shape)) if use.seen_shape else 0
    full = shape is not None and k and (i != 1 and k == len(shape) or i == 1 and k == 2 * len(shape))
    if i == 1:  # roi, for tf_crop_and_resize: the whole tensor
        return _exact(use, "the region of interest (whole tensor)", [0] * (k // 2) + [1] * (k // 2)) if full else None
    if i == 2:
        if not k:
            return None  # an empty scales input: sizes decide
        if full:
            return _exact(use, "the scales (last two dims doubled)", [1] * (k - 2) + [2] * min(k, 2))
        return _need(use, "the scales", 1, 2, valid=(None, None))
    if full and all(d is not None for d in shape):
        return _exact(use, "the output sizes (last two dims doubled)", list(shape[:-2]) + [2 * d for d in shape[-2:]])
    return _need(use, "the output sizes", 1, 6, valid=(0, None))


def role(use: Use) -> Constraint | None:
    node, i, op = use.node, use.index, use.node.op_type
    domain = node.domain if not K.is_default_domain(node) else ""
    if domain == "com.microsoft":
        if op == "EmbedLayerNormalization" and i in (0, 1):
            return _index_into(use, 2 if i == 0 else 3, 0, "the ids" if i == 0 else "the segment ids", negatives=False)
        return None
    if domain == "ai.onnx.ml":
        if op == "ArrayFeatureExtractor" and i == 1:
            return _index_into(use, 0, -1, "the indices on the last axis", negatives=False)
        return None
    if domain:
        return None
    axis = int(attr_value(node, "axis", 0))
    if op == "Gather" and i == 1:
        return _index_into(use, 0, axis, f"the indices on axis {axis}")
    if op in ("GatherElements", "ScatterElements", "Scatter") and i == 1:
        return _index_into(use, 0, axis, f"the indices on axis {axis}")
    if op == "GatherND" and i == 1:
        return _gather_nd(use, 0, int(attr_value(node, "batch_dims", 0)))
    if op == "ScatterND" and i == 1:
        return _gather_nd(use, 0, 0)
    if op == "TopK" and i == 1:
        d, why = use.dim(0, int(attr_value(node, "axis", -1)))
        return _need(use, f"k (size {d})", 1, d, valid=(0, d)) if d is not None else _fail(use, "k", why)
    if op.startswith("Reduce") and i == 1:
        return _axes(use, 0, "the axes")
    if op == "Unsqueeze" and i == 1:
        k = int(np.prod(use.seen_shape)) if use.seen_shape else 1
        return _axes(use, 0, "the axes", extra_rank=k)
    if op == "Squeeze" and i == 1:
        return _squeeze_axes(use)
    if op == "Slice":
        if i == 3:
            return _axes(use, 0, "the axes")
        if i == 4:
            return _need(use, "the steps (nonzero)", 1, 2, valid=(None, None))
        return None  # starts/ends are clamped: any value is valid
    if op == "Pad":
        if i == 1:
            hi = 2
            if attr_value(node, "mode", b"constant") in (b"reflect", "reflect"):
                shape = use.shape_of(node.input[0])  # reflect pads must stay below the dim they mirror
                if shape is None or any(d is None for d in shape):
                    return _fail(use, "the reflect pads", f"the shape of '{node.input[0]}' is unknown")
                hi = max(0, min(hi, min(shape) - 1))
            return _need(use, "the pads", 0, hi, valid=(None, None))
        if i == 3:
            return _axes(use, 0, "the axes")
        return None
    if op in ("CumSum", "CumProd") and i == 1:
        return _axes(use, 0, "the axis")
    if op == "Reshape" and i == 1:
        return _reshape_shape(use)
    if op == "Expand" and i == 1:
        return _expand_shape(use)
    if op == "Tile" and i == 1:
        return _need(use, "the repeats", 1, 2, valid=(0, None))
    if op == "ConstantOfShape" and i == 0:
        return _need(use, "the output shape", 1, 3, valid=(0, None))
    if op == "Resize" and i in (1, 2, 3):
        return _resize_input(use)
    if op == "Upsample" and i == 1:
        k = int(np.prod(use.seen_shape)) if use.seen_shape else 0
        return _exact(use, "the scales (last two dims doubled)", [1] * (k - 2) + [2] * min(k, 2)) if k else None
    if op in ("LSTM", "GRU", "RNN") and i == 4:
        layout = int(attr_value(node, "layout", 0))
        d, why = use.dim(0, 1 if layout else 0)
        return _need(use, f"the sequence lengths (sequence length {d})", 1, d, valid=(0, d)) if d else _fail(
            use, "the sequence lengths", why or "the sequence is empty")
    if op == "NonMaxSuppression" and i == 3:
        return _need(use, "the IoU threshold", 0, 1)
    if op == "Dropout" and i == 1:
        return _need(use, "the ratio", 0, 0, valid=(0, 1))
    if op == "Dropout" and i == 2:
        return _exact(use, "training_mode (off: outputs must be deterministic)", [0])
    if op == "MelWeightMatrix" and i < 5:
        # The five scalars must agree (edges within the Nyquist band): one consistent choice.
        value = (8, 16, 8000, 0, 4000)[i]
        return _exact(use, f"{('num_mel_bins', 'dft_length', 'sample_rate', 'lower_edge_hertz', 'upper_edge_hertz')[i]}",
                      [value])
    if op == "TensorScatter" and i == 2:
        ax = int(attr_value(node, "axis", -2))
        cache, why = use.dim(0, ax)
        upd, why2 = use.dim(1, ax)
        if cache is None or upd is None:
            return _fail(use, "the write indices", why or why2)
        return _need(use, f"the write indices (cache {cache}, update {upd})", 0, cache - upd)
    if op == "CenterCropPad" and i == 1:
        return _need(use, "the output shape", 1, 4, valid=(0, None))
    if op == "Range" and i == 2:
        return _need(use, "delta (nonzero, and not so small that the output explodes)", 1, 2, valid=(None, None))
    if op == "OneHot" and i == 1:
        return _need(use, "the depth", 2, 8, valid=(1, None))
    if op == "Loop" and i == 0:
        return _need(use, "the trip count", 1, 3, valid=(None, None))
    if op == "Split" and i == 1:
        return _split_sizes(use, 0, "the split sizes", parts=len(node.output))
    if op == "SplitToSequence" and i == 1:
        if not use.seen_shape:
            d, why = use.dim(0, axis)
            return _need(use, f"the chunk size (size {d})", 1, d, valid=(1, None)) if d else _fail(use, "the chunk size", why or "empty")
        return _split_sizes(use, 0, "the split sizes")
    if op in ("NegativeLogLikelihoodLoss", "SoftmaxCrossEntropyLoss") and i == 1:
        c = _index_into(use, 0, 1, "the class labels", negatives=False)
        if attr_value(node, "ignore_index", None) is not None and not c.problem:
            c = replace(c, valid_lo=None, valid_hi=None)  # the ignored label may lie anywhere
        return c
    if op == "RotaryEmbedding" and i == 3:
        return _index_into(use, 1, 0, "the position ids", negatives=False)
    if op == "RoiAlign" and i == 2:
        return _index_into(use, 0, 0, "the batch indices", negatives=False)
    if op == "ReverseSequence" and i == 1:
        d, why = use.dim(0, int(attr_value(node, "time_axis", 0)))
        return _need(use, f"the sequence lengths (time size {d})", 1, d, valid=(0, d)) if d else _fail(use, "the sequence lengths", why or "empty")
    if op == "SequenceAt" and i == 1 or op == "SequenceErase" and i == 1:
        return _sequence_position(use, insert=False)
    if op == "SequenceInsert" and i == 2:
        return _sequence_position(use, insert=True)
    if op == "STFT" and i in (1, 3):
        d, why = use.dim(0, 1)
        what = "the frame step" if i == 1 else "the frame length"
        return _need(use, f"{what} (signal length {d})", 1, d, valid=(1, None)) if d else _fail(use, what, why or "empty")
    if op == "DFT" and i == 1:
        d, why = use.dim(0, int(attr_value(node, "axis", 1)) if len(node.input) < 3 else 1)
        return _need(use, "the DFT length", 1, d, valid=(1, None)) if d else _fail(use, "the DFT length", why or "empty")
    if op == "DFT" and i == 2:
        r, why = use.rank(0)
        return _need(use, "the axis", 1, r - 2) if r and r >= 3 else _fail(use, "the axis", why or "the rank is too small")
    if op == "Attention" and i == 6:
        return _kv_length(use)
    if op == "AffineGrid" and i == 1:
        n, why = use.dim(0, 0)
        k = int(np.prod(use.seen_shape)) if use.seen_shape else 1
        return _exact(use, "the output size", [n] + [1] + [3] * (k - 2)) if n else _fail(use, "the output size", why)
    if op == "Col2Im" and i in (1, 2):
        what = "the image shape" if i == 1 else "the block shape"
        shape = use.shape_of(node.input[0])
        if shape is None or len(shape) != 3 or any(d is None for d in shape):
            return _fail(use, what, f"the shape of '{node.input[0]}' is unknown")
        k = int(np.prod(use.seen_shape)) if use.seen_shape else 0
        solution = _col2im_shapes(node, shape[1], shape[2], k)
        if solution is None:
            return _fail(use, what, f"no image and block shape of {k} dims up to size {_COL2IM_MAX} fit "
                                    f"'{node.input[0]}' {list(shape)}")
        return _exact(use, what, solution[i - 1])
    if op == "ImageDecoder" and i == 0:
        return _fail(use, "the encoded image", "random bytes are not an image")
    if op == "MaxUnpool" and i in (1, 2):
        shape = use.shape_of(node.input[0])
        if shape is None or any(d is None for d in shape):
            return _fail(use, "the indices" if i == 1 else "the output shape", f"the shape of '{node.input[0]}' is unknown")
        spatial = _unpool_spatial(node, shape)
        if i == 2:
            return _exact(use, "the output shape (the default one)", list(shape[:2]) + spatial)
        return _need(use, "the indices (positions in one output plane)", 0, int(np.prod(spatial)) - 1)
    return None


_COL2IM_MAX = 16


def _col2im_shapes(node: onnx.NodeProto, channels_x_block: int, blocks: int, k: int) -> tuple[list[int], list[int]] | None:
    """An (image_shape, block_shape) pair Col2Im accepts for an input [N, C*prod(block), L].

    The block must divide the channel dim, and the sliding-block counts per spatial dim
    must multiply to L. Searched small-first, the same for both inputs (deterministic).
    """
    import itertools

    if k <= 0:
        return None
    dil = list(attr_value(node, "dilations", [1] * k))
    strides = list(attr_value(node, "strides", [1] * k))
    pads = list(attr_value(node, "pads", [0] * 2 * k))
    for block in itertools.product(range(1, 5), repeat=k):
        if channels_x_block % int(np.prod(block)):
            continue
        # per dim: block count -> the smallest image size giving it
        counts: list[dict[int, int]] = []
        for d in range(k):
            options: dict[int, int] = {}
            for img in range(1, _COL2IM_MAX + 1):
                span = img + pads[d] + pads[k + d] - dil[d] * (block[d] - 1) - 1
                if span >= 0:
                    options.setdefault(span // strides[d] + 1, img)
            counts.append(options)

        def split(d: int, rest: int) -> list[int] | None:
            if d == k:
                return [] if rest == 1 else None
            for n, img in sorted(counts[d].items()):
                if rest % n == 0:
                    tail = split(d + 1, rest // n)
                    if tail is not None:
                        return [img] + tail
            return None

        image = split(0, blocks)
        if image is not None:
            return image, list(block)
    return None


def _unpool_spatial(node: onnx.NodeProto, shape: tuple[int, ...]) -> list[int]:
    kernel = list(attr_value(node, "kernel_shape", []))
    r = len(kernel)
    strides = list(attr_value(node, "strides", [1] * r))
    pads = list(attr_value(node, "pads", [0] * 2 * r))
    return [(shape[2 + j] - 1) * strides[j] - pads[j] - pads[r + j] + kernel[j] for j in range(r)]
