"""Reductions and normalisation: every element along some dims; over spatial dims this is global
context (global pooling, spatial norms, softmax over positions, matmul over positions, attention)."""

from __future__ import annotations


import numpy as np

from ...errors import LayoutError, UnsupportedOpError
from ..geometry import AxisMap, Edge
from ..layout import Part, Tracked, Window, align, compact, sep_mix_matrix, unique_rows
from .registry import broadcast_to, coalesce, int_list, mix, norm_dim, Op, out_shape, rule, union_of, zero_pos
from .spatial import conv_window, covers_all, per_channel, spatial


# -------------------------------------------------------------------------------------------
# reductions, normalisation, softmax, matmul, attention


def reduce(op: Op, tr: Tracked, dims: list[int], kind: str, windows_first: bool = False) -> Tracked:
    """Every element along ``dims`` (keepdim shape).  Dims that carry positions make the
    result global context for those axes."""
    dims = sorted(set(norm_dim(d, tr.ndim) for d in dims))
    shape = tuple(1 if d in dims else n for d, n in enumerate(tr.shape))
    out_parts = []
    for p in tr.parts:
        positional = {d for a in p.pos for d in range(a.ndim) if a.shape[d] > 1}
        # dims along which some axis' positions vary together with another dim's
        mixed = {d for a in p.pos if sum(n > 1 for n in a.shape) > 1 for d in range(a.ndim) if a.shape[d] > 1}
        sub = Tracked(tr.shape, [p])
        if not positional & set(dims):
            out_parts += mix(op, sub, dims, shape).parts
        elif positional & set(dims) & mixed:
            # positions that vary along a reduced dim together with other dims: a stack of placed
            # copies (the union of its few slices), or window attention's tokens (a node per window)
            out_parts += _placed(op, sub, dims, shape, kind, windows_first).parts
        elif positional <= set(dims):
            out_parts += _global(op, sub, dims, shape, kind).parts
        else:
            out_parts += _partial_global(op, sub, dims, sorted(positional), shape, kind).parts
    try:
        return coalesce(op.table, shape, out_parts)
    except LayoutError:
        if windows_first:
            raise
        # a few placed copies of each of many parts add up (Hiera's pooled mask units): a node
        # per window instead
        return reduce(op, tr, dims, kind, windows_first=True)


FEW_SLICES = 8


def _placed(op: Op, tr: Tracked, dims: list[int], shape, kind: str, windows_first: bool = False) -> Tracked:
    """A reduction over dims whose positions also depend on kept dims: the union of the distinct
    slices where they are few (a stack of shifted copies), else one node unit per product of
    positions read (window attention: each window's tokens are a block of rows times a block of
    columns, so a window is a unit of a node whose grid is the windows')."""
    listed = [d for d in dims if any(a.shape[d] > 1 for p in tr.parts for a in p.arrays())]
    if windows_first or int(np.prod([tr.shape[d] for d in listed])) > FEW_SLICES:
        windows = _windows(op, tr, dims, shape, kind)
        if windows is not None:
            return windows
    return _union_of_slices(op, tr, dims, shape, kind)


def _windows(op: Op, tr: Tracked, dims: list[int], shape, kind: str) -> Tracked | None:
    """Each result (a row: an index of the kept dims) reads, per source node, a product of units
    along the axes; rows reading equal sets along an axis share that axis' unit of a new node.
    None where some row's reads are not a product (the caller takes the union of slices)."""
    k, ndim = op.k, tr.ndim
    p = tr.parts[0]
    keep = [d for d in range(ndim) if d not in dims]
    rows_shape = [tr.shape[d] if any(a.shape[d] > 1 for a in p.arrays()) else 1 for d in keep]
    target = tuple(rows_shape[keep.index(d)] if d in keep else tr.shape[d] for d in range(ndim))
    comp, *pos = [np.moveaxis(np.broadcast_to(a, target), keep, list(range(len(keep)))).reshape(
        int(np.prod(rows_shape)), -1) for a in p.arrays()]
    valid = comp >= 0
    pos = [np.where(valid, q, 0) for q in pos]
    # windows differ by where they sit, not by their shape: each row is compared shifted to its
    # first position per axis, so each distinct window shape is worked out once, and a read
    # element's copies (the channels of one placed copy) count once
    shift = np.stack([np.where(valid, q, np.iinfo(np.int64).max).min(1) for q in pos], 1)
    shift[~valid.any(1)] = 0
    stacked = np.stack([comp] + [q - shift[:, [a]] for a, q in enumerate(pos)])  # (1 + k, rows, reads)
    stacked = unique_rows(stacked.reshape(-1, stacked.shape[2]).T)[0].T.reshape(1 + k, comp.shape[0], -1)
    patterns, inverse = unique_rows(stacked.transpose(1, 0, 2).reshape(comp.shape[0], -1))
    # per pattern and axis: the reads as ((source, units), ...) moved to start at 0, and that start
    signatures = []
    for pat in patterns.reshape(len(patterns), 1 + k, -1):
        c, qs = pat[0], pat[1:]
        reads = {}
        for v in np.unique(c[c >= 0]):
            present = np.unique(qs[:, c == v].T, axis=0)
            units = [np.unique(present[:, a]) for a in range(k)]
            if len(present) != int(np.prod([len(u) for u in units])):
                return None
            reads[int(v)] = units
        lows = [min((int(u[a][0]) for u in reads.values()), default=0) for a in range(k)]
        signatures.append([(tuple((v, (u[a] - lows[a]).tobytes()) for v, u in sorted(reads.items())), lows[a])
                           for a in range(k)])
    reading = np.array([bool(sig[0][0]) for sig in signatures])[inverse]
    # per axis: the distinct (source, units) sets, ordered by where they start
    classes, index = [], []
    for a in range(k):
        shapes: dict[tuple, int] = {}
        shape_of = np.array([shapes.setdefault(sig[a][0], len(shapes)) for sig in signatures], np.int64)[inverse]
        start = np.array([sig[a][1] for sig in signatures], np.int64)[inverse] + shift[:, a]
        start[~reading] = -1
        pairs, at = unique_rows(np.stack([start, shape_of], 1))
        shapes_list = list(shapes)
        sets = [tuple((v, (np.frombuffer(b, np.int64) + s).tobytes()) for v, b in shapes_list[i]) for s, i in pairs]
        order = sorted(range(len(pairs)), key=lambda j: (int(pairs[j][0]), sets[j]))
        rank = np.empty(len(order), np.int64)
        rank[order] = np.arange(len(order))
        index.append(rank[at])
        classes.append([sets[j] for j in order])
    sources = sorted({v for sig in signatures for v, _ in sig[0][0]})
    if not sources:
        return None
    grid = tuple(len(c) for c in classes)
    # several windows, each reading its own positions: local context, however wide the windows
    # of earlier layers have grown (one window over every position takes the global path)
    via = None
    edges = []
    for v in sources:
        node = op.table.nodes[v]
        maps = []
        for a in range(k):
            read = [dict(key).get(v) for key in classes[a]]  # the units of v each class reads
            read = [np.frombuffer(b, np.int64) if b is not None else np.zeros(0, np.int64) for b in read]
            width = max(1, max(len(u) for u in read))
            taps = np.full((len(read), width), -1, np.int64)
            for i, u in enumerate(read):
                taps[i, :len(u)] = u
            starts = [u[0] for u in read if len(u)]
            step = float(np.mean(np.diff(starts))) if len(starts) > 1 else float(width)
            maps.append(AxisMap(taps, np.where(taps >= 0, taps, np.nan).astype(float), node.grid[a], abs(step)))
        edges.append(Edge(node, tuple(maps), via))
    key = ("windows", via, tuple(tuple(c) for c in classes))
    node_id = op.table.make(key, grid, edges)
    place = [rows_shape[keep.index(d)] if d in keep else 1 for d in range(ndim)]
    comp_out = np.where(reading, node_id, -1).reshape(place)
    pos_out = tuple(compact(i.reshape(place)) for i in index)
    return Tracked(tuple(shape), [Part(compact(comp_out), pos_out)])


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


@rule
def pool(op: Op):
    x = op.args[0]
    tr = op.t(x)
    nd = int(op.name.split("_pool")[1][0])
    ks = int_list(op.arg(1, "kernel_size"), nd)
    stride = op.arg(2, "stride", None)
    stride = ks if not stride else int_list(stride, nd)
    padding = int_list(op.arg(3, "padding", 0), nd)
    dilation = int_list(op.arg(4, "dilation", 1), nd) if op.name.startswith("max") else [1] * nd
    shape = out_shape(op)
    n_in = list(x.shape[-nd:])
    n_out = list(shape[-nd:])
    windows = [conv_window(n_in[i], n_out[i], ks[i], stride[i], padding[i], dilation[i]) for i in range(nd)]
    via = op.via("global pooling") if covers_all(windows, n_in, n_out) else None
    try:
        res = per_channel(op, tr, windows, nd, shape, via)
    except UnsupportedOpError:
        res = _tiled(op, tr, ks, stride, padding, dilation, shape)
        if res is None:
            raise
    if isinstance(op.out, (tuple, list)):
        return [res] + [res] * (len(op.out) - 1)
    return res


def _tiled(op: Op, tr: Tracked, ks, stride, padding, dilation, shape) -> Tracked | None:
    """A pool whose windows tile its dims (kernel = stride, no padding or dilation) as a reduction
    over each tile, wherever the positions sit (NextViT pools tokens whose rows and columns were
    merged into one dim); None for any other pool."""
    nd = len(ks)
    if any(p for p in padding) or any(d != 1 for d in dilation) or list(ks) != list(stride) or any(
            n % k for n, k in zip(tr.shape[-nd:], ks)):
        return None
    lead = tr.shape[:-nd]
    split = lead + tuple(v for n, k in zip(tr.shape[-nd:], ks) for v in (n // k, k))
    tiles = [len(lead) + 2 * i + 1 for i in range(nd)]
    return reduce(op, tr.reshaped(split), tiles, "pooling").reshaped(shape)


def normalized(op: Op, tr: Tracked, dims: list[int], kind: str) -> Tracked:
    """Each element with statistics over ``dims``: itself plus everything along ``dims``."""
    stats = reduce(op, tr, dims, kind)
    return union_of(op, [tr, broadcast_to(stats, tr.shape)], tr.shape)


@rule
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


@rule
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
    dims = [norm_dim(d, x.ndim) for d in dims]
    kind = "global pooling" if op.name.split(".")[0] in ("mean", "amax", "max", "sum", "nanmean") else "reduction"
    red = reduce(op, tr, dims, kind)
    res = [red.reshaped(o.shape) for o in outs]
    return res if isinstance(op.out, (tuple, list)) else res[0]


@rule
def softmax(op: Op):
    tr = op.t(op.args[0])
    dim = norm_dim(op.args[1], tr.ndim)
    return normalized(op, tr, [dim], "softmax over positions")


@rule
def layer_norm(op: Op):
    tr = op.t(op.args[0])
    n = len(op.args[1])
    return _norm_outputs(op, tr, list(range(tr.ndim - n, tr.ndim)), tr.shape)


@rule
def group_norm(op: Op):
    tr = op.t(op.args[0])
    g = op.args[6] if op.name.startswith("native") else op.args[1]
    n, c = tr.shape[:2]
    grouped = tr.reshaped((n, g, c // g) + tuple(tr.shape[2:]))
    return _norm_outputs(op, grouped, list(range(2, grouped.ndim)), tr.shape)


def _norm_outputs(op: Op, tr: Tracked, dims: list[int], shape) -> Tracked | list[Tracked]:
    """A norm over ``dims``: the normalised value (as ``shape``) and, where the op returns them,
    its statistics."""
    out = normalized(op, tr, dims, "norm over spatial dims")
    out = out if out.shape == tuple(shape) else out.reshaped(shape)
    if not isinstance(op.out, (tuple, list)):
        return out
    stats = reduce(op, tr, dims, "norm over spatial dims")
    return [out] + [stats.reshaped(o.shape) for o in op.out[1:]]


@rule
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


@rule
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


@rule
def cumulative(op: Op):
    tr = op.t(op.args[0])
    dim = norm_dim(op.args[1], tr.ndim)
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
