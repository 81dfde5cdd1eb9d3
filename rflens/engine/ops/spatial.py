"""Spatial ops: a window per spatial dim (convolution, pooling, adaptive pooling, resizing)."""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..geometry import Edge
from ...errors import UnsupportedOpError
from ..layout import LayoutError, Part, Tracked, Window, align, axis_map, constant_map, gate, read
from .registry import broadcast_to, ident_pos, int_list, mix, Op, out_shape, rule, zero_pos


# -------------------------------------------------------------------------------------------
# spatial ops: a window per spatial dim


def spatial(op: Op, tr: Tracked, op_dims: list[int], sep_dims: list[int], mix_dims: list[int],
            windows: list[Window], out_op_dims: list[int], out_shape_: tuple[int, ...],
            place: Callable[[np.ndarray], np.ndarray], via: str | None = None) -> Tracked:
    """Nodes for an op that reads ``windows`` along ``op_dims`` of ``tr``, all of ``mix_dims``,
    and makes one result per index of ``sep_dims``.  ``place`` turns the class id array over
    ``sep_dims`` into the output's comp array."""
    k = op.k
    table = op.table
    n_in = [tr.shape[d] for d in op_dims]
    n_out = [out_shape_[d] for d in out_op_dims]
    if 0 in n_out and 0 not in n_in:
        # meta kernels skip some of the size checks real kernels make (transposed convolution)
        raise op.too_small(f"output size {tuple(out_shape_)}")
    try:
        ids, classes = read(tr, op_dims, sep_dims, mix_dims, k)
    except LayoutError as e:
        raise op.fail(e.why) from None
    dim_of_axis = _axis_dims(op, classes, len(op_dims))
    for i in range(len(op_dims)):
        # an axis no source carries (all read at a fixed unit) takes a free dim along which a
        # source is present unevenly: a pooled value padded, then a 1-D op run as a 2-D one
        if None in dim_of_axis and i not in dim_of_axis and n_out[i] > 1 and any(
                not gate(windows[i], n_in[i], s.masks[i]).all() for srcs in classes for s in srcs):
            dim_of_axis[dim_of_axis.index(None)] = i
    grid = tuple(n_out[i] if i is not None else 1 for i in dim_of_axis)
    free = [i for i in range(len(op_dims)) if i not in dim_of_axis]
    node_ids = []
    for srcs in classes:
        edges = []
        for s in srcs:
            node = table.nodes[s.node]
            if any(not gate(windows[i], n_in[i], s.masks[i]).all() and n_out[i] > 1 for i in free):
                raise op.fail("a window along a dim that carries no spatial axis reads the input unevenly")
            if any(not gate(windows[i], n_in[i], s.masks[i])[0] for i in free):
                continue
            maps = []
            for a in range(k):
                i = dim_of_axis[a]
                if i is None:
                    maps.append(constant_map(1, node.grid[a], s.maps[a]))
                else:
                    maps.append(axis_map(windows[i], n_in[i], s.masks[i], s.maps[a], node.grid[a], s.vmasks[i]))
            edges.append(Edge(node, tuple(maps), via))
        # window arrays of different shapes can hold the same bytes (6 -> 6 and 6 -> 2 windows)
        key = (op.name, via, tuple((w.pos.shape, w.pos.tobytes() + w.valid.tobytes()) for w in windows),
               tuple(n_in), tuple(sorted(_source_key(s) for s in srcs)))
        node_ids.append(table.make(key, grid, edges) if edges else -1)
    comp = place(np.array(node_ids, np.int64)[ids])
    ndim = len(out_shape_)
    pos = []
    for a in range(k):
        i = dim_of_axis[a]
        pos.append(ident_pos(ndim, out_op_dims[i], n_out[i]) if i is not None else zero_pos(ndim))
    return Tracked(tuple(out_shape_), [Part(align(comp, ndim), tuple(pos))])


def _axis_dims(op: Op, classes, n_op: int) -> list[int | None]:
    """The op dim carrying each input axis: where the sources say, else op dim ``a`` for axis
    ``a`` when the op has one dim per axis and that dim is free (None: a size-1 axis)."""
    carriers: dict[int, int] = {}
    for srcs in classes:
        for s in srcs:
            for a, i in enumerate(s.carrier):
                if i is not None and carriers.setdefault(a, i) != i:
                    raise op.fail("spatial axes permuted across the op's dims")
    used = set(carriers.values())
    if len(used) != len(carriers):
        raise op.fail("two spatial axes merged into one of the op's dims")
    k = op.k
    return [carriers.get(a, a if n_op == k and a not in used else None) for a in range(k)]


def _source_key(s) -> tuple:
    """A hashable key of a source whose entries have one type each, so that keys sort (a
    carrier, map or mask may be None, an int or an array from source to source)."""
    def entry(m) -> bytes:
        if m is None:
            return b""
        return b"a" + m.tobytes() if isinstance(m, np.ndarray) else b"i%d" % m
    return (s.node, tuple(-1 if c is None else c for c in s.carrier),
            tuple(entry(m) for m in s.maps), tuple(entry(m) for m in s.masks),
            tuple(entry(m) for m in s.vmasks))


def conv_window(n_in: int, n_out: int, k: int, s: int, p: int, d: int) -> Window:
    y = np.arange(n_out)[:, None]
    return Window.of(y * s - p + np.arange(k)[None, :] * d, float(s))


def transposed_window(n_in: int, n_out: int, k: int, s: int, p: int, d: int) -> Window:
    num = np.arange(n_out)[:, None] + p - np.arange(k)[None, :] * d
    valid = num % s == 0
    return Window.of(np.where(valid, num // s, 0), 1.0 / s, valid)


def per_channel(op: Op, tr: Tracked, windows: list[Window], nd: int, shape, via=None) -> Tracked:
    """A spatial op applied to each channel separately (pooling, resizing)."""
    ndim = tr.ndim
    op_dims = list(range(ndim - nd, ndim))
    sep = list(range(ndim - nd))
    return spatial(op, tr, op_dims, sep, [], windows, op_dims, shape,
                   lambda ids: ids.reshape(ids.shape + (1,) * nd), via)


def covers_all(windows: list[Window], n_in: list[int], n_out: list[int]) -> bool:
    return all(no == 1 and set(w.pos[0][w.valid[0]].tolist()) >= set(range(ni))
               for w, ni, no in zip(windows, n_in, n_out))


@rule
def convolution(op: Op):
    x = op.args[0]
    tr = op.t(x)
    if tr is None:
        return None
    w = op.args[1]
    stride, padding, dilation = op.args[3], op.args[4], op.args[5]
    transposed, groups = op.args[6], op.args[8]
    if isinstance(padding, str):
        raise op.fail("string padding reached aten without decomposition")
    shape = out_shape(op)
    nd = x.ndim - 2
    stride, padding, dilation = int_list(stride, nd), int_list(padding, nd), int_list(dilation, nd)
    ks = list(w.shape[2:])
    make = transposed_window if transposed else conv_window
    windows = [make(x.shape[2 + i], shape[2 + i], ks[i], stride[i], padding[i], dilation[i]) for i in range(nd)]
    n, c = x.shape[0], x.shape[1]
    cout = shape[1]
    g = groups
    grouped = tr.reshaped((n, g, c // g) + tuple(x.shape[2:]))
    op_dims = list(range(3, 3 + nd))

    def place(ids):  # (n, g) -> (n, cout, 1...)
        ids = np.broadcast_to(ids, (ids.shape[0], g)) if ids.shape[1] != g else ids
        return np.repeat(ids, cout // g, axis=1).reshape((ids.shape[0], cout) + (1,) * nd)
    try:
        return spatial(op, grouped, op_dims, [0, 1], [2], windows, list(range(2, 2 + nd)), shape, place)
    except UnsupportedOpError:
        if transposed or any(k != 1 for k in ks) or any(s != 1 for s in stride) or any(padding):
            raise
    # a 1x1 convolution mixes the channels of each position and places no window: it is followed
    # wherever the positions sit (EfficientFormerV2's talking heads run it over attention maps)
    mixed = mix(op, grouped, [2], (n, g, 1) + tuple(x.shape[2:]))
    return broadcast_to(mixed, (n, g, cout // g) + tuple(x.shape[2:])).reshaped(shape)


def adaptive_window(n_in: int, n_out: int) -> Window:
    y = np.arange(n_out)
    start = (y * n_in) // n_out
    end = -((-(y + 1) * n_in) // n_out)
    width = int((end - start).max())
    pos = start[:, None] + np.arange(width)[None, :]
    return Window.of(np.minimum(pos, n_in - 1), n_in / n_out, pos < end[:, None])


@rule
def adaptive_pool(op: Op):
    x = op.args[0]
    tr = op.t(x)
    shape = out_shape(op)
    nd = int(op.name.rstrip("d")[-1])
    n_in, n_out = list(x.shape[-nd:]), list(shape[-nd:])
    windows = [adaptive_window(a, b) for a, b in zip(n_in, n_out)]
    via = op.via("global pooling") if all(n == 1 for n in n_out) and any(n > 1 for n in n_in) else None
    res = per_channel(op, tr, windows, nd, shape, via)
    if isinstance(op.out, (tuple, list)):
        return [res, res]
    return res


# ---- resizing -------------------------------------------------------------------------------


def _scale(n_in: int, n_out: int, align_corners: bool, scale: float | None, cubic: bool = False) -> float:
    if align_corners:
        return (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
    return 1.0 / scale if scale is not None and scale > 0 else n_in / n_out


def nearest_window(n_in: int, n_out: int, scale: float | None, exact: bool) -> Window:
    # PyTorch computes nearest indices in float32 (see UpSample.h: nearest_idx)
    y = np.arange(n_out)
    if n_out == n_in:
        src = y
    elif n_out == 2 * n_in and not exact:
        src = y >> 1
    else:
        s = np.float32(_scale(n_in, n_out, False, scale))
        if exact:
            src = np.floor((y.astype(np.float32) + np.float32(0.5)) * s).astype(np.int64)
        else:
            src = np.floor(y.astype(np.float32) * s).astype(np.int64)
        src = np.minimum(src, n_in - 1)
    return Window.of(src, n_in / n_out)


def _index_and_lambda(src: np.ndarray, n_in: int) -> tuple[np.ndarray, np.ndarray]:
    """PyTorch's guard_index_and_lambda (UpSample.h): the index is floorf of the source
    position, so a position a hair below an integer (46.99999999999999) lands on it, with
    weight 0 for the neighbour."""
    i0 = np.minimum(np.floor(src.astype(np.float32)).astype(np.int64), n_in - 1)
    return i0, np.clip(src - i0, 0.0, 1.0)


def linear_window(n_in: int, n_out: int, align_corners: bool, scale: float | None) -> Window:
    # the taps PyTorch's linear kernels weight by a nonzero coefficient (UpSample.h)
    s = _scale(n_in, n_out, align_corners, scale)
    y = np.arange(n_out, dtype=np.float64)
    src = s * y if align_corners else np.maximum(s * (y + 0.5) - 0.5, 0.0)
    i0, lam = _index_and_lambda(src, n_in)
    i1 = np.minimum(i0 + 1, n_in - 1)
    pos = np.stack([i0, i1], 1)
    valid = np.stack([np.ones(n_out, bool), (lam > 0) & (i1 != i0)], 1)
    return Window.of(pos, n_in / n_out, valid)


def cubic_window(n_in: int, n_out: int, align_corners: bool, scale: float | None) -> Window:
    s = _scale(n_in, n_out, align_corners, scale)
    y = np.arange(n_out, dtype=np.float64)
    src = s * y if align_corners else s * (y + 0.5) - 0.5
    i0, t = _index_and_lambda(src, n_in)
    a = -0.75

    def c1(x):
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def c2(x):
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    coeffs = np.stack([c2(t + 1), c1(t), c1(1 - t), c2(2 - t)], 1)
    pos = np.clip(i0[:, None] + np.arange(-1, 3)[None, :], 0, n_in - 1)
    return Window.of(pos, n_in / n_out, coeffs != 0)


@rule
def upsample(op: Op):
    x = op.args[0]
    tr = op.t(x)
    shape = out_shape(op)
    nd = len(shape) - 2
    n_in, n_out = list(x.shape[2:]), list(shape[2:])
    name = op.name.split(".")[0]
    vec = op.name.endswith(".vec")
    if vec:
        scales = op.arg(3 if "nearest" not in name else 2, "scale_factors", None)
        align = op.arg(2, "align_corners", False) if "nearest" not in name else False
    else:
        align = op.arg(2, "align_corners", False) if "nearest" not in name else False
        first = 3 if "nearest" not in name else 2
        scales = [op.args[first + i] if len(op.args) > first + i else None for i in range(nd)]
    scales = list(scales) if scales else [None] * nd
    scales = scales * nd if len(scales) == 1 else scales
    windows = []
    for i in range(nd):
        if "nearest" in name:
            windows.append(nearest_window(n_in[i], n_out[i], scales[i], "exact" in name))
        elif "bicubic" in name:
            windows.append(cubic_window(n_in[i], n_out[i], bool(align), scales[i]))
        else:
            windows.append(linear_window(n_in[i], n_out[i], bool(align), scales[i]))
    return per_channel(op, tr, windows, nd, shape)
