"""(c) Peak memory of analysing a large model, against its parameter bytes.

    python benchmarks/bench_memory.py

Each model is analysed in a fresh process; peak resident memory is read from the kernel
(ru_maxrss) and compared with the process after imports.
"""

from __future__ import annotations

import json
import subprocess
import sys

from common import machine, table

CHILD = r"""
import json, resource, sys, time
import rflens
from rflens.models import load_model
def rss():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
name, size = sys.argv[1], int(sys.argv[2])
base = rss()
t = time.perf_counter()
model = load_model(name)
params = sum(p.numel() for p in model.parameters())
a = rflens.analyze(model, (3, size, size))
last = a[a.layers[-1]]
print(json.dumps({"params": params, "base": base, "peak": rss(), "seconds": time.perf_counter() - t,
                  "layers": len(a.layers)}))
"""

MODELS = [("regnet_y_128gf", 224), ("vit_h_14", 224), ("vgg19", 224)]


def main() -> None:
    rows = []
    for name, size in MODELS:
        out = subprocess.run([sys.executable, "-c", CHILD, name, str(size)], capture_output=True, text=True)
        if out.returncode != 0:
            rows.append([name, "failed: " + out.stderr.strip().splitlines()[-1][:80], "", "", "", ""])
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        pbytes = r["params"] * 4
        extra = r["peak"] - r["base"]
        rows.append([name, f"{r['params'] / 1e6:.0f} M", f"{pbytes / 2**30:.2f} GiB", f"{extra / 2**20:.0f} MiB",
                     f"{extra / pbytes:.3f}", f"{r['seconds']:.1f} s"])
        print(rows[-1], file=sys.stderr)
    print(f"machine: {machine()}\n")
    print(table(["model", "parameters", "float32 parameter bytes", "peak memory added by build + analyze",
                 "ratio", "time"], rows))


if __name__ == "__main__":
    main()
