"""(a) rflens.analyze against one float32 forward pass of the same model at batch 1.

    python benchmarks/bench_analyze.py
"""

from __future__ import annotations

import sys

import torch

import rflens
from common import best_of, machine, table
from rflens.models import load_model
from rflens.engine.metacopy import meta_copy

MODELS = [("resnet50", 224), ("inception_v3", 299), ("efficientnet_b0", 224), ("convnext_tiny", 224)]


def main() -> None:
    torch.set_num_threads(torch.get_num_threads())
    rows = []
    for name, size in MODELS:
        meta = load_model(name)
        real = load_model(name, device="cpu").eval()
        x = torch.randn(1, 3, size, size)
        analyze = best_of(lambda: rflens.analyze(meta, (3, size, size)))
        with torch.no_grad():
            forward = best_of(lambda: real(x))
            # PyTorch's own forward on meta tensors, without rflens: the floor of any meta tracer
            xm, copy = torch.empty(1, 3, size, size, device="meta"), meta_copy(meta)
            floor = best_of(lambda: copy(xm))
        rows.append([name, f"{size}x{size}", f"{analyze * 1000:.0f} ms", f"{forward * 1000:.0f} ms",
                     f"{analyze / forward:.2f}x", f"{floor * 1000:.0f} ms ({floor / forward:.2f}x)"])
        print(rows[-1], file=sys.stderr)
    print(f"machine: {machine()}\n")
    print(table(["model", "input", "analyze (all layers)", "float32 forward, batch 1", "analyze / forward",
                 "meta forward alone"], rows))


if __name__ == "__main__":
    main()
