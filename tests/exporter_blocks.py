"""The blocks of tests/graphgen.py: each adds one exporter pattern to a graph under construction.

A block takes ``(builder, current tensor)``, draws from ``builder.rng`` only, adds nodes,
and returns the new current tensor (or None: it did not apply, or its result became a
graph output of its own and the chain goes on from its input).
"""

from __future__ import annotations

import random

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from graph_builder import F16, F32, I64, NP, SYMBOL_SIZES, Builder, T

def _randn(rng: random.Random, shape, dtype=np.float32, scale: float = 1.0) -> np.ndarray:
    g = np.random.default_rng(rng.getrandbits(32))
    return (g.standard_normal(shape) * scale).astype(dtype)


# --- blocks: each takes (builder, current tensor) and returns the new current tensor --

def conv_bn(b: Builder, x: T) -> T | None:
    if x.rank != 4 or not x.static(1) or x.dtype != F32:
        return None
    r, c = b.rng, x.shape[1]
    transpose = r.random() < 0.25
    group = c if (r.random() < 0.3 and c > 1) else 1
    cout = c * r.choice([1, 2]) if group > 1 else r.choice([2, 3, 4, c])
    k = r.choice([1, 3])
    if transpose:
        w = _randn(r, (c, cout // group, k, k), scale=0.5)
    else:
        w = _randn(r, (cout, c // group, k, k), scale=0.5)
    ins = [x.name, b.const(w, as_node=False)]
    if r.random() < 0.6:
        bias = _randn(r, (cout,))
        ins.append(b.init_input(bias, bias + 1) if b.may_add_inputs and r.random() < 0.15 else b.const(bias))
    y = b.one("ConvTranspose" if transpose else "Conv", ins, kernel_shape=[k, k], pads=[k // 2] * 4, group=group)
    if r.random() < 0.2:
        b.output(T(y, F32, [x.shape[0], cout, *x.shape[2:]]))  # the conv output is also used elsewhere
    if r.random() < 0.15:  # a second layer reads the same weight: folding must not change it
        other = b.one("ConvTranspose" if transpose else "Conv", [x.name, ins[1]], kernel_shape=[k, k],
                      pads=[k // 2] * 4, group=group)
        b.output(T(other, F32, [x.shape[0], cout, *x.shape[2:]]))
    if r.random() < 0.7:
        scale, bias, mean = _randn(r, (cout,)), _randn(r, (cout,)), _randn(r, (cout,))
        var = np.abs(_randn(r, (cout,))) + 0.1
        params = [b.const(v) for v in (scale, bias, mean, var)]
        if b.may_add_inputs and r.random() < 0.15:
            k = r.randrange(4)
            params[k] = b.init_input((scale, bias, mean, var)[k], np.abs((scale, bias, mean, var)[k]) + 0.5)
        y = b.one("BatchNormalization", [y, *params], epsilon=r.choice([1e-5, 1e-3, 0.1]))
    else:  # per-channel Mul/Add (or a near miss that is not per-channel)
        shape = r.choice([(cout, 1, 1), (1, cout, 1, 1), (1, 1, 1, 1), (cout, 1, 1), (1,), ()])
        near = r.random()
        if near < 0.1 and x.static(2, 3):
            shape = (1, 1, x.shape[2], x.shape[3])  # spatial, not per-channel
        elif near < 0.2 and x.static(3) and x.shape[3] == cout:
            shape = (cout,)  # broadcasts along W, not along the channels
        elif near < 0.25 and x.static(2, 3):
            shape = (cout, x.shape[2], 1)
        y = b.one("Mul", [y, b.const(_randn(r, shape))])
        if r.random() < 0.7:
            y = b.one("Add", [b.const(_randn(r, shape)), y] if r.random() < 0.3 else [y, b.const(_randn(r, shape))])
    if r.random() < 0.5:
        y = b.one("Relu", [y])
    return T(y, F32, [x.shape[0], cout, *x.shape[2:]])


def bn_first(b: Builder, x: T) -> T | None:
    """BatchNormalization on the input of a Conv (folds forward only when the Conv is unpadded)."""
    if x.rank not in (2, 4) or not x.static(1) or x.dtype != F32:
        return None
    r, c = b.rng, x.shape[1]
    var = np.abs(_randn(r, (c,))) + 0.1
    y = b.one("BatchNormalization", [x.name, *(b.const(v) for v in (_randn(r, (c,)), _randn(r, (c,)),
                                                                     _randn(r, (c,)), var))], epsilon=1e-5)
    cout = r.choice([2, 3])
    if x.rank == 4:
        pad = r.choice([0, 1]) if x.static(2, 3) and min(x.shape[2:]) >= 3 else 1
        z = b.one("Conv", [y, b.const(_randn(r, (cout, c, 3, 3)), as_node=False)], kernel_shape=[3, 3], pads=[pad] * 4)
        h, w = (d if not isinstance(d, int) else d + 2 * pad - 2 for d in x.shape[2:])
        return T(z, F32, [x.shape[0], cout, h, w])
    return gemm_bn(b, T(y, F32, x.shape))


def gemm_bn(b: Builder, x: T) -> T | None:
    """``nn.Linear`` + ``BatchNorm1d``: Gemm (either transB) or MatMul, then BN or per-column Mul/Add."""
    if x.rank != 2 or not x.static(1) or x.dtype != F32:
        return None
    r, d = b.rng, x.shape[1]
    e = r.choice([2, 3, 4])
    if r.random() < 0.6:
        trans = r.choice([0, 1])
        w = _randn(r, (e, d) if trans else (d, e))
        ins = [x.name, b.const(w)] + ([b.const(_randn(r, r.choice([(e,), (1, e)])))] if r.random() < 0.7 else [])
        y = b.one("Gemm", ins, transB=trans, alpha=r.choice([1.0, 0.5]), beta=r.choice([1.0, 2.0]))
    else:
        y = b.one("MatMul", [x.name, b.const(_randn(r, (d, e)))])
    if r.random() < 0.7:
        var = np.abs(_randn(r, (e,))) + 0.1
        y = b.one("BatchNormalization", [y, *(b.const(v) for v in (_randn(r, (e,)), _randn(r, (e,)),
                                                                   _randn(r, (e,)), var))], epsilon=1e-3)
    else:
        y = b.one(r.choice(["Mul", "Add"]), [y, b.const(_randn(r, r.choice([(e,), (1, e), (1,)])))])
    return T(y, F32, [x.shape[0], e])


def neutral(b: Builder, x: T) -> T:
    r = b.rng
    np_t = NP[x.dtype]
    kind = r.choice(["add0", "sub0", "mul1", "div1", "identity", "cast", "transpose", "reshape", "reshape_shape",
                     "dropout", "pow1", "expand", "slice", "concat1", "pad0", "unsq_sq", "grow", "expand_rank",
                     "slice_rev", "cast_round", "where_true", "dropout_train"])
    if kind == "expand_rank":  # Expand to a higher rank: not neutral
        return T(b.one("Expand", [x.name, b.ints([1] * (x.rank + 1))]), x.dtype, [1, *x.shape])
    if kind == "slice_rev":  # step -1: reverses, not neutral
        axis = r.randrange(x.rank)
        return T(b.one("Slice", [x.name, b.ints([-1]), b.ints([-(2**62)]), b.ints([axis]), b.ints([-1])]),
                 x.dtype, x.shape)
    if kind == "cast_round":  # through another type: rounds, not neutral
        to = r.choice([F16, TensorProto.INT32, TensorProto.DOUBLE]) if x.dtype == F32 else F32
        return T(b.one("Cast", [b.one("Cast", [x.name], to=to)], to=x.dtype), x.dtype, x.shape)
    if kind == "where_true":
        return T(b.one("Where", [b.const(np.array(r.random() < 0.5)), x.name, b.one("Neg", [x.name])]), x.dtype, x.shape)
    if kind == "dropout_train" and b.opset >= 12:  # ratio 0 in training mode is the identity; 0.5 is not fed here
        ratio = b.const(np.array(0.0, np_t if x.dtype != F16 else np.float16))
        return T(b.one("Dropout", [x.name, ratio, b.const(np.array(True))]), x.dtype, x.shape)
    if kind in ("add0", "sub0", "mul1", "div1", "pow1"):
        op, v = {"add0": ("Add", 0), "sub0": ("Sub", 0), "mul1": ("Mul", 1), "div1": ("Div", 1), "pow1": ("Pow", 1)}[kind]
        shape = r.choice([(), (1,), tuple(x.shape[-1:]) if x.static(x.rank - 1) else (1,)])
        if x.shape[-1] == "W" and r.random() < 0.4:
            shape = (SYMBOL_SIZES["W"][0],)  # x + zeros[4] grows x where W is 1
        c = b.const(np.full(shape, v, np_t))
        if r.random() < 0.2:
            c = b.shared.setdefault((kind, x.dtype, shape), c)  # one constant read by several nodes
        ins = [c, x.name] if (op in ("Add", "Mul") and r.random() < 0.5) else [x.name, c]
        return T(b.one(op, ins), x.dtype, x.shape)
    if kind == "grow" and x.shape[0] == 1:
        # x * ones of a larger shape: not neutral, the result is broadcast to [2, ...]
        big = [2] + [1] * (x.rank - 1)
        y = b.one(r.choice(["Mul", "Add"]), [x.name, b.const(np.full(big, 1 if r.random() < 0.5 else 0, np_t))])
        return T(y, x.dtype, [2, *x.shape[1:]])
    if kind == "identity":
        return T(b.one("Identity", [x.name]), x.dtype, x.shape)
    if kind == "cast":
        return T(b.one("Cast", [x.name], to=x.dtype), x.dtype, x.shape)
    if kind == "transpose":
        return T(b.one("Transpose", [x.name], perm=list(range(x.rank))), x.dtype, x.shape)
    if kind == "reshape" and x.static():
        return T(b.one("Reshape", [x.name, b.ints(x.shape)]), x.dtype, x.shape)
    if kind == "reshape_shape":
        return T(b.one("Reshape", [x.name, b.one("Shape", [x.name])]), x.dtype, x.shape)
    if kind == "dropout":
        return T(b.one("Dropout", [x.name]), x.dtype, x.shape)
    if kind == "expand":
        return T(b.one("Expand", [x.name, b.ints([1] * r.randint(1, x.rank))]), x.dtype, x.shape)
    if kind == "slice" and b.opset >= 10:
        axis = r.randrange(x.rank)
        return T(b.one("Slice", [x.name, b.ints([0]), b.ints([2**62]), b.ints([axis])]), x.dtype, x.shape)
    if kind == "concat1":
        return T(b.one("Concat", [x.name], axis=r.randrange(x.rank)), x.dtype, x.shape)
    if kind == "pad0":
        return T(b.one("Pad", [x.name, b.ints([0] * (2 * x.rank))]), x.dtype, x.shape)
    if kind == "unsq_sq":
        y = b.unsqueeze(x.name, [0])
        return T(b.squeeze(y, [0]), x.dtype, x.shape)
    return T(b.one("Identity", [x.name]), x.dtype, x.shape)


def flatten_chain(b: Builder, x: T) -> T | None:
    """``x.view(x.size(0), -1)`` or ``torch.flatten(x, 2, 3)``, then back to 4-D from ``Shape(x)``."""
    if x.rank != 4:
        return None
    r = b.rng
    if r.random() < 0.5:
        target = b.one("Concat", [b.dim(x, 0), b.ints([-1])], axis=0)
        flat_shape = [x.shape[0], _prod(x.shape[1:])]
    else:
        h, w = b.dim(x, 2, as_1d=False), b.dim(x, 3, as_1d=False)
        hw = b.unsqueeze(b.one("Mul", [h, w]), [0])
        target = b.one("Concat", [b.dim(x, 0), b.dim(x, 1), hw], axis=0)
        flat_shape = [x.shape[0], x.shape[1], _prod(x.shape[2:])]
    y = b.one("Reshape", [x.name, target])
    if r.random() < 0.3:
        b.output(T(y, x.dtype, flat_shape))
    y = b.one(r.choice(["Relu", "Neg", "Sigmoid"]), [y])
    dynamic = sum(not isinstance(d, int) for d in x.shape[1:])
    back = b.one("Shape", [x.name]) if r.random() < 0.5 or dynamic > 1 else b.one(
        "Concat", [b.dim(x, 0), b.ints([d if isinstance(d, int) else -1 for d in x.shape[1:]])], axis=0)
    return T(b.one("Reshape", [y, back]), x.dtype, x.shape)


def _prod(dims) -> int | str:
    out = 1
    for d in dims:
        if not isinstance(d, int):
            return "?"
        out *= d
    return out


def expand_where(b: Builder, x: T) -> T | None:
    """torch's ``expand``: ``Where(Equal(s, -1), ConstantOfShape(Shape(s)) , s)`` then Expand."""
    if x.rank < 2:
        return None
    r = b.rng
    s = b.one("Concat", [b.dim(x, 0), b.ints([-1 if r.random() < 0.5 else 1] * (x.rank - 1))], axis=0)
    ones = b.one("ConstantOfShape", [b.one("Shape", [s])], value=numpy_helper.from_array(np.array([1], np.int64)))
    minus = b.one("Mul", [ones, b.ints(-1)])
    eq = b.one("Equal", [s, minus])
    target = b.one("Where", [eq, ones, s])
    return T(b.one("Expand", [x.name, target]), x.dtype, x.shape)


def if_block(b: Builder, x: T) -> T:
    r = b.rng
    if r.random() < 0.5:
        cond = b.const(np.array(r.random() < 0.5))
    else:
        cond = b.one("Greater", [b.reduce("ReduceSum", x.name, list(range(x.rank)), keepdims=0), b.const(np.array(0, NP[x.dtype]))])
    np_t = NP[x.dtype]
    c1 = numpy_helper.from_array(np.array(1.5, np_t), "then_c")

    def branch(op: str, tag: str, same: bool) -> onnx.GraphProto:
        out = b.name(tag)
        const = b.name(tag + "_k")
        nodes = [helper.make_node("Constant", [], [const], value=c1),
                 helper.make_node(op if not same else "Add", [x.name, const], [out])]  # reads x from outside
        return helper.make_graph(nodes, b.name("body"), [], [helper.make_tensor_value_info(out, x.dtype, None)])

    same = r.random() < 0.2
    y = b.one("If", [cond], then_branch=branch("Add", "then", same), else_branch=branch("Mul", "else", same))
    return T(y, x.dtype, x.shape)


def loop_block(b: Builder, x: T) -> T:
    r = b.rng
    trips = r.choice([0, 1, 2])
    np_t = NP[x.dtype]
    i, c_in, v_in = b.name("i"), b.name("cond_in"), b.name("v_in")
    c_out, v_out, k = b.name("cond_out"), b.name("v_out"), b.name("k")
    body = helper.make_graph(
        [helper.make_node("Identity", [c_in], [c_out]),
         helper.make_node("Constant", [], [k], value=numpy_helper.from_array(np.array(0.5, np_t))),
         helper.make_node("Mul", [x.name, k], [k + "_x"]),  # outer-scope read
         helper.make_node("Add", [v_in, k + "_x"], [v_out])],
        b.name("loop_body"),
        [helper.make_tensor_value_info(i, I64, []), helper.make_tensor_value_info(c_in, TensorProto.BOOL, []),
         helper.make_tensor_value_info(v_in, x.dtype, None)],
        [helper.make_tensor_value_info(c_out, TensorProto.BOOL, []), helper.make_tensor_value_info(v_out, x.dtype, None)])
    m = b.const(np.array(trips, np.int64))
    y = b.one("Loop", [m, b.const(np.array(True)), x.name], body=body)
    return T(y, x.dtype, x.shape)


def layernorm(b: Builder, x: T) -> T | None:
    if not x.static(x.rank - 1) or x.dtype != F32:
        return None
    r, d = b.rng, x.shape[-1]
    mean = b.reduce("ReduceMean", x.name, [-1])
    diff = b.one("Sub", [x.name, mean])
    var = b.reduce("ReduceMean", b.one("Pow", [diff, b.const(np.float32(2))]), [-1])
    # BERT's 1e-12 is left out: over rows of 4-8 values a random conv can make nearly constant,
    # it turns float32 cancellation into 1e-3 errors whichever way the row is normalised.
    eps = np.float32(r.choice([1e-5, 1e-6]))
    overridable = b.may_add_inputs and r.random() < 0.2  # epsilon, gamma or beta a user may feed
    which = r.randrange(3)
    gamma, beta = _randn(r, (d,)), _randn(r, (d,))
    std = b.one("Sqrt", [b.one("Add", [var, b.init_input(eps, np.float32(0.5)) if overridable and which == 0
                                       else b.const(eps)])])
    y = b.one("Div", [diff, std])
    y = b.one("Mul", [y, b.init_input(gamma, gamma + 1) if overridable and which == 1 else b.const(gamma)])
    y = b.one("Add", [y, b.init_input(beta, beta + 1) if overridable and which == 2 else b.const(beta)])
    return T(y, F32, x.shape)


def resize(b: Builder, x: T) -> T | None:
    if x.rank != 4:
        return None
    r = b.rng
    mode = r.choice(["nearest", "linear"])
    empty = b.const(np.zeros(0, np.float32), as_node=False)
    attrs = dict(mode=mode, coordinate_transformation_mode="asymmetric" if mode == "nearest" else "half_pixel")
    if r.random() < 0.5 or not x.static(2, 3):
        f = r.choice([0.5, 2.0]) if x.static(2, 3) and min(x.shape[2:]) >= 4 else 2.0
        if f == 2.0 and x.static(2, 3) and max(x.shape[2:]) > 10:
            f = 0.5
        scales = b.const(np.array([1, 1, f, f], np.float32))
        ins = [x.name, empty, scales] if b.opset < 13 or r.random() < 0.5 else [x.name, "", scales]
        new = [f"{d}*{f}" if not isinstance(d, int) else int(np.floor(d * f)) for d in x.shape[2:]]  # a new size
        return T(b.one("Resize", ins, **attrs), x.dtype, [*x.shape[:2], *new])
    size = [r.randint(3, 10), r.randint(3, 10)]
    nc = b.one("Slice", [b.one("Shape", [x.name]), b.ints([0]), b.ints([2]), b.ints([0])])
    sizes = b.one("Concat", [nc, b.ints(size)], axis=0)
    ins = [x.name, empty, empty, sizes] if b.opset < 13 else [x.name, "", "", sizes]
    return T(b.one("Resize", ins, **attrs), x.dtype, [*x.shape[:2], *size])


def fp16_path(b: Builder, x: T) -> T:
    r = b.rng
    if x.dtype == F16:
        return T(b.one("Cast", [x.name], to=F32), F32, x.shape)
    h = b.one("Cast", [x.name], to=F16)
    op = r.choice(["Relu", "Add", "Mul", "Sigmoid", "Cast"])
    if op in ("Add", "Mul"):
        h = b.one(op, [h, b.const(_randn(r, (1,), np.float16))])
    elif op == "Cast":
        h = b.one("Cast", [h], to=F16)
    else:
        h = b.one(op, [h])
    if r.random() < 0.3:
        return T(h, F16, x.shape)
    return T(b.one("Cast", [h], to=F32), F32, x.shape)


def initializer_input(b: Builder, x: T) -> T | None:
    """A default the user may override, which looks foldable (zeros, ones) or is a reshape target."""
    if not b.may_add_inputs:
        return None
    r = b.rng
    np_t = NP[x.dtype]
    kind = r.choice(["zeros", "ones", "bias", "target", "unread"])
    if kind == "unread":  # a parameter the graph no longer uses, kept as an input by the exporter
        b.init_input(_randn(r, (2,), np_t), _randn(r, (2,), np_t))
        return x
    if kind == "target" and x.rank == 4 and x.static(1, 2, 3):
        c, h, w = x.shape[1:]
        d = b.init_input(np.array([c, h * w], np.int64), np.array([c * h, w], np.int64))
        target = b.one("Concat", [b.dim(x, 0), d], axis=0)
        y = b.one("Reshape", [x.name, target])
        b.output(T(y, x.dtype, [x.shape[0], "a", "b"]), declare_shape=False)
        return x
    shape = (x.shape[-1],) if x.static(x.rank - 1) and r.random() < 0.5 else (1,)
    if kind == "zeros":
        d = b.init_input(np.zeros(shape, np_t), _randn(r, shape, np_t))
    elif kind == "ones":
        d = b.init_input(np.ones(shape, np_t), _randn(r, shape, np_t))
    else:
        d = b.init_input(_randn(r, shape, np_t), _randn(r, shape, np_t))
    op = "Add" if kind in ("zeros", "bias") else "Mul"
    return T(b.one(op, [x.name, d]), x.dtype, x.shape)


def matmul_add(b: Builder, x: T) -> T | None:
    if not x.static(x.rank - 1) or x.dtype != F32 or x.rank > 3:
        return None
    r = b.rng
    if x.rank == 4:
        return None
    d, e = x.shape[-1], r.choice([2, 3, 5])
    y = b.one("MatMul", [x.name, b.const(_randn(r, (d, e)))])
    bias = b.const(_randn(r, (e,) if r.random() < 0.7 else (1, e)))
    y = b.one("Add", [y, bias] if r.random() < 0.7 else [bias, y])
    return T(y, F32, [*x.shape[:-1], e])


def to_2d(b: Builder, x: T) -> T | None:
    """Flatten (or GlobalAveragePool + Flatten) to [N, D] so that MatMul/Gemm patterns appear."""
    if x.rank != 4 or not x.static(1, 2, 3):
        return None
    if b.rng.random() < 0.5:
        y = b.one("Flatten", [b.one("GlobalAveragePool", [x.name])], axis=1)
        return T(y, x.dtype, [x.shape[0], x.shape[1]])
    return T(b.one("Flatten", [x.name], axis=1), x.dtype, [x.shape[0], _prod(x.shape[1:])])


def transposes(b: Builder, x: T) -> T:
    r = b.rng
    perm = list(range(x.rank))
    r.shuffle(perm)
    inv = [perm.index(i) for i in range(x.rank)]
    y = b.one("Transpose", [x.name], perm=perm)
    shape = [x.shape[p] for p in perm]
    if r.random() < 0.3:
        return T(y, x.dtype, shape)
    y = b.one("Relu", [y]) if r.random() < 0.3 else y
    return T(b.one("Transpose", [y], perm=inv), x.dtype, x.shape)


def duplicates(b: Builder, x: T) -> T:
    op = b.rng.choice(["Relu", "Sigmoid", "Abs"])
    y1, y2 = b.one(op, [x.name]), b.one(op, [x.name])
    return T(b.one("Add", [y1, y2]), x.dtype, x.shape)


def const_subgraph(b: Builder, x: T) -> T:
    r = b.rng
    np_t = NP[x.dtype]
    a = b.const(_randn(r, (1,), np_t), as_node=True)
    c = b.one("Mul", [b.one("Add", [a, b.const(np.ones(1, np_t))]), b.const(np.array([0.5], np_t))])
    if r.random() < 0.4:  # dead: computed and never used
        b.one("Neg", [c])
    return T(b.one("Add", [x.name, c]), x.dtype, x.shape)


def shape_output(b: Builder, x: T) -> T:
    """``Shape(x)`` as a graph output (static dims fold, dynamic ones must not)."""
    s = b.one("Shape", [x.name])
    b.output(T(s, I64, [x.rank]))
    return x


def split_concat(b: Builder, x: T) -> T | None:
    axis = b.rng.randrange(x.rank)
    if not isinstance(x.shape[axis], int) or x.shape[axis] < 2 or x.shape[axis] % 2:
        return None
    half = x.shape[axis] // 2
    if b.opset >= 13:
        parts = b.node("Split", [x.name, b.ints([half, half])], n_out=2, axis=axis)
    else:
        parts = b.node("Split", [x.name], n_out=2, axis=axis, split=[half, half])
    if b.rng.random() < 0.5:
        parts = parts[::-1]  # swapped halves: not neutral
    return T(b.one("Concat", parts, axis=axis), x.dtype, x.shape)


def slices(b: Builder, x: T) -> T | None:
    if x.rank < 3 or not x.static(x.rank - 1, x.rank - 2) or min(x.shape[-2:]) < 3:
        return None
    y = b.one("Slice", [x.name, b.ints([1]), b.ints([x.shape[-1]]), b.ints([-1])])
    y = b.one("Slice", [y, b.ints([0]), b.ints([x.shape[-2] - 1]), b.ints([x.rank - 2])])
    return T(y, x.dtype, [*x.shape[:-2], x.shape[-2] - 1, x.shape[-1] - 1])


def custom_op(b: Builder, x: T) -> T | None:
    """An ONNX Runtime contrib op (onnx's shape inference knows nothing past it), then a shape chain on it."""
    if x.dtype != F32:
        return None
    r = b.rng
    b.domains.add("com.microsoft")
    op = r.choice(["Gelu", "FastGelu", "QuickGelu", "FusedMatMul"])
    if op == "FusedMatMul":
        if not x.static(x.rank - 1) or x.rank > 4:
            return None
        e = r.choice([2, 3])
        y = b.node(op, [x.name, b.const(_randn(r, (x.shape[-1], e)))], domain="com.microsoft", alpha=r.choice([1.0, 0.5]))[0]
        out = T(y, F32, [*x.shape[:-1], e])
    else:
        out = T(b.node(op, [x.name], domain="com.microsoft")[0], F32, x.shape)
    if r.random() < 0.7 and out.rank >= 2:  # x.view(x.size(0), ..., -1) on it
        keep = r.randint(1, out.rank - 1)
        target = b.one("Concat", [b.dim(out, i) for i in range(keep)] + [b.ints([-1])], axis=0)
        flat = b.one("Reshape", [out.name, target])
        tail = _prod(out.shape[keep:])
        return T(b.one("Reshape", [flat, b.one("Shape", [out.name])]), F32, out.shape) if tail == "?" or r.random() < 0.5 \
            else T(flat, F32, [*out.shape[:keep], tail])
    return out


def unsqueeze_chain(b: Builder, x: T) -> T:
    y = b.unsqueeze(x.name, [0])
    y = b.unsqueeze(y, [x.rank + 1])
    y = b.one("Relu", [y])
    y = b.squeeze(y, [x.rank + 1])
    return T(b.squeeze(y, [0]), x.dtype, x.shape)


def nested(b: Builder, x: T) -> T | None:
    """Blocks inside an If branch or a Loop body (scan output), reading ``x`` from the enclosing graph."""
    if b.depth >= 2:
        return None
    r = b.rng

    def body(tag: str, extra_inputs: list) -> tuple[onnx.GraphProto, T]:
        sub = Builder(b.opset, b.ir, b.depth + 1)
        sub.n = b.n
        y = x
        for _ in range(r.randint(1, 2)):
            sub.rng = random.Random(r.getrandbits(32))
            z = BLOCKS[r.choice(BODY_BLOCKS)](sub, y)
            y = z if z is not None else y
        y = T(sub.one("Identity", [y.name]), y.dtype, y.shape) if y.name == x.name or r.random() < 0.3 else y
        b.n = sub.n
        b.domains |= sub.domains
        outs = [helper.make_tensor_value_info(y.name, y.dtype, None)]
        if extra_inputs:  # a Loop body: (iteration, cond) in, cond first out
            cond_out = b.name("cond_out")
            sub.nodes.insert(0, helper.make_node("Identity", [extra_inputs[1].name], [cond_out]))
            outs.insert(0, helper.make_tensor_value_info(cond_out, TensorProto.BOOL, []))
        return helper.make_graph(sub.nodes, b.name(tag), extra_inputs, outs, initializer=sub.inits), y

    if r.random() < 0.6:
        if r.random() < 0.5:
            cond = b.const(np.array(r.random() < 0.5))
        else:
            cond = b.one("Less", [b.reduce("ReduceMax", x.name, list(range(x.rank)), keepdims=0),
                                  b.const(np.array(0.5, NP[x.dtype]))])
        then, a = body("then", [])
        orelse, c = body("else", []) if r.random() < 0.7 else (then, a)
        if c.dtype != a.dtype:
            orelse, c = then, a
        y = b.one("If", [cond], then_branch=then, else_branch=orelse)
        if a.shape == c.shape and a.dtype == c.dtype:
            return T(y, a.dtype, a.shape)
        b.output(T(y, a.dtype, a.shape), declare_shape=False)
        return None
    trips = r.choice([0, 1, 2])
    loop_in = [helper.make_tensor_value_info(b.name("i"), I64, []),
               helper.make_tensor_value_info(b.name("cond_in"), TensorProto.BOOL, [])]
    graph, y = body("loop", loop_in)
    scan = b.one("Loop", [b.const(np.array(trips, np.int64)), b.const(np.array(True))], body=graph)
    b.output(T(scan, y.dtype, [trips, *y.shape]), declare_shape=False)
    return None


BODY_BLOCKS = ("custom_op", "conv_bn", "bn_first", "gemm_bn", "neutral", "flatten_chain", "expand_where", "layernorm",
               "resize", "fp16_path", "matmul_add", "transposes", "duplicates", "const_subgraph", "split_concat",
               "slices", "unsqueeze_chain", "nested", "if_block", "loop_block")

BLOCKS = {f.__name__: f for f in (
    nested, custom_op, bn_first, gemm_bn, conv_bn, neutral, flatten_chain, expand_where, if_block, loop_block,
    layernorm, resize, fp16_path, initializer_input, matmul_add, to_2d, transposes, duplicates, const_subgraph,
    shape_output, split_concat, slices, unsqueeze_chain)}

# the patterns the default pipeline rewrites most, drawn more often than the rest
WEIGHTS = {"neutral": 4, "conv_bn": 3, "initializer_input": 2, "flatten_chain": 2, "gemm_bn": 2, "nested": 2}
