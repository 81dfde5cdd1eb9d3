"""Exact crops: the smallest part of the input that a unit's whole computation lives in.

A unit reads only the pixels of its theoretical field, and so does every value in its
dependency cone, so its value and its gradient can be computed on a crop of the input instead
of the whole of it, exactly, when

* the crop holds the unit's unclipped box (the classic box, reaching into padding), so that no
  value of the cone reads the zero padding of the crop's edge where the image has pixels, and
  keeps every border of the image that the box reaches past, where the cone does read padding;
* the crop starts on a multiple of every stride before the layer, so that every feature map of
  the crop is the image's feature map shifted by whole units;
* the model is translation-equivariant on the way: no global context (pooling, spatial norms,
  attention), no padding or resizing that depends on the input size, no constant that varies
  over positions (a coordinate map, a position embedding).

``covering`` finds the box (the occlusion engine checks its crops against the whole image);
``exact_crop`` also proves the last two points structurally, by analysing the model at the
crop's size: every node of the trace up to the layer must sit on the image's grid shifted by
whole units, and the unit's field on the crop must be its field on the image, shifted.

>>> import torch, rflens
>>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 3, padding=1), torch.nn.MaxPool2d(2), torch.nn.Conv2d(1, 1, 3))
>>> layer = rflens.analyze(net, (1, 32, 32))["2"]
>>> crop = exact_crop(net, layer, layer.unit((6, 6)))
>>> layer.unit((6, 6)).unclipped_box, crop.box, crop.local((6, 6))  # from an even pixel: the pool's stride
(((11, 19), (11, 19)), ((10, 19), (10, 19)), (1, 1))
>>> exact_crop(net, layer, layer.unit((0, 0))).box  # at the border: the crop keeps the image's edge
((0, 7), (0, 7))
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..engine.analysis import Analysis
from ..engine.families import BY_ATEN, Structure
from ..engine.field import Layer, Unit
from ..engine.geometry import Node
from ..engine.ops.refusals import Refused
from ..engine.trace import Flow, run

WHOLE = "the whole input"


@dataclass(frozen=True)
class Crop:
    """Where a unit's forward and backward run: ``box`` (half-open ``(start, stop)`` per input
    axis), or None for the whole input; ``note`` says which and why.  On the crop, the layer's
    grid is the image's shifted by ``shift`` units."""

    box: tuple[tuple[int, int], ...] | None
    note: str
    shift: tuple[int, ...] = ()

    def take(self, x: torch.Tensor) -> torch.Tensor:
        """The crop of ``x`` (``(..., *spatial)``)."""
        if self.box is None:
            return x
        return x[(..., *(slice(a, b) for a, b in self.box))]

    def place(self, g: torch.Tensor, shape) -> torch.Tensor:
        """``g`` (a map of the crop) on zeros of the input's ``shape``: outside its field a
        unit's gradient is zero."""
        if self.box is None:
            return g
        out = g.new_zeros(shape)
        out[(..., *(slice(a, b) for a, b in self.box))] = g
        return out

    def local(self, index: Sequence[int]) -> tuple[int, ...]:
        """A unit's index on the layer's grid of the crop."""
        if self.box is None:
            return tuple(index)
        return tuple(int(i) - s for i, s in zip(index, self.shift))


def whole(why: str) -> Crop:
    return Crop(None, f"{WHOLE}: {why}")


def covering(layer: Layer, units: Sequence[Unit], spatial: Sequence[int]) -> Crop:
    """The smallest box that holds the fields of ``units`` of ``layer`` and everything they read,
    its start on a multiple of every stride up to the layer (or the whole input, and why).
    Where a unit's box reaches past a border of the image, the crop keeps that border: there
    its cone reads the image's padding, which the crop must have in the same place."""
    reach = []
    for a in range(len(spatial)):
        los, his = [], []
        for u in units:
            lo, hi = u.unclipped_box[a]
            if lo is None:
                return whole(f"unit {u.index} reads no pixel")
            los.append(lo)
            his.append(hi)
            if u.support_size:  # padding modes that read pixels (reflect, circular) can reach further
                los.append(u.box[a][0])
                his.append(u.box[a][1])
        reach.append((int(min(los)), int(max(his))))
    if all(lo <= 0 and hi >= n for (lo, hi), n in zip(reach, spatial)):
        return whole("the field covers it")
    stride = layer.stride
    if any(s is None or s <= 0 or s != int(s) for s in stride):
        return whole(f"layer '{layer.name}' has a stride of {_axes(stride)} pixels, not a whole number")
    steps = grid_steps(layer)
    if isinstance(steps, str):
        return whole(steps)
    steps = tuple(math.lcm(st, int(s)) for st, s in zip(steps, stride))
    box = tuple((0 if lo <= 0 else lo // st * st, n if hi >= n else hi)
                for (lo, hi), st, n in zip(reach, steps, spatial))
    if all(b == (0, n) for b, n in zip(box, spatial)):
        return whole(f"the field's box, widened to start on a multiple of the strides before the layer "
                     f"({_axes(steps)} pixels), covers it")
    shift = tuple(a // int(s) for (a, _), s in zip(box, stride))
    size = "x".join(str(b - a) for a, b in box)
    return Crop(box, f"the {size} crop {_box(box)} of the {'x'.join(map(str, spatial))} input", shift)


def grid_steps(layer: Layer) -> tuple[int, ...] | str:
    """Per input axis, what a crop's start must be a multiple of for every node traced up to
    ``layer`` (its cone and any branch before it) to sit on the image's grid shifted by whole
    units: the least common multiple of their strides' numerators (a stride of 1/2, after an
    upsampling, asks nothing more than 1)."""
    nodes = layer.analysis.nodes
    steps = [1] * layer.analysis.k
    for node in nodes[:_last(layer) + 1]:
        for a, h in enumerate(node.hull or ()):
            if len(h.lo) < 2:
                continue  # one unit has no grid to align; the check at the crop size sees where it is
            r = _ratio(h.jump)
            if r is None:
                return f"a stride of {h.jump:g} pixels before layer '{layer.name}' is no ratio of small numbers"
            steps[a] = math.lcm(steps[a], r.numerator)
    return tuple(steps)


def exact_crop(model: nn.Module, layer: Layer, unit: Unit, channel: int | None = None) -> Crop:
    """The crop ``covering`` gives for ``unit`` of ``layer``, proved exact without running the
    model: where a global op comes before the layer, or the model analysed at the crop's size
    does not give the same grids and the same field shifted, the whole input, and why."""
    if layer.is_global:
        return whole(f"layer '{layer.name}' sees global context through {layer.global_via[0]}, so its units "
                     "read every pixel")
    for node in layer.analysis.nodes[:_last(layer) + 1]:
        if node.via:
            return whole(f"{node.via[0]} runs before layer '{layer.name}': global context is not local to a crop")
    crop = covering(layer, [unit], layer.analysis.spatial)
    if crop.box is None:
        return crop
    why = _disproved(model, layer, unit, channel, crop)
    if why is not None:
        return whole(why)
    return Crop(crop.box, crop.note + ", which holds all the unit reads (exact: checked by analysing the model at "
                "the crop's size)", crop.shift)


class _Positions(Flow):
    """The analytic trace, also noting the first op that mixes the input with a constant that
    varies over positions: such a model is not translation-equivariant, whatever its geometry
    (the trace follows inputs, and constants have none)."""

    def __init__(self, k: int):
        super().__init__(k)
        self.constant: str | None = None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if self.constant is None:
            self._look(func.name().split("::")[-1].split(".")[0], [*args, *(kwargs or {}).values()])
        return super().__torch_dispatch__(func, types, args, kwargs)

    def _look(self, name: str, args: list) -> None:
        row = BY_ATEN.get(name)
        if row is None or not (row.structure is Structure.ELEMENTWISE or row.rule == "cat"):
            return
        tensors = [t for a in args for t in (a if isinstance(a, (list, tuple)) else [a]) if isinstance(t, torch.Tensor)]
        if not tensors:
            return
        ndim = max(t.ndim for t in tensors)
        varying: set[int] = set()
        for t in tensors:
            tr = self.tracked(t)
            if tr is not None and not isinstance(tr, Refused):
                varying.update(d + ndim - t.ndim for d in tr.positional_dims())
        for t in tensors:
            lead = ndim - t.ndim
            if self.tracked(t) is None and any(d >= lead and t.shape[d - lead] > 1 for d in varying):
                self.constant = f"'{name}' in {f'module {self.module!r}' if self.module else 'the forward'}"
                return


def _disproved(model: nn.Module, layer: Layer, unit: Unit, channel: int | None, crop: Crop) -> str | None:
    """Why ``crop`` is not exact for ``unit``, from the model analysed at the crop's size; None: it is."""
    full = layer.analysis
    size = (full.input_size[0], *(b - a for a, b in crop.box))
    try:
        flow, rec = run(model, size, kind=_Positions, until=layer.name)
    except Exception as e:  # noqa: BLE001 - any failure at the crop's size means: no crop
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        return f"the model does not run on a {'x'.join(map(str, size[1:]))} crop ({first})"
    if flow.constant is not None:
        return (f"op {flow.constant} mixes the input with a constant that varies over positions (a coordinate "
                "map, a position embedding, a mask made for the input's size), which a crop would not see")
    small = Analysis(flow, rec.records, rec.order, size)
    if layer.name not in small or small[layer.name].refusal is not None:
        return f"layer '{layer.name}' has no field at the crop's size"
    there = small[layer.name]
    start = [a for a, _ in crop.box]
    mismatch = _grids_differ(full.nodes[:_last(layer) + 1], small.nodes[:_last(there) + 1], start)
    if mismatch is not None:
        where = "its trace" if mismatch < 0 else f"{_reader(full, mismatch)} (node {mismatch} of its trace)"
        return (f"at the crop's size, {where} is not on the image's grid shifted by whole units (padding or "
                "resizing that depends on the input size)")
    local = crop.local(unit.index)
    if any(not 0 <= i < n for i, n in zip(local, there.grid_shape)):
        return f"unit {unit.index} is not on the crop's grid"
    mine = there.unit(local, channel=channel)
    inside = unit.mask[tuple(slice(a, b) for a, b in crop.box)]
    same_box = all(c is not None and c + s == f for cb, fb, s in zip(mine.unclipped_box, unit.unclipped_box, start)
                   for c, f in zip(cb, fb))
    if not (same_box and np.array_equal(mine.mask, inside) and int(inside.sum()) == unit.support_size):
        return f"unit {unit.index}'s field on the crop is not its field on the image"
    return None


def _grids_differ(full: list[Node], small: list[Node], start: list[int]) -> int | None:
    """Which node traced at the crop's size is not the image's node shifted by whole units
    (node ``i`` of one trace is the same op as node ``i`` of the other; -1: the traces differ);
    None: none."""
    if len(full) != len(small):
        return -1
    for i, (f, c) in enumerate(zip(full, small)):
        if (f.hull is None) != (c.hull is None):
            return i
        for s, hf, hc in zip(start, f.hull or (), c.hull or ()):
            step = _ratio(hf.jump)
            if s and step is None:
                return i
            t = Fraction(s) / step if s else Fraction(0)
            n = len(hc.lo)
            if t.denominator != 1 or t + n > len(hf.lo):
                return i
            t = int(t)
            if not (np.array_equal(hc.lo + s, hf.lo[t:t + n]) and np.array_equal(hc.hi + s, hf.hi[t:t + n])):
                return i
    return None


def _reader(analysis: Analysis, node: int) -> str:
    """The first layer that reads ``node``, to name it."""
    for name in analysis.layers:
        layer = analysis[name]
        if layer.refusal is None and any(v == node for v, _, _ in layer.dependencies):
            return f"layer '{name}'"
    return "a value"


def _ratio(x: float) -> Fraction | None:
    """A positive stride as an exact fraction (None: not one of small numbers)."""
    r = Fraction(x).limit_denominator(64)
    return r if r > 0 and abs(float(r) - x) <= 1e-9 else None


def _last(layer: Layer) -> int:
    """The last node of the trace that ``layer`` reads: every node before it was traced before it."""
    return max((v for v, _, _ in layer.dependencies if v >= 0), default=-1)


def _axes(values) -> str:
    return "x".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


def _box(box) -> str:
    return " x ".join(f"[{a}, {b})" for a, b in box)
