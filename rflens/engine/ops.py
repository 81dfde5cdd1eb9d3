"""The registry of op rules: how each aten op moves receptive fields.

A rule receives an ``Op`` (the call, its meta outputs, the module it ran in) and returns the
``Tracked`` layout of each output.  Rules are grouped by what the op does:

* passthrough: elementwise with one traced input (activations, eval-mode batch norm, casts);
* elementwise: several traced inputs read at the same element (add, mul, where, ...);
* data movement: the same numpy op on the layout arrays (view, permute, slice, cat, pad, ...);
* spatial: a window per spatial dim (convolution, pooling, resizing, adaptive pooling);
* reductions and normalisation: every element along some dims; over spatial dims this is
  *global context* (global pooling, spatial norms, softmax over positions, attention).

An op with traced inputs and no rule raises ``UnsupportedOpError``: the engine never guesses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..errors import InputTooSmallError, UnsupportedOpError
from .geometry import AxisMap, Edge
from .layout import (LayoutError, Part, Table, Tracked, Window, align, axis_map, compact, concat,
                     sep_mix_matrix,
                     constant_map, expand_dim, gate, pad_parts, read, slice_dim, take_dim,
                     unique_rows)

aten = torch.ops.aten


@dataclass
class Op:
    name: str
    args: tuple
    kwargs: dict
    out: object
    module: str
    flow: "object"  # trace.Flow: .get(tensor) -> Tracked | None, .table, .k
    before: list = None  # (size, stride, offset) of written tensors before an in-place op

    def t(self, x) -> Tracked | None:
        return self.flow.get(x) if isinstance(x, torch.Tensor) else None

    @property
    def table(self) -> Table:
        return self.flow.table

    @property
    def k(self) -> int:
        return self.flow.k

    def arg(self, i: int, name: str, default=None):
        if len(self.args) > i:
            return self.args[i]
        return self.kwargs.get(name, default)

    def via(self, kind: str) -> str:
        where = f" in {self.module}" if self.module else ""
        return f"{self.name}{where} ({kind})"

    def fail(self, why: str) -> UnsupportedOpError:
        return UnsupportedOpError(self.name, self.module, why)

    def too_small(self, why: str) -> InputTooSmallError:
        return InputTooSmallError.at(self.name, self.module, why)


RULES: dict[str, Callable[[Op], object]] = {}


def rule(*names: str):
    def deco(fn):
        for n in names:
            RULES[n] = fn
        return fn
    return deco


def lookup(func) -> Callable[[Op], object] | None:
    name = func.name().split("::")[-1]
    return RULES.get(name) or RULES.get(name.split(".")[0])


# -------------------------------------------------------------------------------------------
# helpers


def _ilist(v, n: int) -> list[int]:
    if isinstance(v, int):
        return [v] * n
    v = list(v)
    return v * n if len(v) == 1 else v


def _dim(d: int, ndim: int) -> int:
    return d + ndim if d < 0 else d


_IDENT: dict = {}


def ident_pos(ndim: int, dim: int, n: int) -> np.ndarray:
    """Shared identity position arrays, so equal layouts compare by identity."""
    key = (ndim, dim, n)
    if key not in _IDENT:
        shape = [1] * ndim
        shape[dim] = n
        _IDENT[key] = np.arange(n, dtype=np.int64).reshape(shape)
    return _IDENT[key]


def zero_pos(ndim: int) -> np.ndarray:
    return np.zeros((1,) * ndim, np.int64)


def broadcast_to(tr: Tracked, shape) -> Tracked:
    shape = tuple(shape)
    return Tracked(shape, [Part.of([align(a, len(shape)) for a in p.arrays()]) for p in tr.parts])


def _all_one_grid(table: Table, comp: np.ndarray) -> bool:
    ids = np.unique(comp)
    return all(i < 0 or all(n == 1 for n in table.nodes[i].grid) for i in ids)


def coalesce(table: Table, shape, parts: list[Part]) -> Tracked:
    """Merge parts that read their nodes at the same units (or at the only unit of an
    all-1 grid) into union nodes, keeping the layout small."""
    ndim = len(shape)
    k = table_k(parts)
    groups: dict[bytes, Part] = {}
    consts: list[Part] = []
    for p in parts:
        if (p.comp < 0).all():
            continue
        if all(a.size == 1 and int(a.flat[0]) == 0 for a in p.pos) and _all_one_grid(table, p.comp):
            consts.append(p)
            continue
        key = _units_key(p, shape)
        if key in groups:
            try:
                groups[key] = _merge(table, groups[key], p, ndim)
                continue
            except LayoutError:
                key = key + bytes(len(groups))
        groups[key] = p
    out = list(groups.values())
    for c in consts:
        for i, q in enumerate(out):
            try:
                out[i] = _merge(table, q, c, ndim)
                break
            except LayoutError:
                continue
        else:
            out.append(c)
    if not out:
        out = [Part(np.full((1,) * ndim, -1, np.int64), tuple(zero_pos(ndim) for _ in range(k)))]
    if len(out) > MAX_PARTS:
        raise LayoutError(f"its output reads more than {MAX_PARTS} differently placed copies of its inputs "
                          "(as window attention over reshaped windows does)")
    return Tracked(tuple(shape), out)


MAX_PARTS = 64


def _units_key(p: Part, shape) -> bytes:
    """Equal for parts whose unit arrays are equal once broadcast to the tensor's shape."""
    ndim = len(shape)
    return b"|".join(str(c.shape).encode() + c.tobytes() for c in
                     (compact(np.ascontiguousarray(align(a, ndim))) for a in p.pos))


def table_k(parts: list[Part]) -> int:
    return len(parts[0].pos) if parts else 0


def _merge(table: Table, a: Part, b: Part, ndim: int) -> Part:
    """Union of part ``b`` into part ``a`` (``b`` reads at ``a``'s units, or is all-1)."""
    ca, cb = compact(align(a.comp, ndim)), compact(align(b.comp, ndim))
    shape = np.broadcast_shapes(ca.shape, cb.shape)
    pairs = np.stack([np.broadcast_to(ca, shape).reshape(-1), np.broadcast_to(cb, shape).reshape(-1)], 1)
    rows, inv = unique_rows(pairs)
    ids = np.array([table.union((int(x), int(y))) for x, y in rows], np.int64)
    pos = a.pos
    if (ca < 0).any():
        # where only b is read, its units apply
        only_b = np.broadcast_to(ca < 0, shape)
        pos = tuple(compact(np.where(only_b, np.broadcast_to(align(q, ndim), np.broadcast_shapes(shape, q.shape)),
                                     np.broadcast_to(align(p, ndim), np.broadcast_shapes(shape, p.shape))))
                    for p, q in zip(a.pos, b.pos))
    return Part(ids[inv].reshape(shape), pos)


def union_of(op: Op, trs: list[Tracked], shape) -> Tracked:
    ndim = len(shape)
    parts = [p for ps in pad_parts(trs, ndim, op.k) for p in ps]
    return coalesce(op.table, shape, parts)


def out_shape(op: Op, i: int = 0) -> tuple[int, ...]:
    out = op.out[i] if isinstance(op.out, (tuple, list)) else op.out
    return tuple(out.shape)


# -------------------------------------------------------------------------------------------
# passthrough and elementwise

PASSTHROUGH = """
relu relu_ silu silu_ gelu gelu_ sigmoid sigmoid_ tanh tanh_ hardswish hardswish_ hardsigmoid
hardsigmoid_ hardtanh hardtanh_ leaky_relu leaky_relu_ elu elu_ selu selu_ celu celu_ softplus
mish mish_ clamp clamp_ clamp_min clamp_min_ clamp_max clamp_max_ abs abs_ neg neg_ exp exp_ log
log_ log1p sqrt sqrt_ rsqrt rsqrt_ reciprocal reciprocal_ square sign sgn erf erf_ sin cos
floor ceil round trunc frac logical_not bitwise_not threshold threshold_ _to_copy clone alias
detach detach_ lift_fresh lift_fresh_copy contiguous _conj resolve_conj resolve_neg
native_dropout dropout feature_dropout alpha_dropout nan_to_num
isnan isinf isfinite logit rrelu_with_noise fill_ zero_ copy prelu _prelu_kernel
""".split()


@rule(*PASSTHROUGH)
def passthrough(op: Op):
    tr = op.t(op.args[0])
    if tr is None:
        return None
    shape = out_shape(op)
    first = broadcast_to(tr, shape) if tr.shape != shape else tr
    if isinstance(op.out, (tuple, list)):
        return [first] + [None] * (len(op.out) - 1)
    return first


ELEMENTWISE = """
add add_ sub sub_ rsub mul mul_ div div_ true_divide floor_divide maximum minimum fmax fmin where
masked_fill masked_fill_ pow pow_ addcmul addcmul_ addcdiv addcdiv_ lerp lerp_ eq ne gt lt ge le
logical_and logical_or logical_xor bitwise_and bitwise_or bitwise_xor atan2 fmod remainder hypot
copysign xlogy heaviside
""".split()


@rule(*ELEMENTWISE)
def elementwise(op: Op):
    trs = [op.t(a) for a in list(op.args) + list(op.kwargs.values())]
    trs = [t for t in trs if t is not None]
    shape = out_shape(op)
    if len(trs) == 1:
        return broadcast_to(trs[0], shape)
    return union_of(op, trs, shape)


@rule("copy_")
def copy_(op: Op):
    src = op.t(op.args[1])
    shape = tuple(op.args[0].shape)
    if src is None:
        return constant(op, shape)
    return broadcast_to(src, shape)


@rule("fill_", "zero_", "normal_", "uniform_", "bernoulli_", "random_", "exponential_")
def overwrite(op: Op):
    return constant(op, tuple(op.args[0].shape))


def constant(op: Op, shape) -> Tracked:
    return constant_like(shape, op.k)


@rule("native_batch_norm", "_native_batch_norm_legit", "_native_batch_norm_legit_no_training",
      "_native_batch_norm_legit_functional", "batch_norm")
def batch_norm(op: Op):
    tr = op.t(op.args[0])
    training = op.arg(5, "training", False)
    if op.name.startswith("_native_batch_norm_legit_no_training"):
        training = False
    if tr is None:
        return None
    shape = tr.shape
    if not training:
        return [tr] + [None] * (len(op.out) - 1) if isinstance(op.out, (tuple, list)) else tr
    dims = [d for d in range(len(shape)) if d != 1]
    out = normalized(op, tr, dims, "batch statistics in training mode")
    return [out] + [None] * (len(op.out) - 1)


# -------------------------------------------------------------------------------------------
# data movement: same numpy op on the layout arrays


@rule("view", "_unsafe_view", "reshape", "_reshape_alias", "view_copy", "flatten",
      "unflatten", "_reshape_copy")
def view(op: Op):
    tr = op.t(op.args[0])
    shape = out_shape(op)
    if op.args[0].dtype.itemsize != op.out.dtype.itemsize:
        raise op.fail("reinterpreting the dtype changes the element count")
    return tr.reshaped(shape)


@rule("permute", "permute_copy")
def permute(op: Op):
    tr = op.t(op.args[0])
    dims = [_dim(d, tr.ndim) for d in op.args[1]]
    return tr.map(lambda a: a.transpose(dims), out_shape(op))


@rule("transpose", "transpose_", "transpose_copy", "swapaxes", "t", "t_", "numpy_T", "mT", "movedim")
def transpose(op: Op):
    tr = op.t(op.args[0])
    if tr.ndim < 2:
        return tr
    d0, d1 = (op.args[1], op.args[2]) if len(op.args) >= 3 else (0, 1)
    d0, d1 = _dim(d0, tr.ndim), _dim(d1, tr.ndim)
    return tr.map(lambda a: np.swapaxes(a, d0, d1), out_shape(op))


@rule("expand", "expand_copy", "expand_as", "broadcast_to")
def expand(op: Op):
    return broadcast_to(op.t(op.args[0]), out_shape(op))


@rule("unsqueeze", "unsqueeze_", "unsqueeze_copy", "squeeze", "squeeze_", "squeeze_copy")
def squeeze(op: Op):
    tr = op.t(op.args[0])
    shape = out_shape(op)
    return tr.reshaped(shape)


@rule("slice", "slice_copy")
def slice_(op: Op):
    tr = op.t(op.args[0])
    dim = _dim(op.arg(1, "dim", 0), tr.ndim)
    start, end, step = op.arg(2, "start", None), op.arg(3, "end", None), op.arg(4, "step", 1)
    n = tr.shape[dim]
    return tr.map(lambda a: slice_dim(a, dim, n, start, end, step), out_shape(op))


@rule("select", "select_copy")
def select(op: Op):
    tr = op.t(op.args[0])
    dim = _dim(op.args[1], tr.ndim)
    idx = op.args[2] % tr.shape[dim]

    def fn(a):
        return np.take(a, 0 if a.shape[dim] == 1 else idx, axis=dim)
    return tr.map(fn, out_shape(op))


@rule("narrow", "narrow_copy")
def narrow(op: Op):
    tr = op.t(op.args[0])
    dim = _dim(op.args[1], tr.ndim)
    start = op.args[2] % tr.shape[dim] if op.args[2] < 0 else op.args[2]
    return tr.map(lambda a: slice_dim(a, dim, tr.shape[dim], start, start + op.args[3], 1), out_shape(op))


@rule("split", "split_with_sizes", "unsafe_split", "unsafe_split_with_sizes", "split_copy",
      "split_with_sizes_copy", "chunk", "unsafe_chunk", "tensor_split", "unbind", "unbind_copy")
def split(op: Op):
    tr = op.t(op.args[0])
    outs = op.out
    if op.name.startswith("unbind"):
        dim = _dim(op.arg(1, "dim", 0), tr.ndim)
        return [tr.map(lambda a, i=i: np.take(a, 0 if a.shape[dim] == 1 else i, axis=dim), tuple(o.shape))
                for i, o in enumerate(outs)]
    dim = _dim(op.arg(2, "dim", 0), tr.ndim)
    res, start = [], 0
    for o in outs:
        n = o.shape[dim]
        res.append(tr.map(lambda a, s=start, n=n: slice_dim(a, dim, tr.shape[dim], s, s + n, 1), tuple(o.shape)))
        start += n
    return res


@rule("cat", "concat", "concatenate", "stack", "hstack", "vstack")
def cat(op: Op):
    tensors = [t for t in op.args[0] if t.numel() > 0 or t.ndim > 1]
    shape = out_shape(op)
    ndim = len(shape)
    dim = _dim(op.arg(1, "dim", 0), ndim)
    if op.name.startswith("stack"):
        tensors_tr = []
        for t in tensors:
            tr = op.t(t) or constant(op, tuple(t.shape))
            new = list(t.shape)
            new.insert(dim, 1)
            tensors_tr.append(tr.reshaped(new))
    else:
        tensors_tr = [op.t(t) or constant(op, tuple(t.shape)) for t in tensors]
    sizes = [tr.shape[dim] for tr in tensors_tr]
    columns = pad_parts(tensors_tr, ndim, op.k)
    parts = [Part.of([concat([col[pi].arrays()[j] for col in columns], dim, sizes) for j in range(1 + op.k)])
             for pi in range(len(columns[0]))]
    return coalesce(op.table, shape, parts)


@rule("constant_pad_nd", "pad")
def constant_pad(op: Op):
    tr = op.t(op.args[0])
    pads = list(op.args[1])
    if op.name.startswith("pad") and op.arg(2, "mode", "constant") != "constant":
        raise op.fail(f"pad mode {op.arg(2, 'mode')!r} reached aten without decomposition")
    shape = out_shape(op)
    parts = []
    for p in tr.parts:
        comp, pos = p.comp, list(p.pos)
        for i in range(len(pads) // 2):
            dim = tr.ndim - 1 - i
            left, right = pads[2 * i], pads[2 * i + 1]
            n = tr.shape[dim]
            comp = _pad_dim(comp, dim, n, left, right, -1)
            pos = [_pad_dim(a, dim, n, left, right, 0) if a.shape[dim] > 1 else a for a in pos]
        parts.append(Part(comp, tuple(pos)))
    return Tracked(shape, parts)


def _pad_dim(a: np.ndarray, dim: int, n: int, left: int, right: int, fill: int) -> np.ndarray:
    if a.shape[dim] == 1 and fill == -1 and (a < 0).all():
        return a
    a = expand_dim(a, dim, n)
    if left < 0:
        a = slice_dim(a, dim, n, -left, None, 1)
        left = 0
    if right < 0:
        a = slice_dim(a, dim, a.shape[dim], None, a.shape[dim] + right, 1)
        right = 0
    widths = [(0, 0)] * a.ndim
    widths[dim] = (left, right)
    return np.pad(a, widths, constant_values=fill)


def _index_pad(op: Op, index_of: Callable[[int, int, int, int], np.ndarray]):
    tr = op.t(op.args[0])
    pads = list(op.args[1])
    shape = out_shape(op)
    res = tr
    for i in range(len(pads) // 2):
        dim = tr.ndim - 1 - i
        n = tr.shape[dim]
        idx = index_of(n, pads[2 * i], pads[2 * i + 1], dim)
        res = res.map(lambda a, dim=dim, idx=idx: take_dim(a, dim, idx), res.shape)
    return Tracked(shape, res.parts)


@rule("reflection_pad1d", "reflection_pad2d", "reflection_pad3d")
def reflection_pad(op: Op):
    def index(n, left, right, dim):
        j = np.arange(-left, n + right)
        period = 2 * (n - 1)
        j = np.abs(j) % period if period else np.zeros_like(j)
        return np.where(j >= n, period - j, j)
    return _index_pad(op, index)


@rule("replication_pad1d", "replication_pad2d", "replication_pad3d")
def replication_pad(op: Op):
    return _index_pad(op, lambda n, left, right, dim: np.clip(np.arange(-left, n + right), 0, n - 1))


@rule("_pad_circular", "circular_pad1d", "circular_pad2d", "circular_pad3d")
def circular_pad(op: Op):
    return _index_pad(op, lambda n, left, right, dim: np.arange(-left, n + right) % n)


@rule("flip")
def flip(op: Op):
    tr = op.t(op.args[0])
    dims = [_dim(d, tr.ndim) for d in op.args[1]]

    def fn(a):
        return np.flip(a, [d for d in dims if a.shape[d] > 1]) if any(a.shape[d] > 1 for d in dims) else a
    return tr.map(fn, tr.shape)


@rule("roll")
def roll(op: Op):
    tr = op.t(op.args[0])
    shifts, dims = list(op.args[1]), list(op.arg(2, "dims", []))
    if not dims:
        raise op.fail("roll over the flattened tensor")

    def fn(a):
        for s, d in zip(shifts, dims):
            d = _dim(d, tr.ndim)
            if a.shape[d] > 1:
                a = np.roll(a, s, axis=d)
        return a
    return tr.map(fn, tr.shape)


@rule("repeat")
def repeat(op: Op):
    tr = op.t(op.args[0])
    reps = list(op.args[1])
    shape = out_shape(op)
    if len(reps) > tr.ndim:
        tr = broadcast_to(tr, (1,) * (len(reps) - tr.ndim) + tr.shape)
    # a broadcast dim repeats the same element: it stays broadcast
    return tr.map(lambda a: np.tile(a, [1 if a.shape[d] == 1 else r for d, r in enumerate(reps)]), shape)


@rule("pixel_shuffle", "pixel_unshuffle")
def pixel_shuffle(op: Op):
    tr = op.t(op.args[0])
    r = op.args[1]
    shape = out_shape(op)
    lead = tr.shape[:-3]
    c, h, w = tr.shape[-3:]
    nl = len(lead)
    if op.name.startswith("pixel_shuffle"):
        steps = [(lead + (c // (r * r), r, r, h, w), None),
                 (None, list(range(nl)) + [nl, nl + 3, nl + 1, nl + 4, nl + 2]),
                 (shape, None)]
    else:
        steps = [(lead + (c, h // r, r, w // r, r), None),
                 (None, list(range(nl)) + [nl, nl + 2, nl + 4, nl + 1, nl + 3]),
                 (shape, None)]
    cur = tr
    for new_shape, perm in steps:
        if perm is None:
            cur = cur.reshaped(new_shape)
        else:
            cur = cur.map(lambda a, p=perm: a.transpose(p), tuple(cur.shape[i] for i in perm))
    return cur


@rule("embedding")
def embedding(op: Op):
    idx = op.t(op.args[1])
    if idx is None:
        return None
    shape = out_shape(op)
    return broadcast_to(idx.map(lambda a: a[..., None], idx.shape + (1,)), shape)


@rule("index", "_unsafe_index", "index_select", "gather", "take_along_dim", "index_put", "index_put_",
      "scatter", "scatter_", "scatter_add", "masked_select", "masked_scatter", "nonzero", "_local_scalar_dense",
      "item", "sort", "topk", "argsort", "kthvalue", "unique", "_unique2")
def data_dependent(op: Op):
    raise op.fail("which elements it reads depends on tensor values")


@rule("im2col", "col2im", "unfold", "unfold_backward")
def patches(op: Op):
    raise op.fail("patch extraction (unfold/fold) is not followed by the analytic engine yet")


@rule("as_strided", "as_strided_", "as_strided_copy")
def as_strided(op: Op):
    """Raw restriding, followed through storage slots (meta kernels restride outputs to a
    memory format; a changed stride on a size-1 dim moves nothing)."""
    from .trace import restride, spec
    x = op.args[0]
    size, stride = tuple(op.args[1]), tuple(op.args[2])
    if op.name.startswith("as_strided_"):
        old = op.before[0]
        offset = op.arg(3, "storage_offset", None)
        new = (size, stride, old[2] if offset is None else offset)
        return restride(op.t(x), old, new, op.k)
    root = op.flow._root(x)
    offset = op.arg(3, "storage_offset", None)
    new = (size, stride, x.storage_offset() if offset is None else offset)
    return restride(op.flow.get(root), spec(root), new, op.k)


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
        raise op.fail(str(e)) from None
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


def _covers_all(windows: list[Window], n_in: list[int], n_out: list[int]) -> bool:
    return all(no == 1 and set(w.pos[0][w.valid[0]].tolist()) >= set(range(ni))
               for w, ni, no in zip(windows, n_in, n_out))


@rule("convolution", "_convolution", "convolution_overrideable", "_convolution_mode",
      "cudnn_convolution", "mkldnn_convolution", "conv2d", "conv1d", "conv3d")
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
    stride, padding, dilation = _ilist(stride, nd), _ilist(padding, nd), _ilist(dilation, nd)
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
    return spatial(op, grouped, op_dims, [0, 1], [2], windows, list(range(2, 2 + nd)), shape, place)


@rule("max_pool1d", "max_pool2d", "max_pool3d", "max_pool1d_with_indices", "max_pool2d_with_indices",
      "max_pool3d_with_indices", "avg_pool1d", "avg_pool2d", "avg_pool3d", "_mkldnn_pool")
def pool(op: Op):
    x = op.args[0]
    tr = op.t(x)
    nd = int(op.name.split("_pool")[1][0])
    ks = _ilist(op.arg(1, "kernel_size"), nd)
    stride = op.arg(2, "stride", None)
    stride = ks if not stride else _ilist(stride, nd)
    padding = _ilist(op.arg(3, "padding", 0), nd)
    dilation = _ilist(op.arg(4, "dilation", 1), nd) if op.name.startswith("max") else [1] * nd
    shape = out_shape(op)
    n_in = list(x.shape[-nd:])
    n_out = list(shape[-nd:])
    windows = [conv_window(n_in[i], n_out[i], ks[i], stride[i], padding[i], dilation[i]) for i in range(nd)]
    via = op.via("global pooling") if _covers_all(windows, n_in, n_out) else None
    res = per_channel(op, tr, windows, nd, shape, via)
    if isinstance(op.out, (tuple, list)):
        return [res] + [res] * (len(op.out) - 1)
    return res


def adaptive_window(n_in: int, n_out: int) -> Window:
    y = np.arange(n_out)
    start = (y * n_in) // n_out
    end = -((-(y + 1) * n_in) // n_out)
    width = int((end - start).max())
    pos = start[:, None] + np.arange(width)[None, :]
    return Window.of(np.minimum(pos, n_in - 1), n_in / n_out, pos < end[:, None])


@rule("_adaptive_avg_pool2d", "_adaptive_avg_pool3d", "adaptive_avg_pool1d", "adaptive_avg_pool2d",
      "adaptive_avg_pool3d", "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d",
      "_adaptive_avg_pool1d")
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


@rule("upsample_nearest1d", "upsample_nearest2d", "upsample_nearest3d", "_upsample_nearest_exact1d",
      "_upsample_nearest_exact2d", "_upsample_nearest_exact3d", "upsample_linear1d",
      "upsample_bilinear2d", "upsample_trilinear3d", "upsample_bicubic2d")
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


@rule("_upsample_bilinear2d_aa", "_upsample_bicubic2d_aa", "grid_sampler_2d", "grid_sampler",
      "grid_sampler_3d", "affine_grid_generator")
def unsupported_resampling(op: Op):
    raise op.fail("its sampling positions are not followed by rflens yet")


# -------------------------------------------------------------------------------------------
# reductions, normalisation, softmax, matmul, attention


def reduce(op: Op, tr: Tracked, dims: list[int], kind: str) -> Tracked:
    """Every element along ``dims`` (keepdim shape).  Dims that carry positions make the
    result global context for those axes."""
    dims = sorted(set(_dim(d, tr.ndim) for d in dims))
    shape = tuple(1 if d in dims else n for d, n in enumerate(tr.shape))
    out_parts = []
    for p in tr.parts:
        positional = {d for a in p.pos for d in range(a.ndim) if a.shape[d] > 1}
        home = {d for a in p.pos for d in positional
                if a.shape[d] > 1 and all(a.shape[e] == 1 for e in range(a.ndim) if e != d)}
        sub = Tracked(tr.shape, [p])
        if not positional & set(dims):
            out_parts += _mix(op, sub, dims, shape).parts
        elif not (positional & set(dims)) <= home:
            # a dim that lists differently placed copies (a stack): the union of its slices
            out_parts += _union_of_slices(op, sub, dims, shape, kind).parts
        elif positional <= set(dims):
            out_parts += _global(op, sub, dims, shape, kind).parts
        else:
            out_parts += _partial_global(op, sub, dims, sorted(positional), shape, kind).parts
    return coalesce(op.table, shape, out_parts)


def _union_of_slices(op: Op, tr: Tracked, dims: list[int], shape, kind: str) -> Tracked:
    """Reduction over dims that list differently placed copies (a stack, a patch-merging
    concatenation): the union of the distinct slices."""
    listed = [d for d in dims if any(a.shape[d] > 1 for p in tr.parts for a in p.arrays())]
    sizes = [tr.shape[d] for d in listed]
    if int(np.prod(sizes)) > 65536:
        raise op.fail("a reduction over a dim that mixes differently placed positions")
    new_shape = tuple(1 if d in listed else n for d, n in enumerate(tr.shape))
    distinct: dict[bytes, Tracked] = {}
    for index in np.ndindex(*sizes):
        def pick(a, index=index):
            sl = [slice(None)] * a.ndim
            for d, i in zip(listed, index):
                sl[d] = slice(0, 1) if a.shape[d] == 1 else slice(i, i + 1)
            return compact(a[tuple(sl)])
        piece = tr.map(pick, new_shape)
        key = b"|".join(a.tobytes() + str(a.shape).encode() for p in piece.parts for a in p.arrays())
        distinct.setdefault(key, piece)
    merged = union_of(op, list(distinct.values()), new_shape)
    rest = [d for d in dims if d not in listed]
    return reduce(op, merged, rest, kind) if rest else merged


def _mix(op: Op, tr: Tracked, dims: list[int], shape) -> Tracked:
    """Position-preserving: each result reads all elements along non-positional ``dims``."""
    parts = []
    for p in tr.parts:
        comp = p.comp
        if all(comp.shape[d] == 1 for d in dims):
            new = comp
        else:
            keep = [d for d in range(comp.ndim) if d not in dims]
            moved = np.moveaxis(comp, dims, list(range(comp.ndim - len(dims), comp.ndim)))
            flat = moved.reshape(moved.shape[: len(keep)] + (-1,))
            lead = flat.reshape(-1, flat.shape[-1])
            rows, inv = unique_rows(np.sort(lead, axis=1))
            ids = np.array([op.table.union(tuple(int(v) for v in np.unique(r))) for r in rows], np.int64)
            new = ids[inv].reshape(flat.shape[:-1] + (1,) * len(dims))
            new = np.moveaxis(new, list(range(comp.ndim - len(dims), comp.ndim)), dims)
        pos = tuple(a[tuple(slice(0, 1) if d in dims else slice(None) for d in range(a.ndim))] for a in p.pos)
        parts.append(Part(new, pos))
    return Tracked(tuple(shape), parts)


def _global(op: Op, tr: Tracked, dims: list[int], shape, kind: str) -> Tracked:
    """Every result reads all units present along ``dims`` (which hold all positions)."""
    k = op.k
    p = tr.parts[0]
    ndim = tr.ndim
    sep = [d for d in range(ndim) if d not in dims]
    canonical = all(p.comp.shape[d] == 1 for a in p.pos for d in range(ndim) if a.shape[d] > 1) and all(
        sum(n > 1 for n in a.shape) <= 1 for a in p.pos)
    if canonical:
        # every comp sits at every position: the units read are the product of each axis' values
        units = [np.unique(a) for a in p.pos]
        mat = sep_mix_matrix(p.comp, tr.shape, sep, dims)
        rows, inv = unique_rows(np.sort(mat, axis=1))
        ids = np.array([_global_node(op, [(int(v), units) for v in np.unique(r) if v >= 0], kind)
                        for r in rows], np.int64)[inv]
        ids = ids.reshape([tr.shape[d] for d in sep] if mat.shape[0] > 1 else [1] * len(sep))
    else:
        full = [np.broadcast_to(a, tr.shape) for a in p.arrays()]
        lead = [int(np.prod([tr.shape[d] for d in sep])) if sep else 1, -1]
        comp, *pos = [np.moveaxis(a, sep, list(range(len(sep)))).reshape(lead) for a in full]
        memo: dict = {}
        ids = np.zeros(comp.shape[0], np.int64)
        for r in range(comp.shape[0]):
            key = comp[r].tobytes() + b"".join(q[r].tobytes() for q in pos)
            if key not in memo:
                reads = []
                for v in np.unique(comp[r]):
                    if v < 0:
                        continue
                    hit = comp[r] == v
                    present = np.unique(np.stack([q[r][hit] for q in pos], 1), axis=0)
                    units = [np.unique(present[:, a]) for a in range(k)]
                    if len(present) != int(np.prod([len(u) for u in units])):
                        raise op.fail("global context over a set of positions that is not a product")
                    reads.append((int(v), units))
                memo[key] = _global_node(op, reads, kind)
            ids[r] = memo[key]
        ids = ids.reshape([tr.shape[d] for d in sep]) if sep else ids.reshape(())
    comp_out = np.expand_dims(ids, dims) if dims else ids
    return Tracked(tuple(shape), [Part(align(comp_out, ndim), tuple(zero_pos(ndim) for _ in range(k)))])


def _global_node(op: Op, reads: list[tuple[int, list[np.ndarray]]], kind: str) -> int:
    """A node of all-1 grid reading the given units of each source node."""
    if not reads:
        return -1
    edges = []
    for v, units in reads:
        node = op.table.nodes[v]
        maps = tuple(AxisMap(u[None, :].astype(np.int64), u[None, :].astype(float), node.grid[a],
                             float(node.grid[a])) for a, u in enumerate(units))
        edges.append(Edge(node, maps, op.via(kind)))
    key = ("global", op.via(kind), tuple((v, tuple(u.tobytes() for u in units)) for v, units in reads))
    return op.table.make(key, (1,) * op.k, edges)


def _partial_global(op: Op, tr: Tracked, dims: list[int], positional: list[int], shape, kind) -> Tracked:
    """Reduction over some positional dims: a full window there, identity elsewhere."""
    op_dims = positional
    sep = [d for d in range(tr.ndim) if d not in dims and d not in op_dims]
    mix = [d for d in dims if d not in op_dims]
    windows = []
    for d in op_dims:
        n = tr.shape[d]
        if d in dims:
            windows.append(Window.of(np.arange(n)[None, :], float(n)))
        else:
            windows.append(Window.of(np.arange(n), 1.0))

    def place(ids):  # ids over the sep dims (ascending), put back in their places
        return ids.reshape([tr.shape[d] if d in sep and ids.size > 1 else 1 for d in range(tr.ndim)])
    return spatial(op, tr, op_dims, sep, mix, windows, op_dims, shape, place, op.via(kind))


def normalized(op: Op, tr: Tracked, dims: list[int], kind: str) -> Tracked:
    """Each element with statistics over ``dims``: itself plus everything along ``dims``."""
    stats = reduce(op, tr, dims, kind)
    return union_of(op, [tr, broadcast_to(stats, tr.shape)], tr.shape)


@rule("mean", "sum", "amax", "amin", "max", "min", "prod", "var", "std", "var_mean", "std_mean",
      "logsumexp", "linalg_vector_norm", "norm", "argmax", "argmin", "any", "all", "nansum", "nanmean",
      "count_nonzero", "median", "nanmedian", "mode", "aminmax")
def reduction(op: Op):
    x = op.args[0]
    tr = op.t(x)
    outs = op.out if isinstance(op.out, (tuple, list)) else [op.out]
    dims = op.arg(1, "dim", None)
    if op.name.split(".")[0] in ("linalg_vector_norm", "norm"):
        dims = op.arg(2, "dim", None)
    if op.name.split(".")[0] in ("max", "min", "median", "nanmedian") and not isinstance(dims, (int, list, tuple)):
        dims = None
    if isinstance(dims, int):
        dims = [dims]
    if dims is None or len(dims) == 0:
        dims = list(range(x.ndim))
    dims = [_dim(d, x.ndim) for d in dims]
    kind = "global pooling" if op.name.split(".")[0] in ("mean", "amax", "max", "sum", "nanmean") else "reduction"
    red = reduce(op, tr, dims, kind)
    res = [red.reshaped(o.shape) for o in outs]
    return res if isinstance(op.out, (tuple, list)) else res[0]


@rule("_softmax", "softmax", "_log_softmax", "log_softmax", "_safe_softmax")
def softmax(op: Op):
    tr = op.t(op.args[0])
    dim = _dim(op.args[1], tr.ndim)
    return normalized(op, tr, [dim], "softmax over positions")


@rule("native_layer_norm", "layer_norm")
def layer_norm(op: Op):
    tr = op.t(op.args[0])
    n = len(op.args[1])
    dims = list(range(tr.ndim - n, tr.ndim))
    out = normalized(op, tr, dims, "norm over spatial dims")
    if not isinstance(op.out, (tuple, list)):
        return out
    stats = reduce(op, tr, dims, "norm over spatial dims")
    return [out] + [stats.reshaped(o.shape) for o in op.out[1:]]


@rule("native_group_norm", "group_norm")
def group_norm(op: Op):
    tr = op.t(op.args[0])
    g = op.args[6] if op.name.startswith("native") else op.args[1]
    n, c = tr.shape[:2]
    rest = tr.shape[2:]
    grouped_shape = (n, g, c // g) + tuple(rest)
    grouped = tr.reshaped(grouped_shape)
    dims = list(range(2, len(grouped_shape)))
    out = normalized(op, grouped, dims, "norm over spatial dims")
    out = out.reshaped(tr.shape)
    if not isinstance(op.out, (tuple, list)):
        return out
    stats = reduce(op, grouped, dims, "norm over spatial dims")
    return [out] + [stats.reshaped(o.shape) for o in op.out[1:]]


@rule("mm", "addmm", "bmm", "baddbmm", "matmul", "linear", "_addmm_activation", "addmv", "mv",
      "dot", "vdot", "outer")
def matmul(op: Op):
    base = op.name.split(".")[0]
    a, b = (op.args[1], op.args[2]) if base in ("addmm", "baddbmm", "_addmm_activation", "addmv") else (
        op.args[0], op.args[1])
    shape = out_shape(op)
    pieces = []
    if base in ("addmm", "baddbmm", "_addmm_activation", "addmv"):
        bias = op.t(op.args[0])
        if bias is not None:
            pieces.append(broadcast_to(bias, shape))
    if base not in ("mm", "addmm", "bmm", "baddbmm", "_addmm_activation"):
        raise op.fail("this matrix product form reached aten undecomposed")
    ta, tb = op.t(a), op.t(b)
    kind = "attention" if "attn" in op.module.lower() or "attention" in op.module.lower() else (
        "linear over spatial positions")
    if ta is not None:  # (..., m, k): reduce k, result varies along m
        red = reduce(op, ta, [ta.ndim - 1], kind)
        pieces.append(broadcast_to(red, shape))
    if tb is not None:  # (..., k, n): reduce k, result varies along n
        red = reduce(op, tb, [tb.ndim - 2], kind)
        pieces.append(broadcast_to(red, shape))
    return union_of(op, pieces, shape)


@rule("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
      "_scaled_dot_product_efficient_attention", "_scaled_dot_product_attention_math",
      "scaled_dot_product_attention", "_scaled_dot_product_cudnn_attention",
      "_scaled_dot_product_fused_attention_overrideable")
def attention(op: Op):
    q, k, v = op.args[:3]
    outs = op.out if isinstance(op.out, (tuple, list)) else [op.out]
    shape = tuple(outs[0].shape)
    pieces = []
    tq = op.t(q)
    if tq is not None:
        pieces.append(broadcast_to(reduce(op, tq, [tq.ndim - 1], "attention"), shape))
    for t in (k, v):
        tt = op.t(t)
        if tt is not None:
            red = reduce(op, tt, [tt.ndim - 2, tt.ndim - 1], "attention")
            pieces.append(broadcast_to(red, shape))
    mask = op.kwargs.get("attn_mask", op.args[3] if len(op.args) > 3 else None)
    tm = op.t(mask)
    if tm is not None:
        pieces.append(broadcast_to(reduce(op, tm, [tm.ndim - 1], "attention"), shape))
    res = union_of(op, pieces, shape)
    return [res] + [None] * (len(outs) - 1) if isinstance(op.out, (tuple, list)) else res


@rule("cumsum", "cumprod", "cummax", "cummin", "logcumsumexp")
def cumulative(op: Op):
    tr = op.t(op.args[0])
    dim = _dim(op.args[1], tr.ndim)
    n = tr.shape[dim]
    positional = any(a.shape[dim] > 1 for p in tr.parts for a in p.pos)
    if not positional:
        raise op.fail("a running reduction over a non-spatial dim")
    pos = np.broadcast_to(np.arange(n)[None, :], (n, n))
    win = Window.of(pos, 1.0, pos <= np.arange(n)[:, None])
    others = [d for d in range(tr.ndim) if d != dim]
    res = spatial(op, tr, [dim], others, [], [win], [dim], tr.shape,
                  lambda ids: np.expand_dims(ids, dim))
    if isinstance(op.out, (tuple, list)):
        return [res] * len(op.out)
    return res


FACTORIES = """
empty empty_like zeros zeros_like ones ones_like full full_like rand rand_like randn randn_like
randint randint_like arange linspace scalar_tensor new_empty new_zeros new_ones new_full
empty_strided new_empty_strided eye tensor _to_dense sym_size sym_stride
sym_numel sym_storage_offset size stride is_same_size _has_compatible_shallow_copy_type
""".split()


@rule(*FACTORIES)
def factory(op: Op):
    return None


def constant_like(shape, k: int) -> Tracked:
    ndim = len(shape)
    return Tracked(tuple(shape), [Part(np.full((1,) * ndim, -1, np.int64), tuple(zero_pos(ndim) for _ in range(k)))])


def input_layout(table: Table, shape, k: int) -> Tracked:
    """The model input: every channel of pixel p reads unit p of the input node."""
    from .geometry import Node

    node = table.add(Node.input(tuple(shape[2:])))
    ndim = len(shape)
    comp = np.full((1,) * ndim, node, np.int64)
    return Tracked(tuple(shape), [Part(comp, tuple(ident_pos(ndim, 2 + a, shape[2 + a]) for a in range(k)))])


# -------------------------------------------------------------------------------------------
# shapes without meta kernels for the most common ops (the kernels' Python decompositions cost
# more than the geometry); anything else runs its meta kernel


_UNARY = {n.rstrip("_") for n in PASSTHROUGH} - {"native_dropout", "_to_copy", "copy", "fill", "zero"}


def fast_meta(func, args, kwargs):
    name = func._opname
    overload = func._overloadname
    if name.endswith("_") and name[:-1] in _UNARY and not kwargs:
        return args[0]
    if name in _UNARY and overload == "default" and not kwargs:
        return torch.empty_like(args[0])
    if name in ("add_", "mul_") and overload == "Tensor" and isinstance(args[1], torch.Tensor) \
            and torch.broadcast_shapes(args[0].shape, args[1].shape) == args[0].shape and not kwargs:
        return args[0]
    if name in ("native_batch_norm", "_native_batch_norm_legit_no_training") and not (
            name == "native_batch_norm" and args[5]):
        x = args[0]
        c = x.shape[1]
        return torch.empty_like(x), x.new_empty((c,)), x.new_empty((c,))
    if name == "convolution" and not kwargs:
        return _conv_meta(*args)
    if name in ("add", "sub", "mul", "div") and overload in ("Tensor", "Scalar") and len(args) == 2 and (
            "alpha" not in kwargs or len(kwargs) == 1) and set(kwargs) <= {"alpha"}:
        a, b = args
        shape = torch.broadcast_shapes(a.shape, b.shape) if isinstance(b, torch.Tensor) else a.shape
        return torch.empty(shape, dtype=torch.result_type(a, b), device="meta")
    if name in ("mm", "addmm", "bmm") and not kwargs:
        a, b = (args[1], args[2]) if name == "addmm" else (args[0], args[1])
        if a.shape[-1] == b.shape[-2]:
            return torch.empty((*a.shape[:-1], b.shape[-1]), dtype=a.dtype, device="meta")
    if name == "native_layer_norm" and not kwargs:
        x, n = args[0], len(args[1])
        stats = (*x.shape[: x.ndim - n], *([1] * n))
        return torch.empty_like(x), x.new_empty(stats), x.new_empty(stats)
    return None


def _conv_meta(x, w, b, stride, padding, dilation, transposed, output_padding, groups):
    nd = x.ndim - 2
    if isinstance(padding, str) or x.ndim < 3:
        return None
    stride, padding, dilation = _ilist(stride, nd), _ilist(padding, nd), _ilist(dilation, nd)
    output_padding = _ilist(output_padding, nd)
    ks = w.shape[2:]
    if transposed:
        cout = w.shape[1] * groups
        sizes = [(n - 1) * s - 2 * p + d * (k - 1) + op + 1
                 for n, s, p, d, k, op in zip(x.shape[2:], stride, padding, dilation, ks, output_padding)]
    else:
        cout = w.shape[0]
        sizes = [(n + 2 * p - d * (k - 1) - 1) // s + 1
                 for n, s, p, d, k in zip(x.shape[2:], stride, padding, dilation, ks)]
    if any(n < 1 for n in sizes) or x.shape[1] != (w.shape[0] if transposed else w.shape[1] * groups):
        return None  # the real kernel raises its own message
    return torch.empty((x.shape[0], cout, *sizes), dtype=x.dtype, device=x.device)
