"""Run every benchmark and write docs/benchmarks.md (atomically) with the commands and results.

    python benchmarks/run_all.py
"""

from __future__ import annotations

import datetime
import subprocess
import sys
from pathlib import Path

from rflens.files import atomic_write

HERE = Path(__file__).parent
DOC = HERE.parent / "docs" / "benchmarks.md"

SECTIONS = [
    ("bench_analyze.py", "(a) Analysing a whole model vs one forward pass",
     "`rflens.analyze` of the whole model (every layer's exact geometry, FX names included) against "
     "one float32 forward pass of the same model at batch 1, measured in the same run (median of 5). "
     "Goal: at most 1x. The last column is PyTorch's own forward on meta tensors with no rflens "
     "code at all: the floor of any tracer that, like rflens, never touches real data. Where it "
     "already exceeds the float32 forward (EfficientNet-B0: a 20 ms model made of many small ops) "
     "the goal is out of reach of meta tracing; rflens skips the costliest meta kernels (convolution, "
     "batch and layer norm, elementwise, matmul shapes are computed directly)."),
    ("bench_masks.py", "(b) Every unit's exact mask vs the gradient probe",
     "All 3136 units of ResNet-50 `layer1` at 224x224: the analytic engine (analyze plus every mask) "
     "against the brute-force probe in its batched form, per unit, in the same run. Goal: at least "
     "100x faster per unit."),
    ("bench_memory.py", "(c) Peak memory of analysing a large model",
     "Build on the meta device and analyse, in a fresh process; the extra peak resident memory "
     "against the model's float32 parameter bytes. Goal: far below the parameter bytes."),
]


def main() -> None:
    parts = [
        "# Benchmarks",
        "",
        "Produced by `python benchmarks/run_all.py` (or `make bench`), which runs each script below "
        f"and rewrites this page. Last run: {datetime.date.today().isoformat()}.",
        "",
    ]
    for script, title, text in SECTIONS:
        res = subprocess.run([sys.executable, str(HERE / script)], capture_output=True, text=True, cwd=HERE)
        if res.returncode != 0:
            sys.exit(f"{script} failed:\n{res.stderr}")
        parts += [f"## {title}", "", text, "", f"Command: `python benchmarks/{script}`", "", res.stdout.strip(), ""]
    DOC.parent.mkdir(exist_ok=True)
    atomic_write(DOC, lambda tmp: Path(tmp).write_text("\n".join(parts)))
    print(DOC.read_text())


if __name__ == "__main__":
    main()
