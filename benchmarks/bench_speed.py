"""(g) analyze across the zoo's hardest models against one forward pass, and the per-layer summary.

    python benchmarks/bench_speed.py                 # the fixed list, one process per model
    python benchmarks/bench_speed.py --only resnet50 timm:davit_tiny

Each model runs in its own process (2 threads, ``OMP_WAIT_POLICY=PASSIVE``): after a warm-up of
each, ``rflens.analyze`` (meta model), the summary of every layer (``rf_size``, ``stride``,
``start``, ``is_global`` of a fresh analysis) and one float32 forward at batch 1 (random weights)
are timed in turn, ``--repeat`` times, so a burst of load hits all three alike.  Minimum and
median of each, and the ratios of the minimums and of the medians.  Raw numbers go to
``docs/benchmarks/bench_speed.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODELS = ["resnet50", "efficientnet_b0", "mobilenet_v3_small", "shufflenet_v2_x0_5", "regnet_x_400mf",
          "convnext_tiny", "vit_b_16", "swin_t", "mvit_v1_b", "timm:efficientvit_m0", "timm:twins_svt_small",
          "timm:davit_tiny", "timm:coat_tiny"]
GOALS = "median analyze / forward <= 1x, worst <= 3x, no analyze above 3 s, summary < 10% of analyze"


def measure(name: str, repeat: int) -> dict:
    import torch

    import rflens
    from rflens.models import default_input_size, load_model
    torch.set_num_threads(2)
    size = default_input_size(name)
    meta, real = load_model(name), load_model(name, device="cpu").eval()
    x = torch.randn(1, *size)

    def summary(a) -> None:
        for n in a.layers:
            layer = a[n]
            if layer.refused is None and layer.grid_shape:
                layer.rf_size, layer.stride, layer.start, layer.is_global

    times: dict[str, list[float]] = {"analyze": [], "summary": [], "forward": []}
    with torch.no_grad():
        summary(rflens.analyze(meta, size)), real(x)  # warm-up: imports, allocator, kernels
        for _ in range(repeat):
            t = time.perf_counter()
            a = rflens.analyze(meta, size)
            t1 = time.perf_counter()
            summary(a)
            t2 = time.perf_counter()
            real(x)
            t3 = time.perf_counter()
            for key, dt in zip(times, (t1 - t, t2 - t1, t3 - t2)):
                times[key].append(dt)
    return {"model": name, "input_size": list(size), "layers": len(a), "threads": torch.get_num_threads(),
            **{k: [round(v, 5) for v in vs] for k, vs in times.items()}}


def row(rec: dict) -> list[str]:
    lo = {k: min(rec[k]) for k in ("analyze", "summary", "forward")}
    med = {k: statistics.median(rec[k]) for k in ("analyze", "summary", "forward")}

    def ms(v: float) -> str:
        return f"{v * 1000:.0f} ms" if v < 10 else f"{v:.1f} s"
    return [rec["model"], "x".join(map(str, rec["input_size"][1:])), str(rec["layers"]),
            f"{ms(lo['analyze'])} / {ms(med['analyze'])}", f"{ms(lo['forward'])} / {ms(med['forward'])}",
            f"{lo['analyze'] / lo['forward']:.2f}x / {med['analyze'] / med['forward']:.2f}x",
            f"{ms(lo['summary'])} ({lo['summary'] / lo['analyze']:.0%})"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="+", metavar="MODEL")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--one", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.repeat)))
        return
    sys.path.insert(0, str(HERE))
    from common import machine, save_raw, table
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS="2", PYTHONWARNINGS="ignore")
    recs = []
    for name in args.only or MODELS:
        child = subprocess.run([sys.executable, __file__, "--one", name, "--repeat", str(args.repeat)],
                               capture_output=True, text=True, env=env)
        lines = [ln for ln in child.stdout.splitlines() if ln.startswith("{")]
        if not lines:
            print(f"{name}: failed: {child.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
            continue
        recs.append(json.loads(lines[-1]))
        print(row(recs[-1]), file=sys.stderr, flush=True)
    rows = [row(r) for r in recs]
    ratios = sorted(statistics.median(r["analyze"]) / statistics.median(r["forward"]) for r in recs)
    slowest = max(recs, key=lambda r: statistics.median(r["analyze"]))
    share = max(min(r["summary"]) / min(r["analyze"]) for r in recs)
    save_raw(goals=GOALS, repeat=args.repeat, child_omp_wait_policy="PASSIVE", models=recs)
    print(f"machine: {machine()} (each model's process: OMP_WAIT_POLICY=PASSIVE)\n")
    print(table(["model", "input", "layers", "analyze min / median", "forward min / median",
                 "analyze / forward (min, median)", "every layer's summary (share of analyze)"], rows))
    print(f"\nOver {len(recs)} models, analyze / forward (medians): median {statistics.median(ratios):.2f}x, "
          f"worst {ratios[-1]:.2f}x; slowest analyze {slowest['model']} "
          f"{statistics.median(slowest['analyze']):.2f} s; summary at most {share:.0%} of analyze.")


if __name__ == "__main__":
    main()
