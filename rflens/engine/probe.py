"""The brute-force oracle: receptive fields from gradients of a positive copy of the model.

The copy has positive weights, positive float64 inputs, and every op that could zero or cancel
a gradient replaced by a positive surrogate with the same dependency structure: activations
and eval-mode batch norm become the identity, max becomes sum (max pooling: a sum over the same
window), softmax and norms become "x plus the mean over the same dims", subtraction becomes
addition.  Then d(unit)/d(input) is nonzero exactly on the unit's structural support.

Positive values grow layer after layer (attention cubes them: q k^T v), so every value an op
makes from the input is brought back into float64's range by an exact power of two whenever it
leaves [2^-32, 2^32]: a positive constant factor cannot create or remove a dependency.  A value
that is still not finite, or a gradient that is not, is an ``RFLensError`` naming the op and
where it ran, never an empty mask.

This is what the analytic engine is tested against, and the fallback for models it cannot
follow.  It is slow: one forward and backward per batch of units.
"""

from __future__ import annotations

import copy
from functools import cached_property

import numpy as np
import torch
from torch import nn

from ..deprecation import renamed
from ..errors import LayerNotFoundError, RFLensError, UnitError
from .field import Unit, UnitLike, grid_index
from .quantized import float_twin
from .standins import Bounded, SelectsByValue, module_stack, no_answer
from .naming import fx_graph
from .trace import Reached, execute


def positive_copy(model: nn.Module, dtype=torch.float64) -> nn.Module:
    """A copy with every parameter positive: weights 1/fan-in, vectors ones."""
    m = copy.deepcopy(model)
    if any(p.device.type == "meta" for p in m.parameters()):
        # buffers built on the CPU keep their values: integer ones are indices the forward reads
        # (relative position indices), and to_empty would leave garbage in them
        kept = {n: b.clone() for n, b in m.named_buffers() if b.device.type != "meta"}
        m = m.to_empty(device="cpu")
        with torch.no_grad():
            for n, b in kept.items():
                m.get_buffer(n).copy_(b)
    m = m.to(dtype)
    with torch.no_grad():
        for p in m.parameters():
            if p.ndim >= 2:
                p.fill_(1.0 / max(1, p[0].numel()))
            else:
                p.fill_(1.0)
        for b in m.buffers():
            if b.is_floating_point():
                b.copy_(b.abs().clamp_min(1e-3)) if b.numel() else None
    return m


class ProbeAnalysis:
    """Receptive fields by gradient probing, with the names of the analytic engine.  With
    ``partial=True`` a model with an op the probe cannot follow (a detector's top-k) keeps the
    layers before it, and ``refused`` says which op stopped it.

    >>> import torchvision, rflens
    >>> p = rflens.analyze(torchvision.models.alexnet(), (3, 224, 224), method="probe")
    >>> p["features.2"].unit((0, 0)).box
    ((0, 17), (0, 17))
    """

    def __init__(self, model: nn.Module, input_size: tuple[int, ...], fx_names: bool = True,
                 device: str | torch.device | None = None, partial: bool = False):
        self.input_size = tuple(input_size)
        self.spatial = tuple(input_size[1:])
        self.k = len(self.spatial)
        self.device = torch.device(device) if device else (
            torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu"))
        self.model = positive_copy(float_twin(model)).to(self.device)  # quantized ops have no gradient
        self.graph = fx_graph(self.model) if fx_names else None
        names: list[str] = []
        shapes: dict[str, tuple] = {}

        def emit(name, value, op, module):
            if isinstance(value, torch.Tensor) and name not in shapes:
                shapes[name] = tuple(value.shape)
                names.append(name)
        # partial: a model that selects by value (a detector's top-k) keeps the layers before that
        # op, as the analytic engine's partial analysis does; ``refused`` says where it stopped
        self.refused: str | None = None
        try:
            # with a gradient, as every run: only values that depend on the input are rescaled
            self._run(torch.ones((1, *input_size), dtype=torch.float64, device=self.device, requires_grad=True),
                      emit)
        except SelectsByValue as e:
            if not partial:
                raise
            self.refused = str(e)
        self._names, self._shapes = names, shapes

    @property
    def layers(self) -> list[str]:
        return list(self._names)

    def _run(self, x, emit):
        bounded = Bounded()
        reported: list[RFLensError] = []

        def named(name, value, op, module):
            if bounded.broken is not None:
                reported.append(bounded.failure(name, module))
                raise reported[0]
            emit(name, value, op, module)
        try:
            with module_stack(self.model, bounded.modules), bounded:
                return execute(self.model, x, named, self.graph)
        except Exception as e:
            if bounded.broken is None or e in reported:
                raise
            # the model tripped over the value before it was reported
            raise bounded.failure() from e

    def __getitem__(self, name: str) -> "ProbeLayer":
        return self.layer(name)

    def layer(self, name: str, spatial_dims: list[int] | None = None) -> "ProbeLayer":
        """A layer; ``spatial_dims`` says which output dims a unit indexes (default: the
        trailing spatial dims of an (N, C, *spatial) output, else none)."""
        if name not in self._shapes:
            raise LayerNotFoundError(name, self._names)
        return ProbeLayer(self, name, self._shapes[name], spatial_dims)

    def masks(self, name: str, units: list[tuple[int, ...]], batch: int = 16,
              spatial_dims: list[int] | None = None, channel: int | None = None) -> list[np.ndarray]:
        """Support masks of several units of one layer, ``batch`` units per backward pass.

        A unit indexes ``spatial_dims`` of the layer's output (default: its last dims); it
        stands for every element at that position, or for the one of ``channel``."""
        out: list[np.ndarray] = []
        for start in range(0, len(units), batch):
            chunk = units[start:start + batch]
            out += self.masks_many({name: (chunk, spatial_dims, [channel] * len(chunk))})[name]
        return out

    def masks_many(self, requests: dict[str, tuple]) -> dict[str, list[np.ndarray]]:
        """Masks for units of several layers from one forward pass (one backward per layer).

        ``requests[layer]`` is ``(units, spatial_dims)`` or ``(units, spatial_dims, channels)``
        with a channel (or None: all channels) per unit; the channel dim is the first dim after
        the batch that is not a spatial one.  A gradient that is not finite, or so small that
        some of it may have flushed to 0, raises an ``RFLensError`` naming where it broke: the
        oracle has no answer then, not an empty one."""
        width = max(len(r[0]) for r in requests.values())
        gen = torch.Generator().manual_seed(0)
        x = torch.rand((width, *self.input_size), generator=gen, dtype=torch.float64) + 0.5
        x = x.to(self.device).requires_grad_(True)
        captured: dict[str, torch.Tensor] = {}

        def emit(n, value, op, module):
            if n in requests and n not in captured and isinstance(value, torch.Tensor):
                captured[n] = value
                if len(captured) == len(requests):
                    raise Reached()  # nothing after the last layer asked for is needed
        try:
            self._run(x, emit)
        except Reached:
            pass
        result = {}
        for i, (name, (units, spatial_dims, *rest)) in enumerate(requests.items()):
            channels = rest[0] if rest else None
            total = _unit_sum(captured[name], units, spatial_dims, channels)
            (g,) = torch.autograd.grad(total, x, retain_graph=i < len(requests) - 1)
            self._check_gradient(g, x, name, units, spatial_dims, channels)
            g = g.abs().sum(dim=1).detach().cpu().numpy()
            result[name] = [g[b] > 0 for b in range(len(units))]
        return result

    def _check_gradient(self, g: torch.Tensor, x: torch.Tensor, name: str, units, spatial_dims, channels) -> None:
        if not torch.isfinite(g).all():
            raise no_answer(f"layer '{name}'", "the gradient of its units is not finite (NaN or inf) though every "
                             f"value of the forward pass is; {self._gradient_break(x, name, units, spatial_dims, channels)}")
        nonzero = g[g != 0].abs()
        if nonzero.numel() and nonzero.min() < torch.finfo(g.dtype).tiny:
            raise no_answer(f"layer '{name}'", "parts of the gradient of its units are below float64's smallest "
                             f"normal number ({nonzero.min().item():.3g}), so other parts may have flushed to 0 "
                             "and its masks could miss pixels")

    def _gradient_break(self, x: torch.Tensor, name: str, units, spatial_dims, channels) -> str:
        """Where the gradient of ``name``'s units first stops being finite, flowing back: the
        forward pass again, with a hook on every named value."""
        x = x.detach().requires_grad_(True)
        hooked: dict[int, tuple[str, torch.Tensor]] = {}  # the tensors are kept: their ids stay theirs
        broken: list[str] = []
        captured: dict[str, torch.Tensor] = {}

        def emit(n, value, op, module):
            if not (isinstance(value, torch.Tensor) and value.requires_grad):
                return
            captured.setdefault(n, value)
            if id(value) not in hooked:
                hooked[id(value)] = (n, value)
                value.register_hook(lambda grad, n=n: None if torch.isfinite(grad).all() else broken.append(n))
        try:
            self._run(x, emit)
        except Reached:
            pass
        torch.autograd.grad(_unit_sum(captured[name], units, spatial_dims, channels), x)
        order = [n for n, _ in hooked.values()]
        if not broken:
            return "the named values all had finite gradients"
        first = broken[0]   # hooks fire in backward order
        after = order[order.index(first) + 1] if order.index(first) + 1 < len(order) else name
        return (f"it first stops being finite flowing back from '{after}' into '{first}' (an op between "
                "them has a derivative that is not finite there, such as hypot at an exact 0)")


def _unit_sum(y: torch.Tensor, units: list[tuple[int, ...]], spatial_dims: list[int] | None,
              channels: list[int | None] | None = None) -> torch.Tensor:
    """The sum of unit ``units[b]`` (all its channels, or ``channels[b]``) of batch element
    ``b``: one backward pass gives every unit's gradient, each on its own input."""
    nd = y.ndim
    spatial = spatial_dims if spatial_dims is not None else (
        list(range(nd - len(units[0]), nd)) if units and units[0] else [])
    channel_dim = next((d for d in range(1, nd) if d not in spatial), None)
    total = 0
    for b, u in enumerate(units):
        idx: list = [slice(None)] * nd
        idx[0] = b
        for d, j in zip(spatial, u):
            idx[d] = j
        if channels is not None and channels[b] is not None:
            idx[channel_dim] = channels[b]
        total = total + y[tuple(idx)].sum()
    return total


class ProbeLayer:
    """A layer of a ``ProbeAnalysis``: exact masks (and their boxes) from gradients."""

    def __init__(self, analysis: ProbeAnalysis, name: str, shape: tuple, spatial_dims=None):
        self.analysis, self.name, self.output_shape = analysis, name, shape
        k = analysis.k
        if spatial_dims is None:
            spatial_dims = list(range(2, len(shape))) if len(shape) == k + 2 else []
        self.spatial_dims = list(spatial_dims)
        self.grid_shape = tuple(shape[d] for d in self.spatial_dims)

    def index(self, unit: UnitLike = "center") -> tuple[int, ...]:
        """``unit`` checked against the grid, as a tuple; ``"center"`` or ``None``: the centre unit."""
        return grid_index(unit, self.grid_shape, self.name)

    def units(self, units: list[UnitLike], batch: int = 16, channel: int | None = None) -> list[Unit]:
        """Several units' fields (of one ``channel``, or the union over channels), ``batch``
        units per backward pass."""
        units = [self.index(u) for u in units]
        res = []
        for u, mask in zip(units, self.analysis.masks(self.name, units, batch, self.spatial_dims, channel)):
            box = _bbox(mask)
            center = tuple((a + b - 1) / 2 for a, b in box)
            res.append(Unit(self.name, u, mask, box, box, center, channel=channel))
        return res

    @renamed(index="unit")
    def unit(self, unit: UnitLike = "center", channel: int | None = None) -> Unit:
        """One unit's field, as ``Layer.unit``: an index on the grid, or ``"center"`` (default);
        of one ``channel`` or the union over channels.

        >>> import torch, rflens
        >>> p = rflens.analyze(torch.nn.Conv2d(1, 1, 3), (1, 9, 9), method="probe", fx_names=False)
        >>> p["output"].unit("center").box
        ((3, 6), (3, 6))
        """
        return self.units([unit], channel=channel)[0]

    # -- layer-wide questions, from the few units that answer them ----------------------------
    # The probe sees pixels, not padding: a field's extent is visible where it lies inside the
    # input, away from the border by more than its widest gap (a dilated field's holes), so no
    # read can hide in the padding beyond it.  The centre unit and its neighbour along each axis
    # give size, step and start; the layer is taken to repeat them (a uniform layer, the analytic
    # ``uniform``), as the analytic engine continues a lattice into the padding.
    @cached_property
    def _lattice(self) -> list[tuple[int, int, int]]:
        """Per input axis ``(size, step, start)`` of the units' unclipped boxes."""
        k, grid = self.analysis.k, self.grid_shape
        if len(grid) != k or any(n < 2 for n in grid):
            raise RFLensError(f"layer '{self.name}' has a grid of {'x'.join(map(str, grid)) or 'one unit'}, not a "
                              f"{k}-D grid of several units per axis: the probe cannot tell its stride or unclipped "
                              f"size; ask the analytic engine, rflens.analyze(model, input_size)['{self.name}']")
        centre = self.index("center")
        steps = [(1 if centre[a] + 1 < grid[a] else -1) for a in range(k)]
        units = [centre] + [tuple(c + (steps[a] if b == a else 0) for b, c in enumerate(centre)) for a in range(k)]
        spans = [[_span(m, a) for a in range(k)] for m in self.analysis.masks(self.name, units, len(units),
                                                                             self.spatial_dims)]
        out = []
        for a, n in enumerate(self.analysis.spatial):
            for u, span in zip(units, spans):
                lo, hi, gap = span[a]
                if not (lo > gap and n - hi > gap):
                    raise RFLensError(
                        f"unit {u} of layer '{self.name}' sees [{lo}, {hi}) along input axis {a} of {n} pixels: its "
                        "field reaches the border, and the probe sees pixels, not padding, so the unclipped size is "
                        "not visible at this input size; probe a larger input, or ask the analytic engine, "
                        f"rflens.analyze(model, input_size)['{self.name}']")
            size = {hi - lo for lo, hi, _ in (span[a] for span in spans)}
            across = {span[a][:2] for span in spans[1:a + 1] + spans[a + 2:]} | {spans[0][a][:2]}
            if len(size) > 1 or len(across) > 1:
                raise RFLensError(f"the units around the centre of layer '{self.name}' see fields of different sizes "
                                  "or places along input axis {a} (a non-uniform layer): its layer-wide numbers need "
                                  f"every unit's unclipped box; ask rflens.analyze(model, input_size)['{self.name}']")
            lo, hi, _ = spans[0][a]
            step = (spans[a + 1][a][0] - lo) * steps[a]
            out.append((hi - lo, step, lo - centre[a] * step))
        return out

    @property
    def rf_size(self) -> tuple[int, ...]:
        """The unclipped RF size per axis, as ``Layer.rf_size`` (see ``_lattice`` for when the probe
        can tell: fields inside the input, a uniform layer).

        >>> import torch, rflens
        >>> p = rflens.analyze(torch.nn.Conv2d(1, 1, 3, stride=2, padding=1), (1, 16, 16), method="probe")
        >>> p["output"].rf_size, p["output"].stride, p["output"].start, p["output"].center
        ((3, 3), (2, 2), (-1, -1), (0, 0))
        """
        return tuple(size for size, _, _ in self._lattice)

    @property
    def stride(self) -> tuple[int, ...]:
        """Input pixels per unit step, as ``Layer.stride``."""
        return tuple(step for _, step, _ in self._lattice)

    @property
    def start(self) -> tuple[int, ...]:
        """Where unit 0's unclipped box starts (negative inside padding), as ``Layer.start``."""
        return tuple(start for _, _, start in self._lattice)

    @property
    def center(self) -> tuple[float, ...]:
        """Unit 0's RF centre, as ``Layer.center``."""
        halves = [2 * start + size - 1 for size, _, start in self._lattice]  # int where whole, as Layer.center
        return tuple(h // 2 if h % 2 == 0 else h / 2 for h in halves)

    @property
    def covers_input(self) -> tuple[bool, ...]:
        """Whether every unit already sees the whole axis, as ``Layer.covers_input``: the first and
        the last unit do (between them, boxes of a uniform layer lie in between)."""
        grid = self.grid_shape
        first, last = (0,) * len(grid), tuple(n - 1 for n in grid)
        masks = self.analysis.masks(self.name, [first, last] if last != first else [first], 2, self.spatial_dims)
        return tuple(all(_span(m, a)[:2] == (0, n) for m in masks) for a, n in enumerate(self.analysis.spatial))

    def projective_field(self, pixel=None, box=None, batch: int = 16) -> np.ndarray:
        """Units of this layer (bool over its grid) that see an input pixel or box, as
        ``Layer.projective_field``: every unit is probed (one backward pass per ``batch`` units)."""
        spatial = self.analysis.spatial
        if box is None:
            if pixel is None or len(pixel) != len(spatial):
                raise UnitError(f"give a pixel with {len(spatial)} coordinates or a box")
            box = tuple((int(p), int(p) + 1) for p in pixel)
        if not all(0 <= a < b <= n for (a, b), n in zip(box, spatial)):
            raise UnitError(f"box {box} is not inside the input {'x'.join(map(str, spatial))}")
        units = list(np.ndindex(*self.grid_shape))
        window = tuple(slice(a, b) for a, b in box)
        seen = [bool(m[window].any()) for m in self.analysis.masks(self.name, units, batch, self.spatial_dims)]
        return np.array(seen, bool).reshape(self.grid_shape)

    def __getattr__(self, name: str):
        # a layer-wide question the probe cannot answer: say so, not AttributeError
        if name in _LAYER_WIDE:
            raise RFLensError(
                f"the gradient probe cannot answer '{name}' of layer '{self.name}': it sees one unit's pixels at a "
                "time, not paths, global context or padding; ask the analytic engine, "
                f"rflens.analyze(model, input_size)['{self.name}'].{name} (the probe answers rf_size, stride, start, "
                "center, covers_input and projective_field, and unit() / units())")
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")


# what an analytic Layer answers for the whole layer, and a ProbeLayer cannot: paths, global
# context, channel geometry and every unit's unclipped box are not visible in gradients
_LAYER_WIDE = ("uniform", "min_rf", "max_rf", "is_global", "global_via", "bounds", "channel_groups",
               "varies_by_channel", "local", "local_rf_size", "local_stride", "local_start")


def _span(mask: np.ndarray, axis: int) -> tuple[int, int, int]:
    """``(lo, hi, widest gap)`` of a mask's projection on one axis: its half-open extent and the
    longest run of unread pixels inside it (a dilated field's holes); ``(0, 0, 0)`` if empty."""
    proj = mask.any(axis=tuple(i for i in range(mask.ndim) if i != axis))
    idx = np.flatnonzero(proj)
    if not idx.size:
        return 0, 0, 0
    return int(idx[0]), int(idx[-1]) + 1, int(np.max(np.diff(idx), initial=1)) - 1


def _bbox(mask: np.ndarray) -> tuple[tuple[int, int], ...]:
    out = []
    for a in range(mask.ndim):
        proj = mask.any(axis=tuple(i for i in range(mask.ndim) if i != a))
        idx = np.flatnonzero(proj)
        out.append((int(idx[0]), int(idx[-1]) + 1) if idx.size else (0, 0))
    return tuple(out)

