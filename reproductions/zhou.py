"""Zhou et al. (ICLR 2015), Table 1, on trained ImageNet networks: is the empirical RF smaller
than the theoretical one, and does the ratio fall with depth?

For each layer: the top-K images of every channel in the offline image set (``make data``),
then, for a fixed random sample of channels, occlusion maps on each of its top images (11x11
occluders of random pixels, stride 3, as in the paper), centred on the peak unit's exact RF
and averaged; the empirical RF is the side of the smallest centred square holding 90% of the
averaged |activation drop|.  Every step resumes: scans and occlusion results are kept under
``data/runs/`` and a rerun skips what is done.

    python reproductions/zhou.py --model vgg16_hed --units 6 --k 3   # as in docs/reproductions.md
    python reproductions/zhou.py --model mobilenet_v2 --units 5 --k 2
    python reproductions/zhou.py --table                             # the table of the saved results

Writes ``docs/reproductions/zhou.json`` and the figure ``docs/img/zhou_ratio.{png,svg}``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

import rflens
from rflens.methods.running import fingerprint

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import IMG, ROOT, parser, save_figure  # noqa: E402

RESULTS = ROOT / "docs" / "reproductions" / "zhou.json"
# the layers compared: VGG-16's five pools; MobileNetV2's block outputs at each resolution step
LAYERS = {
    "vgg16_hed": {"features.4": "pool1", "features.9": "pool2", "features.16": "pool3", "features.23": "pool4",
                  "features.30": "pool5"},
    "mobilenet_v2": {"features.1": "block 1", "features.3": "block 3", "features.6": "block 6",
                     "features.10": "block 10", "features.13": "block 13", "features.17": "block 17"},
    # a modern cross-check (Luo et al.'s comparison only)
    "efficientnet_lite0": {"_blocks.1": "block 1", "_blocks.3": "block 3", "_blocks.5": "block 5",
                           "_blocks.8": "block 8", "_blocks.11": "block 11", "_blocks.15": "block 15"},
}
# Zhou et al. 2015, Table 1 (ImageNet-CNN/Places-CNN, AlexNet): theoretical, empirical mean, std
ZHOU = {"pool1": (19, 17.8, 1.6), "pool2": (67, 37.4, 5.9), "conv3": (99, 52.1, 10.6), "conv4": (131, 60.0, 13.7),
        "pool5": (195, 72.0, 20.0)}


def channels_of(n: int, units: int, seed: int = 0) -> list[int]:
    """A fixed random sample of ``units`` channels out of ``n``."""
    return sorted(np.random.default_rng(seed).choice(n, size=min(units, n), replace=False).tolist())


def through_occluder(theoretical: int, size: int = 224, occluder: int = 11, stride: int = 3,
                     mass: float = 0.9) -> int:
    """What the same measure gives a unit at the image centre that is equally sensitive to every
    pixel of its theoretical RF (clipped to the image): an occluder changes the unit as much as it
    covers of the field, and each pixel gets the mean change of the occluders covering it, so the
    map is the field blurred by the occluder, wider by up to ``occluder - 1`` px, and 90% of it
    fits a square a little smaller than that.  Empirical sizes are compared with this too."""
    from rflens.methods.spread import centred_square
    c = size // 2
    rf = np.zeros((size, size))
    lo = max(0, c - theoretical // 2)
    rf[lo:min(size, lo + theoretical), lo:min(size, lo + theoretical)] = 1
    total, count = np.zeros((size, size)), np.zeros((size, size))
    for y in range(0, size - occluder + 1, stride):
        for x in range(0, size - occluder + 1, stride):
            window = (slice(y, y + occluder), slice(x, x + occluder))
            total[window] += rf[window].sum()
            count[window] += 1
    heat = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
    return centred_square(heat, mass, (c, c))[0]


def run_layer(model, name: str, layer: str, images: Path, units: int, k: int, runs: Path, log) -> dict:
    folder = runs / name / layer
    t = time.perf_counter()
    scan = rflens.top_images(model, layer, images, k=max(k, 10), out=folder / "scan",
                             progress=lambda d, n: log(f"\r  scan {layer}: {d}/{n} images", end=""))
    log("")
    chosen = channels_of(scan.channels, units)
    res = rflens.empirical_field(model, layer, chosen, scan=scan, k=k, occluder=rflens.Occluder(11, 3, "random"),
                                 checkpoint=folder / "empirical.npz",
                                 progress=lambda d, n: log(f"\r  occlusion {layer}: {d}/{n} images", end=""))
    log("")
    sizes = res.sizes
    theoretical = int(res.theoretical[0])
    row = {"layer": layer, "name": LAYERS[name][layer], "theoretical": theoretical, "units": len(chosen),
           "channels": chosen, "k": k, "empirical_mean": float(sizes.mean()), "empirical_std": float(sizes.std()),
           "ratio": float(sizes.mean() / theoretical), "sizes": sizes.astype(int).tolist(),
           "ideal": through_occluder(min(theoretical, 224)),
           "incremental": not res.fallback, "seconds": round(time.perf_counter() - t, 1)}
    np.save(folder / "heat.npy", np.mean([f.heat for f in res.fields.values()], axis=0))
    log(f"  {layer}: theoretical {theoretical}, empirical {row['empirical_mean']:.1f} +- {row['empirical_std']:.1f} "
        f"(ratio {row['ratio']:.2f}) in {row['seconds']} s")
    return row


def markdown(results: dict) -> str:
    """The Table 1 rows of each network, then Zhou et al.'s AlexNet rows."""
    lines = ["| network | layer | theoretical RF | the same RF seen through the occluder | empirical RF (mean ± std) "
             "| empirical / theoretical | empirical / seen through the occluder | units x top images | time |",
             "|---|---|---|---|---|---|---|---|---|"]
    names = {"vgg16_hed": "VGG-16 (HED trunk)", "mobilenet_v2": "MobileNetV2"}
    for name, rows in results.items():
        for r in rows:
            ideal = r.get("ideal") or through_occluder(min(r["theoretical"], 224))
            lines.append(f"| {names.get(name, name)} | {r['name']} (`{r['layer']}`) | {r['theoretical']} | {ideal} | "
                         f"{r['empirical_mean']:.1f} ± {r['empirical_std']:.1f} | {r['ratio']:.2f} | "
                         f"{r['empirical_mean'] / ideal:.2f} | {r['units']} x {r['k']} | {r['seconds']:.0f} s |")
    for layer, (t, m, sd) in ZHOU.items():
        lines.append(f"| AlexNet (Zhou et al., Table 1) | {layer} | {t} | - | {m} ± {sd} | {m / t:.2f} | - | - | - |")
    return "\n".join(lines)


def figure(results: dict, out: Path) -> None:
    """Left: empirical against theoretical RF, with the theoretical RF itself and what the
    occlusion measure gives a uniformly sensitive field; right: the ratio layer by layer."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from rflens.plot import LAYER_COLOURS
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.6, 3.9), constrained_layout=True)
    labels = {"vgg16_hed": "VGG-16, trained", "mobilenet_v2": "MobileNetV2, trained"}
    t = np.unique(np.geomspace(5, 520, 60).astype(int))
    left.plot(t, t, color="0.5", lw=1, ls=":", label="empirical = theoretical")
    left.plot(t, [through_occluder(min(v, 224)) for v in t], color="0.3", lw=1, ls="--",
              label="a uniformly sensitive field, seen through the occluder")
    zhou = np.array(list(ZHOU.values()), float)
    series = [("AlexNet (Zhou et al. 2015, Table 1)", zhou[:, 0], zhou[:, 1], zhou[:, 2], zhou[:, 1] / zhou[:, 0],
               "o--")]
    for name, rows in results.items():
        th = np.array([r["theoretical"] for r in rows], float)
        mean = np.array([r["empirical_mean"] for r in rows])
        ideal = np.array([through_occluder(min(int(v), 224)) for v in th], float)
        series.append((labels.get(name, name), th, mean, np.array([r["empirical_std"] for r in rows]), mean / ideal,
                       "s-"))
    for (label, th, mean, std, ratio, style), colour in zip(series, LAYER_COLOURS):
        left.errorbar(th, mean, yerr=std, fmt=style, color=colour, capsize=3, lw=1.4, ms=4, label=label)
        right.plot(np.arange(1, len(ratio) + 1), ratio, style, color=colour, lw=1.4, ms=4, label=label)
    left.set_xscale("log")
    left.set_yscale("log")
    left.set_xlabel("theoretical RF (px)")
    left.set_ylabel("empirical RF (px, 90% of the map)")
    left.legend(frameon=False, fontsize=7)
    left.set_title("11x11 occluders, stride 3, on 224 px photographs", fontsize=8)
    right.axhline(1, color="0.6", lw=0.8, ls=":")
    right.set_xlabel("depth (the layers in the table, in order)")
    right.set_ylabel("empirical / expected")
    right.set_ylim(0, 1.3)
    right.set_title("ours: / the uniform field seen through the occluder;\nZhou's AlexNet: / theoretical", fontsize=8)
    right.legend(frameon=False, fontsize=7)
    save_figure(fig, out, dpi=160)


def main(argv=None) -> int:
    ap = parser(__doc__, list(LAYERS))
    ap.add_argument("--layers", help="comma-separated layers (default: all of the model's)")
    ap.add_argument("--units", type=int, default=8, help="channels per layer (a fixed random sample)")
    ap.add_argument("--k", type=int, default=5, help="top images per channel")
    ap.add_argument("--table", action="store_true", help="print the table of the saved results and stop")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    if args.table:
        print(markdown(json.loads(RESULTS.read_text())["models"]))
        return 0

    def log(msg, end="\n"):
        print(msg, end=end, file=sys.stderr, flush=True)
    saved = json.loads(RESULTS.read_text())["models"] if RESULTS.exists() else {}
    results = {}  # only the networks this run works on: another run may be writing the others
    for name in args.model or ("vgg16_hed", "mobilenet_v2"):
        model = rflens.load_model(f"trained:{name}", device="cpu")
        layers = args.layers.split(",") if args.layers else list(LAYERS[name])
        log(f"{name} (weights {fingerprint(model)})")
        rows = {r["layer"]: r for r in saved.get(name, [])}
        for layer in layers:
            row = run_layer(model, name, layer, args.images, args.units, args.k, args.runs, log)
            old = rows.get(layer)
            if old and (old["channels"], old["k"]) == (row["channels"], row["k"]):
                row["seconds"] = max(row["seconds"], old["seconds"])  # the run that computed it, not a reload
            rows[layer] = row
            results[name] = [rows[n] for n in LAYERS[name] if n in rows]
            save(results, args)
    figure(json.loads(RESULTS.read_text())["models"], IMG / "zhou_ratio")
    return 0


def save(results: dict, args) -> None:
    from rflens.files import atomic_write
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    # another run may be writing another network's rows: keep them, and the command of each
    before = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"meta": {}, "models": {}}
    command = "python reproductions/zhou.py " + " ".join(sys.argv[1:])
    meta = {"commands": {**before["meta"].get("commands", {}), **{name: command for name in results}},
            "images": len([p for p in args.images.glob("*.jpg")]),
            "occluder": "11x11 random pixels, stride 3", "mass": 0.9, "torch": torch.__version__}
    text = json.dumps({"meta": meta, "models": {**before["models"], **results}}, indent=1) + "\n"
    atomic_write(RESULTS, lambda tmp: Path(tmp).write_text(text))


if __name__ == "__main__":
    sys.exit(main())
