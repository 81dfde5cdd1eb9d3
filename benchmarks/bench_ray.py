"""(h) A scan on Ray against the single-process scan: throughput, start-up cost, 1 and 2 actors.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_ray.py            # 32 and 160 images
    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_ray.py --quick    # smoke test: 8 and 24 images

ResNet-18 (random weights: timing does not depend on them), `layer3`, top 10 per channel,
batches of 16, over a folder of 224x224 PNGs (scikit-image photographs, resized, so that image
decoding is part of the job as in a real scan).  Each way is run on a small and a large folder:
the difference gives its marginal throughput (images/s once running) and the rest its fixed
cost per call (for Ray: starting the actors, new processes that import torch and rflens, and
unpickling the model).  Ray's own start-up (``ray.init`` of a local 2-CPU cluster) is timed
apart.  The single process uses torch's default threads; each Ray actor holds one CPU (Ray sets
one thread).  Every Ray scan is checked to equal the single-process scan, bit for bit.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import rflens
from common import machine, save_raw, table
from rflens.models import load_model

LAYER, K, BATCH = "layer3", 10, 16


def photo_folder(folder: Path, n: int) -> Path:
    """``n`` PNGs of 224x224 made from scikit-image's colour photographs, cycled and shifted so
    no two are the same."""
    from skimage import data
    pics = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket(), data.immunohistochemistry()]
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        pic = np.roll(pics[i % len(pics)], 7 * i, axis=1)
        Image.fromarray(pic).resize((224, 224)).save(folder / f"img{i:04d}.png")
    return folder


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    small, large = (8, 24) if args.quick else (32, 160)
    import ray

    model = load_model("resnet18", device="cpu").eval()
    root = Path(tempfile.mkdtemp())
    folders = {n: photo_folder(root / str(n), n) for n in (small, large)}
    print(f"machine: {machine()}\n")

    def scan(n, executor=None):
        return rflens.top_images(model, LAYER, folders[n], K, input_size=(3, 224, 224), batch_size=BATCH,
                                 device="cpu", executor=executor)

    scan(small)  # warm-up: the first analysis and forward in this process
    start, _ = timed(lambda: ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                                      logging_level="warning"))
    ways = [("single process", None), ("Ray, 1 actor", rflens.RayExecutor(actors=1)),
            ("Ray, 2 actors", rflens.RayExecutor(actors=2))]
    rows, raw = [], {}
    reference = {}
    for name, executor in ways:
        times = {}
        for n in (small, large):
            times[n], result = timed(lambda: scan(n, executor))
            if executor is None:
                reference[n] = result
            else:
                assert np.array_equal(result.scores, reference[n].scores) and \
                    np.array_equal(result.tail, reference[n].tail), f"{name} differs from the single process"
        rate = (large - small) / (times[large] - times[small])
        fixed = times[small] - small / rate
        raw[name] = {"seconds": {str(n): t for n, t in times.items()}, "images_per_s": rate, "fixed_s": fixed}
        rows.append([name, f"{times[small]:.1f} s", f"{times[large]:.1f} s", f"{large / times[large]:.1f}",
                     f"{rate:.1f}", f"{fixed:.1f} s"])
    ray.shutdown()
    single = raw["single process"]["images_per_s"]
    for row, (name, _) in zip(rows, ways):
        row.append(f"{raw[name]['images_per_s'] / single:.2f}x")
    print(f"ResNet-18 `{LAYER}`, top {K}, batches of {BATCH}, 224x224 PNGs; Ray's start-up (`ray.init`, local "
          f"cluster of 2 CPUs): {start:.1f} s, paid once per process, not in the table.\n")
    print(table(["way", f"{small} images", f"{large} images", f"images/s over {large}",
                 f"marginal images/s ({small} to {large})", "fixed cost per call", "marginal vs single"], rows))
    one, two = raw["Ray, 1 actor"]["images_per_s"], raw["Ray, 2 actors"]["images_per_s"]
    print(f"\nScaling from 1 to 2 actors: {two / one:.2f}x (ideal 2x on 2 idle cores). Every Ray scan equalled the "
          "single-process scan bit for bit.")
    save_raw(ray_start_s=start, ways=raw, threads_single=torch.get_num_threads())


if __name__ == "__main__":
    main()
