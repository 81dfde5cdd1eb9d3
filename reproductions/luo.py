"""Luo et al. (NeurIPS 2016) on trained ImageNet networks: does the effective RF grow with training?

For each layer, the effective RF of its centre unit (mean |d unit / d pixel| over the offline
photographs, summed over channels) with the trained weights and with the same architecture at
its random initialisation (torchvision's, seed 0), on the same photographs; per layer the
moment-matched sigma, the radii holding 50% and 90% of the gradient mass, the 4-sigma extent
over the theoretical RF (``trf_ratio``) and RepLKNet's high-contribution area ratio (20%).

    python reproductions/luo.py                 # both networks, 200 photographs
    python reproductions/luo.py --model mobilenet_v2 --limit 32

Writes ``docs/reproductions/luo.json`` and ``docs/img/luo_erf.{png,svg}``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

import rflens
from rflens.files import atomic_write

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import IMG, ROOT, heat_cmap, parser, save_figure  # noqa: E402
from zhou import LAYERS  # noqa: E402 - the same layers as the empirical RF table

RESULTS = ROOT / "docs" / "reproductions" / "luo.json"


def random_twin(name: str) -> torch.nn.Module:
    """The trained network's architecture at its own random initialisation (seed 0), reading
    the same normalised pixels."""
    from rflens.models.trained import TRAINED, VGG16Trunk
    torch.manual_seed(0)
    if name == "vgg16_hed":
        model = VGG16Trunk()  # torchvision's VGG-16 initialisation (VGG.__init__)
    elif name == "efficientnet_lite0":
        from efficientnet_lite_pytorch import EfficientNet
        model = EfficientNet.from_name("efficientnet-lite0")  # PyTorch's default initialisation
    else:
        model = rflens.load_model(name, device="cpu")
    model.rflens_normalize = TRAINED[name].normalize
    return model.eval()


def measure(model, layer: str, images: Path, limit: int, checkpoint: Path) -> dict:
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    erf = rflens.effective_field(model, layer, "center", images, limit=limit, checkpoint=checkpoint)
    d = erf.to_dict()
    return {"sigma": float(np.mean(erf.sigma)), "r50": d["mass_radii"]["50%"], "r90": d["mass_radii"]["90%"],
            "trf_ratio": float(np.mean(erf.trf_ratio)),
            "area20": None if erf.area_ratio[0.2] is None else erf.area_ratio[0.2][1],
            "theoretical": int(max(b - a for a, b in erf.rf.box)), "inputs": erf.count, "heat": erf.heat}


def figure(heats: dict, results: dict, out: Path) -> None:
    """Per network, a row of trained and a row of random ERFs (each scaled to its maximum, log
    colours, shown on a window 1.6 times the theoretical RF around the centre), and sigma
    against depth."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm
    from rflens.plot import LAYER_COLOURS
    cmap = heat_cmap()
    names = [n for n in results if n in heats]
    cols = max(len(LAYERS[n]) for n in names) + 1
    fig, axes = plt.subplots(2 * len(names), cols, figsize=(1.95 * cols, 2.05 * 2 * len(names)),
                             constrained_layout=True, squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    image = None
    for i, name in enumerate(names):
        rows = results[name]
        for j, row in enumerate(rows):
            for k, kind in enumerate(("trained", "random")):
                ax = axes[2 * i + k, j]
                ax.set_axis_on()
                heat = heats[name][kind][row["layer"]]
                h, w = heat.shape
                half = min(h // 2, max(12, int(0.8 * row["theoretical"])))
                cy, cx = h // 2, w // 2
                part = heat[cy - half:cy + half, cx - half:cx + half]
                image = ax.imshow(np.ma.masked_less_equal(part / part.max(), 0), cmap=cmap, norm=LogNorm(1e-3, 1),
                                  interpolation="nearest", extent=(-half - 0.5, half - 0.5, half - 0.5, -half - 0.5))
                ax.set_xticks([-half + 1, 0, half - 1])
                ax.set_yticks([-half + 1, 0, half - 1])
                ax.tick_params(labelsize=5, length=1.5)
                ax.set_title(f"{row['name']}, {kind}\nσ {row[kind]['sigma']:.1f} px (RF {row['theoretical']})",
                             fontsize=7)
        ax = axes[2 * i, cols - 1]
        ax.set_axis_on()
        x = np.arange(len(rows))
        for kind, colour in zip(("trained", "random"), LAYER_COLOURS):
            ax.plot(x, [r[kind]["sigma"] for r in rows], "o-", color=colour, label=kind, ms=3)
        ax.set_xticks(x, [r["name"].replace("block ", "b") for r in rows], fontsize=6, rotation=45)
        ax.set_ylabel("σ (px)", fontsize=7)
        ax.tick_params(labelsize=6)
        ax.legend(fontsize=6, frameon=False)
        ax.set_title({"vgg16_hed": "VGG-16", "mobilenet_v2": "MobileNetV2", "efficientnet_lite0": "EfficientNet-Lite0"}.get(name, name), fontsize=8)
    if image is not None:
        fig.colorbar(image, ax=axes[1::2, -1].tolist(), shrink=0.8, label="mean |gradient| / max (log)")
    fig.suptitle("Effective RFs of the centre unit, trained against random weights, on the same photographs "
                 "(px from the RF centre)", fontsize=9)
    save_figure(fig, out, dpi=150)


def main(argv=None) -> int:
    ap = parser(__doc__, list(LAYERS))
    ap.add_argument("--limit", type=int, default=200, help="photographs per ERF (200)")
    args = ap.parse_args(argv)
    results: dict = {}
    heats: dict = {}
    for name in args.model or sorted(LAYERS, reverse=True):
        models = {"trained": rflens.load_model(f"trained:{name}", device="cpu"), "random": random_twin(name)}
        rows = []
        heats[name] = {"trained": {}, "random": {}}
        for layer, label in LAYERS[name].items():
            t = time.perf_counter()
            row = {"layer": layer, "name": label}
            for kind, model in models.items():
                m = measure(model, layer, args.images, args.limit, args.runs / name / layer / f"erf_{kind}.npz")
                heats[name][kind][layer] = m.pop("heat")
                row[kind] = m
            row["theoretical"] = row["trained"]["theoretical"]
            row["sigma_growth"] = row["trained"]["sigma"] / row["random"]["sigma"]
            rows.append(row)
            print(f"{name} {layer}: sigma trained {row['trained']['sigma']:.1f} px, random {row['random']['sigma']:.1f} "
                  f"px (x{row['sigma_growth']:.2f}), {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
        results[name] = rows
    meta = {"command": "python reproductions/luo.py " + " ".join(sys.argv[1:]), "limit": args.limit,
            "unit": "centre", "mode": "luo", "torch": torch.__version__}
    before = json.loads(RESULTS.read_text())["models"] if RESULTS.exists() else {}
    text = json.dumps({"meta": meta, "models": {**before, **results}}, indent=1) + "\n"  # keeps networks not run
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(RESULTS, lambda tmp: Path(tmp).write_text(text))
    figure(heats, results, IMG / "luo_erf")
    return 0


if __name__ == "__main__":
    sys.exit(main())
