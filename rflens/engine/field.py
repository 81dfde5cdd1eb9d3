"""Receptive-field objects: a layer of an analysis (all its units, or one channel's) and single units."""

from __future__ import annotations

import math
from dataclasses import replace
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

from ..deprecation import renamed
from ..errors import UnitError, UnsupportedOpError
from .geometry import Node
from .layout import Tracked, unit_reads
from .memory import BOX_BYTES, HULL_BYTES, check
from .ops.refusals import Refused
from .trace import Record
from .unit import ChannelGroup, Unit, UnitLike, _fmt, _span, grid_index  # noqa: F401 - their home was here

if TYPE_CHECKING:
    from .analysis import Analysis

# a layer keeps its per-unit boxes up to this many units (the summary is always kept)
KEEP_UNITS = 1 << 16


class Layer:
    """The receptive fields of all units of one layer (or, for ``.local``, of their
    non-global part).

    Per input axis: ``rf_size`` (largest unclipped RF over units), ``stride`` (effective
    stride, input pixels per unit), ``start`` (where unit 0's RF starts; negative inside
    padding), ``center`` (unit 0's RF centre), ``uniform`` (every unit's RF is unit 0's shifted
    by the stride), ``min_rf``/``max_rf`` (smallest/largest RF over single paths),
    ``covers_input`` (every unit already sees the whole axis).

    A *global* layer (``is_global``: some path passes global context, such as global pooling, a
    linear layer over all positions, attention or an SE gate) has units that see the whole input
    whatever their ``rf_size`` (the union of the unclipped boxes read, larger than the input:
    ResNet-18's ``avgpool`` 627 at 224).  Its *local field* (``local_rf_size``,
    ``local_stride``, ``local_start``; None for a layer that is not global) is what a unit would
    see if every global op read one position: the largest of its local paths' field (``local``,
    the conv path beside an SE gate) and the field of the units the global ops read (``layer4``'s
    435, stride 32, for ResNet-18's ``avgpool``, ``fc`` and ``output``).

    A layer downstream of an op rflens refuses (``topk``, ``nonzero``, sampling at computed
    positions) has no field: ``refused`` says why, and every field query raises that error.
    """

    def __init__(self, analysis: "Analysis", record: Record, local_only: bool = False,
                 channel: int | None = None):
        self.analysis = analysis
        self.record = record
        self.local_only = local_only
        self.channel = channel
        self.name = record.name
        self.op = record.op
        self.module = record.module
        self.output_shape = record.shape
        k = analysis.k
        shape = record.shape or ()  # a refused layer's shape may be unknown
        nd = len(shape)
        trailing = range(2, nd)
        varying = list(trailing) if isinstance(record.tracked, Refused) else record.tracked.positional_dims()
        if nd == k + 2 and set(varying) <= set(trailing) and all(
                shape[d] == 1 for d in trailing if d not in varying):
            self.spatial_dims = list(range(2, nd))
        else:
            self.spatial_dims = varying
        self.grid_shape = tuple(shape[d] for d in self.spatial_dims)
        rest = [d for d in range(1, nd) if d not in self.spatial_dims]
        # the dim a neuron's channel indexes: the first one after the batch that is not a position
        self.channel_dim = rest[0] if rest else None
        self.channels = shape[self.channel_dim] if self.channel_dim is not None else 1

    @property
    def refusal(self) -> UnsupportedOpError | None:
        """The error of the refused op this layer depends on (None: the layer has a field)."""
        return self.record.tracked.error if isinstance(self.record.tracked, Refused) else None

    @property
    def refused(self) -> str | None:
        """Why this layer has no field: the message naming the refused op and its module, or None.

        >>> import torch, rflens
        >>> class Top(torch.nn.Module):
        ...     def forward(self, x): return x + x.flatten(2).topk(1).values.unsqueeze(-1)
        >>> a = rflens.analyze(torch.nn.Sequential(torch.nn.Conv2d(1, 1, 3), Top()), (1, 8, 8))
        >>> a["0"].refused is None, a["1"].refused.split(" (")[0]
        (True, "rflens cannot compute the receptive field through op 'topk' in module '1'")
        """
        return None if self.refusal is None else str(self.refusal)

    def _followed(self) -> None:
        e = self.refusal
        if e is not None:  # a new error each time: re-raising one object stacks its tracebacks
            raise UnsupportedOpError(e.op, e.module, e.why)

    def __repr__(self) -> str:
        if self.refusal is not None:
            out = "?" if self.output_shape is None else list(self.output_shape)
            return f"<Layer {self.name!r} {self.op} out={out} refused at {self.refusal.op}>"
        g = " global" if self.is_global else ""
        return (f"<Layer {self.name!r} {self.op} out={list(self.output_shape)} rf={list(self.rf_size)} "
                f"stride={list(self.stride)}{g}>")

    @cached_property
    def dependencies(self) -> list[tuple[int, np.ndarray, tuple[np.ndarray, ...]]]:
        """What each unit reads: ``(node, units, positions)`` triples, where ``units`` is a bool
        array over the grid and ``positions[a]`` the node unit read along input axis ``a`` (for
        the units marked).  ``analysis.nodes[node]`` holds the node's exact dependency terms."""
        self._followed()  # every field query reads these
        return self._shared("reads", self._reads)

    def _reads(self):
        self._check_units(2, "what each unit reads in")
        return unit_reads(self._tracked, self.spatial_dims, self.grid_shape)

    def _check_units(self, per_unit: int, what: str) -> None:
        """Refuse per-unit arrays of this layer before they are made where memory is short."""
        a, n = self.analysis, math.prod(self.grid_shape)
        check(n * per_unit, f"{what} layer '{self.name}' ({n:,} units, grid {'x'.join(map(str, self.grid_shape))})",
              a.input_size, a.k)

    def _shared(self, what: str, compute):
        """``compute()`` once for every layer holding the same tensor: a module's output and the
        FX node that made it are one tensor under two names (half the layers of a ResNet)."""
        key = (id(self.record.tracked), what, self.local_only, self.channel)
        cache = self.analysis._shared
        if key not in cache:
            cache[key] = compute()
        return cache[key]

    @cached_property
    def _tracked(self) -> Tracked:
        tr = self.record.tracked
        if self.channel is None:
            return tr
        d, c = self.channel_dim, self.channel
        shape = tr.shape[:d] + (1,) + tr.shape[d + 1:]
        return tr.map(lambda a: a if a.shape[d] == 1 else a[(slice(None),) * d + (slice(c, c + 1),)], shape)

    def for_channel(self, channel: int | None) -> "Layer":
        """The layer's neurons of one channel: the same questions (``rf_size``, ``unit``,
        ``projective_field``, ...) answered for that channel alone (None: all channels).

        >>> import torch, rflens
        >>> net = torch.nn.ModuleDict({"a": torch.nn.Conv2d(1, 2, 1), "b": torch.nn.Conv2d(1, 2, 5, padding=2)})
        >>> class Two(torch.nn.Module):
        ...     def __init__(self): super().__init__(); self.branch = net
        ...     def forward(self, x): return torch.cat([self.branch["a"](x), self.branch["b"](x)], 1)
        >>> layer = rflens.analyze(Two(), (1, 9, 9))["output"]
        >>> layer.rf_size, layer.for_channel(0).rf_size, layer.for_channel(3).rf_size
        ((5, 5), (1, 1), (5, 5))
        """
        if channel is None:
            return self if self.channel is None else Layer(self.analysis, self.record, self.local_only)
        channel = self._check_channel(channel)
        if channel == self.channel:
            return self
        views = self.__dict__.setdefault("_views", {})
        if channel not in views:
            views[channel] = Layer(self.analysis, self.record, self.local_only, channel)
        return views[channel]

    def _check_channel(self, channel) -> int:
        if self.channel_dim is None:
            raise UnitError(f"layer '{self.name}' has no channel dimension to pick channel {channel} from "
                            f"(output {_fmt(self.output_shape)})")
        if isinstance(channel, bool) or not isinstance(channel, (int, np.integer)):
            raise UnitError(f"a channel is a number, not {channel!r}")
        if not 0 <= channel < self.channels:
            raise UnitError(f"channel {channel} is outside layer '{self.name}', which has {self.channels} "
                            f"channels (0..{self.channels - 1})")
        return int(channel)

    @cached_property
    def channel_groups(self) -> list[ChannelGroup]:
        """Runs of channels whose neurons share one geometry (``rf_size``, ``stride``, ``start``,
        global or not): one run for a convolution, six for a DenseNet block of six layers.

        >>> import torch, torchvision, rflens
        >>> a = rflens.analyze(torchvision.models.densenet121(), (3, 64, 64))
        >>> [(g.channels.start, g.channels.stop, g.rf_size) for g in a["features.denseblock1"].channel_groups][:3]
        [(0, 64, (11, 11)), (64, 96, (19, 19)), (96, 128, (27, 27))]
        """
        if self.channel_dim is None or self.channels == 1:
            return [self.for_channel(None)._group(range(self.channels))]
        kinds = self.channel_kinds
        first = {k: int(np.flatnonzero(kinds == k)[0]) for k in np.unique(kinds)}
        summary = {k: self.for_channel(c)._group(range(c, c + 1)) for k, c in first.items()}
        runs: list[ChannelGroup] = []
        for c, k in enumerate(kinds.tolist()):
            g = summary[k]
            last = runs[-1] if runs else None
            if last is not None and last.channels.stop == c and replace(last, channels=g.channels) == g:
                runs[-1] = replace(last, channels=range(last.channels.start, c + 1))
            else:
                runs.append(replace(g, channels=range(c, c + 1)))
        return runs

    @cached_property
    def channel_kinds(self) -> np.ndarray:
        """A number per channel, equal where two channels' neurons read the same nodes at the same
        units, and so have the same fields: one channel of each kind answers for the others.

        >>> import torch, rflens
        >>> rflens.analyze(torch.nn.Conv2d(1, 3, 3), (1, 9, 9))["output"].channel_kinds.tolist()
        [0, 0, 0]
        """
        self._followed()
        d, n = self.channel_dim, self.channels
        ids = [np.unique(np.moveaxis(a, d, 0).reshape(n, -1), axis=0, return_inverse=True)[1].reshape(-1)
               for p in self.record.tracked.parts for a in p.arrays() if d is not None and a.shape[d] > 1]
        return np.unique(np.stack(ids, 1), axis=0, return_inverse=True)[1].reshape(-1) if ids else np.zeros(n, np.int64)

    def _group(self, channels: range) -> ChannelGroup:
        return ChannelGroup(channels, self.rf_size, self.stride, self.start, self.is_global)

    @property
    def varies_by_channel(self) -> bool:
        """Whether neurons at one position see different fields depending on their channel."""
        return len(self.channel_groups) > 1

    def _nodes(self) -> list[Node]:
        reads = self._compact_reads()
        ids = [v for v, _, _ in reads] if reads is not None else [v for v, _, _ in self.dependencies]
        return [self.analysis.nodes[v] for v in dict.fromkeys(ids)]

    def _compact_reads(self) -> list[tuple[int, np.ndarray | None, tuple[np.ndarray, ...]]] | None:
        """``dependencies`` as arrays that broadcast over the grid (``units`` None: all), where
        nothing varies along the channels, so that no summary builds per-unit arrays per
        channel (MViT's 6273 x 393 attention maps made gigabytes); else None."""
        self._followed()
        return self._shared("compact", self._compact)

    def _compact(self):
        tr = self._tracked
        rest = [d for d in range(tr.ndim) if d not in self.spatial_dims]
        out = []
        for p in tr.parts:
            if any(a.shape[d] > 1 for a in p.arrays() for d in rest):
                return None
            comp, *pos = (a.transpose(rest + self.spatial_dims)[(0,) * len(rest)] for a in p.arrays())
            nodes = comp.reshape(-1)[:1] if comp.min() == comp.max() else np.unique(comp)
            out += [(int(v), None if len(nodes) == 1 else comp == v, tuple(pos)) for v in nodes if v >= 0]
        return out

    # -- per-unit arrays ---------------------------------------------------------------------
    def _hulls(self, which: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
        k = self.analysis.k
        reads = self._compact_reads()
        if reads is not None:
            lo = [np.full((1,) * len(self.grid_shape), np.inf) for _ in range(k)]
            hi = [-b for b in lo]
            for v, m, pos in reads:
                hulls = getattr(self.analysis.nodes[v], which)
                if hulls is None:
                    continue
                for a in range(k):
                    if m is None:
                        lo[a], hi[a] = np.minimum(lo[a], hulls[a].lo[pos[a]]), np.maximum(hi[a], hulls[a].hi[pos[a]])
                    else:  # units that read another node take no part: +-inf there
                        q = np.where(m, pos[a], 0)
                        lo[a] = np.minimum(lo[a], np.where(m, hulls[a].lo[q], np.inf))
                        hi[a] = np.maximum(hi[a], np.where(m, hulls[a].hi[q], -np.inf))
            return ([np.broadcast_to(b, self.grid_shape) for b in lo],
                    [np.broadcast_to(b, self.grid_shape) for b in hi])
        reads = self.dependencies
        self._check_units(HULL_BYTES * k, "every unit's unclipped box in")
        lo = [np.full(self.grid_shape, np.inf) for _ in range(k)]
        hi = [np.full(self.grid_shape, -np.inf) for _ in range(k)]
        for v, m, pos in reads:
            hulls = getattr(self.analysis.nodes[v], which)
            if hulls is None:
                continue
            for a in range(k):
                lo[a] = np.where(m, np.minimum(lo[a], hulls[a].lo[pos[a]]), lo[a])
                hi[a] = np.where(m, np.maximum(hi[a], hulls[a].hi[pos[a]]), hi[a])
        return lo, hi

    @property
    def _hull(self):
        def hulls():
            return self._hulls("local_hull" if self.local_only else "hull")
        # kept for small grids only: an attention map's would hold 100 MB per layer
        return self._shared("hull", hulls) if int(np.prod(self.grid_shape)) <= KEEP_UNITS else hulls()

    @property
    def bounds(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Every unit's unclipped box: ``(lo, hi)``, one float array over the grid per input axis
        (half-open; ``inf``/``-inf`` where a unit reads nothing)."""
        return self._hull

    @cached_property
    def _boxes(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Clipped boxes of every unit, from the exact terms."""
        k, reads = self.analysis.k, self.dependencies
        self._check_units(BOX_BYTES * k, "every unit's box in")
        lo = [np.full(self.grid_shape, np.iinfo(np.int64).max) for _ in range(k)]
        hi = [np.full(self.grid_shape, -1) for _ in range(k)]
        for v, m, pos in reads:
            node = self.analysis.nodes[v]
            for term in node.terms(self.local_only):
                nonempty = m.copy()
                firsts, lasts = [], []
                for a, mat in enumerate(term):
                    # each node row's first and last pixel, then gathered per unit: the rows of
                    # every unit at once would be (grid x input) large (29 GiB at 20000x20000)
                    nonempty &= mat.any(axis=-1)[pos[a]]
                    firsts.append(mat.argmax(axis=-1)[pos[a]])
                    lasts.append((mat.shape[-1] - mat[:, ::-1].argmax(axis=-1))[pos[a]])
                for a in range(k):
                    lo[a] = np.where(nonempty, np.minimum(lo[a], firsts[a]), lo[a])
                    hi[a] = np.where(nonempty, np.maximum(hi[a], lasts[a]), hi[a])
        return lo, hi

    # -- summary per axis ----------------------------------------------------------------------
    def _axis_of_grid(self, a: int) -> int | None:
        return a if len(self.grid_shape) == self.analysis.k else None

    @property
    def rf_size(self) -> tuple[int, ...]:
        def size():
            lo, hi = self._hull
            return tuple(int(np.max(np.maximum(_core(h) - _core(l), 0))) if l.size else 0 for l, h in zip(lo, hi))
        return self._shared("rf_size", size)

    @property
    def stride(self) -> tuple[float, ...]:
        """Input pixels per unit step; for a global layer with local paths (an SE gate beside a
        convolution), that of those paths (global context gives every unit the same field, but the
        units still sit on a grid).  A layer after global pooling has one unit per axis, whose
        step is the input's size: ``local_stride`` gives the stride of what it pooled."""
        return self._shared("stride", self._stride)

    def _stride(self) -> tuple[float, ...]:
        if not self.local_only and self.is_global and self.local is not None:
            return self.local.stride
        lo, _ = self._hull
        out = []
        for a in range(self.analysis.k):
            g = self._axis_of_grid(a)
            if g is not None and self.grid_shape[g] > 1 and np.isfinite(_core(lo[a])).all():
                steps = np.diff(_core(lo[a], g), axis=g)
                if (steps < 0).any() and (steps > 0).any():
                    # boxes out of order (windows that wrap around after a cyclic shift): the mean
                    # step says nothing; give the input pixels per unit instead
                    out.append(_num(self.analysis.spatial[a] / self.grid_shape[g]))
                else:
                    out.append(_num(abs(float(np.mean(steps)))))
            else:
                hulls = [n.local_hull if self.local_only else n.hull for n in self._nodes()]
                out.append(_num(max((h[a].jump for h in hulls if h is not None), default=0.0)))
        return tuple(out)

    @property
    def start(self) -> tuple[int, ...]:
        def start():
            lo, _ = self._hull
            return tuple(_num(float(l[(0,) * l.ndim])) if l.size else 0 for l in lo)
        return self._shared("start", start)

    @property
    def center(self) -> tuple[float, ...]:
        lo, hi = self._hull
        return tuple(_num((float(l.flat[0]) + float(h.flat[0]) - 1) / 2) for l, h in zip(lo, hi))

    @property
    def uniform(self) -> bool:
        lo, hi = self._hull
        for a in range(self.analysis.k):
            size = _core(hi[a]) - _core(lo[a])
            if not np.isfinite(size).all() or (size != size.flat[0]).any():
                return False
            g, core = self._axis_of_grid(a), _core(lo[a])
            for d in range(len(self.grid_shape)):
                if core.shape[d] < 2:  # one unit, or boxes broadcast along d: every step is 0
                    continue
                steps = np.diff(core, axis=d)
                if d == g and (steps != steps.flat[0]).any():
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

    def _local_field(self):
        if not self.is_global:
            return None
        reaches = [n.reach for n in self._nodes() if n.reach is not None]
        k, local = self.analysis.k, self.local
        def pick(f, a: int, key: int, of_local):  # a unit that reads nothing locally has None: skip it
            values = [r[a][key] for r in reaches] + ([of_local[a]] if local and of_local[a] is not None else [])
            return f(values, default=None)
        size = [pick(max, a, 0, local and local.rf_size) for a in range(k)]
        start = [pick(min, a, 2, local and local.start) for a in range(k)]
        stride = local.stride if local else [max(r[a][1] for r in reaches) for a in range(k)]
        return tuple(_num(v) if v is not None else None for v in size), tuple(map(_num, stride)), tuple(
            _num(v) if v is not None else None for v in start)

    @property
    def local_rf_size(self) -> tuple[int, ...] | None:
        """A global layer's local field size (see the class docstring); None where not global.

        >>> import torchvision, rflens
        >>> a = rflens.analyze(torchvision.models.resnet18(), (3, 224, 224))
        >>> a["avgpool"].is_global, a["avgpool"].rf_size, a["avgpool"].local_rf_size, a["avgpool"].local_stride
        (True, (627, 627), (435, 435), (32, 32))
        """
        f = self._shared("local_field", self._local_field)
        return None if f is None else f[0]

    @property
    def local_stride(self) -> tuple[float, ...] | None:
        """The stride of a global layer's local field; None where not global."""
        f = self._shared("local_field", self._local_field)
        return None if f is None else f[1]

    @property
    def local_start(self) -> tuple[int, ...] | None:
        """Where a global layer's local field starts (the smallest start); None where not global."""
        f = self._shared("local_field", self._local_field)
        return None if f is None else f[2]

    @cached_property
    def local(self) -> "Layer | None":
        """The layer with global-context paths ignored (None where nothing local remains)."""
        if self.local_only:
            return self
        if not any(n.local for n in self._nodes()):
            return None
        return Layer(self.analysis, self.record, local_only=True, channel=self.channel)

    # -- units -------------------------------------------------------------------------------
    def index(self, unit: UnitLike = "center") -> tuple[int, ...]:
        """``unit`` checked against the grid, as a tuple; ``"center"`` or ``None``: the centre unit."""
        return grid_index(unit, self.grid_shape, self.name)

    @renamed(index="unit")
    def unit(self, unit: UnitLike = "center", channel: int | None = None) -> Unit:
        """The receptive field of one unit: its index on the layer's grid (0-based, in the
        layer's spatial order), or ``"center"`` (the default; ``None`` too) for the centre unit.
        With ``channel``, the field of that one neuron; without, the union over the channels at
        this position (see ``channel_groups`` for where they differ).

        >>> import torch, rflens
        >>> layer = rflens.analyze(torch.nn.Conv2d(1, 1, 3), (1, 9, 9))["output"]
        >>> layer.unit((0, 0)).box, layer.unit("center").index
        (((0, 3), (0, 3)), (3, 3))
        """
        self._followed()
        if channel is not None and channel != self.channel:
            return self.for_channel(channel).unit(unit)
        u = self.index(unit)
        shape = self.analysis.spatial
        check(2 * math.prod(shape), f"the mask of a unit ({'x'.join(map(str, shape))} pixels)", self.analysis.input_size,
              self.analysis.k)
        # from this unit's own reads, not the layer's per-unit arrays (as large as its grid)
        mask = np.zeros(shape, bool)
        lo, hi = [np.inf] * len(shape), [-np.inf] * len(shape)
        for v, m, pos in self.dependencies:
            if m[u]:
                node, p = self.analysis.nodes[v], tuple(int(q[u]) for q in pos)
                mask |= node.support(p, self.local_only)
                for a, h in enumerate((node.local_hull if self.local_only else node.hull) or ()):
                    lo[a], hi[a] = min(lo[a], h.lo[p[a]]), max(hi[a], h.hi[p[a]])
        box = tuple(_span(mask.any(axis=tuple(b for b in range(len(shape)) if b != a))) for a in range(len(shape)))
        unclipped = tuple((_num(float(l)), _num(float(h))) for l, h in zip(lo, hi))
        center = tuple(None if l is None else _num((l + h - 1) / 2) for l, h in unclipped)
        return Unit(self.name, u, mask, box, unclipped, center, self, self.channel)

    def plot(self, unit=None, image=None):
        """Shortcut for ``layer.unit(unit).plot(image)`` (default: the centre unit)."""
        return self.unit(unit).plot(image)

    def projective_field(self, pixel=None, box=None) -> np.ndarray:
        """Units of this layer (bool over its grid) that see an input pixel or box.

        ``box`` is half-open ``((start, stop), ...)`` per input axis."""
        self._followed()
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
        """The layer's row of ``Analysis.table()``; a refused layer has None for every field
        value and ``"refused": {"op", "module", "message"}`` (else ``"refused": None``)."""
        e = self.refusal
        if e is not None:
            shape = None if self.output_shape is None else list(self.output_shape)
            return {"name": self.name, "op": self.op, "output_shape": shape, **dict.fromkeys(_FIELD_KEYS),
                    "refused": {"op": e.op, "module": e.module, "message": str(e)}}
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
            "local_rf_size": None if self.local_rf_size is None else list(self.local_rf_size),
            "local_stride": None if self.local_stride is None else list(self.local_stride),
            "local_start": None if self.local_start is None else list(self.local_start),
            "rf_size_by_channel": self._rf_range(),
            "refused": None,
        }

    def _rf_range(self) -> list[list[int]] | None:
        """[smallest, largest] rf_size over the channel groups, where the field varies by channel."""
        if self.channel is not None or not self.varies_by_channel:
            return None
        sizes = [g.rf_size for g in self.channel_groups]
        return [[min(s[a] for s in sizes) for a in range(self.analysis.k)],
                [max(s[a] for s in sizes) for a in range(self.analysis.k)]]


_FIELD_KEYS = ("rf_size", "stride", "start", "center", "uniform", "min_rf", "max_rf", "covers_input", "global",
               "global_via", "local_rf_size", "local_stride", "local_start", "rf_size_by_channel")


def _core(a: np.ndarray, keep: int | None = None) -> np.ndarray:
    """``a`` without the axes it is broadcast along (but ``keep``): the same answer to any
    reduction, without making a grid-sized array (the hulls broadcast over the grid)."""
    return a[tuple(slice(0, 1) if s == 0 and d != keep else slice(None) for d, s in enumerate(a.strides))]


def _num(x: float):
    """int where whole, None where a unit reads nothing (e.g. a padding slot)."""
    x = float(x)
    if not np.isfinite(x):
        return None
    return int(x) if x.is_integer() else round(x, 6)
