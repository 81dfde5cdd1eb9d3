"""(d) The effective RF of ResNet-50 `layer4`'s centre unit: rflens batched against RepLKNet's loop.

    python benchmarks/bench_erf.py            # 64 inputs, batch sizes 1 8 16 32 64, median of 3
    python benchmarks/bench_erf.py --quick    # smoke test: 8 inputs, batch sizes 1 8, 1 repeat
    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_erf.py --crop   # per layer: the crop path (below)

The baseline is the loop of RepLKNet's ``erf/visualize_erf.py``: the backbone up to the last
stage (no avgpool/fc), one image at a time, ``relu`` of the centre unit summed over channels,
``torch.autograd.grad`` to the input, ``relu`` of the gradient summed over batch and channels,
a running average that skips NaN maps.  It sees exactly the Gaussian noise inputs that
``rflens.effective_field(..., inputs=N)`` draws (one seeded generator per input), so rflens'
``mode="replknet"`` must give the same map: the largest difference, relative to the map's
maximum, is printed (limit 1e-4).  Both sides build their inputs inside the timed run.  The limit
holds because both sides run the same kernels; any other kernel moves the float32 map by a few
1e-3 (as far as the loop's own map is from a float64 one), e.g. ``--threads 1``, where PyTorch
runs 1x1 convolutions with another kernel below batch 16 than from 16 on.

All timed runs share one process and one thread count, after a warm-up of every variant; the
repeats are interleaved (loop, rflens B=1, B=8, ..., loop, ...) so that a change in the load of
the machine hits every variant alike, and the median is reported.

``--crop``: per layer (``layer1`` to ``layer4``, centre unit), rflens' default path, which runs on
the smallest crop of the input holding everything the unit reads (``EffectiveField.crop``; the
whole input where that is the whole input), against RepLKNet's loop with the backbone cut at that
layer and against rflens on the whole image (``crop=False``), all ``mode="replknet"`` at batch 16,
repeats interleaved across layers and variants; min and median, the largest absolute difference
of each map from the loop's, the crop's size, the load average before and after, and the raw
times in ``docs/benchmarks/bench_erf_crop.json``.  Peak memory: each variant
runs once more in a fresh process, after one small 64x64 forward and backward (kernels' code,
library set-up); on the CPU the peak resident size of that run (``VmHWM``, reset through
``/proc/self/clear_refs`` just before it) minus the resident size before it, on CUDA
``torch.cuda.max_memory_allocated`` minus the memory allocated before the run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import nn

import rflens
from common import best_of, table
from rflens.engine.trace import fx_graph

LAYER, SIZE, SEED = "layer4", (3, 224, 224), 0
LIMIT = 1e-4  # largest relative difference allowed between rflens (mode="replknet") and the loop


def build_model(device: str) -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet50(weights=None).eval().to(device)


STAGES = ("layer1", "layer2", "layer3", "layer4")


def backbone(model: nn.Module, last: str = LAYER) -> nn.Module:
    """What RepLKNet probes: the network up to its last stage's feature map (no avgpool, no fc),
    or up to stage ``last``; it shares its weights with ``model``."""
    stages = [getattr(model, s) for s in STAGES[:STAGES.index(last) + 1]]
    return nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool, *stages).eval()


def noise(i: int) -> torch.Tensor:
    """Input ``i`` exactly as ``rflens.effective_field(inputs=N, seed=SEED)`` draws it."""
    return torch.randn(SIZE, generator=torch.Generator().manual_seed(SEED * 1_000_003 + i))


class AverageMeter:
    """RepLKNet's running average (float32, as their numpy maps are)."""

    def __init__(self):
        self.sum, self.count, self.avg = 0, 0, 0

    def update(self, val, n: int = 1) -> None:
        self.sum += val * n
        self.count += n
        self.avg = self.sum / self.count


def replknet_loop(model: nn.Module, images: int, device: str, last: str = LAYER) -> np.ndarray:
    """The loop of RepLKNet's erf/visualize_erf.py, one image at a time."""
    net = backbone(model, last)
    meter = AverageMeter()
    for i in range(images):
        samples = noise(i).unsqueeze(0).to(device)
        samples.requires_grad = True
        outputs = net(samples)
        out_size = outputs.size()
        central_point = torch.nn.functional.relu(outputs[:, :, out_size[2] // 2, out_size[3] // 2]).sum()
        grad = torch.autograd.grad(central_point, samples)[0]
        grad = torch.nn.functional.relu(grad)
        aggregated = grad.sum((0, 1))
        contribution_scores = aggregated.cpu().numpy()
        if np.isnan(np.sum(contribution_scores)):
            continue
        meter.update(contribution_scores)
    return np.asarray(meter.avg)


def run_variant(variant: str, model: nn.Module, images: int, device: str) -> np.ndarray:
    """``loop``, or ``MODE:BATCH`` for rflens.effective_field."""
    if variant == "loop":
        return replknet_loop(model, images, device)
    mode, batch = variant.split(":")
    erf = rflens.effective_field(model, LAYER, unit="center", inputs=images, input_size=SIZE, mode=mode,
                                 batch_size=int(batch), seed=SEED, device=device)
    return erf.heat


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(variant: str, model: nn.Module, images: int, device: str) -> tuple[float, np.ndarray]:
    sync(device)
    t = time.perf_counter()
    heat = run_variant(variant, model, images, device)
    sync(device)
    return time.perf_counter() - t, heat


# -- peak memory, in a fresh process per variant ---------------------------------------------------

def _status(key: str) -> int | None:
    """A size from /proc/self/status in bytes (Linux), else None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _maxrss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def reset_peak() -> bool:
    """Reset the kernel's peak resident size of this process to its current size (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def child(variant: str, images: int, device: str, threads: int) -> None:
    """Run ``variant`` once and print the memory it added at its peak (JSON)."""
    torch.set_num_threads(threads)
    model = build_model(device)
    # one small forward and backward first, so that the kernels' code and the libraries' one-off
    # set-up do not count as the variant's memory (a full-size one would leave its activations
    # in the allocator's free lists and hide a batch-1 run's peak)
    x = torch.randn(1, SIZE[0], 64, 64, device=device, requires_grad=True)
    torch.autograd.grad(backbone(model)(x).sum(), x)
    del x
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        run_variant(variant, model, images, device)
        torch.cuda.synchronize()
        extra, method = torch.cuda.max_memory_allocated() - base, "cuda"
    elif reset_peak() and _status("VmHWM") is not None:
        # VmHWM, not ru_maxrss: after a vfork + exec, ru_maxrss also holds the parent's peak
        base = _status("VmRSS")
        run_variant(variant, model, images, device)
        extra, method = _status("VmHWM") - base, "vmhwm"
    else:  # no resettable peak: how far the run raised ru_maxrss (a lower bound)
        base = _maxrss()
        run_variant(variant, model, images, device)
        extra, method = _maxrss() - base, "ru_maxrss"
    print(json.dumps({"extra": extra, "method": method}))


MEMORY_METHODS = {
    "vmhwm": "each variant once more in a fresh process; after imports, model load and one 64x64 forward and "
             "backward the kernel's peak resident size is reset (/proc/self/clear_refs); the table gives the "
             "peak resident size of the run (VmHWM) minus the resident size before it",
    "ru_maxrss": "each variant once more in a fresh process, after imports, model load and one 64x64 forward "
                 "and backward: how far the run raised the peak resident size (ru_maxrss), a lower bound",
    "cuda": "each variant once more in a fresh process, after model load and one 64x64 forward and backward: "
            "torch.cuda.max_memory_allocated minus the memory allocated before the run",
}


def peak_memory(variant: str, args, methods: set) -> str:
    out = subprocess.run([sys.executable, __file__, "--child", variant, "--images", str(args.images),
                          "--device", args.device, "--threads", str(args.threads)],
                         check=False, capture_output=True, text=True, cwd=Path(__file__).parent)
    if out.returncode != 0:
        return "failed: " + (out.stderr.strip().splitlines() or ["?"])[-1][:60]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    extra = res["extra"]
    methods.add(res["method"])
    return f"{extra / 2**20:,.0f} MiB"


# -- the machine and its load ------------------------------------------------------------------------

def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_busy() -> float | None:
    """Seconds of CPU time all processes of the machine have used since boot (Linux)."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return (sum(v[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def device_name(device: str) -> str:
    return (f"{cpu_model()} ({os.cpu_count()} CPUs)" if device == "cpu"
            else f"{torch.cuda.get_device_name()} ({device})")


def own_cpu() -> float:
    t = os.times()
    return t.user + t.system


# -- main --------------------------------------------------------------------------------------------

def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=64, help="number of noise inputs (default 64)")
    p.add_argument("--batch-sizes", default="1,8,16,32,64", help="rflens batch sizes (default 1,8,16,32,64)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per variant, median reported (default 3)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(),
                   help=f"torch threads (default {torch.get_num_threads()})")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--quick", action="store_true", help="smoke test: 8 inputs, batch sizes 1 and 8, 1 repeat")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory runs")
    p.add_argument("--crop", action="store_true", help="per layer: the crop path against the loop and the whole "
                   "image (see above)")
    p.add_argument("--layers", default=",".join(STAGES), help="with --crop: the stages (default all four)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.quick:
        args.images, args.batch_sizes, args.repeats = 8, "1,8", 1
    if args.child:
        return child(args.child, args.images, args.device, args.threads)
    if args.crop:
        from erf_crop import crop_rows
        return crop_rows(args, build_model(args.device), replknet_loop, sync, device_name(args.device))

    torch.set_num_threads(args.threads)
    batches = [b for b in (int(s) for s in args.batch_sizes.split(",")) if b <= args.images]
    luo_batch = 16 if 16 in batches else batches[-1]
    variants = ["loop"] + [f"replknet:{b}" for b in batches] + [f"luo:{luo_batch}"]
    model = build_model(args.device)

    # the fixed cost of every effective_field call: analyze + FX trace (+ the weights' fingerprint)
    fixed = {"analyze": best_of(lambda: rflens.analyze(model, SIZE)), "FX trace": best_of(lambda: fx_graph(model))}
    try:
        from rflens.methods.running import fingerprint
    except ImportError:
        fingerprint = None
    if fingerprint is not None:
        fixed["weight fingerprint"] = best_of(lambda: fingerprint(model))

    for v in variants:  # warm-up: one batch (two images for the loop) of every variant
        run_variant(v, model, 2 if v == "loop" else min(args.images, int(v.split(":")[1])), args.device)

    times: dict[str, list[float]] = {v: [] for v in variants}
    heats: dict[str, np.ndarray] = {}
    busy0, own0, wall0 = cpu_busy(), own_cpu(), time.perf_counter()
    for r in range(args.repeats):
        for v in variants:
            t, heat = timed(v, model, args.images, args.device)
            times[v].append(t)
            heats.setdefault(v, heat)
            print(f"repeat {r + 1}/{args.repeats} {v}: {t:.2f} s", file=sys.stderr, flush=True)
    busy1, own1, wall1 = cpu_busy(), own_cpu(), time.perf_counter()

    methods: set[str] = set()
    memory = {v: ("-" if args.no_memory else peak_memory(v, args, methods)) for v in variants}

    med = {v: statistics.median(ts) for v, ts in times.items()}
    ref = heats["loop"]
    diff = {v: float(np.abs(heats[v] - ref).max() / np.abs(ref).max()) for v in variants if v.startswith("replknet")}
    rows = [["RepLKNet loop (visualize_erf.py)", "1", f"{med['loop']:.2f} s",
             f"{med['loop'] / args.images * 1000:.0f} ms", "1.00x", memory["loop"], "reference"]]
    for v in variants[1:]:
        mode, b = v.split(":")
        rows.append([f'rflens mode="{mode}"', b, f"{med[v]:.2f} s", f"{med[v] / args.images * 1000:.0f} ms",
                     f"{med['loop'] / med[v]:.2f}x", memory[v],
                     f"{diff[v]:.1e}" if v in diff else "other definition"])

    device = device_name(args.device)
    print(f"machine: {device}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
          f"torchvision {torchvision.__version__}, Python {platform.python_version()}\n")
    print(f"ResNet-50 (random weights) `{LAYER}` centre unit, {args.images} Gaussian noise inputs of "
          f"{SIZE[0]}x{SIZE[1]}x{SIZE[2]}; "
          + (f"median of {args.repeats} interleaved runs" if args.repeats > 1 else "one run") + " after a warm-up.\n")
    print(table(["method", "batch size", f"time for {args.images} inputs", "per input", "speed-up vs loop",
                 "peak memory added", "max rel. diff vs loop"], rows))
    best = max(variants[1:-1], key=lambda v: med["loop"] / med[v])
    speedup = med["loop"] / med[best]
    print(f"\nbest speed-up: {speedup:.2f}x at batch size {best.split(':')[1]} "
          f"(goal: at least 3x, {'met' if speedup >= 3 else 'not met'})")
    ok = all(d < LIMIT for d in diff.values())
    print(f"\nagreement: rflens mode=\"replknet\" reproduces the loop's map at every batch size: "
          f"{'yes' if ok else 'NO'} (largest relative difference {max(diff.values()):.1e}, limit {LIMIT:.0e})")
    total = sum(fixed.values())
    print(f"\nfixed cost of one effective_field call (included in the times above): {total * 1000:.0f} ms = "
          + " + ".join(f"{k} {s * 1000:.0f} ms" for k, s in fixed.items()))
    for m in sorted(methods):
        print(f"\npeak memory: {MEMORY_METHODS[m]}")
    if busy0 is not None and busy1 is not None:
        others = max(0.0, (busy1 - busy0) - (own1 - own0)) / (wall1 - wall0)
        print(f"\nload: other processes kept {others:.2f} of the machine's {os.cpu_count()} CPUs busy on average "
              "during the timed runs (0 on a quiet machine)")
    if not ok:
        sys.exit(f"rflens mode=\"replknet\" differs from the loop by {max(diff.values()):.1e} (limit {LIMIT:.0e})")


if __name__ == "__main__":
    main()
