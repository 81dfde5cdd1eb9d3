"""Gradient and effective receptive fields: one unit's |gradient| and what it missed, an ERF's
heat maps with the theoretical box and the moment Gaussian, and ERFs side by side.

>>> import rflens, torch.nn as nn
>>> model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 1, 3))
>>> erf = rflens.effective_field(model, "2", inputs=2, input_size=(1, 12, 12), device="cpu")
>>> len(erf_figure(erf, scale="log").axes), erf_png(erf)[:4]
(2, b'\\x89PNG')
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.colors import BoundaryNorm, ListedColormap, LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Ellipse, Patch, Rectangle

from ..errors import RFLensError
from .common import BOX_RGB, HEAT_BOX_RGB, HEAT_CMAP, HEAT_PROJECTED, _fmt, _plane, _yx, to_png

if TYPE_CHECKING:
    from ..methods.gradient import EffectiveField, GradientField

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


def erf_png(field: EffectiveField) -> bytes | None:
    """``EffectiveField._repr_png_``: ``erf_figure`` (both scales) as PNG bytes, or None (Jupyter
    then shows the repr) for a 1-D or 3-D heat map."""
    return to_png(erf_figure(field)) if field.heat.ndim == 2 else None
