"""The geometry of dependency: per-axis maps and the union-of-products algebra.

Every value the engine tracks is a *node*: a grid of units (one size per input axis) whose
dependency on the input is stored exactly as a union of separable terms.  A term holds, for
each input axis, a boolean matrix ``(units along the axis) x (input pixels along the axis)``;
a unit depends on input pixel ``p`` iff, for some term, every axis' matrix has ``[x_a, p_a]``
set.  Separable ops (convolution, pooling, resizing, padding, cropping, broadcasting, global
reductions) map a term to a term, so composing them is exact, and branches are unions of terms.
Holes (dilation, strided 1x1 convolutions), borders and union-of-branch shapes such as
Inception's cross-shaped fields fall out without special cases.

Alongside the exact sets, each node carries the *unclipped* interval of every unit along every
axis (the classic receptive-field box, reaching into padding), used for sizes, strides, starts
and centres.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import GeometryError

MAX_TERMS = 64


@dataclass(frozen=True)
class AxisMap:
    """How the units of one axis of a node read the units of one axis of a source node.

    ``taps[y]`` lists the source positions unit ``y`` depends on (``-1`` pads the row);
    ``virtual[y]`` lists the positions it would read with the borders removed, in source grid
    coordinates that may lie outside ``[0, n_src)`` (``nan`` pads); ``step`` is the nominal
    number of source units per output unit.
    """

    taps: np.ndarray
    virtual: np.ndarray
    n_src: int
    step: float
    identity: bool = False  # known to be the identity (checked lazily otherwise)

    @property
    def n_out(self) -> int:
        return self.taps.shape[0]

    def is_identity(self) -> bool:
        return self.identity or (
            self.n_out == self.n_src
            and self.taps.shape[1] == 1
            and bool((self.taps[:, 0] == np.arange(self.n_src)).all())
            and self.virtual.shape[1] == 1
            and bool((self.virtual[:, 0] == np.arange(self.n_src)).all())
        )

    def apply(self, matrix: np.ndarray) -> np.ndarray:
        """Rows of the source term matrix gathered and OR-ed along this map."""
        if self.identity:
            return matrix
        padded = np.concatenate([matrix, np.zeros((1, matrix.shape[1]), bool)])
        return padded[self.taps].any(axis=1)


def identity_map(n: int) -> AxisMap:
    idx = np.arange(n)[:, None]
    return AxisMap(idx.copy(), idx.astype(float), n, 1.0, identity=True)


@dataclass(frozen=True)
class Edge:
    """A source node read through one map per axis; ``via`` names the op when the edge
    carries global context (the reading covers a whole axis by the op's meaning)."""

    src: "Node"
    maps: tuple[AxisMap, ...]
    via: str | None = None


Term = tuple  # tuple[np.ndarray, ...]: one (units x input pixels) bool matrix per axis


def _nonempty_rows(term: Term) -> bool:
    return all(m.any() for m in term)


def simplify(terms: list[Term]) -> list[Term]:
    """An equivalent, shorter union: drop empty and dominated terms, merge terms that agree on
    all axes but one (A x B  u  A x C  =  A x (B u C), row by row)."""
    terms = [t for t in terms if _nonempty_rows(t)]
    changed = True
    while changed and len(terms) > 1:
        changed = False
        out: list[Term] = []
        for t in terms:
            merged = False
            for i, u in enumerate(out):
                if all(np.array_equal(a, b) for a, b in zip(t, u)):
                    merged = True
                elif all((a <= b).all() for a, b in zip(t, u)):
                    merged = True
                elif all((b <= a).all() for a, b in zip(t, u)):
                    out[i] = t
                    merged = changed = True
                else:
                    differ = [k for k, (a, b) in enumerate(zip(t, u)) if not np.array_equal(a, b)]
                    if len(differ) == 1:
                        k = differ[0]
                        out[i] = tuple(a | b if j == k else a for j, (a, b) in enumerate(zip(t, u)))
                        merged = changed = True
                if merged:
                    break
            if not merged:
                out.append(t)
        terms = out
    if len(terms) > MAX_TERMS:
        raise GeometryError(f"the receptive field is a union of more than {MAX_TERMS} separable pieces")
    return terms


@dataclass
class Hull:
    """Unclipped interval [lo, hi) of every unit along one axis, in input pixel coordinates."""

    lo: np.ndarray
    hi: np.ndarray
    jump: float

    def extended(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """lo/hi at (possibly out-of-range) grid positions (``nan``: no position); outside the
        grid the unit lattice is continued with the spacing of its last two units that read
        something (units that read nothing, such as the holes of a transposed convolution
        with stride > kernel, have no place to continue from), as padding continues a feature
        map."""
        n = len(self.lo)
        valid = ~np.isnan(positions)
        if not valid.any():
            empty = np.full(positions.shape, np.inf)
            return empty, -empty
        p = np.where(valid, positions, 0).astype(np.int64)
        first, last = int(min(p.min(), 0)), int(max(p.max(), n - 1))
        # a table over [first, last]: the grid itself plus its linear continuation
        q = np.arange(first, last + 1)
        lo_t = np.full(len(q), np.inf)
        hi_t = np.full(len(q), -np.inf)
        inner = slice(-first, -first + n)
        lo_t[inner], hi_t[inner] = self.lo, self.hi
        real = np.flatnonzero(np.isfinite(self.lo))
        if real.size:
            a, b = real[0], real[-1]
            if real.size >= 2:
                a1, b0 = real[1], real[-2]
                j0, k0 = (self.lo[a1] - self.lo[a]) / (a1 - a), (self.hi[a1] - self.hi[a]) / (a1 - a)
                j1, k1 = (self.lo[b] - self.lo[b0]) / (b - b0), (self.hi[b] - self.hi[b0]) / (b - b0)
            else:
                j0 = j1 = k0 = k1 = self.jump
            below, above = q < 0, q > n - 1
            lo_t[below] = self.lo[a] + (q[below] - a) * j0
            hi_t[below] = self.hi[a] + (q[below] - a) * k0
            lo_t[above] = self.lo[b] + (q[above] - b) * j1
            hi_t[above] = self.hi[b] + (q[above] - b) * k1
        idx = p - first
        return np.where(valid, lo_t[idx], np.inf), np.where(valid, hi_t[idx], -np.inf)

    def through(self, amap: AxisMap) -> "Hull":
        if amap.identity:
            return self
        lo, hi = self.extended(amap.virtual)
        return Hull(np.floor(lo.min(axis=1)), np.ceil(hi.max(axis=1)), self.jump * amap.step)

    @staticmethod
    def union(hulls: list["Hull"]) -> "Hull":
        if all(h is hulls[0] for h in hulls):
            return hulls[0]
        lo = np.minimum.reduce([h.lo for h in hulls])
        hi = np.maximum.reduce([h.hi for h in hulls])
        return Hull(lo, hi, max(h.jump for h in hulls))


def _union_lists(lists: list[list[Hull]], k: int) -> list[Hull]:
    if all(h is lists[0] for h in lists):
        return lists[0]
    return [Hull.union([h[a] for h in lists]) for a in range(k)]


def _grow(lo_hi: tuple[float, float], hull: Hull, amap: AxisMap) -> tuple[float, float]:
    """Path sizes through one map: the central unit's span of source units times their jump."""
    row = amap.virtual[amap.n_out // 2]
    row = row[~np.isnan(row)]
    span = float(row.max() - row.min()) if row.size else 0.0
    return lo_hi[0] + span * hull.jump, lo_hi[1] + span * hull.jump


def _reach(hull: Hull) -> tuple[float, float, float]:
    """``(largest size, jump, smallest start)`` of the units of one axis that read something."""
    real = np.isfinite(hull.lo) & np.isfinite(hull.hi)
    if not real.any():
        return (0.0, hull.jump, np.inf)
    return (float(np.max(hull.hi[real] - hull.lo[real])), float(hull.jump), float(np.min(hull.lo[real])))


class Node:
    """A grid of units with exact dependency terms and unclipped hulls per axis.

    ``local`` terms reach the input without passing a global-context op; ``glob`` terms do.
    ``path_sizes`` holds, per axis, the smallest and largest RF over single paths (the
    classic size recursion ``size + span * jump`` along each path, as rfa-toolbox does).
    ``spatial`` is the input's spatial shape (a node whose units read only padding has no
    terms, and its supports are still masks of that shape).  ``reach`` is, per axis, the field
    ``(size, jump, start)`` of the units that the global-context ops upstream read (the largest
    unclipped size among them, their stride, the smallest start; None: no global op upstream):
    what a unit would see if each global op read one position.
    """

    def __init__(self, grid: tuple[int, ...], local: list[Term], glob: list[Term],
                 hull: list[Hull] | None, local_hull: list[Hull] | None,
                 path_sizes: list[tuple[float, float]] | None, via: tuple[str, ...] = (),
                 spatial: tuple[int, ...] = (), reach: list[tuple[float, float, float]] | None = None):
        self.grid = grid
        self.local = local
        self.glob = glob
        self.hull = hull
        self.local_hull = local_hull
        self.path_sizes = path_sizes
        self.via = via
        self.spatial = spatial
        self.reach = reach

    @classmethod
    def input(cls, spatial: tuple[int, ...]) -> "Node":
        term = tuple(np.eye(n, dtype=bool) for n in spatial)
        hull = [Hull(np.arange(n, dtype=float), np.arange(n, dtype=float) + 1, 1.0) for n in spatial]
        return cls(tuple(spatial), [term], [], hull, hull, [(1.0, 1.0)] * len(spatial), (), tuple(spatial))

    @classmethod
    def from_edges(cls, grid: tuple[int, ...], edges: list[Edge]) -> "Node":
        local: list[Term] = []
        glob: list[Term] = []
        local_hulls, all_hulls, sizes = [], [], []
        via: list[str] = []
        reaches: list[list[tuple[float, float, float]]] = []
        for e in edges:
            if e.src.reach is not None:
                reaches.append(e.src.reach)
            if e.via is not None and e.src.local_hull is not None:
                reaches.append([_reach(h) for h in e.src.local_hull])
            moved = [tuple(m.apply(mat) for m, mat in zip(e.maps, term)) for term in e.src.local]
            moved_g = [tuple(m.apply(mat) for m, mat in zip(e.maps, term)) for term in e.src.glob]
            moved_local = None
            if e.src.hull is not None:
                moved_hull = [h.through(m) for h, m in zip(e.src.hull, e.maps)]
                if e.src.local_hull is not None and e.src.local_hull is not e.src.hull:
                    # past the grid a global part's boxes stay put while the local part's lattice
                    # goes on into the padding: the whole hull holds both continuations
                    moved_local = [h.through(m) for h, m in zip(e.src.local_hull, e.maps)]
                    moved_hull = [Hull.union([a, b]) for a, b in zip(moved_hull, moved_local)]
                all_hulls.append(moved_hull)
                sizes.append([_grow(lo_hi, h, m) for lo_hi, h, m in zip(e.src.path_sizes, e.src.hull, e.maps)])
            if e.via is None:
                local += moved
                glob += moved_g
                if e.src.local_hull is e.src.hull and all_hulls:
                    local_hulls.append(all_hulls[-1])
                elif moved_local is not None:
                    local_hulls.append(moved_local)
                elif e.src.local_hull is not None:
                    local_hulls.append([h.through(m) for h, m in zip(e.src.local_hull, e.maps)])
            else:
                glob += moved + moved_g
                via.append(e.via)
            via += [v for v in e.src.via if v not in via]
        local = simplify(local)
        glob = simplify(glob)
        if local and glob:
            # a global term adds nothing where a local term already covers it
            glob = [g for g in glob if not any(all((a <= b).all() for a, b in zip(g, t)) for t in local)]
        spatial = edges[0].src.spatial
        reach = None if not reaches else reaches[0] if len(reaches) == 1 else [
            (max(r[a][0] for r in reaches), max(r[a][1] for r in reaches), min(r[a][2] for r in reaches))
            for a in range(len(grid))]
        if not all_hulls:
            return cls(grid, local, glob, None, None, None, tuple(via), spatial, reach)
        k = len(grid)
        hull = _union_lists(all_hulls, k)
        local_hull = _union_lists(local_hulls, k) if local_hulls else None
        if local_hull is not None and len(local_hulls) == len(all_hulls) and all(
                a is b for a, b in zip(local_hulls, all_hulls)):
            local_hull = hull  # one list for both: later edges move it once
        path_sizes = [(min(s[a][0] for s in sizes), max(s[a][1] for s in sizes)) for a in range(k)]
        return cls(grid, local, glob, hull, local_hull, path_sizes, tuple(via), spatial, reach)

    # -- queries ---------------------------------------------------------------------------
    def terms(self, local_only: bool = False) -> list[Term]:
        return self.local if local_only else self.local + self.glob

    def support(self, unit: tuple[int, ...], local_only: bool = False) -> np.ndarray:
        """Exact boolean mask over the input's spatial shape (all False where the unit reads
        only padding)."""
        out = np.zeros(self.spatial, bool)
        for term in self.terms(local_only):
            rows = [m[u] for m, u in zip(term, unit)]
            piece = rows[0]
            for r in rows[1:]:
                piece = np.multiply.outer(piece, r)
            out |= piece.astype(bool)
        return out

    def seen_by(self, pixels: tuple[np.ndarray, ...], local_only: bool = False) -> np.ndarray:
        """Units (bool over the grid) whose support meets the given per-axis pixel sets."""
        out = np.zeros(self.grid, bool)
        for term in self.terms(local_only):
            cols = [m[:, p].any(axis=1) for m, p in zip(term, pixels)]
            piece = cols[0]
            for c in cols[1:]:
                piece = np.multiply.outer(piece, c)
            out |= piece.astype(bool)
        return out
