"""Empirical RF (Zhou et al. 2015): rflens' exact fast path against the ways it is usually done.

    python benchmarks/bench_occlusion.py [--quick]

AlexNet and VGG-16 (torchvision, random weights: timing does not depend on the weights),
224x224 photographs from scikit-image, 11x11 random occluders at stride 3 (72 x 72 = 5184
positions per image), a few channels of each layer with their top images.  Compared in one run:

(i)   naive: one forward of the whole model per occluded image, per unit (batch 1);
(ii)  full: per image, every occluder, batched whole-image forwards stopping at the layer,
      shared by all units that image serves;
(iii) captum.attr.Occlusion (forward to the layer, selecting the unit) at its best
      perturbations_per_eval, per unit and image;
and rflens' own fallback path ("crop": batched forwards of the part of the image the units see,
skipping occluders outside their RFs), which the default path (incremental re-inference of
only the occluders' projective fields) replaces wherever the layer's ops allow.

rflens is timed on the whole job (the crop path too, except at VGG-16 pool4 where it would take
most of an hour).  (i) and (ii) would take hours at VGG-16 depth, so they are
timed on a sample of forwards and multiplied by the number of forwards the job needs; (iii) is
timed on one unit and image and multiplied by the number of (unit, image) pairs.  A separate
check runs rflens ("drop", zero fill) and Captum on the same unit and compares the maps.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

import rflens
from common import machine, table
from rflens.models import load_model
from rflens.engine.trace import capture, fx_graph

CASES = [("alexnet", ["features.2", "features.5", "features.12"]),
         ("vgg16", ["features.9", "features.16", "features.23"])]
NO_CROP = {("vgg16", "features.23")}
SIZE = (3, 224, 224)


def photos() -> torch.Tensor:
    from skimage import data
    from rflens.methods.images import Picture, fit, to_tensor
    pics = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket(), data.immunohistochemistry(),
            np.stack([data.camera()] * 3, -1)]
    return torch.stack([to_tensor(fit(p / 255.0, SIZE[1:])) for p in pics])


def per_forward(fn, batch: int, repeat: int = 3) -> float:
    """Seconds per sample of ``fn`` run on batches of ``batch``."""
    fn(batch)
    t = time.perf_counter()
    for _ in range(repeat):
        fn(batch)
    return (time.perf_counter() - t) / (repeat * batch)


def captum_time(model, layer: str, x: torch.Tensor, channel: int, where, graph) -> tuple[float, int]:
    from captum.attr import Occlusion

    def unit(inp):
        return capture(model, inp, layer, graph)[:, channel, where[0], where[1]]
    best, best_ppe = None, None
    for ppe in (64, 256):
        occ = Occlusion(unit)
        t = time.perf_counter()
        with torch.no_grad():
            occ.attribute(x[None], sliding_window_shapes=(3, 11, 11), strides=(3, 3, 3), baselines=0,
                          perturbations_per_eval=ppe)
        dt = time.perf_counter() - t
        if best is None or dt < best:
            best, best_ppe = dt, ppe
    return best, best_ppe


def agreement(model, layer: str, x: torch.Tensor) -> float:
    """Max |rflens - captum| / max |captum| on one unit, zero fill, signed drop."""
    from captum.attr import Occlusion
    scan = rflens.top_images(model, layer, x[None], k=1, device="cpu")
    t = scan.top(0)[0]
    res = rflens.empirical_field(model, layer, [0], x[None], scan=scan, k=1, device="cpu", discrepancy="drop",
                                 occluder=rflens.Occluder(11, 3, "zeros"))
    graph = fx_graph(model)
    with torch.no_grad():
        ref = Occlusion(lambda i: capture(model, i, layer, graph)[:, 0, t.where[0], t.where[1]]).attribute(
            x[None], sliding_window_shapes=(3, 11, 11), strides=(3, 3, 3), baselines=0, perturbations_per_eval=64)
    ref = ref[0, 0].double().numpy()
    return float(np.abs(res.fields[0].maps[0].heat - ref).max() / max(np.abs(ref).max(), 1e-12))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true", help="one layer per model, 2 units (smoke test)")
    args = p.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    images = photos()
    units, k = (2, 1) if args.quick else (4, 2)
    rows = []
    print(f"machine: {machine()}", file=sys.stderr)
    for name, layers in CASES:
        model = load_model(name, device="cpu").eval()
        graph = fx_graph(model)
        for layer in layers[:1] if args.quick else layers:
            scan = rflens.top_images(model, layer, images, k=k, device="cpu")
            chans = list(range(units))
            t = time.perf_counter()
            res = rflens.empirical_field(model, layer, chans, images, scan=scan, k=k, device="cpu", batch_size=64)
            fast = time.perf_counter() - t
            assert res.fallback == "", res.fallback
            crop = None
            if (name, layer) not in NO_CROP:
                t = time.perf_counter()
                cropped = rflens.empirical_field(model, layer, chans, images, scan=scan, k=k, device="cpu",
                                                 batch_size=64, method="crop")
                crop = time.perf_counter() - t
                worst = max(float(np.abs(a.drops - b.drops).max() / max(np.abs(b.drops).max(), 1e-12))
                            for c in chans for a, b in zip(res.fields[c].maps, cropped.fields[c].maps))
                assert worst < 1e-4, worst
            positions = 72 * 72
            pairs = sum(len(res.fields[c].maps) for c in chans)
            distinct = len({m.image.index for c in chans for m in res.fields[c].maps})

            with torch.no_grad():
                naive_each = per_forward(lambda b: model(images[:1].expand(b, -1, -1, -1)), 1, repeat=5)
                full_each = per_forward(lambda b: capture(model, images[:1].expand(b, -1, -1, -1).contiguous(),
                                                          layer, graph), 32, repeat=2)
            naive = naive_each * positions * pairs
            full = full_each * positions * distinct
            cap, ppe = captum_time(model, layer, images[scan.top(0)[0].index], 0, scan.top(0)[0].where, graph) \
                if name == "alexnet" else (None, None)
            rows.append([f"{name} {layer}", f"{res.theoretical[0]}", f"{units} x {k}", f"{fast:.1f} s",
                         "-" if crop is None else f"{crop:.1f} s ({crop / fast:.1f}x)",
                         f"{naive / 60:.0f} min ({naive / fast:.0f}x)", f"{full / 60:.1f} min ({full / fast:.1f}x)",
                         "-" if cap is None else f"{cap * pairs / 60:.1f} min ({cap * pairs / fast:.1f}x, ppe {ppe})"])
            print(rows[-1], file=sys.stderr)
    alex = load_model("alexnet", device="cpu").eval()
    err = agreement(alex, "features.5", images[0])
    print(f"machine: {machine()}\n")
    print(table(["layer", "theoretical RF", "units x top images", "rflens (exact, incremental)",
                 "rflens crop path", "(i) naive, per unit", "(ii) full re-inference to the layer",
                 "(iii) captum Occlusion"], rows))
    print(f"\nrflens vs captum.attr.Occlusion on alexnet features.5 (zero fill, signed drop): max difference "
          f"{err:.1e} of the map's maximum")


if __name__ == "__main__":
    main()
