"""The seed's pictures on trained networks, on real photographs.

1. ``depth_<model>``: on one photograph, for each layer the neuron that fires most (the channel
   with the highest activation, at its peak position): its exact theoretical RF, its gradient RF
   (|d neuron / d pixel| with the trained weights) and its occlusion map (Zhou et al.), side by side.
2. ``units_<model>``: the channels of a deep layer whose top images agree most on what they show
   (the photographs' categories in the offline image set), each with its top images segmented
   by the channel (NetDissect's threshold).
3. ``vgg16_grid_trained``: the seed's VGG-16 grid, unit (3, 3) across the pools, with the
   theoretical RF beside the gradient RF of the trained trunk on the photograph.

    python reproductions/pictures.py        # after reproductions/zhou.py (it reuses the scans)

Figures go to ``docs/img/`` as PNG and SVG; numbers to ``docs/reproductions/pictures.json``.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

import rflens  # noqa: E402
from rflens.files import atomic_write  # noqa: E402
from rflens.methods.images import load_image, to_tensor  # noqa: E402
from rflens.plot import BOX_RGB, HEAT_BOX_RGB, MASK_RGB, save, segment_sheet  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import IMG, ROOT, heat_cmap, parser, save_figure  # noqa: E402
from zhou import LAYERS  # noqa: E402
PHOTO = "skimage-cat.jpg"


def _plane(heat: np.ndarray) -> np.ndarray:
    """|gradient| per pixel, summed over input channels where the map keeps them."""
    heat = np.abs(heat)
    return heat.sum(0) if heat.ndim == 3 else heat


def _px_axes(ax, h: int, w: int) -> None:
    ax.set_xticks([0, w // 2, w - 1])
    ax.set_yticks([0, h // 2, h - 1])
    ax.tick_params(labelsize=6, length=2)


def _outline(ax, box, colour, style="-") -> None:
    (y0, y1), (x0, x1) = box
    ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor=colour, lw=1.3,
                           ls=style, clip_on=True))


def depth_figure(name: str, model, images: Path, log) -> dict:
    """One photograph, one neuron per layer: theoretical | gradient | occlusion."""
    picture = load_image(images / PHOTO, (224, 224))
    x = to_tensor(picture, 3, *model.rflens_normalize)
    analysis = rflens.analyze(model, (3, 224, 224))
    layers = list(LAYERS[name])
    fig, axes = plt.subplots(len(layers), 3, figsize=(7.2, 2.35 * len(layers)), constrained_layout=True,
                             squeeze=False)
    rows = []
    for r, layer in enumerate(layers):
        scan = rflens.top_images(model, layer, x[None], k=1)
        channel = int(np.argmax(scan.scores[:, 0]))
        unit = tuple(int(v) for v in scan.top(channel)[0].where)
        field = analysis[layer].unit(unit, channel=channel)
        grad = rflens.gradient_field(model, layer, unit, x, channel=channel)
        emp = rflens.empirical_field(model, layer, [channel], x[None], scan=scan, k=1,
                                     occluder=rflens.Occluder(11, 3, "random"))
        occlusion = np.abs(emp.fields[channel].maps[0].heat)
        g = _plane(grad.heat)
        ax = axes[r, 0]
        ax.imshow(picture.pixels * 0.55 + 0.45, interpolation="nearest")
        tint = np.zeros((224, 224, 4))
        tint[field.mask] = (*MASK_RGB, 0.45)
        ax.imshow(tint, interpolation="nearest")
        _outline(ax, field.box, BOX_RGB)
        side = max(b - a for a, b in field.box)
        ax.set_title(f"{LAYERS[name][layer]} ch {channel} at {unit}\ntheoretical RF {side} px"
                     + (" (clipped)" if field.clipped else ""), fontsize=7)
        for ax, heat, what in ((axes[r, 1], g, "gradient |∂a/∂x|"), (axes[r, 2], occlusion, "occlusion |Δa|")):
            top = float(heat.max())
            im = ax.imshow(np.ma.masked_less_equal(heat, 0), cmap=heat_cmap(), norm=LogNorm(top / 1e3, top),
                           interpolation="nearest")
            _outline(ax, field.box, HEAT_BOX_RGB, "--")
            covered = float((heat >= top * 0.1).sum() ** 0.5)
            ax.set_title(f"{what}\n√area ≥ 10% of max: {covered:.0f} px", fontsize=7)
            cb = fig.colorbar(im, ax=ax, shrink=0.8)
            cb.ax.tick_params(labelsize=5)
        for ax in axes[r]:
            _px_axes(ax, 224, 224)
        rows.append({"layer": layer, "name": LAYERS[name][layer], "channel": channel, "unit": list(unit),
                     "theoretical": side, "gradient_sqrt_area_10pct": float((g >= g.max() * 0.1).sum() ** 0.5),
                     "occlusion_sqrt_area_10pct": float((occlusion >= occlusion.max() * 0.1).sum() ** 0.5)})
        log(f"  depth {layer}: channel {channel} at {unit}")
    fig.suptitle(f"{'VGG-16' if name == 'vgg16_hed' else 'MobileNetV2'} (trained): the most active neuron "
                 f"of each layer on one photograph", fontsize=9)
    save_figure(fig, IMG / f"depth_{name}", dpi=130)
    return {"photo": PHOTO, "rows": rows}


def category(file: str) -> str | None:
    """What a photograph of the image set shows, from its name: the Tux Paint stamp's folder
    (``animals_birds``); None for the other sources, whose names do not say."""
    stem = Path(file).stem
    tux = "tuxpaint-stamps-default-"
    if not stem.startswith(tux):
        return None
    parts = stem[len(tux):].split("_")
    return "_".join(parts[:2]) if len(parts) > 2 else parts[0]


def units_figure(name: str, model, layer: str, images: Path, runs: Path, count: int, log) -> list[dict]:
    """The ``count`` channels of ``layer`` whose top-5 images share a category most often (the
    scan of ``reproductions/zhou.py``, whose image folder must be given as it was there)."""
    scan = rflens.top_images(model, layer, images, k=10, out=runs / name / layer / "scan")
    found = []
    for c in range(scan.channels):
        cats = Counter(category(t.name) for t in scan.top(c)[:5])
        cats.pop(None, None)
        if not cats:
            continue
        what, n = cats.most_common(1)[0]
        found.append((n, float(scan.scores[c, :5].mean()), c, what))
    found.sort(reverse=True)
    chosen = []
    for n, score, c, what in found:
        if what in {w for *_, w in chosen}:
            continue  # one channel per category, so the sheet shows several concepts
        chosen.append((n, score, c, what))
        if len(chosen) == count:
            break
    out = []
    for n, score, c, what in chosen:
        segments = rflens.segment(model, layer, c, scan=scan, k=5, method="netdissect")
        fig = segment_sheet(segments, title=f"{layer} channel {c}: {n} of its top 5 images are {what}")
        save(fig, IMG / f"units_{name}_{c}.png")
        out.append({"layer": layer, "channel": c, "category": what, "agree": n, "top": [t.name for t in
                                                                                        scan.top(c)[:5]]})
        log(f"  units {layer} channel {c}: {n}/5 {what}")
    return out


def grid_figure(model, images: Path) -> dict:
    """The seed's grid: unit (3, 3) at VGG-16's pools, theoretical RF over the gradient RF."""
    picture = load_image(images / PHOTO, (224, 224))
    x = to_tensor(picture, 3, *model.rflens_normalize)
    analysis = rflens.analyze(model, (3, 224, 224))
    layers = list(LAYERS["vgg16_hed"])
    fig, axes = plt.subplots(2, len(layers), figsize=(2.3 * len(layers), 5.0), constrained_layout=True,
                             squeeze=False)
    numbers = []
    for j, layer in enumerate(layers):
        grid = analysis[layer].grid_shape
        unit = tuple(min(3, n - 1) for n in grid)
        field = analysis[layer].unit(unit)
        g = _plane(rflens.gradient_field(model, layer, unit, x).heat)
        ax = axes[0, j]
        ax.imshow(picture.pixels * 0.55 + 0.45)
        tint = np.zeros((224, 224, 4))
        tint[field.mask] = (*MASK_RGB, 0.5)
        ax.imshow(tint)
        _outline(ax, field.box, BOX_RGB)
        side = max(b - a for a, b in field.box)
        ax.set_title(f"{LAYERS['vgg16_hed'][layer]} ({layer})\nunit {unit}: RF {analysis[layer].rf_size[0]} px, "
                     f"{side} inside", fontsize=7)
        ax = axes[1, j]
        im = ax.imshow(np.ma.masked_less_equal(g / g.max(), 0), cmap=heat_cmap(), norm=LogNorm(1e-3, 1))
        _outline(ax, field.box, HEAT_BOX_RGB, "--")
        ax.set_title("gradient RF, trained weights", fontsize=7)
        for a in axes[:, j]:
            _px_axes(a, 224, 224)
        numbers.append({"layer": layer, "unit": list(unit), "rf": side, "nonzero": int((g > 0).sum())})
    fig.colorbar(im, ax=axes[1, :].tolist(), shrink=0.8, label="|∂ unit / ∂ pixel| / max")
    fig.suptitle("VGG-16 unit (3, 3) across the pools: exact RF (top) and where the trained trunk's "
                 "gradient reaches (bottom)", fontsize=9)
    save_figure(fig, IMG / "vgg16_grid_trained", dpi=130)
    return {"rows": numbers}


def main(argv=None) -> int:
    ap = parser(__doc__, list(LAYERS))
    ap.add_argument("--only", choices=["depth", "units", "grid"], action="append")
    args = ap.parse_args(argv)

    def log(msg):
        print(msg, file=sys.stderr, flush=True)
    out_file = ROOT / "docs" / "reproductions" / "pictures.json"
    record = json.loads(out_file.read_text()) if out_file.exists() else {}
    parts = args.only or ["depth", "units", "grid"]
    for name in args.model or ("vgg16_hed", "mobilenet_v2"):
        model = rflens.load_model(f"trained:{name}", device="cpu")
        if "depth" in parts:
            record[f"depth_{name}"] = depth_figure(name, model, args.images, log)
        if "units" in parts:
            deep = {"vgg16_hed": "features.30", "mobilenet_v2": "features.17"}[name]
            record[f"units_{name}"] = units_figure(name, model, deep, args.images, args.runs, 3, log)
        if "grid" in parts and name == "vgg16_hed":
            record["vgg16_grid_trained"] = grid_figure(model, args.images)
        text = json.dumps(record, indent=1) + "\n"
        atomic_write(out_file, lambda tmp: Path(tmp).write_text(text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
