"""``bench_erf.py --crop``: per ResNet-50 stage, the effective RF on the crop that holds all the
centre unit reads, against RepLKNet's loop (backbone cut at the stage) and rflens on the whole image.

Every variant is ``mode="replknet"`` over the same seeded noise inputs, so the three maps must
agree; each one's largest absolute difference from the loop's map is reported with the map's
maximum.  Repeats are interleaved over layers and variants (loop, crop, whole, next layer, ...),
so a change in the load of a shared machine hits them alike; min and median are reported, and
the load average (``os.getloadavg``) before and after.  The raw numbers go to
``docs/benchmarks/bench_erf_crop.json`` (``common.save_raw``).
"""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import sys
import time

import numpy as np
import torch
import torchvision

import rflens
from common import raw_path, save_raw, table

SIZE, SEED, BATCH = (3, 224, 224), 0, 16
GOAL, QUARTER = 5.0, 0.25  # at least 5x the loop wherever the field's box is at most a quarter of the input
RESULTS = raw_path("bench_erf", ["--crop"])
VARIANTS = ("loop", "crop", "whole")


def crop_rows(args, model, loop, sync, machine: str) -> None:
    layers = args.layers.split(",")
    images, device = args.images, args.device

    def run(variant: str, layer: str, n: int):
        if variant == "loop":
            return loop(model, n, device, layer), None
        erf = rflens.effective_field(model, layer, "center", inputs=n, input_size=SIZE, mode="replknet",
                                     batch_size=BATCH, seed=SEED, device=device, crop=variant == "crop")
        return erf.heat, erf

    for layer in layers:  # warm-up: two inputs of every variant
        for v in VARIANTS:
            run(v, layer, 2)
    times = {(layer, v): [] for layer in layers for v in VARIANTS}
    heats, fields = {}, {}
    load_before = os.getloadavg()
    for r in range(args.repeats):
        for layer in layers:
            for v in VARIANTS:
                sync(device)
                t = time.perf_counter()
                heat, erf = run(v, layer, images)
                sync(device)
                times[(layer, v)].append(time.perf_counter() - t)
                heats.setdefault((layer, v), heat)
                if erf is not None:
                    fields.setdefault((layer, v), erf)
                print(f"repeat {r + 1}/{args.repeats} {layer} {v}: {times[(layer, v)][-1]:.2f} s", file=sys.stderr,
                      flush=True)
    load_after = os.getloadavg()

    area = SIZE[1] * SIZE[2]
    rows, records = [], []
    for layer in layers:
        erf = fields[(layer, "crop")]
        t = {v: times[(layer, v)] for v in VARIANTS}
        med = {v: statistics.median(ts) for v, ts in t.items()}
        low = {v: min(ts) for v, ts in t.items()}
        ref = heats[(layer, "loop")]
        diff = {v: float(np.abs(heats[(layer, v)] - ref).max()) for v in ("crop", "whole")}
        box = erf.rf.box
        box_fraction = np.prod([b - a for a, b in box]) / area
        crop_pixels = None if erf.crop is None else int(np.prod([b - a for a, b in erf.crop]))
        speedup = med["loop"] / med["crop"]
        goal = ("met" if speedup >= GOAL else "NOT met") if box_fraction <= QUARTER else "-"
        rows.append([f"`{layer}`", f"{_box(box)} ({100 * box_fraction:.0f}%)",
                     "whole input" if erf.crop is None else f"{_box(erf.crop)} = {crop_pixels:,} px "
                     f"({100 * crop_pixels / area:.0f}%)",
                     f"{low['loop']:.2f} / {med['loop']:.2f} s", f"{low['crop']:.2f} / {med['crop']:.2f} s",
                     f"{low['whole']:.2f} / {med['whole']:.2f} s", f"{speedup:.1f}x",
                     f"{med['whole'] / med['crop']:.1f}x", f"{diff['crop']:.1e} / {diff['whole']:.1e}", goal])
        records.append({"layer": layer, "unit": list(erf.unit), "rf_box": [list(b) for b in box],
                        "rf_box_fraction": round(float(box_fraction), 4),
                        "crop": None if erf.crop is None else [list(b) for b in erf.crop], "crop_pixels": crop_pixels,
                        "crop_note": erf.crop_note, "times_s": {v: [round(x, 4) for x in ts] for v, ts in t.items()},
                        "min_s": {v: round(x, 4) for v, x in low.items()},
                        "median_s": {v: round(x, 4) for v, x in med.items()},
                        "speedup_vs_loop_median": round(speedup, 3),
                        "speedup_vs_loop_min": round(low["loop"] / low["crop"], 3),
                        "speedup_vs_whole_median": round(med["whole"] / med["crop"], 3),
                        "max_abs_diff_vs_loop": {v: d for v, d in diff.items()},
                        "loop_map_max": float(np.abs(ref).max()), "goal": goal})

    command = "OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_erf.py --crop" + (
        f" --images {images}" if images != 64 else "") + (f" --repeats {args.repeats}" if args.repeats != 3 else "")
    print(f"machine: {machine}, {torch.get_num_threads()} torch threads, OMP_WAIT_POLICY="
          f"{os.environ.get('OMP_WAIT_POLICY', 'unset')}, torch {torch.__version__}, torchvision "
          f"{torchvision.__version__}, Python {platform.python_version()}\n")
    print(f"ResNet-50 (random weights), centre unit of each stage, {images} Gaussian noise inputs of "
          f"{SIZE[1]}x{SIZE[2]}, `mode=\"replknet\"`, rflens at batch {BATCH}; {args.repeats} interleaved runs after "
          "a warm-up, min / median.\n")
    print(table(["layer", "RF box (share of the input)", "crop (share)", "RepLKNet loop", "rflens crop",
                 "rflens whole image", "crop vs loop", "crop vs whole", "max abs diff vs loop: crop / whole",
                 f"goal {GOAL:g}x"], rows))
    print(f"\ngoal: at least {GOAL:g}x faster than the loop (medians) wherever the RF box is at most a quarter "
          "of the input; where the box is the whole input the crop path is the whole-image path.")
    for r in records:
        if r["crop"] is None:
            print(f"\n`{r['layer']}`: {r['crop_note']}")
    print(f"\nload average (1, 5, 15 min): {_load(load_before)} before, {_load(load_after)} after the timed runs "
          f"({os.cpu_count()} CPUs; the machine is shared with other jobs)")
    print(f"\nraw numbers: docs/benchmarks/{RESULTS.name}")
    save_raw(**{"command": command, "date": datetime.date.today().isoformat(), "machine": machine,
           "torch_threads": torch.get_num_threads(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
           "torch": torch.__version__, "torchvision": torchvision.__version__, "images": images,
           "batch_size": BATCH, "repeats": args.repeats, "input_size": list(SIZE),
           "loadavg_before": list(load_before), "loadavg_after": list(load_after), "layers": records})


def _box(box) -> str:
    return " x ".join(f"[{a}, {b})" for a, b in box)


def _load(avg) -> str:
    return ", ".join(f"{x:.2f}" for x in avg)
