"""Receptive-field objects: the analysis of a model, its layers, and single units."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Sequence, Union

import numpy as np

from ..deprecation import renamed
from ..errors import LayerNotFoundError, UnitError
from .geometry import Node
from .layout import Tracked
from .trace import Flow, Record

# a unit of a layer: its index on the layer's grid ((3, 4); an int on a 1-D grid), or "center"
# (also "centre" or None) for the centre unit
UnitLike = Union[Sequence[int], np.ndarray, int, str, None]


@dataclass(frozen=True)
class Unit:
    """One unit's receptive field.

    ``box`` and ``unclipped_box`` are half-open ``(start, stop)`` per input axis; ``box`` is
    the bounding box of ``mask`` (clipped to the input), ``unclipped_box`` the classic box that
    reaches into padding.  ``center`` is the centre of the unclipped box in pixel coordinates.
    """

    layer: str
    index: tuple[int, ...]
    mask: np.ndarray
    box: tuple[tuple[int, int], ...]
    unclipped_box: tuple[tuple[int, int], ...]
    center: tuple[float, ...]
    owner: "Layer | None" = field(default=None, repr=False, compare=False)

    def plot(self, image=None):
        """This unit's RF on the input (or ``image``: a path or an HxWx3 array), beside its
        layer's grid; a matplotlib Figure."""
        from ..plot import unit_plot
        return unit_plot(self, image)

    def _repr_png_(self) -> bytes | None:
        from ..plot import unit_png
        return unit_png(self)

    @property
    def support_size(self) -> int:
        return int(self.mask.sum())

    @property
    def size(self) -> tuple[int, ...]:
        return tuple(b - a for a, b in self.unclipped_box)

    @property
    def clipped(self) -> bool:
        return tuple(self.box) != tuple(self.unclipped_box)

    def to_dict(self, input_size: tuple[int, ...], is_global: bool) -> dict:
        return {
            "layer": self.layer,
            "unit": list(self.index),
            "input_size": list(input_size),
            "box": [list(b) for b in self.box],
            "unclipped_box": [list(b) for b in self.unclipped_box],
            "center": list(self.center),
            "support_size": self.support_size,
            "global": is_global,
        }


class _Entries:
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
                rows = np.unique(rows, axis=0) if rows.shape[0] > 1 else rows
                for row in rows:
                    self._add(row.reshape(comp.shape[1:]), tuple(q[0] for q in pos), grid)
            else:
                full = np.stack([np.broadcast_to(f, (r,) + grid).reshape(r, -1) for f in flat], 1)
                for row in np.unique(full.reshape(r, -1), axis=0):
                    row = row.reshape((len(flat),) + grid)
                    self._add(row[0], tuple(row[1:]), grid)

    def _add(self, comp: np.ndarray, pos: tuple[np.ndarray, ...], grid) -> None:
        comp = np.broadcast_to(comp, grid)
        for v in np.unique(comp):
            if v >= 0:
                m = comp == v
                # units that read another node hold that node's positions: park them at 0
                self.items.append((int(v), m, tuple(np.where(m, np.broadcast_to(q, grid), 0) for q in pos)))


class Layer:
    """The receptive fields of all units of one layer (or, for ``.local``, of their
    non-global part).

    Per input axis: ``rf_size`` (largest unclipped RF over units), ``stride`` (effective
    stride, input pixels per unit), ``start`` (where unit 0's RF starts; negative inside
    padding), ``center`` (unit 0's RF centre), ``uniform`` (every unit's RF is unit 0's shifted
    by the stride), ``min_rf``/``max_rf`` (smallest/largest RF over single paths),
    ``covers_input`` (every unit already sees the whole axis).
    """

    def __init__(self, analysis: "Analysis", record: Record, local_only: bool = False):
        self.analysis = analysis
        self.record = record
        self.local_only = local_only
        self.name = record.name
        self.op = record.op
        self.module = record.module
        self.output_shape = record.shape
        k = analysis.k
        varying = record.tracked.positional_dims()
        nd = len(record.shape)
        trailing = range(2, nd)
        if nd == k + 2 and set(varying) <= set(trailing) and all(
                record.shape[d] == 1 for d in trailing if d not in varying):
            self.spatial_dims = list(range(2, nd))
        else:
            self.spatial_dims = varying
        self.grid_shape = tuple(record.shape[d] for d in self.spatial_dims)

    def __repr__(self) -> str:
        g = " global" if self.is_global else ""
        return (f"<Layer {self.name!r} {self.op} out={list(self.output_shape)} rf={list(self.rf_size)} "
                f"stride={list(self.stride)}{g}>")

    @cached_property
    def dependencies(self) -> list[tuple[int, np.ndarray, tuple[np.ndarray, ...]]]:
        """What each unit reads: ``(node, units, positions)`` triples, where ``units`` is a bool
        array over the grid and ``positions[a]`` the node unit read along input axis ``a`` (for
        the units marked).  ``analysis.nodes[node]`` holds the node's exact dependency terms."""
        return _Entries(self.record.tracked, self.spatial_dims, self.grid_shape).items

    def _nodes(self) -> list[Node]:
        return [self.analysis.nodes[v] for v, _, _ in self.dependencies]

    # -- per-unit arrays ---------------------------------------------------------------------
    def _hulls(self, which: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
        k = self.analysis.k
        lo = [np.full(self.grid_shape, np.inf) for _ in range(k)]
        hi = [np.full(self.grid_shape, -np.inf) for _ in range(k)]
        for v, m, pos in self.dependencies:
            hulls = getattr(self.analysis.nodes[v], which)
            if hulls is None:
                continue
            for a in range(k):
                lo[a] = np.where(m, np.minimum(lo[a], hulls[a].lo[pos[a]]), lo[a])
                hi[a] = np.where(m, np.maximum(hi[a], hulls[a].hi[pos[a]]), hi[a])
        return lo, hi

    @cached_property
    def _hull(self):
        return self._hulls("local_hull" if self.local_only else "hull")

    @property
    def bounds(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Every unit's unclipped box: ``(lo, hi)``, one float array over the grid per input axis
        (half-open; ``inf``/``-inf`` where a unit reads nothing)."""
        return self._hull

    @cached_property
    def _boxes(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Clipped boxes of every unit, from the exact terms."""
        k = self.analysis.k
        lo = [np.full(self.grid_shape, np.iinfo(np.int64).max) for _ in range(k)]
        hi = [np.full(self.grid_shape, -1) for _ in range(k)]
        for v, m, pos in self.dependencies:
            node = self.analysis.nodes[v]
            for term in node.terms(self.local_only):
                nonempty = m.copy()
                firsts, lasts = [], []
                for a, mat in enumerate(term):
                    rows = mat[pos[a]]
                    nonempty &= rows.any(axis=-1)
                    firsts.append(rows.argmax(axis=-1))
                    lasts.append(rows.shape[-1] - rows[..., ::-1].argmax(axis=-1))
                for a in range(k):
                    lo[a] = np.where(nonempty, np.minimum(lo[a], firsts[a]), lo[a])
                    hi[a] = np.where(nonempty, np.maximum(hi[a], lasts[a]), hi[a])
        return lo, hi

    # -- summary per axis ----------------------------------------------------------------------
    def _axis_of_grid(self, a: int) -> int | None:
        return a if len(self.grid_shape) == self.analysis.k else None

    @property
    def rf_size(self) -> tuple[int, ...]:
        lo, hi = self._hull
        return tuple(int(np.max(np.maximum(h - l, 0))) if l.size else 0 for l, h in zip(lo, hi))

    @property
    def stride(self) -> tuple[float, ...]:
        """Input pixels per unit step; for a global layer, that of its local field (global
        context gives every unit the same field, but the units still sit on a grid)."""
        if not self.local_only and self.is_global and self.local is not None:
            return self.local.stride
        lo, _ = self._hull
        out = []
        for a in range(self.analysis.k):
            g = self._axis_of_grid(a)
            if g is not None and self.grid_shape[g] > 1 and np.isfinite(lo[a]).all():
                steps = np.diff(lo[a], axis=g)
                out.append(_num(abs(float(np.mean(steps)))))
            else:
                hulls = [n.local_hull if self.local_only else n.hull for n in self._nodes()]
                out.append(_num(max((h[a].jump for h in hulls if h is not None), default=0.0)))
        return tuple(out)

    @property
    def start(self) -> tuple[int, ...]:
        lo, _ = self._hull
        return tuple(_num(float(l.reshape(-1)[0])) for l in lo)

    @property
    def center(self) -> tuple[float, ...]:
        lo, hi = self._hull
        return tuple(_num((float(l.reshape(-1)[0]) + float(h.reshape(-1)[0]) - 1) / 2) for l, h in zip(lo, hi))

    @property
    def uniform(self) -> bool:
        lo, hi = self._hull
        for a in range(self.analysis.k):
            size = hi[a] - lo[a]
            if not np.isfinite(size).all() or (size != size.reshape(-1)[0]).any():
                return False
            g = self._axis_of_grid(a)
            for d in range(len(self.grid_shape)):
                if self.grid_shape[d] < 2:
                    continue
                steps = np.diff(lo[a], axis=d)
                if d == g and (steps != steps.reshape(-1)[0]).any():
                    return False
                if d != g and (steps != 0).any():
                    return False
        return True

    @property
    def min_rf(self) -> tuple[int, ...]:
        return self._path_size(0, min)

    @property
    def max_rf(self) -> tuple[int, ...]:
        return self._path_size(1, max)

    def _path_size(self, which: int, pick) -> tuple[int, ...]:
        sizes = [n.path_sizes for n in self._nodes() if n.path_sizes is not None]
        if self.local_only or not sizes:
            return self.rf_size
        return tuple(_num(pick(s[a][which] for s in sizes)) for a in range(self.analysis.k))

    @property
    def covers_input(self) -> tuple[bool, ...]:
        lo, hi = self._boxes
        return tuple(bool((l == 0).all() and (h == n).all())
                     for l, h, n in zip(lo, hi, self.analysis.spatial))

    @property
    def is_global(self) -> bool:
        return bool(self.global_via) and not self.local_only

    @property
    def global_via(self) -> tuple[str, ...]:
        seen: list[str] = []
        for n in self._nodes():
            seen += [v for v in n.via if v not in seen]
        return tuple(seen)

    @property
    def local(self) -> "Layer | None":
        """The layer with global-context paths ignored (None where nothing local remains)."""
        if self.local_only:
            return self
        if not any(n.local for n in self._nodes()):
            return None
        return Layer(self.analysis, self.record, local_only=True)

    # -- units -------------------------------------------------------------------------------
    def index(self, unit: UnitLike = "center") -> tuple[int, ...]:
        """``unit`` checked against the grid, as a tuple; ``"center"`` or ``None``: the centre unit."""
        return grid_index(unit, self.grid_shape, self.name)

    @renamed(index="unit")
    def unit(self, unit: UnitLike = "center") -> Unit:
        """The receptive field of one unit: its index on the layer's grid (0-based, in the
        layer's spatial order), or ``"center"`` (the default; ``None`` too) for the centre unit.

        >>> import torch, rflens
        >>> layer = rflens.analyze(torch.nn.Conv2d(1, 1, 3), (1, 9, 9))["output"]
        >>> layer.unit((0, 0)).box, layer.unit("center").index
        (((0, 3), (0, 3)), (3, 3))
        """
        u = self.index(unit)
        shape = self.analysis.spatial
        mask = np.zeros(shape, bool)
        for v, m, pos in self.dependencies:
            if m[u]:
                mask |= self.analysis.nodes[v].support(tuple(int(p[u]) for p in pos), self.local_only)
        lo, hi = self._hull
        blo, bhi = self._boxes
        box = tuple((int(blo[a][u]), int(bhi[a][u])) if bhi[a][u] >= 0 else (0, 0) for a in range(len(shape)))
        unclipped = tuple((_num(float(lo[a][u])), _num(float(hi[a][u]))) for a in range(len(shape)))
        center = tuple(None if l is None else _num((l + h - 1) / 2) for l, h in unclipped)
        return Unit(self.name, u, mask, box, unclipped, center, self)

    def plot(self, unit=None, image=None):
        """Shortcut for ``layer.unit(unit).plot(image)`` (default: the centre unit)."""
        return self.unit(unit).plot(image)

    def projective_field(self, pixel=None, box=None) -> np.ndarray:
        """Units of this layer (bool over its grid) that see an input pixel or box.

        ``box`` is half-open ``((start, stop), ...)`` per input axis."""
        spatial = self.analysis.spatial
        if box is None:
            if pixel is None or len(pixel) != len(spatial):
                raise UnitError(f"give a pixel with {len(spatial)} coordinates or a box")
            box = tuple((int(p), int(p) + 1) for p in pixel)
        sets = []
        for (a, b), n in zip(box, spatial):
            if not (0 <= a < b <= n):
                raise UnitError(f"box {box} is not inside the input {_fmt(spatial)}")
            s = np.zeros(n, bool)
            s[a:b] = True
            sets.append(s)
        out = np.zeros(self.grid_shape, bool)
        for v, m, pos in self.dependencies:
            seen = self.analysis.nodes[v].seen_by(tuple(sets), self.local_only)
            out |= m & seen[tuple(pos)]
        return out

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "op": self.op,
            "output_shape": list(self.output_shape),
            "rf_size": list(self.rf_size),
            "stride": list(self.stride),
            "start": list(self.start),
            "center": list(self.center),
            "uniform": self.uniform,
            "min_rf": list(self.min_rf),
            "max_rf": list(self.max_rf),
            "covers_input": list(self.covers_input),
            "global": self.is_global,
            "global_via": list(self.global_via),
            "local_rf_size": list(self.local.rf_size) if self.is_global and self.local is not None else None,
        }


def _num(x: float):
    """int where whole, None where a unit reads nothing (e.g. a padding slot)."""
    x = float(x)
    if not np.isfinite(x):
        return None
    return int(x) if x.is_integer() else round(x, 6)


def _fmt(t) -> str:
    return "(" + ", ".join(str(x) for x in t) + ")"


def grid_index(unit: UnitLike, grid: tuple[int, ...], layer: str) -> tuple[int, ...]:
    """``unit`` as an index on ``layer``'s ``grid``, checked; ``"center"``/``"centre"``/``None``:
    the centre unit (``n // 2`` per axis)."""
    if unit is None or (isinstance(unit, str) and unit in ("center", "centre")):
        return tuple(n // 2 for n in grid)
    if isinstance(unit, str):
        raise UnitError(f"a unit is an index such as (3, 4) or \"center\", not {unit!r}")
    unit = tuple(int(u) for u in (unit if isinstance(unit, (tuple, list, np.ndarray)) else [unit]))
    if len(unit) != len(grid):
        if not grid and all(u == 0 for u in unit):
            return ()
        raise UnitError(f"layer '{layer}' has a {len(grid)}-D grid {_fmt(grid)}; got the {len(unit)}-D unit "
                        f"{_fmt(unit)}.")
    for u, n in zip(unit, grid):
        if not 0 <= u < n:
            raise UnitError(f"unit {_fmt(unit)} is outside layer '{layer}', whose grid is {_fmt(grid)} "
                            "(0-based indices 0..n-1 per axis).")
    return unit


class Analysis:
    """The exact receptive fields of every layer of a model at one input size.

    >>> import torchvision, rflens
    >>> a = rflens.analyze(torchvision.models.resnet18(), (3, 224, 224))
    >>> a["layer1.0.add"].rf_size, a["layer1.0.add"].stride, a["layer1.0.add"].start
    ((27, 27), (4, 4), (-13, -13))
    >>> unit = a["layer1.0.add"].unit((0, 0))
    >>> unit.box, unit.unclipped_box
    (((0, 14), (0, 14)), ((-13, 14), (-13, 14)))
    """

    def __init__(self, flow: Flow, records: dict[str, Record], order: list[str], input_size,
                 model_name: str = ""):
        self.model_name = model_name
        self.nodes = flow.table.nodes
        self.k = flow.k
        self.input_size = tuple(input_size)
        self.spatial = tuple(input_size[1:])
        self._records = records
        self._order = order
        self._layers: dict[str, Layer] = {}

    @property
    def layers(self) -> list[str]:
        return list(self._order)

    def __len__(self) -> int:
        return len(self._order)

    def __iter__(self):
        return (self[n] for n in self._order)

    def __contains__(self, name: str) -> bool:
        return name in self._records

    def __getitem__(self, name: str) -> Layer:
        if name not in self._records:
            raise LayerNotFoundError(name, self._order)
        if name not in self._layers:
            self._layers[name] = Layer(self, self._records[name])
        return self._layers[name]

    def table(self) -> list[dict]:
        return [self[n].to_dict() for n in self._order]

    def plot(self, layers: str = "conv,pool"):
        """RF size and stride against depth (a matplotlib Figure)."""
        from ..plot import analysis_plot
        return analysis_plot(self, layers)

    def plot_grid(self, unit, layers: str = "conv,pool"):
        """One panel per layer with the same unit's RF (indices clamped to smaller grids)."""
        from ..plot import analysis_plot_grid
        return analysis_plot_grid(self, unit, layers)

    def _repr_html_(self) -> str:
        import html
        head = ["layer", "op", "output", "RF", "stride", "start", "global"]
        rows = []
        for r in self.table():
            cells = [r["name"], r["op"], "x".join(map(str, r["output_shape"])),
                     "x".join(map(str, r["rf_size"])), "x".join(map(str, r["stride"])),
                     "x".join(map(str, r["start"])), "global" if r["global"] else ""]
            rows.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
        return (f"<p>{html.escape(self.model_name)} at {'x'.join(map(str, self.input_size))}: "
                f"{len(self)} layers</p><table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"
                + "".join(rows) + "</table>")

    def __repr__(self) -> str:
        return f"<Analysis input={list(self.input_size)} layers={len(self)}>"
