"""Pictures of receptive fields, drawn from the engine's exact masks.

Every function returns a ``matplotlib.figure.Figure`` built without pyplot (no global state, no
display needed); ``save`` writes one atomically (PNG, SVG or PDF by extension).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.colors import BoundaryNorm, ListedColormap, LogNorm, Normalize, TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Ellipse, Patch, Rectangle

from ..errors import RFLensError
from ..files import atomic_write
from ..methods.images import Picture

if TYPE_CHECKING:
    from ..methods.gradient import EffectiveField, GradientField
    from ..methods.occlusion import EmpiricalField, EmpiricalLayer, Occluder
    from ..methods.segment import Segment

MASK_RGB = (1.0, 0.42, 0.0)       # the support: orange
MASK_ALPHA = 0.6
BOX_RGB = (0.0, 0.45, 0.9)        # the clipped box
UNCLIPPED_RGB = (0.5, 0.5, 0.5)   # the classic box, reaching into padding
UNIT_RGB = (0.85, 0.1, 0.1)
LAYER_COLOURS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#9a6324"]


def _fmt(values) -> str:
    values = [v for v in values]
    return str(values[0]) if len(set(values)) == 1 else "x".join(str(v) for v in values)


HEAT_PROJECTED = "3-D input: max over the first axis"


def _plane(values: np.ndarray, projected: str = "projected over time") -> tuple[np.ndarray, str]:
    """A 2-D view of a 1-, 2- or 3-D mask or heat map (3-D: the maximum over the first axis),
    and a note on how it was made."""
    if values.ndim == 1:
        return values[None, :], ""
    if values.ndim == 3:
        return values.max(axis=0), projected
    return values, ""


def draw_field(ax, unit, shape: tuple[int, ...], picture: Picture | None = None, rgb=MASK_RGB,
               boxes: bool = True) -> None:
    """The unit's exact mask (and boxes) on the input grid or picture, one data unit per pixel."""
    plane, _ = _plane(unit.mask)
    h, w = plane.shape
    extent = (-0.5, w - 0.5, h - 0.5, -0.5)
    if picture is not None:
        ax.imshow(picture.pixels, extent=extent, interpolation="nearest")
    else:
        ax.imshow(np.ones((h, w, 3)), extent=extent, interpolation="nearest")
        if max(h, w) <= 64:
            ax.set_xticks(np.arange(-0.5, w, 1), minor=True)
            ax.set_yticks(np.arange(-0.5, h, 1), minor=True)
            ax.grid(which="minor", color="0.85", linewidth=0.4)
    overlay = np.zeros((h, w, 4))
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


def _yx(box, k: int):
    if k == 1:
        return (0, 1), box[0]
    return box[-2], box[-1]


def unit_figure(layer, unit, picture: Picture | None = None, model_name: str = "") -> Figure:
    """The RF of one unit on the input (left) and the unit on its layer's grid (right)."""
    analysis = layer.analysis
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
    left.set_title("\n".join(lines), fontsize=8)
    grid = layer.grid_shape
    g = np.zeros(grid if len(grid) == 2 else (1, max(1, int(np.prod(grid)))))
    cell = unit.index if len(grid) == 2 else (0, int(np.ravel_multi_index(unit.index, grid)) if grid else 0)
    right.imshow(g, cmap="Greys", vmin=0, vmax=1, extent=(-0.5, g.shape[1] - 0.5, g.shape[0] - 0.5, -0.5))
    right.add_patch(Rectangle((cell[1] - 0.5, cell[0] - 0.5), 1, 1, color=UNIT_RGB))
    if max(g.shape) <= 64:
        right.set_xticks(np.arange(-0.5, g.shape[1], 1), minor=True)
        right.set_yticks(np.arange(-0.5, g.shape[0], 1), minor=True)
        right.grid(which="minor", color="0.8", linewidth=0.4)
    right.set_title(f"layer {layer.name}: grid {'x'.join(map(str, grid)) or '1'}, unit "
                    f"{', '.join(map(str, unit.index)) or '()'}", fontsize=9)
    clipped = "clipped by the border" if unit.clipped else "not clipped"
    glob = ", global" if layer.is_global else ""
    fig.suptitle(f"{model_name or analysis.model_name} · {layer.name} · unit ({', '.join(map(str, unit.index))}) — "
                 f"RF {_fmt(layer.rf_size)}, stride {_fmt(layer.stride)}, {clipped}{glob}", fontsize=11)
    return fig


def select_layers(analysis, select: str = "conv,pool") -> list[str]:
    """Layer names by kind ("conv,pool", any comma list of op fragments), "all", or a regex."""
    names = [n for n in analysis.layers if n not in ("x", "input", "output")]
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


def grid_figure(analysis, unit, layers: list[str], model_name: str = "", cols: int = 6) -> Figure:
    """One panel per layer with the same unit's exact mask (the VGG-16 figure)."""
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
        u = layer.unit(idx)
        draw_field(ax, u, analysis.spatial, boxes=False)
        note = f"\nclamped to {idx}" if idx != want else ""
        ax.set_title(f"{name}  RF {_fmt(layer.rf_size)}{note}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[len(layers):]:
        ax.set_axis_off()
    fig.suptitle(f"{model_name or analysis.model_name}: unit ({', '.join(map(str, unit))}) across layers",
                 fontsize=11)
    return fig


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
    branches with smaller fields (Inception) drop out, leaving growth along the deepest path.
    Layers with global context and no local field are left out."""
    kept, best = [], 0
    for n in select_layers(analysis, select):
        layer = analysis[n]
        if len(layer.grid_shape) != analysis.k:
            continue
        field = layer.local if layer.is_global else layer
        if field is None:
            continue
        size = max(field.rf_size)
        if size >= best:
            kept.append(layer)
            best = size
    return kept


def overlay_figure(analysis, picture: Picture, layers: list[str], units: str = "center,corners",
                   model_name: str = "") -> Figure:
    """Boxes of a few units per layer drawn on a photograph, a colour per layer (AlexNet figure)."""
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
        ax.plot([], [], color=colour, linewidth=2, label=f"{name}: RF {_fmt(layer.rf_size)}")
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
        elif re.fullmatch(r"\d+:\d+", part):
            i, j = (int(v) for v in part.split(":"))
            picks.append((min(i, h - 1), min(j, w - 1)))
        else:
            raise RFLensError(f"--units {which!r}: use center, corners or i:j, comma-separated")
    return list(dict.fromkeys(picks))


# -- gradient and effective receptive fields ---------------------------------------------------

HEAT_CMAP = "magma"
HEAT_BOX_RGB = (0.0, 0.85, 1.0)     # the theoretical RF box on a heat map: cyan reads on magma
GAUSS_RGB = (0.2, 1.0, 0.2)         # the moment Gaussian's ellipses and centre of mass
LOG_FLOOR = 1e-3                    # ERF log scale: values below max/1000 show at the floor
GRAD_LOG_FLOOR = 1e-4
SCALES = ("linear", "log")
# gradient map categories; a higher code wins when a 3-D map is projected
CATEGORIES = (
    ("background", "outside the theoretical RF, no gradient", (0.93, 0.93, 0.93)),
    ("other", "missed: exact zeros / cancellation", (0.55, 0.35, 0.15)),
    ("max", "missed: max routing", (0.57, 0.12, 0.71)),
    ("activations", "missed: activations with derivative 0 (ReLU input <= 0)", (1.0, 0.55, 0.0)),
    ("nonzero", "nonzero gradient", (0.0, 0.6, 0.45)),
    ("outside", "nonzero outside the theoretical RF (a bug)", (0.9, 0.0, 0.0)),
)


def _plane_geometry(center, covariance) -> tuple[tuple[float, float], np.ndarray | None]:
    """(row, col) centre and 2x2 covariance in the plane drawn; 1-D maps sit on row 0 and get
    no ellipse (their covariance is 1x1)."""
    center = tuple(center)
    if len(center) == 1:
        return (0.0, center[0]), None
    cov = np.asarray(covariance, dtype=np.float64)[-2:, -2:]
    return (center[-2], center[-1]), cov


def _sigma_ellipse(center_yx, cov_yx: np.ndarray, k: float, **style) -> Ellipse | None:
    """The k-sigma ellipse of a Gaussian given as (row, col) centre and covariance, in data
    coordinates x = column, y = row."""
    if not np.all(np.isfinite(cov_yx)):
        return None
    cov_xy = np.array([[cov_yx[1, 1], cov_yx[0, 1]], [cov_yx[0, 1], cov_yx[0, 0]]])
    values, vectors = np.linalg.eigh(cov_xy)  # ascending: the last is the major axis
    values = np.clip(values, 0, None)
    angle = float(np.degrees(np.arctan2(vectors[1, 1], vectors[0, 1])))
    return Ellipse((center_yx[1], center_yx[0]), 2 * k * np.sqrt(values[1]), 2 * k * np.sqrt(values[0]),
                   angle=angle, fill=False, **style)


def _box_patch(box, k: int, rgb, **style) -> Rectangle:
    (y0, y1), (x0, x1) = _yx(box, k)
    # above the axes frame, so a box on the input's border is seen on it
    return Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor=rgb, zorder=5,
                     clip_on=False, **style)


def _num(v, digits: int = 2) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{v:.{digits}f}"


def _pair(values, digits: int = 1) -> str:
    return " x ".join(_num(v, digits) for v in values)


def _point(values) -> str:
    return "(" + ", ".join(_num(v, 1) for v in values) + ")"


def _unit_text(index) -> str:
    return f"({', '.join(map(str, index))})"


def _draw_erf(ax, field, plane: np.ndarray, scale: str, normalise: bool = False):
    """One heat panel with the RF box, both centres and the 1- and 2-sigma ellipses; returns
    the image for a colour bar."""
    h, w = plane.shape
    top = float(plane.max()) if plane.size else 0.0
    data = plane / top if normalise and top > 0 else plane
    top = 1.0 if normalise and top > 0 else top
    if scale == "log" and top > 0:
        floor = top * LOG_FLOOR
        norm = LogNorm(vmin=floor, vmax=top)
        data = np.maximum(data, floor)
    else:
        norm = Normalize(vmin=0, vmax=top if top > 0 else 1)
    image = ax.imshow(data, cmap=HEAT_CMAP, norm=norm, extent=(-0.5, w - 0.5, h - 0.5, -0.5),
                      interpolation="nearest", aspect="equal" if field.heat.ndim > 1 else "auto")
    k = field.heat.ndim
    if field.rf.mask.any():
        ax.add_patch(_box_patch(field.rf.box, k, HEAT_BOX_RGB, linewidth=1.4))
    (cy, cx), _ = _plane_geometry(field.rf_center, np.zeros((k, k)))
    ax.plot([cx], [cy], marker="+", markersize=11, markeredgewidth=1.6, color=HEAT_BOX_RGB, linestyle="none",
            zorder=6)
    (my, mx), cov = _plane_geometry(field.center_of_mass, field.covariance)
    if np.isfinite(mx) and np.isfinite(my):
        ax.plot([mx], [my], marker="x", markersize=7, markeredgewidth=1.4, color=GAUSS_RGB, linestyle="none",
                zorder=6)
    if cov is not None:
        for sigmas, style in ((1, "-"), (2, "--")):
            e = _sigma_ellipse((my, mx), cov, sigmas, edgecolor=GAUSS_RGB, linewidth=1.2, linestyle=style, zorder=6)
            if e is not None:
                ax.add_patch(e)
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    if top <= 0:
        ax.text(0.5, 0.5, "all-zero map:\nno gradient reached the input", transform=ax.transAxes,
                ha="center", va="center", color="white", fontsize=9)
    return image


def _erf_legend() -> list:
    return [Line2D([], [], color=HEAT_BOX_RGB, linewidth=1.4, label="theoretical RF box"),
            Line2D([], [], color=HEAT_BOX_RGB, marker="+", linestyle="none", markersize=9, label="RF centre"),
            Line2D([], [], color=GAUSS_RGB, marker="x", linestyle="none", markersize=7, label="centre of mass"),
            Line2D([], [], color=GAUSS_RGB, linewidth=1.2, label="1σ (moment Gaussian)"),
            Line2D([], [], color=GAUSS_RGB, linewidth=1.2, linestyle="--", label="2σ")]


def _area_text(ratios: dict) -> str:
    return ", ".join(f"{int(t * 100)}%: " + ("not reached" if r is None else f"{r[1]:.3f}") for t, r in ratios.items())


def _check_scale(scale: str, allowed) -> list[str]:
    if scale not in allowed:
        raise RFLensError(f"scale must be one of {', '.join(allowed)}, not {scale!r}")
    return list(SCALES) if scale == "both" else [scale]


def _log_title() -> str:
    return f"log colour scale (values below max/{1 / LOG_FLOOR:.0f} shown at that floor)"


def erf_figure(field: EffectiveField, scale: str = "both") -> Figure:
    """Heat map(s) of an ``EffectiveField``: ``"linear"``, ``"log"`` (a LogNorm whose floor is
    max/1000) or ``"both"`` side by side, each with a colour bar, the theoretical RF box
    (clipped to the input), the unit's exact RF centre (+), the centre of mass (x) and the moment
    Gaussian's 1- and 2-sigma ellipses (full covariance); numbers in the caption."""
    scales = _check_scale(scale, ("linear", "log", "both"))
    plane, how = _plane(field.heat, HEAT_PROJECTED)
    fig = Figure(figsize=(4.6 * len(scales) + 0.6, 5.3), dpi=100, layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(scales)))
    for ax, s in zip(axes, scales):
        image = _draw_erf(ax, field, plane, s)
        fig.colorbar(image, ax=ax, shrink=0.85, label="mean gradient" + (" (log)" if s == "log" else ""))
        ax.set_title("linear colour scale" if s == "linear" else _log_title(), fontsize=8)
    axes[0].legend(handles=_erf_legend(), fontsize=7, loc="upper left", framealpha=0.8)
    channel = "all channels" if field.channel is None else f"channel {field.channel}"
    fig.suptitle(f"effective RF · {field.layer} · unit {_unit_text(field.unit)} ({channel}) · mode {field.mode} · "
                 f"{field.count} inputs\nσ = {_pair(field.sigma)} px (rows x cols)", fontsize=10)
    lines = [f"σ {_pair(field.sigma)} px; 4σ/TRF {_pair(field.trf_ratio, 2)}; centre of mass "
             f"{_point(field.center_of_mass)} vs RF centre {_point(field.rf_center)}",
             f"RepLKNet area ratio {_area_text(field.area_ratio)}",
             f"inputs: {field.source}, {field.count} used"
             + (f", {len(field.skipped)} skipped" if field.skipped else "")]
    if how:
        lines.append(how)
    fig.supxlabel("\n".join(lines), fontsize=8)
    return fig


def erf_comparison_figure(fields: dict[str, EffectiveField], scale: str = "log", cols: int = 4) -> Figure:
    """Several ``EffectiveField``s side by side (models, layers, modes), each scaled to its own
    maximum under the same rule, so the spread, not the magnitude, is compared; one shared
    colour bar per scale.  ``scale="both"`` gives a linear and a log row per field."""
    if not fields:
        raise RFLensError("erf_comparison_figure needs at least one field")
    scales = _check_scale(scale, ("linear", "log", "both"))
    n = len(fields)
    cols = max(1, min(cols, n))
    blocks = -(-n // cols)
    rows = blocks * len(scales)
    fig = Figure(figsize=(3.6 * cols + 0.8, 3.9 * rows + 0.6), dpi=100, layout="constrained")
    axes = np.atleast_2d(fig.subplots(rows, cols, squeeze=False))
    images: dict[str, list] = {s: [] for s in scales}
    notes = set()
    for i, (name, field) in enumerate(fields.items()):
        plane, how = _plane(field.heat, HEAT_PROJECTED)
        if how:
            notes.add(how)
        for si, s in enumerate(scales):
            ax = axes[(i // cols) * len(scales) + si, i % cols]
            images[s].append((ax, _draw_erf(ax, field, plane, s, normalise=True)))
            ax.set_title(f"{name}" + (f" ({s})" if len(scales) > 1 else ""), fontsize=9)
            ax.set_xlabel(f"σ {_pair(field.sigma)} px · 4σ/TRF {_pair(field.trf_ratio, 2)}\n"
                          f"unit {_unit_text(field.unit)} · RF box {_fmt([b - a for a, b in field.rf.box])} · "
                          f"{field.count} inputs", fontsize=7)
            ax.tick_params(labelsize=7)
    used = {id(ax) for s in scales for ax, _ in images[s]}
    for ax in axes.ravel():
        if id(ax) not in used:
            ax.set_axis_off()
    for s in scales:
        fig.colorbar(images[s][0][1], ax=[ax for ax, _ in images[s]], shrink=0.8,
                     label="heat / panel max" + (" (log)" if s == "log" else ""))
    modes = sorted({f.mode for f in fields.values()})
    rule = "linear" if scales == ["linear"] else (f"log, floor max/{1 / LOG_FLOOR:.0f}" if scales == ["log"]
                                                  else f"linear and log (floor max/{1 / LOG_FLOOR:.0f})")
    fig.suptitle(f"effective receptive fields · mode {', '.join(modes)} · each panel / its max, {rule}",
                 fontsize=10)
    axes.ravel()[0].legend(handles=_erf_legend(), fontsize=6, loc="upper left", framealpha=0.8)
    if notes:
        fig.supxlabel("; ".join(sorted(notes)), fontsize=8)
    return fig


def gradient_categories(gf: GradientField) -> np.ndarray:
    """Per input pixel, the index into ``CATEGORIES`` of what the gradient did there."""
    code = {name: i for i, (name, _, _) in enumerate(CATEGORIES)}
    out = np.zeros(gf.rf.mask.shape, np.int8)
    for cause in ("other", "max", "activations"):
        out[gf.missed[cause]] = code[cause]
    out[gf.nonzero & gf.rf.mask] = code["nonzero"]
    out[gf.outside] = code["outside"]
    return out


def gradient_figure(gf: GradientField) -> Figure:
    """A ``GradientField``: left, log |gradient| (zeros white) with the theoretical RF box;
    right, every pixel of the theoretical support coloured by what the gradient did there
    (nonzero, or missed and why), with counts in the legend."""
    heat, how = _plane(gf.heat, HEAT_PROJECTED)
    cats = gradient_categories(gf)
    cats = cats.max(axis=0) if cats.ndim == 3 else (cats[None, :] if cats.ndim == 1 else cats)
    h, w = heat.shape
    extent = (-0.5, w - 0.5, h - 0.5, -0.5)
    aspect = "equal" if gf.heat.ndim > 1 else "auto"
    fig = Figure(figsize=(11, 4.5), dpi=100, layout="constrained")
    left, right = fig.subplots(1, 2)
    top = float(heat.max())
    cmap = _cmap(HEAT_CMAP).with_extremes(bad="white")
    if top > 0:
        floor = top * GRAD_LOG_FLOOR
        cmap = cmap.with_extremes(under=cmap(0.0))
        image = left.imshow(np.ma.masked_equal(heat, 0), cmap=cmap, norm=LogNorm(vmin=floor, vmax=top),
                            extent=extent, interpolation="nearest", aspect=aspect)
        fig.colorbar(image, ax=left, shrink=0.75, extend="min", label="|gradient| (log)")
        left.set_title(f"|gradient| summed over input channels, log scale\nwhite: exactly 0; below "
                       f"max/{1 / GRAD_LOG_FLOOR:.0f}: the floor colour", fontsize=8)
    else:
        left.imshow(np.ones((h, w, 3)), extent=extent, interpolation="nearest", aspect=aspect)
        left.text(0.5, 0.5, "the gradient is exactly 0 everywhere", transform=left.transAxes, ha="center",
                  va="center", fontsize=10, bbox={"facecolor": "white", "edgecolor": "0.6"}, zorder=7)
        left.set_title("|gradient| (white: exactly 0)", fontsize=8)
    colours = [rgb for _, _, rgb in CATEGORIES]
    right.imshow(cats, cmap=ListedColormap(colours), norm=BoundaryNorm(np.arange(len(colours) + 1) - 0.5, len(colours)),
                 extent=extent, interpolation="nearest", aspect=aspect)
    k = gf.heat.ndim
    for ax in (left, right):
        if gf.rf.mask.any():
            ax.add_patch(_box_patch(gf.rf.box, k, HEAT_BOX_RGB if ax is left else BOX_RGB, linewidth=1.4))
        ax.set_xlim(-0.5, w - 0.5)
        ax.set_ylim(h - 0.5, -0.5)
    counts = _category_counts(gf)
    handles = [Patch(facecolor=rgb, edgecolor="0.3", label=f"{label}: {counts[name]}")
               for name, label, rgb in reversed(CATEGORIES) if name != "background"]
    handles.append(Line2D([], [], color=BOX_RGB, linewidth=1.4, label="theoretical RF box"))
    right.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0)
    right.set_title("theoretical support: reached by the gradient, or missed and why", fontsize=8)
    support = int(gf.rf.mask.sum())
    missed = ", ".join(f"{counts[c]} {c}" for c in ("activations", "max", "other"))
    channel = "" if gf.channel is None else f" channel {gf.channel}"
    fig.suptitle(f"gradient RF · {gf.layer} · unit {_unit_text(gf.unit)}{channel} · input: "
                 f"{_input_name(gf.input_kind)}\n{counts['nonzero']} of {support} pixels of the theoretical RF "
                 f"have a nonzero gradient; missed: {missed}; outside: {counts['outside']}", fontsize=10)
    if how:
        fig.supxlabel(how, fontsize=8)
    return fig


def _input_name(kind: str) -> str:
    """An image input by its file name: the folder is noise in a title."""
    return f"image {Path(kind[6:]).name}" if kind.startswith("image ") else kind


def _category_counts(gf) -> dict[str, int]:
    return {"nonzero": int((gf.nonzero & gf.rf.mask).sum()), "outside": int(gf.outside.sum()),
            **{c: int(m.sum()) for c, m in gf.missed.items()}}


def _cmap(name: str):
    from matplotlib import colormaps
    return colormaps[name]


# -- empirical receptive fields (Zhou et al. 2015) and segmentations -----------------------------

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


def _draw_empirical(ax, field: EmpiricalField, marks: bool = True):
    """The averaged canvas with the theoretical (cyan) and empirical (green) squares around its
    centre pixel; returns the image for a colour bar."""
    heat = field.heat
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
    return image


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
    for ax, c in zip(axes, channels):
        field = result.fields[c]
        _draw_empirical(ax, field, marks=False)
        ax.set_title(f"channel {c}: {field.size or 'n/a'} px", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[len(channels):]:
        ax.set_axis_off()
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


def save(fig: Figure, path: str | Path) -> Path:
    """Write the figure (format from the extension) without leaving a half-written file."""
    path = Path(path)
    ext = path.suffix.lower().lstrip(".")
    if ext not in ("png", "svg", "pdf"):
        raise RFLensError(f"cannot write '{path}': use a .png, .svg or .pdf name")
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format=ext))


def to_png(fig: Figure) -> bytes:
    import io
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
