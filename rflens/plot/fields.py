"""Theoretical receptive fields: one unit on the input beside its layer's grid, one unit across
layers, RF growth with depth, and a few units' boxes on a photograph; and the figures behind
``Unit.plot``, ``Analysis.plot`` and ``Analysis.plot_grid``.

>>> import rflens, torch.nn as nn
>>> a = rflens.analyze(nn.Sequential(nn.Conv2d(1, 1, 3), nn.MaxPool2d(2)), (1, 16, 16))
>>> select_layers(a)
['0', '1']
>>> a["1"].unit().plot()._suptitle.get_text()
'Sequential · 1 · unit (3, 3) — RF 4, stride 2, not clipped'
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ..errors import RFLensError
from ..methods.images import Picture, fit, load_image
from .common import BOX_RGB, LAYER_COLOURS, MASK_ALPHA, MASK_RGB, UNCLIPPED_RGB, UNIT_RGB, _fmt, _plane, _yx, to_png

if TYPE_CHECKING:
    from ..engine.analysis import Analysis
    from ..engine.field import Unit


def draw_field(ax, unit, shape: tuple[int, ...], picture: Picture | None = None, rgb=MASK_RGB,
               boxes: bool = True) -> None:
    """The unit's exact mask (and boxes) on the input grid or picture, one data unit per pixel;
    an input wider than ``MAX_DRAWN`` pixels is drawn in blocks (``drawn_scale``)."""
    plane, _ = _plane(unit.mask)
    h, w = plane.shape
    f = drawn_scale(plane.shape)
    hp, wp = -(-h // f) * f, -(-w // f) * f
    if f > 1:  # no figure shows 20000 pixels: a block is marked where any of its pixels is
        padded = np.zeros((hp, wp), bool)
        padded[:h, :w] = plane
        plane = padded.reshape(hp // f, f, wp // f, f).any(axis=(1, 3))
    extent = (-0.5, wp - 0.5, hp - 0.5, -0.5)
    if picture is not None:
        ax.imshow(picture.pixels[::f, ::f], extent=extent, interpolation="nearest")
    else:
        ax.imshow(np.ones((1, 1, 3)), extent=(-0.5, w - 0.5, h - 0.5, -0.5), interpolation="nearest")
        if max(h, w) <= 64:
            ax.set_xticks(np.arange(-0.5, w, 1), minor=True)
            ax.set_yticks(np.arange(-0.5, h, 1), minor=True)
            ax.grid(which="minor", color="0.85", linewidth=0.4)
    overlay = np.zeros((*plane.shape, 4))
    overlay[plane] = (*rgb, MASK_ALPHA)
    ax.imshow(overlay, extent=extent, interpolation="nearest")
    if boxes and unit.mask.any():
        (y0, y1), (x0, x1) = _yx(unit.box, len(shape))
        # above the axes frame, so a box clipped by the border is seen on it
        ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor=BOX_RGB,
                               linewidth=1.5, zorder=5, clip_on=False))
        ax.annotate(f"{y1 - y0}x{x1 - x0}" if len(shape) > 1 else f"{x1 - x0}", (x0 - 0.5, y0 - 0.5),
                    xytext=(1, 2), textcoords="offset points", fontsize=8, color=BOX_RGB,
                    annotation_clip=True)
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    if boxes and unit.clipped and unit.unclipped_box[0][0] is not None:
        # widen the view to the classic box: the grey margin is padding, where the box reaches
        (uy0, uy1), (ux0, ux1) = _yx(unit.unclipped_box, len(shape))
        ax.add_patch(Rectangle((ux0 - 0.5, uy0 - 0.5), ux1 - ux0, uy1 - uy0, fill=False,
                               edgecolor=UNCLIPPED_RGB, linewidth=1.2, linestyle="--", zorder=4))
        ax.set_facecolor("0.85")
        ax.set_xlim(min(-0.5, ux0 - 0.5), max(w - 0.5, ux1 - 0.5))
        ax.set_ylim(max(h - 0.5, uy1 - 0.5), min(-0.5, uy0 - 0.5))


MAX_DRAWN = 1024  # input pixels per side drawn one by one; wider inputs are drawn in blocks


def drawn_scale(shape: tuple[int, ...]) -> int:
    """The side of the blocks a mask of ``shape`` is drawn in: 1 up to ``MAX_DRAWN`` pixels.

    >>> drawn_scale((224, 224)), drawn_scale((20000, 20000))
    (1, 20)
    """
    return max(1, -(-max(shape[-2:]) // MAX_DRAWN))


def unit_figure(layer, unit, picture: Picture | str | Path | np.ndarray | None = None,
                model_name: str = "") -> Figure:
    """The RF of one unit on the input (left) and the unit on its layer's grid (right);
    ``picture`` (a path, an HxWx3 or HxW array, or a ``Picture``) is fitted to the input.

    >>> import rflens, torch.nn as nn
    >>> layer = rflens.analyze(nn.Sequential(nn.Conv2d(1, 1, 3)), (1, 8, 8))["0"]
    >>> unit_figure(layer, layer.unit((2, 2)), np.ones((8, 8))).axes[0].get_title().splitlines()[-1]
    'image: as is'
    """
    analysis = layer.analysis
    picture = _as_picture(picture, analysis.spatial)
    fig = Figure(figsize=(10, 5.2), dpi=100, layout="constrained")
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1]})
    draw_field(left, unit, analysis.spatial, picture)
    _, how = _plane(unit.mask)
    lines = [f"input {'x'.join(map(str, analysis.spatial))}: box {' x '.join(f'[{a},{b})' for a, b in unit.box)}, "
             f"support {unit.support_size} px"]
    if unit.clipped:
        lines.append(f"dashed: unclipped box {' x '.join(f'[{a},{b})' for a, b in unit.unclipped_box)}; grey: padding")
    if picture is not None:
        lines.append(f"image: {picture.transform}")
    if how:
        lines.append(how)
    if drawn_scale(unit.mask.shape) > 1:
        f = drawn_scale(unit.mask.shape)
        lines.append(f"drawn in {f}x{f} blocks, marked where any pixel is in the field")
    left.set_title("\n".join(lines), fontsize=8)
    grid = layer.grid_shape
    g = grid if len(grid) == 2 else (1, max(1, int(np.prod(grid))))
    cell = unit.index if len(grid) == 2 else (0, int(np.ravel_multi_index(unit.index, grid)) if grid else 0)
    # one blank cell stretched over the grid: a layer's grid can be as large as the input
    right.imshow(np.zeros((1, 1)), cmap="Greys", vmin=0, vmax=1, extent=(-0.5, g[1] - 0.5, g[0] - 0.5, -0.5))
    right.add_patch(Rectangle((cell[1] - 0.5, cell[0] - 0.5), 1, 1, color=UNIT_RGB))
    if max(g) <= 64:
        right.set_xticks(np.arange(-0.5, g[1], 1), minor=True)
        right.set_yticks(np.arange(-0.5, g[0], 1), minor=True)
        right.grid(which="minor", color="0.8", linewidth=0.4)
    right.set_title(f"layer {layer.name}: grid {'x'.join(map(str, grid)) or '1'}, unit "
                    f"{', '.join(map(str, unit.index)) or '()'}", fontsize=9)
    clipped = "clipped by the border" if unit.clipped else "not clipped"
    neuron = f"unit ({', '.join(map(str, unit.index))})" + ("" if unit.channel is None else f", channel {unit.channel}")
    stride = _fmt(layer.local_stride if layer.is_global and layer.local_stride else layer.stride)
    fig.suptitle(f"{model_name or analysis.model_name} · {layer.name} · {neuron} — "
                 f"RF {rf_text(layer)}, stride {stride}, {clipped}", fontsize=11)
    return fig


def rf_text(layer) -> str:
    """A layer's RF for a title: its size, or for a global layer (whose units see the whole
    input) "global" and its local field's size.

    >>> import torchvision, rflens
    >>> a = rflens.analyze(torchvision.models.resnet18(), (3, 224, 224))
    >>> rf_text(a["layer4"]), rf_text(a["avgpool"])
    ('435', 'global (local 435)')
    """
    if not layer.is_global:
        return _fmt(layer.rf_size)
    local = layer.local_rf_size
    return "global" + ("" if local is None or None in local else f" (local {_fmt(local)})")


def select_layers(analysis, select: str = "conv,pool") -> list[str]:
    """Layer names by kind ("conv,pool", any comma list of op fragments), "all", or a regex."""
    # layers refused by a value-dependent op (a detector's top-k) have no field to draw
    names = [n for n in analysis.layers if n not in ("x", "input", "output") and not analysis[n].refused]
    if select == "all":
        return names
    kinds = [s.strip().lower() for s in select.split(",")]
    if all(re.fullmatch(r"[a-z0-9_]+", s) for s in kinds):
        chosen = [n for n in names if any(s in analysis[n].op.lower() for s in kinds)]
        if chosen:
            return chosen
    try:
        pattern = re.compile(select)
    except re.error as e:
        raise RFLensError(f"--layers {select!r} is neither op kinds (conv,pool), 'all', nor a regex: {e}") from None
    chosen = [n for n in names if pattern.search(n)]
    if not chosen:
        raise RFLensError(f"no layer matches {select!r}")
    return chosen


def grid_figure(analysis, unit, layers: list[str], model_name: str = "", cols: int = 6,
                channel: int | None = None) -> Figure:
    """One panel per layer with the same unit's exact mask (the VGG-16 figure); with ``channel``,
    that channel's neuron (clamped, as the unit is, where a layer has fewer)."""
    rows = -(-len(layers) // cols)
    fig = Figure(figsize=(2.3 * min(cols, len(layers)), 2.5 * rows), dpi=100, layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, min(cols, len(layers)), squeeze=False)).ravel()
    for ax, name in zip(axes, layers):
        layer = analysis[name]
        want = tuple(unit)
        grid = layer.grid_shape
        if len(grid) != len(want):
            ax.set_axis_off()
            ax.set_title(f"{name}\n(no {len(want)}-D grid)", fontsize=8)
            continue
        idx = tuple(min(u, n - 1) for u, n in zip(want, grid))
        c = None if channel is None or layer.channel_dim is None else min(channel, layer.channels - 1)
        layer = layer.for_channel(c)
        u = layer.unit(idx)
        draw_field(ax, u, analysis.spatial, boxes=False)
        note = f"\nclamped to {idx}" if idx != want else ""
        if c != channel:
            note += f"\nchannel {'clamped to ' + str(c) if c is not None else 'none: all'}"
        ax.set_title(f"{name}  RF {rf_text(layer)}\n{_inside(u)}{note}", fontsize=8)
        _px_ticks(ax, analysis.spatial)
        if u.mask.any() and len(analysis.spatial) == 2:
            _zoom(ax, u, analysis.spatial)
    for ax in axes[len(layers):]:
        ax.set_axis_off()
    which = f"unit ({', '.join(map(str, unit))})" + ("" if channel is None else f", channel {channel}")
    fig.suptitle(f"{model_name or analysis.model_name}: {which} across layers", fontsize=11)
    return fig


def _inside(unit) -> str:
    """What of the unit's field lies on the input: the whole of it, or the clipped part."""
    sides = "x".join(str(b - a) for a, b in unit.box)
    return f"{sides} px, clipped by the border" if unit.clipped else f"{sides} px, inside the input"


def _px_ticks(ax, spatial: tuple[int, ...]) -> None:
    """Pixel ticks at the input's first, middle and last pixel: the scale a field is read against."""
    h, w = (spatial[-2], spatial[-1]) if len(spatial) > 1 else (1, spatial[-1])
    ax.set_xticks([0, w // 2, w - 1])
    ax.set_yticks([0, h // 2, h - 1] if len(spatial) > 1 else [])
    ax.tick_params(labelsize=6, length=2)


ZOOM_BELOW = 0.15  # a field narrower than this share of the input gets a zoomed inset


def _zoom(ax, unit, spatial: tuple[int, int]) -> None:
    """A zoomed inset of a field too small to see on the whole input (the first layers' dots)."""
    (y0, y1), (x0, x1) = unit.box
    h, w = spatial
    if max(y1 - y0, x1 - x0) > ZOOM_BELOW * max(h, w):
        return
    pad = max(2, (max(y1 - y0, x1 - x0) + 1) // 2)
    ys, xs = (max(0, y0 - pad), min(h, y1 + pad)), (max(0, x0 - pad), min(w, x1 + pad))
    corner = [0.52, 0.52] if (y0 + y1) / 2 < h / 2 and (x0 + x1) / 2 < w / 2 else [0.04, 0.52]
    inset = ax.inset_axes(corner + [0.44, 0.44])
    plane = unit.mask[ys[0]:ys[1], xs[0]:xs[1]]
    extent = (xs[0] - 0.5, xs[1] - 0.5, ys[1] - 0.5, ys[0] - 0.5)
    inset.imshow(np.ones((1, 1, 3)), extent=extent)
    overlay = np.zeros((*plane.shape, 4))
    overlay[plane] = (*MASK_RGB, MASK_ALPHA)
    inset.imshow(overlay, extent=extent, interpolation="nearest")
    inset.set_xticks([xs[0], xs[1] - 1])
    inset.set_yticks([ys[0], ys[1] - 1])
    inset.tick_params(labelsize=5, length=1.5, pad=1)
    ax.indicate_inset_zoom(inset, edgecolor="0.3", linewidth=0.8)


def growth_figure(analyses: dict, select: str = "conv,pool") -> Figure:
    """RF size and effective stride against depth, several models on one chart."""
    fig = Figure(figsize=(9, 6.5), dpi=100, layout="constrained")
    size_ax, stride_ax = fig.subplots(2, 1, sharex=True)
    inputs = set()
    for (name, analysis), colour in zip(analyses.items(), LAYER_COLOURS * 4):
        layers = main_path(analysis, select)
        depth = np.arange(1, len(layers) + 1)
        size = [max((l.local or l).rf_size) for l in layers]
        stride = [max(l.stride) for l in layers]
        size_ax.plot(depth, size, "-o", ms=3, color=colour, label=name)
        g = [i for i, l in enumerate(layers) if l.is_global]
        if g:
            size_ax.plot(depth[g], np.array(size)[g], "x", ms=6, color=colour)
        stride_ax.plot(depth, stride, "-o", ms=3, color=colour, label=name)
        inputs.add(max(analysis.spatial))
    for i, n in enumerate(sorted(inputs)):
        size_ax.axhline(n, color="0.4", linestyle="--", linewidth=1)
        size_ax.annotate(f"input {n} px", (0, n), xycoords=("axes fraction", "data"), xytext=(4 + 70 * i, 3),
                         textcoords="offset points", fontsize=8, color="0.3")
    size_ax.set_ylabel("RF size (px, largest axis)")
    size_ax.set_title("receptive field growth along the deepest path; above the input size a layer "
                      "sees everything (x: global context, local field plotted)", fontsize=9)
    size_ax.legend(fontsize=8)
    stride_ax.set_ylabel("effective stride (px)")
    stride_ax.set_yscale("log", base=2)
    stride_ax.set_xlabel(f"depth ({select} layers)")
    return fig


def main_path(analysis, select: str = "conv,pool") -> list:
    """Selected layers in execution order, keeping those that do not shrink the RF: parallel
    branches with smaller fields, or equal fields at a finer stride (Inception), drop out,
    leaving growth along the deepest path.
    Layers with global context and no local field are left out."""
    kept, best = [], 0
    for n in select_layers(analysis, select):
        layer = analysis[n]
        if len(layer.grid_shape) != analysis.k:
            continue
        field = _field(layer)
        if field is None:
            continue
        size = max(field.rf_size)
        # an equal field at a finer stride is a parallel branch (Inception's 1x1 and 3x3 towers
        # beside a strided one), not the next step of the deepest path
        prev = _field(kept[-1]) if kept else None
        finer = prev is not None and size == best and max(field.stride) < max(prev.stride)
        if size >= best and not finer:
            # a larger field at a finer stride in a sibling branch of the same block (Inception's
            # 7x7 tower beside its strided 3x3 one): the path goes through it, not the sibling
            while kept and max(_field(kept[-1]).stride) > max(field.stride) and _siblings(kept[-1].name, n):
                kept.pop()
            kept.append(layer)
            best = size
    return kept


def _field(layer):
    return layer.local if layer.is_global else layer


def _siblings(a: str, b: str) -> bool:
    """Whether two layers sit in different branches of one module (``Mixed_7a.branch3x3_2`` and
    ``Mixed_7a.branch7x7x3_2``), rather than one after another in a chain of top-level blocks.

    >>> _siblings("Mixed_7a.branch3x3_2", "Mixed_7a.branch7x7x3_2.conv"), _siblings("down4.conv", "up1.conv")
    (True, False)
    """
    pa, pb = a.split("."), b.split(".")
    common = next((i for i, (x, y) in enumerate(zip(pa, pb)) if x != y), min(len(pa), len(pb)))
    return 0 < common < min(len(pa), len(pb))


def overlay_figure(analysis, picture: Picture, layers: list[str], units: str = "center,corners",
                   model_name: str = "") -> Figure:
    """Boxes of a few units per layer drawn on a photograph, a colour per layer (AlexNet figure).
    ``units``: ``center``, ``corners`` and units ``i:j``, comma-separated; a unit outside a
    layer's grid is refused (``UnitError``), not moved to its edge."""
    if not layers:
        raise RFLensError(f"layers {layers!r} names no layer: give at least one (e.g. ['features.5', 'features.12'])")
    fig = Figure(figsize=(7, 7.4), dpi=100, layout="constrained")
    ax = fig.subplots()
    h, w = analysis.spatial[-2:]
    ax.imshow(picture.pixels, extent=(-0.5, w - 0.5, h - 0.5, -0.5))
    for name, colour in zip(layers, LAYER_COLOURS * 4):
        layer = analysis[name]
        for u in _pick_units(layer.grid_shape, units):
            unit = layer.unit(u)
            (y0, y1), (x0, x1) = unit.box[-2], unit.box[-1]
            ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor=colour,
                                   linewidth=2))
        ax.plot([], [], color=colour, linewidth=2, label=f"{name}: RF {rf_text(layer)}")
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    ax.legend(loc="upper right", fontsize=8, framealpha=0.85)
    ax.set_title(f"{model_name or analysis.model_name}: receptive fields ({units})\nimage: {picture.transform}",
                 fontsize=10)
    return fig


def _pick_units(grid: tuple[int, ...], which: str) -> list[tuple[int, ...]]:
    if len(grid) != 2:
        raise RFLensError(f"overlay needs layers with a 2-D grid, not {grid}")
    h, w = grid
    picks: list[tuple[int, int]] = []
    for part in which.split(","):
        part = part.strip()
        if part in ("center", "centre"):
            picks.append((h // 2, w // 2))
        elif part == "corners":
            picks += [(0, 0), (0, w - 1), (h - 1, 0), (h - 1, w - 1)]
        elif re.fullmatch(r"-?\d+:-?\d+", part):
            picks.append(tuple(int(v) for v in part.split(":")))  # checked against the grid by Layer.unit
        else:
            raise RFLensError(f"--units {which!r}: use center, corners or i:j, comma-separated")
    return list(dict.fromkeys(picks))


def _as_picture(image, spatial: tuple[int, ...]) -> Picture | None:
    """A path, an HxWx3 (or HxW) array in [0, 1] or 0..255, or a Picture, fitted to the input."""
    if image is None or isinstance(image, Picture):
        return image
    size = tuple(spatial[-2:])
    if isinstance(image, np.ndarray):
        arr = image.astype(float)
        arr = arr / 255 if arr.max() > 1 else arr
        arr = np.repeat(arr[..., None], 3, axis=2) if arr.ndim == 2 else arr[..., :3]
        return fit(arr, size)
    return load_image(image, size)


# -- what the result objects' plot methods draw ---------------------------------------------------

def unit_plot(unit: Unit, image: Picture | str | Path | np.ndarray | None = None) -> Figure:
    """``Unit.plot``: the unit's RF on the input (or ``image``) beside its own layer's grid.

    >>> import rflens, torch.nn as nn
    >>> a = rflens.analyze(nn.Sequential(nn.Conv2d(1, 1, 3)), (1, 8, 8))
    >>> unit_plot(a["0"].unit((0, 0))).axes[1].get_title()
    'layer 0: grid 6x6, unit 0, 0'
    """
    if unit.owner is None:
        raise ValueError("this unit was not made by a Layer, so it has no grid to draw")
    return unit_figure(unit.owner, unit, image)


def unit_png(unit: Unit) -> bytes | None:
    """``Unit._repr_png_``: ``unit_plot`` as PNG bytes, or None (Jupyter then shows the repr) for
    a unit made by hand or a 1-D or 3-D mask.

    >>> import rflens, torch.nn as nn
    >>> a = rflens.analyze(nn.Sequential(nn.Conv1d(1, 1, 3)), (1, 8))
    >>> unit_png(a["0"].unit((0,))) is None
    True
    >>> box = ((0, 3), (0, 3))
    >>> unit_png(rflens.Unit("by hand", (0, 0), np.ones((3, 3), bool), box, box, (1, 1))) is None
    True
    """
    if unit.owner is None or unit.mask.ndim != 2:
        return None
    return to_png(unit_plot(unit))


def analysis_plot(analysis: Analysis, layers: str = "conv,pool") -> Figure:
    """``Analysis.plot``: one model's RF size and stride against depth (``growth_figure``).

    >>> import rflens, torch.nn as nn
    >>> a = rflens.analyze(nn.Sequential(nn.Conv2d(1, 1, 3), nn.Conv2d(1, 1, 3)), (1, 16, 16))
    >>> [line.get_label() for line in analysis_plot(a).axes[0].get_lines()][:1]
    ['Sequential']
    """
    return growth_figure({analysis.model_name or "model": analysis}, layers)


def analysis_plot_grid(analysis: Analysis, unit, layers: str = "conv,pool") -> Figure:
    """``Analysis.plot_grid``: one panel per selected layer with the same unit's RF (indices
    clamped to smaller grids; ``grid_figure``).

    >>> import rflens, torch.nn as nn
    >>> a = rflens.analyze(nn.Sequential(nn.Conv2d(1, 1, 3), nn.MaxPool2d(2)), (1, 16, 16))
    >>> [ax.get_title() for ax in analysis_plot_grid(a, [9, 9]).axes]
    ['0  RF 3\\n3x3 px, inside the input', '1  RF 4\\n4x4 px, inside the input\\nclamped to (6, 6)']
    """
    return grid_figure(analysis, tuple(unit), select_layers(analysis, layers))
