"""(b) Exact masks for every unit of a layer against the gradient probe, per unit.

    python benchmarks/bench_masks.py

ResNet-50 layer1 at 224x224 has 56x56 = 3136 units.  The analytic side computes all of them
(including analyze itself); the probe side runs its best form (16 units per forward/backward)
on a sample of units and is reported per unit.  Every sampled probe mask is also compared with
the analytic one.
"""

from __future__ import annotations

import sys
import time

import numpy as np

import rflens
from common import machine, table
from rflens.models import load_model
from rflens.engine.probe import ProbeAnalysis

LAYER, SIZE, SAMPLE = "layer1", (3, 224, 224), 32


def main() -> None:
    t = time.perf_counter()
    a = rflens.analyze(load_model("resnet50"), SIZE)
    layer = a[LAYER]
    units = list(np.ndindex(*layer.grid_shape))
    pixels = 0
    for u in units:
        pixels += int(layer.unit(u).mask.sum())
    analytic = time.perf_counter() - t

    probe = ProbeAnalysis(load_model("resnet50", device="cpu"), SIZE)
    rng = np.random.default_rng(0)
    sample = [units[i] for i in rng.choice(len(units), SAMPLE, replace=False)]
    t = time.perf_counter()
    masks = probe.masks(LAYER, sample, batch=16)
    probe_time = time.perf_counter() - t
    agree = all(np.array_equal(m, layer.unit(u).mask) for u, m in zip(sample, masks))

    per_a = analytic / len(units)
    per_p = probe_time / len(sample)
    print(f"machine: {machine()}\n")
    print(table(["method", "units", "total", "per unit", "speed-up per unit"], [
        ["rflens analytic (analyze + every mask)", len(units), f"{analytic:.2f} s", f"{per_a * 1e3:.3f} ms",
         f"{per_p / per_a:.0f}x"],
        ["gradient probe (16 units per pass)", len(sample), f"{probe_time:.2f} s", f"{per_p * 1e3:.1f} ms", "1x"],
    ]))
    print(f"\nsampled probe masks equal the analytic ones: {agree}; mean support {pixels / len(units):.0f} px")
    print(file=sys.stderr)


if __name__ == "__main__":
    main()
