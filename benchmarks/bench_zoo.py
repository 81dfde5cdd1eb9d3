"""The zoo: every torchvision builder and one timm model per family, each analysed in its own
process, with a probe-checked sample; writes the coverage table docs/zoo.md.

    python benchmarks/bench_zoo.py                        # the whole zoo (resumes where it stopped)
    python benchmarks/bench_zoo.py --only resnet50 timm:levit_128s --timeout 120
    python benchmarks/bench_zoo.py --table                # rewrite docs/zoo.md from the results only

Outcome per model: ``exact`` (every layer analysed), ``partly refused`` (the layers downstream of
an op rflens cannot follow carry the reason, the rest are exact), ``refused`` (an RFLensError for
the whole model: the message names the op and module), ``timeout``, or ``crash`` (anything else:
a bug).  Results are kept in benchmarks/zoo_results.json after every model (atomically), so an
interrupted run resumes; the table is rewritten at the end.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "zoo_results.json"
DOC = HERE.parent / "docs" / "zoo.md"
# timm's smallest member of a family: names holding these come first, in this order
SMALL = ["atto", "femto", "zepto", "pico", "nano", "tiny", "xxs", "xs", "mini", "small", "lite0", "b0",
         "18", "_t", "_s"]
PROBE_PARAMS = 60e6  # larger models are not probe-checked: a float64 copy and its backward cost too much
SECOND_IMAGE = {"raft_large", "raft_small"}  # optical flow: the second image is an extra input of the same size


def zoo() -> list[str]:
    """Every torchvision builder, then one timm model per family (module), smallest name first."""
    import timm
    import torchvision
    names = list(torchvision.models.list_models())
    for module in sorted(timm.list_modules()):
        members = sorted(timm.list_models(module=module))
        if members:
            rank = [next((i for i, k in enumerate(SMALL) if k in m), len(SMALL)) for m in members]
            names.append("timm:" + min(zip(rank, [len(m) for m in members], members))[2])
    return names


# -- one model, in a child process ---------------------------------------------------------------

def measure(spec: str) -> dict:
    import numpy as np

    import rflens
    from rflens.engine.probe import ProbeAnalysis
    from rflens.models import default_input_size
    kwargs = {"quantize": True} if spec.startswith("quantized_") else {}
    out: dict = {"model": spec}
    try:
        size = default_input_size(spec)
        model = rflens.load_model(spec, kwargs, extra_inputs=[size] if spec in SECOND_IMAGE else None)
        t = time.perf_counter()
        a = rflens.analyze(model, size)
        out["analyze_s"] = round(time.perf_counter() - t, 2)
    except rflens.RFLensError as e:
        return {**out, "outcome": "refused", "reason": _first(e)}
    except Exception as e:  # noqa: BLE001 - anything else is a bug, reported as such
        return {**out, "outcome": "crash", "reason": f"{type(e).__name__}: {_first(e)}"}
    refused = [n for n in a.layers if getattr(a[n], "refused", None)]
    out.update(layers=len(a), refused_layers=len(refused), input_size=list(size),
               outcome="partly refused" if refused else "exact",
               reason=a[refused[0]].refused.splitlines()[0][:300] if refused else "")
    params = sum(p.numel() for p in model.parameters())
    if params > PROBE_PARAMS:
        out["probe"] = f"skipped ({params / 1e6:.0f}M weights)"
        return out
    try:
        # layers whose first dim is the batch: the probe gives each unit its own batch element
        names = [n for n in a.layers if n not in refused and a[n].grid_shape and len(a[n].grid_shape) == a.k
                 and a[n].output_shape[0] == 1 and 0 not in a[n].spatial_dims]
        picks = [names[i] for i in sorted({0, len(names) // 2, len(names) - 1})] if names else []
        probe = ProbeAnalysis(model, size, partial=bool(refused))
        requests = {n: ([tuple(g // 2 for g in a[n].grid_shape), (0,) * a.k], a[n].spatial_dims)
                    for n in picks if n in probe.layers}
        got = probe.masks_many(requests) if requests else {}
        wrong = [f"{n} {u}" for n, (units, _) in requests.items()
                 for u, m in zip(units, got[n]) if not np.array_equal(a[n].unit(u).mask, m)]
        out["probe"] = (f"{sum(len(u) for u, _ in requests.values())} units of {len(requests)} layers agree"
                        if not wrong else "DISAGREES: " + ", ".join(wrong[:3]))
    except Exception as e:  # noqa: BLE001 - the oracle's own failure is reported, not hidden
        out["probe"] = f"probe failed: {type(e).__name__}: {_first(e)}"
    return out


def _first(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:300] if text else type(e).__name__


# -- the run ------------------------------------------------------------------------------------

def run(names: list[str], timeout: float, results: dict, keep: Path) -> None:
    from rflens.files import atomic_write
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS="2", PYTHONWARNINGS="ignore")
    todo = [n for n in names if n not in results]
    for i, name in enumerate(todo, 1):
        t = time.perf_counter()
        try:
            child = subprocess.run([sys.executable, __file__, "--one", name], capture_output=True, text=True,
                                   timeout=timeout, env=env)
            lines = [ln for ln in child.stdout.splitlines() if ln.startswith("{")]
            rec = json.loads(lines[-1]) if lines else {
                "model": name, "outcome": "crash",
                "reason": f"exit status {child.returncode}: {(child.stderr.strip().splitlines() or [''])[-1][:300]}"}
        except subprocess.TimeoutExpired:
            rec = {"model": name, "outcome": "timeout", "reason": f"more than {timeout:.0f} s"}
        rec["wall_s"] = round(time.perf_counter() - t, 1)
        results[name] = rec
        atomic_write(keep, lambda tmp: Path(tmp).write_text(json.dumps(results, indent=1)))
        print(f"[{i}/{len(todo)}] {name}: {rec['outcome']} {rec.get('reason', '')[:80]}", file=sys.stderr, flush=True)


NOTES = [
    "Where a model is partly refused, the layers that do not depend on the refused op keep their exact "
    "fields (see the README's *Partial analysis*); the reason names the first refused op.",
    "",
    "- Detectors (R-CNNs, FCOS, RetinaNet, SSD): everything up to the proposals and detections (backbone, FPN, "
    "heads) is exact; `topk`, `nonzero` and mask indexing choose elements by value.",
    "- raft: sampling at computed flow positions (`grid_sample`) is not followed; the probe cannot run "
    "either, since the model makes its own float32 coordinate grid and the probe runs in float64.",
    "- sequencer2d: the BiLSTM's fields are unions of more pieces than the engine holds (64); sam2_hiera at "
    "its default 896 px the same from `blocks.3` on. halonet: `Tensor.unfold` over a halo; csatv2: indexing "
    "by a DCT table in the stem.",
]


def write_table(results: dict, command: str, doc: Path) -> None:
    from rflens.files import atomic_write
    recs = sorted(results.values(), key=lambda r: (r["model"].startswith("timm:"), r["model"]))
    outcomes = ["exact", "partly refused", "refused", "timeout", "crash"]
    lines = ["# The model zoo", "",
             f"`{command}` ({datetime.date.today()}; each model in its own process, 2 threads, "
             "`OMP_WAIT_POLICY=PASSIVE`): every torchvision builder and one timm model per family, built "
             "without weights and analysed at its default input size. *probe*: the analytic masks of two units "
             "(centre, corner) of an early, a middle and a late layer against the gradient oracle (models "
             f"over {PROBE_PARAMS / 1e6:.0f}M weights are skipped). Results are kept in "
             "`benchmarks/zoo_results.json` and a rerun measures only the models missing there "
             "(`--redo --only MODEL ...` measures some again); the times are those of the run that measured "
             "each model, on a machine other jobs shared.", "", *NOTES, "",
             "| models | " + " | ".join(outcomes) + " | total |", "|---|" + "---|" * (len(outcomes) + 1)]
    for source, keep in (("torchvision", lambda r: not r["model"].startswith("timm:")),
                         ("timm (one per family)", lambda r: r["model"].startswith("timm:"))):
        group = [r for r in recs if keep(r)]
        counts = [sum(r["outcome"] == o for r in group) for o in outcomes]
        lines.append(f"| {source} | " + " | ".join(map(str, counts)) + f" | {len(group)} |")
    lines += ["", "| model | outcome | layers | analyze s | probe | reason |", "|---|---|---|---|---|---|"]
    for r in recs:
        layers = f"{r.get('layers', '')}" + (f" ({r['refused_layers']} refused)" if r.get("refused_layers") else "")
        reason = r.get("reason", "").replace("|", "\\|")
        lines.append(f"| {r['model']} | {r['outcome']} | {layers} | {r.get('analyze_s', '')} | "
                     f"{r.get('probe', '')} | {reason} |")
    atomic_write(doc, lambda tmp: Path(tmp).write_text("\n".join(lines) + "\n"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--one", help=argparse.SUPPRESS)
    p.add_argument("--only", nargs="+", metavar="MODEL", help="these models only (torchvision or timm:NAME)")
    p.add_argument("--timeout", type=float, default=600, help="seconds per model (600)")
    p.add_argument("--fresh", action="store_true", help="forget earlier results")
    p.add_argument("--redo", action="store_true", help="with --only: measure those models again")
    p.add_argument("--table", action="store_true", help="only rewrite docs/zoo.md from the kept results")
    p.add_argument("--results", type=Path, default=RESULTS, help="where results are kept (resumable)")
    p.add_argument("--doc", type=Path, default=DOC, help="the table to write")
    args = p.parse_args()
    if args.one:
        import torch
        torch.set_num_threads(2)
        print(json.dumps(measure(args.one)), flush=True)
        return
    results = {} if args.fresh or not args.results.exists() else json.loads(args.results.read_text())
    if args.redo and args.only:
        for name in args.only:
            results.pop(name, None)
    if not args.table:
        run(args.only or zoo(), args.timeout, results, args.results)
    write_table(results, "python benchmarks/bench_zoo.py", args.doc)
    print(args.doc)


if __name__ == "__main__":
    main()
