"""Empirical receptive fields (Zhou et al. 2015) and segmentations: one channel's averaged
discrepancy map with the theoretical and empirical squares, several channels side by side, and
a contact sheet of a unit's top images with their masks.

>>> import torch, rflens
>>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 5), torch.nn.ReLU(), torch.nn.MaxPool2d(2))
>>> res = rflens.empirical_field(net, "2", [0, 1], torch.rand(4, 1, 24, 24), k=2,
...                              occluder=rflens.Occluder(size=3, stride=1), device="cpu")
>>> empirical_layer_plot(res)._suptitle.get_text().split(" · ")[:3]
['empirical RF', '2', 'channel 0']
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.colors import Normalize, TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from ..errors import RFLensError
from .common import HEAT_BOX_RGB, HEAT_CMAP, _fmt

if TYPE_CHECKING:
    from ..methods.occlusion import EmpiricalField, EmpiricalLayer, Occluder
    from ..methods.segment import Segment

EMPIRICAL_RGB = (0.2, 1.0, 0.2)     # the empirical RF square: green next to the cyan theoretical one
SEGMENT_RGB = (1.0, 0.85, 0.0)      # a segmentation's outline: yellow reads on grey faces and photos
DIM = 0.35                          # brightness kept outside a segmentation mask


def centred_square(center: int, side: int) -> tuple[int, int]:
    """Pixels [start, stop) of a ``side``-pixel span around pixel ``center`` as the library
    centres maps: the RF centre goes to the nearest pixel with ties to the lower one, so an even
    side reaches one pixel further after the centre than before it.

    >>> centred_square(48, 13), centred_square(48, 6)
    ((42, 55), (46, 52))
    """
    start = center - (side - 1) // 2
    return start, start + side


def _occluder_text(occluder: Occluder | None) -> str:
    if occluder is None:
        return ""
    return f"occluder {occluder.size}x{occluder.size} stride {occluder.stride}, {occluder.fill} fill"


def _draw_empirical(ax, field: EmpiricalField, marks: bool = True, scaled: bool = False):
    """The averaged canvas with the theoretical (cyan) and empirical (green) squares around its
    centre pixel; returns the image for a colour bar.  ``scaled``: divided by its largest
    |value|, so panels side by side share one colour bar."""
    heat = field.heat
    if scaled and np.abs(heat).max() > 0:
        heat = heat / np.abs(heat).max()
    h, w = heat.shape
    lo, hi = float(heat.min()), float(heat.max())
    if lo < 0:  # signed drops: white at 0, so where occluding raises the unit shows in blue
        top = max(hi, -lo)
        image = ax.imshow(heat, cmap="RdBu_r", norm=TwoSlopeNorm(0, -top, top), extent=(-0.5, w - 0.5, h - 0.5, -0.5),
                          interpolation="nearest")
    else:
        image = ax.imshow(heat, cmap=HEAT_CMAP, norm=Normalize(0, hi if hi > 0 else 1),
                          extent=(-0.5, w - 0.5, h - 0.5, -0.5), interpolation="nearest")
    cy, cx = h // 2, w // 2  # the RF centre's pixel on the canvas
    (ty0, ty1), (tx0, tx1) = (centred_square(c, t) for c, t in zip((cy, cx), _yx_sides(field.theoretical)))
    # the theoretical square thicker, so it shows on both sides of a dashed empirical one that
    # lies on it
    ax.add_patch(Rectangle((tx0 - 0.5, ty0 - 0.5), tx1 - tx0, ty1 - ty0, fill=False, edgecolor=HEAT_BOX_RGB,
                           linewidth=2.4, zorder=5))
    if field.size > 0:
        (ey0, ey1), (ex0, ex1) = centred_square(cy, field.size), centred_square(cx, field.size)
        ax.add_patch(Rectangle((ex0 - 0.5, ey0 - 0.5), ex1 - ex0, ey1 - ey0, fill=False, edgecolor=EMPIRICAL_RGB,
                               linewidth=1.5, linestyle="--", zorder=6))
    else:
        ax.text(0.5, 0.5, "no occluder changed\nthis unit", transform=ax.transAxes, ha="center", va="center",
                color="white", fontsize=8)
    if marks:
        ax.plot([cx], [cy], marker="+", markersize=9, markeredgewidth=1.4, color=HEAT_BOX_RGB, linestyle="none",
                zorder=7)
    r = empirical_view(field)
    ax.set_xlim(max(-0.5, cx - r - 0.5), min(w - 0.5, cx + r + 0.5))
    ax.set_ylim(min(h - 0.5, cy + r + 0.5), max(-0.5, cy - r - 0.5))
    # pixels from the RF centre: the scale the squares' sides are read against
    step = _tick_step(r)
    ticks = np.arange(-(r // step) * step, r + 1, step)
    ax.set_xticks(cx + ticks, [str(int(t)) for t in ticks])
    ax.set_yticks(cy + ticks, [str(int(t)) for t in ticks])
    ax.tick_params(labelsize=6, length=2)
    return image


def _tick_step(r: int) -> int:
    """A round tick step giving two to four ticks on each side of the centre."""
    for step in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000):
        if r // step <= 3:
            return step
    return max(1, r // 3)


def cut_maps(field: EmpiricalField) -> int:
    """How many of the channel's maps are cut by the image border: their peak unit's RF reaches
    past it, so part of what the unit could see is missing from the average."""
    return sum(bool(m.rf.clipped) for m in field.maps)


def empirical_view(field: EmpiricalField) -> int:
    """Half-side of the part of the canvas worth showing, around its centre: everything the
    maps reached and both squares, with a margin (most of a (2H, 2W) canvas is empty)."""
    h, w = field.heat.shape
    cy, cx = h // 2, w // 2
    reach = [max(t // 2 + 1, field.size // 2 + 1) for t in _yx_sides(field.theoretical)]
    hit = np.argwhere(field.heat != 0)
    if hit.size:
        reach.append(int(np.abs(hit - (cy, cx)).max()))
    r = max(reach)
    return min(max(h, w), r + max(2, round(0.15 * r)))


def _yx_sides(theoretical) -> tuple[int, int]:
    t = tuple(int(v) for v in theoretical)
    return (t[0], t[0]) if len(t) == 1 else (t[-2], t[-1])


def _heat_label(field: EmpiricalField, discrepancy: str | None) -> str:
    signed = discrepancy == "drop" or (discrepancy is None and field.heat.min() < 0)
    return "mean activation drop (signed)" if signed else "mean |activation change|"


def empirical_figure(field: EmpiricalField, occluder: Occluder | None = None,
                     discrepancy: str | None = None) -> Figure:
    """The empirical RF of one channel (Zhou et al. 2015): the discrepancy maps of its top
    images, each centred on the exact RF centre of the unit that peaked, averaged on the
    (2H, 2W) canvas, with the layer's theoretical RF (cyan) and the empirical RF (green dashed,
    the smallest centred square holding ``field.mass`` of the map) outlined around the canvas
    centre; the numbers in the caption.  ``occluder``/``discrepancy`` only label the figure."""
    fig = Figure(figsize=(6.4, 6.4), dpi=100, layout="constrained")
    ax = fig.subplots()
    image = _draw_empirical(ax, field)
    fig.colorbar(image, ax=ax, shrink=0.8, label=_heat_label(field, discrepancy))
    theo = _fmt(_yx_sides(field.theoretical))
    ax.legend(handles=[Line2D([], [], color=HEAT_BOX_RGB, linewidth=2.4, label=f"theoretical RF {theo} px"),
                       Line2D([], [], color=EMPIRICAL_RGB, linewidth=1.5, linestyle="--",
                              label=f"empirical RF {field.size} px" if field.size else "empirical RF: none"),
                       Line2D([], [], color=HEAT_BOX_RGB, marker="+", linestyle="none", label="RF centre")],
              fontsize=7, loc="upper left", framealpha=0.8)
    how = ", ".join(p for p in (_occluder_text(occluder), discrepancy and f"discrepancy {discrepancy}") if p)
    fig.suptitle(f"empirical RF · {field.layer} · channel {field.channel} · {len(field.maps)} top images"
                 + (f"\n{how}" if how else ""), fontsize=10)
    h, w = field.heat.shape
    t = _yx_sides(field.theoretical)
    ratio = f"{field.size / max(t):.2f}" if field.size else "n/a"
    names = ", ".join(f"{Path(m.image.name).name} ({m.image.score:.2f})" for m in field.maps[:4])
    more = f", +{len(field.maps) - 4} more" if len(field.maps) > 4 else ""
    lines = [f"empirical RF {field.size or 'n/a'} px (smallest centred square holding {field.mass:.0%} of the "
             f"map) vs theoretical {theo} px: ratio {ratio}",
             f"canvas {h}x{w} (centre shown): each map placed with its peak unit's RF centre at pixel "
             f"({h // 2}, {w // 2})"]
    if names:
        lines.append(f"top images (score): {names}{more}")
    cut = cut_maps(field)
    if cut:
        lines.append(f"{cut} of {len(field.maps)} maps cut by the image border (the peak unit's RF reaches past "
                     "it): the average is thinner on that side")
    ax.set_xlabel("px from the RF centre", fontsize=7)
    fig.supxlabel("\n".join(lines), fontsize=8)
    return fig


def empirical_grid_figure(result: EmpiricalLayer, channels: list[int] | None = None, cols: int = 4,
                          title: str = "") -> Figure:
    """Several channels' averaged maps side by side, each scaled to its own maximum, with the
    theoretical (cyan) and empirical (green dashed) squares; the layer's row of Zhou et al.'s
    Table 1 in the title."""
    channels = list(result.fields) if channels is None else list(channels)
    if not channels:
        raise RFLensError("empirical_grid_figure needs at least one channel")
    cols = max(1, min(cols, len(channels)))
    rows = -(-len(channels) // cols)
    fig = Figure(figsize=(2.6 * cols + 0.4, 2.75 * rows + 1.0), dpi=100, layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    image = None
    for ax, c in zip(axes, channels):
        field = result.fields[c]
        image = _draw_empirical(ax, field, marks=False, scaled=True)
        cut = cut_maps(field)
        ax.set_title(f"channel {c}: {field.size or 'n/a'} px" + (f" ({cut}/{len(field.maps)} cut)" if cut else ""),
                     fontsize=8)
    for ax in axes[len(channels):]:
        ax.set_axis_off()
    fig.colorbar(image, ax=axes[:len(channels)].tolist(), shrink=0.6,
                 label="fraction of the panel's maximum" + (" (signed)" if image.norm.vmin < 0 else ""))
    fig.supxlabel("px from the RF centre; (k/n cut): maps whose peak unit's RF reaches past the image border",
                  fontsize=7)
    row = result.to_dict()
    mean = "n/a" if row["empirical_mean"] is None else f"{row['empirical_mean']:.1f} ± {row['empirical_std']:.1f}"
    theo = _fmt(_yx_sides(result.theoretical))
    fig.suptitle(f"{title + ' · ' if title else ''}empirical RF · {result.layer}: theoretical {theo} px (cyan), "
                 f"empirical {mean} px over {len(result.sizes)} units (green dashed)\n"
                 f"{_occluder_text(result.occluder)}, discrepancy {result.discrepancy}; each panel scaled "
                 f"to its own maximum", fontsize=9)
    return fig


def mask_outline(mask: np.ndarray) -> list[tuple[tuple[float, float], tuple[float, float]]]:
    """The pixel edges between a mask and the rest (and the image border), as ((x0, y0), (x1, y1))
    segments in data coordinates (pixel centres at integers)."""
    m = np.pad(np.asarray(mask, bool), 1)
    segments = []
    rows, cols = np.nonzero(m[1:, :] != m[:-1, :])  # between rows r-1 and r of the mask
    for r, c in zip(rows, cols):
        if 1 <= c <= mask.shape[1]:
            segments.append(((c - 1.5, r - 0.5), (c - 0.5, r - 0.5)))
    rows, cols = np.nonzero(m[:, 1:] != m[:, :-1])
    for r, c in zip(rows, cols):
        if 1 <= r <= mask.shape[0]:
            segments.append(((c - 0.5, r - 1.5), (c - 0.5, r - 0.5)))
    return segments


def dimmed(picture: np.ndarray, mask: np.ndarray, keep: float = DIM) -> np.ndarray:
    """The picture at full brightness inside ``mask``, at ``keep`` of it outside."""
    return picture * np.where(np.asarray(mask, bool), 1.0, keep)[..., None]


def _method_label(method: str, segments) -> str:
    if method == "netdissect":
        levels = sorted({round(s.level, 6) for s in segments})
        return "NetDissect\nactivation ≥ " + ", ".join(f"{v:.3g}" for v in levels) + "\n(scan's top 0.5%)"
    return "occlusion\n≥ half of each\nmap's maximum"


def segment_sheet(segments: list[Segment], title: str = "") -> Figure:
    """A contact sheet of a unit's top images with their segmentations: each image dimmed outside
    its mask, the mask outlined along pixel edges, the file name and score above; one row per
    method (NetDissect's threshold level, shared by the channel, labels its row)."""
    if not segments:
        raise RFLensError("segment_sheet needs at least one segmentation")
    order = ("netdissect", "occlusion")
    methods = sorted({s.method for s in segments}, key=lambda m: order.index(m) if m in order else len(order))
    rows = [[s for s in segments if s.method == m] for m in methods]
    cols = max(len(r) for r in rows)
    fig = Figure(figsize=(1.75 * cols + 1.1, 2.15 * len(rows) + 0.7), dpi=100, layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(rows), cols, squeeze=False))
    for r, (method, row) in enumerate(zip(methods, rows)):
        for c in range(cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(row):
                ax.set_axis_off()
                continue
            s = row[c]
            h, w = s.mask.shape
            ax.imshow(np.clip(dimmed(s.picture, s.mask), 0, 1), extent=(-0.5, w - 0.5, h - 0.5, -0.5),
                      interpolation="nearest")
            ax.add_collection(LineCollection(mask_outline(s.mask), colors=[SEGMENT_RGB], linewidths=1.0, zorder=5))
            ax.set_xlim(-0.5, w - 0.5)
            ax.set_ylim(h - 0.5, -0.5)
            ax.set_title(f"{Path(s.image.name).name}\nscore {s.image.score:.2f} · {s.mask.mean():.0%}", fontsize=7)
        axes[r, 0].set_ylabel(_method_label(method, row), fontsize=8)
    fig.suptitle(title or "segmentations of a unit's top images", fontsize=10)
    fig.supxlabel("dimmed outside the mask, outlined in yellow\nabove each: file, score (the unit's peak "
                  "activation), share of the image in the mask", fontsize=7)
    return fig


def empirical_layer_plot(result: EmpiricalLayer, channel: int | None = None) -> Figure:
    """``EmpiricalLayer.plot``: ``empirical_figure`` of one channel (default: the first),
    labelled with the result's occluder and discrepancy."""
    field = result.fields[channel if channel is not None else next(iter(result.fields))]
    return empirical_figure(field, occluder=result.occluder, discrepancy=result.discrepancy)
