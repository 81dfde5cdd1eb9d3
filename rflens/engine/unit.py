"""One unit's receptive field (``Unit``), a run of channels that share one geometry
(``ChannelGroup``), and how a unit is named on a layer's grid (``grid_index``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence, Union

import numpy as np

from ..errors import UnitError

if TYPE_CHECKING:
    from .field import Layer

# a unit of a layer: its index on the layer's grid ((3, 4); an int on a 1-D grid), or "center"
# (also "centre" or None) for the centre unit
UnitLike = Union[Sequence[int], np.ndarray, int, str, None]


@dataclass(frozen=True)
class Unit:
    """One unit's receptive field.

    ``box`` and ``unclipped_box`` are half-open ``(start, stop)`` per input axis; ``box`` is
    the bounding box of ``mask`` (clipped to the input), ``unclipped_box`` the classic box that
    reaches into padding.  ``center`` is the centre of the unclipped box in pixel coordinates.
    ``channel`` is the neuron's channel, or None: the union over the channels at this position.
    """

    layer: str
    index: tuple[int, ...]
    mask: np.ndarray
    box: tuple[tuple[int, int], ...]
    unclipped_box: tuple[tuple[int, int], ...]
    center: tuple[float, ...]
    owner: "Layer | None" = field(default=None, repr=False, compare=False)
    channel: int | None = None

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
            "channel": self.channel,
        }


@dataclass(frozen=True)
class ChannelGroup:
    """A run of a layer's channels whose neurons share one geometry."""

    channels: range
    rf_size: tuple[int, ...]
    stride: tuple[float, ...]
    start: tuple[int, ...]
    is_global: bool

    def to_dict(self) -> dict:
        return {"channels": [self.channels.start, self.channels.stop], "rf_size": list(self.rf_size),
                "stride": list(self.stride), "start": list(self.start), "global": self.is_global}


def _span(along: np.ndarray) -> tuple[int, int]:
    """First and one past the last True of a 1-D bool array; (0, 0) where there is none."""
    idx = np.flatnonzero(along)
    return (int(idx[0]), int(idx[-1]) + 1) if idx.size else (0, 0)


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
    if any(u < 0 for u in unit):
        raise UnitError(f"unit {_fmt(unit)} is outside layer '{layer}': indices are 0-based from the first unit, "
                        f"never negative (not counted from the end); its grid is {_fmt(grid)}, whose last unit is "
                        f"{_fmt(tuple(n - 1 for n in grid))}.")
    for u, n in zip(unit, grid):
        if not 0 <= u < n:
            raise UnitError(f"unit {_fmt(unit)} is outside layer '{layer}', whose grid is {_fmt(grid)} "
                            "(0-based indices 0..n-1 per axis).")
    return unit
