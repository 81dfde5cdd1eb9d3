"""Run every benchmark and write docs/benchmarks.md (atomically) with the commands and results.

    python benchmarks/run_all.py                  # every benchmark
    python benchmarks/run_all.py bench_erf.py     # only these; the other sections stay as they are
"""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
from pathlib import Path

from common import raw_path
from rflens.files import atomic_write

HERE = Path(__file__).parent
DOC = HERE.parent / "docs" / "benchmarks.md"

SECTIONS = [
    ("bench_analyze.py", "(a) Analysing a whole model vs one forward pass",
     "`rflens.analyze` of the whole model (every layer's exact geometry, FX names included) against "
     "one float32 forward pass of the same model at batch 1, measured in the same run (median of 5). "
     "Goal: at most 1x. The last column is PyTorch's own forward on meta tensors with no rflens "
     "code at all: the floor of any tracer that, like rflens, never touches real data. Where it "
     "comes near the float32 forward (EfficientNet-B0: a 40 ms model made of many small ops) "
     "the goal is out of reach of meta tracing; rflens skips the costliest meta kernels (convolution, "
     "batch and layer norm, elementwise, matmul shapes are computed directly)."),
    ("bench_masks.py", "(b) Every unit's exact mask vs the gradient probe",
     "All 3136 units of ResNet-50 `layer1` at 224x224: the analytic engine (analyze plus every mask) "
     "against the brute-force probe in its batched form, per unit, in the same run. Goal: at least "
     "100x faster per unit."),
    ("bench_memory.py", "(c) Peak memory of analysing a large model",
     "Build on the meta device and analyse, in a fresh process; the extra peak resident memory "
     "against the model's float32 parameter bytes. Goal: far below the parameter bytes."),
    ("bench_erf.py", "(d) Effective RF over 64 inputs: batched vs one image at a time",
     "The effective RF of ResNet-50 `layer4`'s centre unit (random weights) over 64 Gaussian noise "
     "inputs of 224x224: `rflens.effective_field` at several batch sizes against the loop of "
     "RepLKNet's `erf/visualize_erf.py` (backbone up to `layer4`, one image per forward and backward), "
     "in the same process, with the same inputs and threads, median of 3 interleaved runs after a "
     "warm-up. `mode=\"replknet\"` is RepLKNet's definition and must reproduce the loop's map (largest "
     "difference relative to the map's maximum, limit 1e-4); the default `mode=\"luo\"` is timed at the "
     "default batch size. Goal: at least 3x faster than the loop on the CPU. Peak memory: each variant "
     "once more in a fresh process.\n\n"
     "On an idle CPU batching cannot reach the goal: `torch.autograd.grad` to the input already skips "
     "every weight gradient, and the convolutions, about 80% of the time, run at the same rate at batch 1 "
     "as at batch 8 (about 150 GFLOP/s on these 2 cores, profiled), so the loop is compute-bound, and "
     "batches of 32 or 64 are slower still (memory-bound batch norm and ReLU on tensors that leave the "
     "cache) while using gigabytes. Batching pays off when other processes share the cores, because each "
     "op of a batch-1 pass then waits for both threads: on 2026-11-25, with other processes holding "
     "0.84 and 1.44 of the 2 CPUs, this script measured rflens 10.8x (batch 8) and 3.8x (batch 32) faster "
     "than the loop; the load line below says how busy the machine was during the run shown.\n\n"
     "The second table is per layer (`--crop`): rflens' default path, which runs on the smallest crop of the "
     "input that holds everything the centre unit reads and, within it, computes only the unit's dependency "
     "cone (exact; the whole input where the field covers it), against RepLKNet's loop cut at that layer and "
     "rflens on the whole image (`crop=False`), all `mode=\"replknet\"` at batch 16, repeats interleaved "
     "across layers and variants, min and median. Goal: at least 5x faster than the loop wherever the "
     "field's box is at most a quarter of the input. The maps are the same up to float32 rounding: a kernel "
     "that sums in another order (smaller tensors, explicit padding) moves an activation sitting at a ReLU's "
     "kink to the other side in one input of the 64, so at `layer2` the map differs from the loop's by a few "
     "1e-4 of its maximum, as another kernel's would; in float64 the tests find them equal to 1e-12.",
     [[], ["--crop"]]),
    ("bench_occlusion.py", "(e) Empirical RF by occlusion (Zhou et al. 2015)",
     "AlexNet and VGG-16 (random weights; timing does not depend on them), six scikit-image photographs "
     "at 224x224, 11x11 random occluders at stride 3 (5184 positions per image), 4 channels per layer "
     "with their top 2 images. rflens' exact fast path, timed on the whole job, against (i) the naive "
     "procedure (one forward of the whole model per occluded image per unit, batch 1), (ii) batched "
     "whole-image re-inference stopping at the layer, one pass per image for all its units, and (iii) "
     "`captum.attr.Occlusion` (forward to the layer, selecting the unit) at its best "
     "`perturbations_per_eval` of 64 and 256, per unit and image, AlexNet only. (i) and (ii) are timed "
     "on a sample of forwards and multiplied by the forwards the job needs; (iii) on one unit and image, "
     "multiplied by the (unit, image) pairs. Goals: at least 50x over (i) and 5x over (ii). The last "
     "column counts images answered on a crop (the rest used the whole image). The agreement line "
     "compares rflens' map with Captum's on one unit (zero fill, signed drop)."),
    ("bench_viewer.py", "(f) The viewer: all per-layer data for a unit, server side",
     "`rflens view` on ResNet-50 at 224x224 (201 layers): for every layer, the server-side time and size of "
     "the answer to `/api/unit` (the unit's exact mask run-length or bit-packed, its boxes, centre and "
     "support, as JSON), for a layer's first request and for another unit, against the naive encoding (the "
     "mask as a JSON list of lists of booleans); the same requests over HTTP on loopback; the projective "
     "field of one pixel in every layer; the size of the static page. Goal: well under 100 ms per layer."),
    ("bench_speed.py", "(g) analyze across the zoo's hardest models",
     "The models the zoo found slowest to analyse, with the common backbones beside them, each in its own "
     "process at its default input size (2 threads): `rflens.analyze` of the meta model, the summary of every "
     "layer of a fresh analysis (`rf_size`, `stride`, `start`, `is_global`: what `rflens table` prints) and one "
     "float32 forward at batch 1 (random weights), timed in turn 5 times after a warm-up, so that a burst of "
     "load hits all three alike; minimum and median of each. Goals: median analyze / forward at most 1x, "
     "worst at most 3x, no analyze above 3 s, the summary under 10% of analyze.\n\n"
     "Against the zoo run that set these goals (2026-11): the slowest analyses were mvit_v1_b 31.7 s, coat_tiny "
     "27.4 s and davit_tiny 25.3 s (now 2.3 s, 1.0 s and 0.26 s); efficientvit_m0 was 19.3x a forward, "
     "shufflenet_v2_x0_5 17.5x, twins_svt_small 13.8x (now about 5x, 4x, 2.3x); every layer's summary of "
     "davit_tiny and gcvit_xxtiny had not finished after 60 s (now 0.09 s and 0.13 s), and mvit_v1_b's was "
     "killed for memory. What did it: window attention worked out once per window shape, long rows compared by "
     "hash (`engine/rows.py`), summaries from positions that broadcast over the grid and computed once per tensor, "
     "FX's graph never compiled to Python, Python's cycle collector paused during the trace.\n\n"
     "Missed: no model is above 3 s, but the median is about 2.3x and the worst about 8x, and the summary is "
     "under 10% only for the transformers. Where the time goes (one analyze, timers around each part; "
     "FX trace / rules / meta kernels / dispatch bookkeeping / module hooks, names and interpreter): "
     "shufflenet_v2_x0_5 116 ms = 26 / 39 / 9 / 10 / 32; mobilenet_v3_small 59 ms = 6 / 24 / 7 / 6 / 15; "
     "efficientvit_m0 276 ms = 11 / 155 / 28 / 30 / 52; swin_t 959 ms = 21 / 810 / 41 / 31 / 57. The small "
     "mobile models pay a fixed cost per op — 0.1 to 0.25 ms of Python for the rule, the dispatch mode and the "
     "naming, against about 0.05 ms per op for their real kernels — so 300 to 500 ops take 60 to 110 ms at any "
     "input size; PyTorch's own meta forward, with no rflens code, is already 0.9x a forward on EfficientNet-B0 "
     "(section a). swin_t spends 85% in the rules of window attention (a layer norm over merged patches or a "
     "window matmul: 7 to 9 ms each) that find each window's reads again. mvit_v1_b's summary (148%) builds "
     "per-unit hulls over attention maps of 25089 x 393 units. Next steps: memoise rules across repeated "
     "blocks (a rule's result depends on its inputs' layouts up to node ids, so a block seen before can replay "
     "its layouts and only build its nodes), carry the window structure in the layout instead of finding it per "
     "op, and give attention maps' hulls a separable form (rows and columns) so their summary costs rows + "
     "columns instead of rows x columns."),
    ("bench_ray.py", "(h) Scans on Ray: throughput against one process",
     "`rflens.top_images` of ResNet-18 `layer3` (random weights), top 10, batches of 16, over a folder of 192 "
     "224x224 PNGs, in one process and on a local Ray cluster (`ray.init(num_cpus=2)`) with 1 and 2 actors, "
     "one after another in one run. Each call is timed whole and, from its progress callback, split into the "
     "time to the first batch's answer (for Ray: starting the actors, processes that import torch and rflens "
     "and unpickle the model, then one batch) and the throughput after it. Ray's own start-up is timed apart. "
     "The single process uses torch's 2 threads, each actor one CPU and one thread. Every Ray scan is checked "
     "to equal the single-process one bit for bit. What the numbers mean for a cluster: [docs/ray.md](ray.md)."),
    ("bench_readme.py", "(i) The README's examples as written",
     "Every python block of the README (in order, as one session; each timed alone) and every rflens command "
     "of its bash blocks, at the README's own sizes, in a folder holding the files they name: `photo.jpg`, "
     "`cat.jpg`, eight scikit-image photographs in `photos/`, its 100 LFW faces in `faces/` "
     "(`tests/readme.py`; `tests/test_readme.py` runs the same at reduced sizes in `make test-slow`). "
     "Not timed: `make demo`/`make test`, `rflens view` serving until Ctrl-C, and the synopsis. Goal: each "
     "under two minutes, the empirical-RF example about a minute on 2 CPU cores."),
]


def old_sections() -> tuple[str | None, dict[str, list[str]]]:
    """The date of the last full run and each section's lines (after its heading) in the current page."""
    if not DOC.exists():
        return None, {}
    date, sections, current = None, {}, None
    for line in DOC.read_text().split("\n"):
        if line.startswith("## "):
            current = sections.setdefault(line[3:], [])
        elif current is not None:
            current.append(line)
        elif "Last run: " in line:
            date = line.split("Last run: ", 1)[1].rstrip(".")
    return date, sections


def main() -> None:
    known = [script for script, *_ in SECTIONS]
    only = sys.argv[1:]
    for name in only:
        if name not in known:
            sys.exit(f"unknown benchmark {name!r}; choose from {', '.join(known)}")
    date, old = old_sections() if only else (None, {})
    today = datetime.date.today().isoformat()
    parts = [
        "# Benchmarks",
        "",
        "Produced by `python benchmarks/run_all.py` (or `make bench`), which runs each script below "
        f"and rewrites this page. Last run: {date or today}.",
        "",
    ]
    for script, title, text, *runs in SECTIONS:
        if only and script not in only and title in old:
            parts += [f"## {title}", *old[title]]
            continue
        parts += [f"## {title}", "", text, ""]
        for argv in (runs[0] if runs else [[]]):
            # spinning OpenMP threads made 2-thread forwards up to 50x slower on a busy machine
            env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
            res = subprocess.run([sys.executable, str(HERE / script), *argv], capture_output=True, text=True,
                                 cwd=HERE, env=env)
            if res.returncode != 0:
                sys.exit(f"{script} failed:\n{res.stderr}")
            command = " ".join(["OMP_WAIT_POLICY=PASSIVE", "python", f"benchmarks/{script}", *argv])
            parts += [f"Command: `{command}`" + (f" (run {today})" if only else "")
                      + f"; raw numbers: `{raw_path(script, argv).relative_to(HERE.parent)}`", "", res.stdout.strip(), ""]
    DOC.parent.mkdir(exist_ok=True)
    atomic_write(DOC, lambda tmp: Path(tmp).write_text("\n".join(parts)))
    print(DOC.read_text())


if __name__ == "__main__":
    main()
