"""Shared helpers for the benchmarks: timing, the machine line, a markdown table printer, and
the raw numbers of every run as JSON beside docs/benchmarks.md.

Every table a script prints is also kept, with the machine, OpenMP's wait policy and the load
before and after, in ``docs/benchmarks/<script>.json`` (written when the script ends; a script
adds its own raw numbers with ``save_raw``).  Spinning OpenMP threads made 2-thread forwards up
to 50x slower on a busy machine, so CPU timings are run with ``OMP_WAIT_POLICY=PASSIVE``
(``run_all.py`` sets it) and the policy in force is printed with the results.
"""

from __future__ import annotations

import atexit
import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

RAW_DIR = Path(__file__).resolve().parent.parent / "docs" / "benchmarks"
_LOAD_BEFORE = os.getloadavg()
_RAW: dict = {"tables": []}


def best_of(fn, repeat: int = 5, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in seconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def load(avg: tuple[float, float, float] | None = None) -> str:
    """The machine's load (``os.getloadavg()``) in words: other processes' share of the cores
    skews CPU timings, so every benchmark reports it."""
    one, five, _ = avg or os.getloadavg()
    return f"load {one:.2f} (1 min) / {five:.2f} (5 min) on {os.cpu_count()} cores"


def machine() -> str:
    """The line every result is printed under: processor, threads, versions, OpenMP's wait
    policy, and the load when the script started and now."""
    return (f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
            f"torch {torch.__version__}, Python {platform.python_version()}, "
            f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset (OpenMP default: spinning)')}; "
            f"{load(_LOAD_BEFORE)} at the start, {load()} now")


def table(header: list[str], rows: list[list]) -> str:
    _RAW["tables"].append({"header": list(header), "rows": [[str(c) for c in r] for r in rows]})
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def save_raw(**numbers) -> None:
    """Add a script's own raw numbers (lists of timings, per-model records) to its JSON."""
    _RAW.update(numbers)


def raw_path(script: str, argv: list[str]) -> Path:
    """Where a run's raw numbers go: ``docs/benchmarks/bench_erf.json``, or with its flags
    ``bench_erf_crop.json`` (``--crop``)."""
    flags = [a.lstrip("-") for a in argv if a.startswith("--")]
    return RAW_DIR / ("_".join([Path(script).stem, *flags]) + ".json")


@atexit.register
def _write_raw() -> None:
    if len(_RAW) == 1 and not _RAW["tables"]:
        return  # nothing measured (--help, a failed start)
    script = Path(sys.argv[0]).stem
    if not script.startswith("bench_") or "--one" in sys.argv:
        return  # a child process measuring one model: its parent keeps the numbers
    from rflens.files import atomic_write
    RAW_DIR.mkdir(parents=True, exist_ok=True)
    record = {"script": f"benchmarks/{script}.py", "argv": sys.argv[1:], "date": datetime.date.today().isoformat(),
              "machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
              "torch": torch.__version__, "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
              "load_before": _LOAD_BEFORE, "load_after": os.getloadavg(), **_RAW}
    atomic_write(raw_path(script, sys.argv[1:]), lambda tmp: Path(tmp).write_text(json.dumps(record, indent=1)))
