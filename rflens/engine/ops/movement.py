"""Data movement: the same numpy op on the layout arrays (view, permute, slice, cat, pad, flip, ...)
and raw restriding followed through storage slots."""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..strides import restride, spec
from ..layout import Part, Tracked, concat, expand_dim, pad_parts, slice_dim, take_dim
from .registry import broadcast_to, coalesce, constant, norm_dim, Op, out_shape, rule


# -------------------------------------------------------------------------------------------
# data movement: same numpy op on the layout arrays


@rule
def view(op: Op):
    tr = op.t(op.args[0])
    shape = out_shape(op)
    if op.args[0].dtype.itemsize != op.out.dtype.itemsize:
        raise op.fail("reinterpreting the dtype changes the element count")
    return tr.reshaped(shape)


@rule
def permute(op: Op):
    tr = op.t(op.args[0])
    dims = [norm_dim(d, tr.ndim) for d in op.args[1]]
    return tr.map(lambda a: a.transpose(dims), out_shape(op))


@rule
def transpose(op: Op):
    tr = op.t(op.args[0])
    if tr.ndim < 2:
        return tr
    d0, d1 = (op.args[1], op.args[2]) if len(op.args) >= 3 else (0, 1)
    d0, d1 = norm_dim(d0, tr.ndim), norm_dim(d1, tr.ndim)
    return tr.map(lambda a: np.swapaxes(a, d0, d1), out_shape(op))


@rule
def expand(op: Op):
    return broadcast_to(op.t(op.args[0]), out_shape(op))


@rule
def squeeze(op: Op):
    tr = op.t(op.args[0])
    shape = out_shape(op)
    return tr.reshaped(shape)


@rule("slice")
def slice_(op: Op):
    tr = op.t(op.args[0])
    dim = norm_dim(op.arg(1, "dim", 0), tr.ndim)
    start, end, step = op.arg(2, "start", None), op.arg(3, "end", None), op.arg(4, "step", 1)
    n = tr.shape[dim]
    return tr.map(lambda a: slice_dim(a, dim, n, start, end, step), out_shape(op))


@rule
def select(op: Op):
    tr = op.t(op.args[0])
    dim = norm_dim(op.args[1], tr.ndim)
    idx = op.args[2] % tr.shape[dim]

    def fn(a):
        return np.take(a, 0 if a.shape[dim] == 1 else idx, axis=dim)
    return tr.map(fn, out_shape(op))


@rule
def narrow(op: Op):
    tr = op.t(op.args[0])
    dim = norm_dim(op.args[1], tr.ndim)
    start = op.args[2] % tr.shape[dim] if op.args[2] < 0 else op.args[2]
    return tr.map(lambda a: slice_dim(a, dim, tr.shape[dim], start, start + op.args[3], 1), out_shape(op))


@rule
def split(op: Op):
    tr = op.t(op.args[0])
    outs = op.out
    if op.name.startswith("unbind"):
        dim = norm_dim(op.arg(1, "dim", 0), tr.ndim)
        return [tr.map(lambda a, i=i: np.take(a, 0 if a.shape[dim] == 1 else i, axis=dim), tuple(o.shape))
                for i, o in enumerate(outs)]
    dim = norm_dim(op.arg(2, "dim", 0), tr.ndim)
    res, start = [], 0
    for o in outs:
        n = o.shape[dim]
        res.append(tr.map(lambda a, s=start, n=n: slice_dim(a, dim, tr.shape[dim], s, s + n, 1), tuple(o.shape)))
        start += n
    return res


@rule
def cat(op: Op):
    tensors = [t for t in op.args[0] if t.numel() > 0 or t.ndim > 1]
    shape = out_shape(op)
    ndim = len(shape)
    dim = norm_dim(op.arg(1, "dim", 0), ndim)
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


@rule
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


@rule
def reflection_pad(op: Op):
    def index(n, left, right, dim):
        j = np.arange(-left, n + right)
        period = 2 * (n - 1)
        j = np.abs(j) % period if period else np.zeros_like(j)
        return np.where(j >= n, period - j, j)
    return _index_pad(op, index)


@rule
def replication_pad(op: Op):
    return _index_pad(op, lambda n, left, right, dim: np.clip(np.arange(-left, n + right), 0, n - 1))


@rule
def circular_pad(op: Op):
    return _index_pad(op, lambda n, left, right, dim: np.arange(-left, n + right) % n)


@rule
def flip(op: Op):
    tr = op.t(op.args[0])
    dims = [norm_dim(d, tr.ndim) for d in op.args[1]]

    def fn(a):
        return np.flip(a, [d for d in dims if a.shape[d] > 1]) if any(a.shape[d] > 1 for d in dims) else a
    return tr.map(fn, tr.shape)


@rule
def roll(op: Op):
    tr = op.t(op.args[0])
    shifts, dims = list(op.args[1]), list(op.arg(2, "dims", []))
    if not dims:
        raise op.fail("roll over the flattened tensor")

    def fn(a):
        for s, d in zip(shifts, dims):
            d = norm_dim(d, tr.ndim)
            if a.shape[d] > 1:
                a = np.roll(a, s, axis=d)
        return a
    return tr.map(fn, tr.shape)


@rule
def repeat(op: Op):
    tr = op.t(op.args[0])
    reps = list(op.args[1])
    shape = out_shape(op)
    if len(reps) > tr.ndim:
        tr = broadcast_to(tr, (1,) * (len(reps) - tr.ndim) + tr.shape)
    # a broadcast dim repeats the same element: it stays broadcast
    return tr.map(lambda a: np.tile(a, [1 if a.shape[d] == 1 else r for d, r in enumerate(reps)]), shape)


@rule
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


@rule
def embedding(op: Op):
    idx = op.t(op.args[1])
    if idx is None:
        return None
    shape = out_shape(op)
    return broadcast_to(idx.map(lambda a: a[..., None], idx.shape + (1,)), shape)




@rule
def as_strided(op: Op):
    """Raw restriding, followed through storage slots (meta kernels restride outputs to a
    memory format; a changed stride on a size-1 dim moves nothing)."""
    x = op.args[0]
    size, stride = tuple(op.args[1]), tuple(op.args[2])
    if op.name.startswith("as_strided_"):
        old = op.before[0]
        offset = op.arg(3, "storage_offset", None)
        new = (size, stride, old[2] if offset is None else offset)
        return restride(op.t(x), old, new, op.k)
    root = op.root(x)
    offset = op.arg(3, "storage_offset", None)
    new = (size, stride, x.storage_offset() if offset is None else offset)
    return restride(op.t(root), spec(root), new, op.k)
