"""(h) A scan on Ray against the single-process scan: throughput, start-up cost, 1 and 2 actors.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_ray.py            # 192 images
    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_ray.py --quick    # smoke test: 48 images

ResNet-18 (random weights: timing does not depend on them), `layer3`, top 10 per channel,
batches of 16, over a folder of 224x224 PNGs (scikit-image photographs, shifted, so that image
decoding is part of the job as in a real scan).  Each way is timed on the whole call and, from
the progress callback, split into the time to the first batch's answer (for Ray: starting the
actors, new processes that import torch and rflens and unpickle the model, then one batch) and
the throughput after it (images/s once running); reading and decoding the images alone is
timed too (what caps a GPU actor).  Ray's own start-up (``ray.init`` of a local
2-CPU cluster) is timed apart.  The single process uses torch's default threads; each Ray actor
holds one CPU (Ray gives it one thread).  Every Ray scan is checked to equal the single-process
scan, bit for bit.
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
from rflens.methods.running import Inputs
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


def timed_scan(scan) -> tuple[float, float, int, object]:
    """(seconds in all, seconds to the first answer, images answered after it, the scan)."""
    marks: list[tuple[float, int]] = []
    t = time.perf_counter()
    result = scan(lambda done, total: marks.append((time.perf_counter() - t, done)))
    total = time.perf_counter() - t
    return total, marks[0][0], marks[-1][1] - marks[0][1], (marks[-1][0] - marks[0][0]), result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n = 48 if args.quick else 192
    import ray

    model = load_model("resnet18", device="cpu").eval()
    folder = photo_folder(Path(tempfile.mkdtemp()), n)
    print(f"machine: {machine()}\n")

    def scan(executor=None):
        return lambda progress: rflens.top_images(model, LAYER, folder, K, input_size=(3, 224, 224),
                                                  batch_size=BATCH, device="cpu", executor=executor,
                                                  progress=progress)

    scan()(None)  # warm-up: the first analysis and forward in this process
    # what an actor spends reading its images, apart from the forward: a GPU actor's ceiling
    t = time.perf_counter()
    decoded = sum(1 for _ in Inputs(folder, (3, 224, 224)).samples(0))
    decode = decoded / (time.perf_counter() - t)
    t = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="warning")
    start = time.perf_counter() - t
    ways = [("single process", None), ("Ray, 1 actor", rflens.RayExecutor(actors=1)),
            ("Ray, 2 actors", rflens.RayExecutor(actors=2))]
    rows, raw, reference = [], {}, None
    for name, executor in ways:
        total, first, after, span, result = timed_scan(scan(executor))
        if reference is None:
            reference = result
        for field in ("scores", "images", "where", "tail"):
            assert np.array_equal(getattr(result, field), getattr(reference, field)), f"{name} differs"
        rate = after / span
        raw[name] = {"total_s": total, "first_answer_s": first, "images_after_first": after, "span_s": span,
                     "images_per_s": rate}
        rows.append([name, f"{total:.1f} s", f"{n / total:.1f}", f"{first:.1f} s", f"{rate:.1f}"])
    ray.shutdown()
    single, one, two = (raw[w]["images_per_s"] for w, _ in ways)
    for row, (name, _) in zip(rows, ways):
        row.append(f"{raw[name]['images_per_s'] / single:.2f}x")
    print(f"ResNet-18 `{LAYER}`, top {K}, batches of {BATCH}, {n} PNGs of 224x224. Ray's start-up (`ray.init`, a "
          f"local cluster of 2 CPUs): {start:.1f} s, once per process, not in the table.\n")
    print(table(["way", f"whole call ({n} images)", "images/s, whole call", "to the first batch's answer",
                 "images/s after it", "vs single process"], rows))
    print(f"\nScaling from 1 to 2 actors (images/s after the first answer): {two / one:.2f}x (ideal 2x on 2 idle "
          f"cores). Per actor (1 CPU thread): {one:.1f} images/s. Every Ray scan equalled the single-process scan "
          f"bit for bit. Reading and decoding the images alone (one process, as an actor does): {decode:.0f} "
          "images/s.")
    save_raw(decode_images_per_s=decode, ray_start_s=start, images=n, ways=raw, threads_single=torch.get_num_threads())


if __name__ == "__main__":
    main()
