"""Data movement: the same numpy op on the layout arrays (view, permute, slice, cat, pad, flip, ...)
and raw restriding followed through storage slots."""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..strides import restride, spec
from ..layout import Part, Tracked, compact, concat, expand_dim, pad_parts, slice_dim, take_dim
from .registry import broadcast_to, coalesce, constant, int_list, norm_dim, Op, out_shape, rule, union_of


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



# ---- patches: im2col (nn.Unfold) and col2im (nn.Fold) ------------------------------------------

def _patch_taps(n: int, n_out: int, k: int, d: int, p: int, s: int) -> np.ndarray:
    """(k, n_out): the input position kernel tap ``i`` of patch ``o`` reads along one axis (may lie
    in the padding)."""
    return np.arange(n_out)[None, :] * s - p + np.arange(k)[:, None] * d


def _gather(tr: Tracked, index: np.ndarray, shape) -> Tracked:
    """The layout of ``x.flatten()[index]`` (``index`` -1: a padding zero, reading nothing)."""
    parts = []
    for part in tr.parts:
        arrays = [np.broadcast_to(a, tr.shape).reshape(-1) for a in part.arrays()]
        taken = [a[np.maximum(index, 0)] for a in arrays]
        taken[0] = np.where(index < 0, -1, taken[0])
        taken[1:] = [np.where(index < 0, 0, q) for q in taken[1:]]
        parts.append(Part.of([compact(a.reshape(shape)) for a in taken]))
    return Tracked(tuple(shape), parts)


@rule
def im2col(op: Op):
    """Sliding patches: output (N, C*kh*kw, L) element (c, i, j, l) is input (c, y, x) at tap
    (i, j) of patch l, or a padding zero."""
    x = op.args[0]
    tr = op.t(x)
    (kh, kw), (dh, dw), (ph, pw), (sh, sw) = (int_list(op.args[i], 2) for i in range(1, 5))
    h, w = x.shape[-2:]
    shape = out_shape(op)
    oh, ow = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    ys, xs = _patch_taps(h, oh, kh, dh, ph, sh), _patch_taps(w, ow, kw, dw, pw, sw)
    y = ys[:, None, :, None]   # (kh, 1, oh, 1)
    xx = xs[None, :, None, :]  # (1, kw, 1, ow)
    inside = (y >= 0) & (y < h) & (xx >= 0) & (xx < w)
    spot = np.where(inside, y * w + xx, -1).reshape(kh * kw, oh * ow)  # within one channel
    lead = x.shape[:-3]
    c = x.shape[-3]
    channel = np.arange(int(np.prod(lead)) * c)[:, None, None] * (h * w)
    index = np.where(spot[None] < 0, -1, channel + spot[None])
    return _gather(tr, index.reshape(-1), shape)


@rule
def col2im(op: Op):
    """Patches summed back into an image: output (c, y, x) reads every (c, i, j, l) whose tap
    lands on it, a union of at most kh*kw placed copies."""
    x = op.args[0]
    tr = op.t(x)
    h, w = (int(v) for v in op.args[1])
    (kh, kw), (dh, dw), (ph, pw), (sh, sw) = (int_list(op.args[i], 2) for i in range(2, 6))
    shape = out_shape(op)
    oh, ow = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    lead = x.shape[:-2]
    channels = int(np.prod(lead)) * x.shape[-2] // (kh * kw)
    yy, xx = np.arange(h)[:, None], np.arange(w)[None, :]
    pieces = []
    for i in range(kh):
        for j in range(kw):
            oy, ry = np.divmod(yy + ph - i * dh, sh)
            ox, rx = np.divmod(xx + pw - j * dw, sw)
            hit = (ry == 0) & (rx == 0) & (oy >= 0) & (oy < oh) & (ox >= 0) & (ox < ow)
            l = np.where(hit, oy * ow + ox, -1)  # (h, w)
            rows = np.arange(channels)[:, None, None] * (kh * kw) + i * kw + j
            index = np.where(l[None] < 0, -1, rows * (oh * ow) + l[None])
            pieces.append(_gather(tr, index.reshape(-1), shape))
    return union_of(op, pieces, shape)
