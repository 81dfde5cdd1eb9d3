"""Where every element of a traced tensor gets its dependency from.

A traced tensor is described by one or more *parts*.  A part holds integer arrays the shape of
the tensor (stored with size-1 dimensions wherever they broadcast, so a 256x56x56 feature map
costs a few hundred integers): ``comp[e]`` is the node the element reads (``-1``: nothing) and
``pos[a][e]`` its unit along input axis ``a`` in that node's grid.  An element depends on the
union over parts.  Data movement (view, permute, slice, cat, pad, pixel shuffle, ...) is the same
numpy operation on these arrays, so it is exact without a rule per pattern; only ops that
compute (convolution, pooling, reductions, ...) create nodes (``geometry.Node``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..errors import LayoutError
from .rows import unique_rows
from .geometry import AxisMap, Edge, Node, identity_map


@dataclass
class Part:
    comp: np.ndarray
    pos: tuple[np.ndarray, ...]

    def arrays(self) -> list[np.ndarray]:
        return [self.comp, *self.pos]

    @staticmethod
    def of(arrays: list[np.ndarray]) -> "Part":
        return Part(arrays[0], tuple(arrays[1:]))


@dataclass
class Tracked:
    shape: tuple[int, ...]
    parts: list[Part]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def map(self, fn: Callable[[np.ndarray], np.ndarray], shape: tuple[int, ...]) -> "Tracked":
        return Tracked(tuple(shape), [Part.of([fn(a) for a in p.arrays()]) for p in self.parts])

    def reshaped(self, shape) -> "Tracked":
        """The layout of ``tensor.view(shape)``."""
        shape = tuple(shape)
        return self.map(lambda a: reshape(a, self.shape, shape), shape)

    def positional_dims(self) -> list[int]:
        """Tensor dims along which some part's unit position varies."""
        dims = set()
        for p in self.parts:
            for arr in p.pos:
                dims.update(d for d in range(arr.ndim) if arr.shape[d] > 1)
        return sorted(dims)


def empty_part(ndim: int, k: int) -> Part:
    one = (1,) * ndim
    return Part(np.full(one, -1, np.int64), tuple(np.zeros(one, np.int64) for _ in range(k)))


def align(arr: np.ndarray, ndim: int) -> np.ndarray:
    """Prepend size-1 dims so ``arr`` broadcasts as a tensor of ``ndim`` dims."""
    return arr.reshape((1,) * (ndim - arr.ndim) + arr.shape) if arr.ndim < ndim else arr


# ---------------------------------------------------------------------------------------------
# data movement on broadcast-compact arrays


def reshape_groups(a: tuple[int, ...], b: tuple[int, ...]) -> list[tuple[list[int], list[int]]]:
    groups, i, j = [], 0, 0
    while i < len(a) or j < len(b):
        gi, gj, pa, pb = [], [], 1, 1
        if i < len(a):
            gi.append(i); pa *= a[i]; i += 1
        if j < len(b):
            gj.append(j); pb *= b[j]; j += 1
        while pa != pb:
            if pa < pb and i < len(a):
                gi.append(i); pa *= a[i]; i += 1
            elif j < len(b):
                gj.append(j); pb *= b[j]; j += 1
            else:
                raise LayoutError(f"cannot reshape {a} to {b}")
        groups.append((gi, gj))
    return groups


def compact(arr: np.ndarray) -> np.ndarray:
    """The same values with every dim along which they do not vary shrunk to size 1."""
    for d in range(arr.ndim):
        if arr.shape[d] > 1:
            first = arr[(slice(None),) * d + (slice(0, 1),)]
            if (arr == first).all():
                arr = first
    return arr


def reshape(arr: np.ndarray, src: tuple[int, ...], dst: tuple[int, ...]) -> np.ndarray:
    if arr.size == 1:
        return arr.reshape((1,) * len(dst))
    groups = reshape_groups(src, dst)
    grow = list(arr.shape)
    new_shape: list[int] = []
    for gi, gj in groups:
        big = [d for d in gi if src[d] > 1]
        full = [d for d in big if arr.shape[d] == src[d]]
        if big and len(full) == len(big):
            new_shape += [dst[d] for d in gj]
        elif not full:
            new_shape += [1] * len(gj)
        else:  # merging broadcast and varying dims: the merged dim varies everywhere
            for d in big:
                grow[d] = src[d]
            new_shape += [dst[d] for d in gj]
    if tuple(grow) != arr.shape:
        arr = np.broadcast_to(arr, grow)
    out = np.ascontiguousarray(arr).reshape(new_shape)
    return compact(out) if out.ndim > 1 else out


def slice_dim(arr: np.ndarray, dim: int, n: int, start, end, step) -> np.ndarray:
    if arr.shape[dim] == 1 and n > 1:
        return arr
    idx = [slice(None)] * arr.ndim
    idx[dim] = slice(start, end, step)
    return arr[tuple(idx)]


def take_dim(arr: np.ndarray, dim: int, index: np.ndarray) -> np.ndarray:
    if arr.shape[dim] == 1:
        return arr
    return np.take(arr, index, axis=dim)


def expand_dim(arr: np.ndarray, dim: int, n: int) -> np.ndarray:
    if arr.shape[dim] == n:
        return arr
    shape = list(arr.shape)
    shape[dim] = n
    return np.broadcast_to(arr, shape)


def concat(arrs: list[np.ndarray], dim: int, sizes: list[int]) -> np.ndarray:
    """Concatenate along ``dim`` arrays that broadcast to tensors of ``sizes[i]`` there."""
    if all(a.shape[dim] == 1 for a in arrs):
        common = np.broadcast_shapes(*[a.shape for a in arrs])
        first = np.broadcast_to(arrs[0], common)
        if all(np.array_equal(first, np.broadcast_to(a, common)) for a in arrs[1:]):
            return arrs[0]  # one value all along the joined dim: it stays broadcast
    others = [max(a.shape[d] for a in arrs) for d in range(arrs[0].ndim)]
    grown = [np.broadcast_to(a, others[:dim] + [n] + others[dim + 1:]) for a, n in zip(arrs, sizes)]
    return np.concatenate(grown, axis=dim)


def pad_parts(trs: list[Tracked], ndim: int, k: int) -> list[list[Part]]:
    """Equal-length part lists (missing parts read nothing), aligned to ``ndim``."""
    most = max(len(t.parts) for t in trs)
    out = []
    for t in trs:
        parts = [Part.of([align(a, ndim) for a in p.arrays()]) for p in t.parts]
        parts += [empty_part(ndim, k) for _ in range(most - len(parts))]
        out.append(parts)
    return out


# ---------------------------------------------------------------------------------------------
# the node table and reading


@dataclass
class Reading:
    """One node as an op reads it.

    ``carrier[a]``: the op dim along which the node's axis ``a`` varies (``None``: the node is
    read at the fixed unit ``maps[a]`` of that axis); ``maps[a]``: the node unit read at each
    position of that op dim; ``masks[i]``: positions of op dim ``i`` where the node is read at
    all (``None``: everywhere); ``vmasks[i]``: those positions plus empty slots (explicit
    padding), which count towards unclipped boxes.
    """

    node: int
    carrier: tuple
    maps: tuple
    masks: tuple
    vmasks: tuple = None

    def __post_init__(self):
        if self.vmasks is None:
            self.vmasks = self.masks


@dataclass
class Table:
    """All nodes of one analysis, with memoised construction."""

    nodes: list[Node] = field(default_factory=list)
    _memo: dict = field(default_factory=dict)
    _index: dict = field(default_factory=dict)  # id(node) -> position in ``nodes``

    def add(self, node: Node) -> int:
        self.nodes.append(node)
        self._index[id(node)] = len(self.nodes) - 1
        return len(self.nodes) - 1

    def make(self, key, grid: tuple[int, ...], edges: list[Edge]) -> int:
        """Memoised node creation; a single identity edge is the source node itself."""
        if key in self._memo:
            return self._memo[key]
        e = edges[0]
        if len(edges) == 1 and e.via is None and e.src.grid == grid and all(m.is_identity() for m in e.maps):
            idx = self._index[id(e.src)]
        else:
            idx = self.add(Node.from_edges(grid, edges))
        self._memo[key] = idx
        return idx

    def union(self, ids: tuple[int, ...]) -> int:
        """Node reading each of ``ids`` at the same unit (grids must agree, or be all-1)."""
        ids = tuple(sorted(set(i for i in ids if i >= 0)))
        if len(ids) == 0:
            return -1
        if len(ids) == 1:
            return ids[0]
        grids = [self.nodes[i].grid for i in ids]
        grid = tuple(max(g[a] for g in grids) for a in range(len(grids[0])))
        edges = []
        for i in ids:
            g = self.nodes[i].grid
            if g == grid:
                maps = tuple(identity_map(n) for n in grid)
            elif all(n == 1 for n in g):
                maps = tuple(constant_map(n, 1, 0) for n in grid)
            else:
                raise LayoutError(f"cannot align units of grids {g} and {grid}")
            edges.append(Edge(self.nodes[i], maps))
        return self.make(("union", ids), grid, edges)


def constant_map(n_out: int, n_src: int, unit: int) -> AxisMap:
    taps = np.full((n_out, 1), unit, np.int64)
    return AxisMap(taps, taps.astype(float), n_src, 0.0)


def product_pieces(mask: np.ndarray) -> list[tuple[np.ndarray, ...]]:
    """Exact decomposition of a k-D boolean mask into a union of products of 1-D masks."""
    if mask.ndim == 1:
        return [(mask,)] if mask.any() else []
    flat = mask.reshape(mask.shape[0], -1)
    pieces = []
    patterns, inv = unique_rows(flat)
    for r, pat in enumerate(patterns):
        if not pat.any():
            continue
        rows = inv == r
        for rest in product_pieces(pat.reshape(mask.shape[1:])):
            pieces.append((rows, *rest))
    return pieces


def read(tr: Tracked, op_dims: list[int], sep_dims: list[int], mix_dims: list[int],
         k: int) -> tuple[np.ndarray, list[list[Reading]]]:
    """Group a tensor's elements as an op sees them.

    The op makes one result per index over ``sep_dims``; each reads every element along
    ``mix_dims`` and a window along ``op_dims``.  Returns class ids shaped over ``sep_dims``
    (broadcastable) and, per class, the nodes read and how the op dims map onto their grids.
    """
    rest = [d for d in range(tr.ndim) if d not in op_dims + sep_dims + mix_dims]
    if any(tr.shape[d] > 1 for d in rest):
        raise LayoutError("an op reads a dimension it neither maps nor mixes")
    per_part = []
    for p in tr.parts:
        if _is_canonical(p, op_dims, k):
            per_part.append(_read_canonical(p, tr.shape, op_dims, sep_dims, mix_dims, k))
        else:
            per_part.append(_read_general(p, tr.shape, op_dims, sep_dims, mix_dims, k))
    if len(per_part) == 1:
        return per_part[0]
    sep_shape = [tr.shape[d] for d in sep_dims]
    stacked = np.stack([np.broadcast_to(ids, sep_shape).reshape(-1) for ids, _ in per_part], axis=1)
    rows, inv = unique_rows(stacked)
    classes = [[s for part_i, cls in enumerate(row) for s in per_part[part_i][1][cls]] for row in rows]
    return inv.reshape(sep_shape), classes


def _is_canonical(part: Part, op_dims: list[int], k: int) -> bool:
    """comp constant over the op dims and each axis varying along at most one op dim."""
    if any(part.comp.shape[d] > 1 for d in op_dims):
        return False
    seen = set()
    for a in range(k):
        varying = [d for d in range(part.pos[a].ndim) if part.pos[a].shape[d] > 1]
        if len(varying) > 1 or (varying and (varying[0] not in op_dims or varying[0] in seen)):
            return False
        seen.update(varying)
    return True


def sep_mix_matrix(arr: np.ndarray, shape, sep_dims, mix_dims) -> np.ndarray:
    """``arr`` over (sep, mix) flattened to (S', M'), keeping broadcast axes at size 1."""
    rest = [d for d in range(arr.ndim) if d not in sep_dims and d not in mix_dims]
    idx = tuple(slice(0, 1) if d in rest else slice(None) for d in range(arr.ndim))
    sub = arr[idx].transpose(sep_dims + mix_dims + rest)
    sub = sub.reshape(sub.shape[: len(sep_dims) + len(mix_dims)])
    ns = len(sep_dims)
    sep_full = any(n > 1 for n in sub.shape[:ns])
    mix_full = any(n > 1 for n in sub.shape[ns:])
    target = [shape[d] if sep_full else 1 for d in sep_dims] + [shape[d] if mix_full else 1 for d in mix_dims]
    sub = np.ascontiguousarray(np.broadcast_to(sub, target))
    return sub.reshape(int(np.prod(target[:ns])) if ns else 1, -1)


def _read_canonical(part, shape, op_dims, sep_dims, mix_dims, k):
    carrier, maps = [], []
    for a in range(k):
        arr = part.pos[a]
        varying = [d for d in range(arr.ndim) if arr.shape[d] > 1]
        if varying:
            carrier.append(op_dims.index(varying[0]))
            maps.append(arr.reshape(-1).astype(np.int64))
        else:
            carrier.append(None)
            maps.append(int(arr.reshape(-1)[0]))
    mat = sep_mix_matrix(part.comp, shape, sep_dims, mix_dims)
    rows, inv = unique_rows(np.sort(mat, axis=1))
    masks = (None,) * len(op_dims)
    classes = [[Reading(int(v), tuple(carrier), tuple(maps), masks) for v in np.unique(row) if v >= 0]
               for row in rows]
    sep_shape = [shape[d] for d in sep_dims] if mat.shape[0] > 1 else [1] * len(sep_dims)
    return inv.reshape(sep_shape), classes


def _read_general(part, shape, op_dims, sep_dims, mix_dims, k):
    order = sep_dims + mix_dims + op_dims
    s = int(np.prod([shape[d] for d in sep_dims])) if sep_dims else 1
    m = int(np.prod([shape[d] for d in mix_dims])) if mix_dims else 1
    ospace = [shape[d] for d in op_dims]
    full = []
    for a in part.arrays():
        a = np.broadcast_to(a, shape)
        a = a[tuple(0 if d not in order else slice(None) for d in range(len(shape)))]
        kept = [d for d in range(len(shape)) if d in order]
        a = a.transpose([kept.index(d) for d in order])
        full.append(np.ascontiguousarray(a).reshape([s, m] + ospace))
    memo: dict = {}
    ids = np.zeros(s, np.int64)
    classes: list[list[Reading]] = []
    for row in range(s):
        key = b"".join(a[row].tobytes() for a in full)
        if key not in memo:
            memo[key] = len(classes)
            classes.append(_readings_of_row(full[0][row], [p[row] for p in full[1:]], len(op_dims), k))
        ids[row] = memo[key]
    return ids.reshape([shape[d] for d in sep_dims]), classes


def _as_function_of(vals: np.ndarray, hit: np.ndarray, i: int) -> np.ndarray | None:
    """``vals`` (over mix x op dims, where ``hit``) as a function of op dim ``i``, or None.
    Positions where the node is absent (padding) continue the map linearly, so that unclipped
    boxes reach into explicit padding as they do into a convolution's own padding."""
    other = tuple(j for j in range(vals.ndim) if j != i + 1)
    big = np.iinfo(np.int64).max
    hi = np.where(hit, vals, -1).max(axis=other)
    lo = np.where(hit, vals, big).min(axis=other)
    defined = hi >= 0
    if not np.array_equal(hi[defined], lo[defined]):
        return None
    return fill_map(hi, defined)


def fill_map(f: np.ndarray, defined: np.ndarray) -> np.ndarray:
    """Integer map with undefined entries filled by linear inter/extrapolation."""
    if defined.all():
        return f.astype(np.int64)
    d = np.flatnonzero(defined)
    q = np.arange(len(f))
    if len(d) == 1:
        return (f[d[0]] + (q - d[0])).astype(np.int64)
    out = np.interp(q, d, f[d]).round()
    s0 = (f[d[1]] - f[d[0]]) / (d[1] - d[0])
    s1 = (f[d[-1]] - f[d[-2]]) / (d[-1] - d[-2])
    out = np.where(q < d[0], f[d[0]] + (q - d[0]) * s0, out)
    out = np.where(q > d[-1], f[d[-1]] + (q - d[-1]) * s1, out)
    return np.round(out).astype(np.int64)


def _placement(pos: list[np.ndarray], hit: np.ndarray, n_op: int, k: int) -> tuple | None:
    """(carrier, maps) of a node read at ``hit`` (over mix x op dims): per axis, the fixed
    unit or the op dim it varies along and its map; None where not separable."""
    carrier, maps = [], []
    for a in range(k):
        defined_vals = np.unique(pos[a][hit])
        if len(defined_vals) == 1:
            carrier.append(None)
            maps.append(int(defined_vals[0]))
            continue
        for i in range(n_op):
            f = _as_function_of(pos[a], hit, i)
            if f is not None:
                carrier.append(i)
                maps.append(f.astype(np.int64))
                break
        else:
            return None
    return tuple(carrier), tuple(maps)


def _placements(pos: list[np.ndarray], hit: np.ndarray, n_op: int, k: int) -> list[tuple]:
    """(hit, carrier, maps) for each group of mixed elements that read a node the same way:
    one group, or, where mixed elements (channels) read it at different places, as after
    channel groups shifted spatially (TSM, ShiftNet), one per placement (a union of reads)."""
    placed = _placement(pos, hit, n_op, k)
    if placed is not None:
        return [(hit, *placed)]
    groups: dict[bytes, list] = {}
    for m in np.flatnonzero(hit.reshape(hit.shape[0], -1).any(axis=1)):
        row = np.zeros_like(hit)
        row[m] = hit[m]
        placed = _placement(pos, row, n_op, k)
        if placed is None:
            raise LayoutError("unit positions that are not separable across the op's dims")
        key = repr(placed[0]).encode() + b"".join(np.asarray(f).tobytes() + b"|" for f in placed[1])
        if key in groups:
            groups[key][0] |= row
        else:
            groups[key] = [row, *placed]
    return [tuple(g) for g in groups.values()]


def _readings_of_row(comp: np.ndarray, pos: list[np.ndarray], n_op: int, k: int) -> list[Reading]:
    out = []
    for v in np.unique(comp):
        if v < 0:
            continue
        for hit, carrier, maps in _placements(pos, comp == v, n_op, k):
            # padding slots: where the elements that read the node this way read nothing
            rows = hit.reshape(hit.shape[0], -1).any(axis=1)
            empty = ~(comp[rows] >= 0).any(axis=0)
            empty_lines = [empty.all(axis=tuple(j for j in range(n_op) if j != i)) for i in range(n_op)]
            for piece in product_pieces(hit.any(axis=0)):
                out.append(Reading(int(v), carrier, maps,
                                  tuple(None if m.all() else m for m in piece),
                                  tuple(None if (m | e).all() else (m | e) for m, e in zip(piece, empty_lines))))
    return out


# ---------------------------------------------------------------------------------------------
# windows: which input positions of one op dim each output position reads


@dataclass(frozen=True)
class Window:
    """``pos[y]``: input positions read by output ``y`` (may lie in padding); ``valid`` marks
    real taps; ``step``: nominal input positions per output position."""

    pos: np.ndarray
    valid: np.ndarray
    step: float

    @staticmethod
    def of(pos: np.ndarray, step: float, valid: np.ndarray | None = None) -> "Window":
        pos = np.asarray(pos, np.int64)
        if pos.ndim == 1:
            pos = pos[:, None]
        return Window(pos, np.ones(pos.shape, bool) if valid is None else valid, step)


def axis_map(win: Window, n_in: int, mask: np.ndarray | None, f, n_src: int,
             vmask: np.ndarray | None = None) -> AxisMap:
    """Out positions -> source node units along one axis, reading ``win`` over an op dim of
    ``n_in`` positions where the node sits at ``mask`` (None: everywhere) and unit ``f[q]``
    (``f`` an int: the same unit everywhere).  ``vmask`` adds padding slots to the unclipped
    reach."""
    inside = win.valid & (win.pos >= 0) & (win.pos < n_in)
    clipped = np.clip(win.pos, 0, n_in - 1)
    hit = inside & mask[clipped] if mask is not None else inside
    vhit = inside & vmask[clipped] if vmask is not None else inside
    reach = win.valid & (vhit | ~inside)
    if isinstance(f, (int, np.integer)) and n_in == 1:
        # one position: it is the node's unit ``f``, and a window reaching past it reads
        # padding at the neighbouring places of the node's lattice, as on longer dims
        f = np.array([f])
    if isinstance(f, (int, np.integer)):
        taps = np.where(hit.any(axis=1), int(f), -1)[:, None]
        virtual = np.where(reach.any(axis=1), float(f), np.nan)[:, None]
        return AxisMap(taps, virtual, n_src, 0.0)
    f = np.asarray(f)
    if len(f) > 1:
        slope0, slope1 = float(f[1] - f[0]), float(f[-1] - f[-2])
        step = win.step * abs(float(f[-1] - f[0])) / (len(f) - 1)
    else:
        slope0 = slope1 = 1.0
        step = win.step
    inner = f[clipped].astype(float)
    ext = np.where(win.pos < 0, f[0] + win.pos * slope0,
                   np.where(win.pos >= n_in, f[-1] + (win.pos - n_in + 1) * slope1, inner))
    taps = np.where(hit, f[clipped], -1)
    virtual = np.where(reach, ext, np.nan)
    return AxisMap(taps.astype(np.int64), virtual, n_src, step)


def gate(win: Window, n_in: int, mask: np.ndarray | None) -> np.ndarray:
    """Which out positions read the node at all along an op dim that carries none of its axes."""
    inside = win.valid & (win.pos >= 0) & (win.pos < n_in)
    clipped = np.clip(win.pos, 0, n_in - 1)
    hit = inside & mask[clipped] if mask is not None else inside
    return hit.any(axis=1)


# ---------------------------------------------------------------------------------------------
# a layer's reads, per unit


class _UnitReads:
    """A layer's elements grouped per unit: (node id, bool over units, unit arrays per axis)."""

    def __init__(self, tracked: Tracked, spatial: list[int], grid: tuple[int, ...]):
        self.items: list[tuple[int, np.ndarray, tuple[np.ndarray, ...]]] = []
        rest = [d for d in range(tracked.ndim) if d not in spatial]
        rest_shape = tuple(tracked.shape[d] for d in rest)
        r = int(np.prod(rest_shape)) if rest else 1
        for p in tracked.parts:
            flat = []
            for a in p.arrays():
                a = a.transpose(rest + spatial)
                tail = a.shape[len(rest):]
                if any(a.shape[i] > 1 for i in range(len(rest))):
                    a = np.broadcast_to(a, rest_shape + tail).reshape((r,) + tail)
                else:
                    a = a.reshape((1,) + tail)
                flat.append(a)
            comp, pos = flat[0], flat[1:]
            if all(q.shape[0] == 1 for q in pos):
                rows = comp.reshape(comp.shape[0], -1)
                rows = unique_rows(rows)[0] if rows.shape[0] > 1 else rows
                for row in rows:
                    self._add(row.reshape(comp.shape[1:]), tuple(q[0] for q in pos), grid)
            else:
                full = np.stack([np.broadcast_to(f, (r,) + grid).reshape(r, -1) for f in flat], 1)
                for row in unique_rows(full.reshape(r, -1))[0]:
                    row = row.reshape((len(flat),) + grid)
                    self._add(row[0], tuple(row[1:]), grid)

    def _add(self, comp: np.ndarray, pos: tuple[np.ndarray, ...], grid) -> None:
        first = comp.flat[0]
        if comp.size == 1 or (comp == first).all():  # most layers: every unit reads one node
            if first >= 0:
                self.items.append((int(first), np.ones(grid, bool), tuple(np.broadcast_to(q, grid) for q in pos)))
            return
        comp = np.broadcast_to(comp, grid)
        for v in np.unique(comp):
            if v >= 0:
                m = comp == v
                # units that read another node hold that node's positions: park them at 0
                self.items.append((int(v), m, tuple(np.where(m, np.broadcast_to(q, grid), 0) for q in pos)))


def unit_reads(tracked: Tracked, spatial: list[int], grid: tuple[int, ...]) -> list[tuple[int, np.ndarray, tuple]]:
    """What each unit (a position on the layer's ``grid`` along ``spatial`` dims) of a tensor
    with layout ``tracked`` reads, its elements' reads together: ``(node, units, positions)``
    triples, ``units`` a bool array over the grid, ``positions[a]`` the node unit read along
    input axis ``a``."""
    return _UnitReads(tracked, spatial, grid).items

