"""(i) The README's examples as written: each python block (timed alone, after the blocks
before it) and each rflens command, in a folder holding the files they name (tests/readme.py).

    python benchmarks/bench_readme.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from common import machine, save_raw, table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from readme import prepare, run, runnable, snippets  # noqa: E402
from trained import weights_file  # noqa: E402


def main() -> None:
    rows, raw = [], []
    with tempfile.TemporaryDirectory() as tmp:
        prepare(Path(tmp))
        for s in snippets():
            why = runnable(s)
            if why is None and "trained.py:" in s.code and weights_file() is None:
                why = "needs facenet-pytorch's weights (make setup)"
            if why is not None:
                continue
            took, _ = run(s, Path(tmp), small=False)
            raw.append({"line": s.line, "kind": s.kind, "title": s.title, "seconds": round(took, 2)})
            rows.append([f"README.md:{s.line}", s.kind, f"`{s.title.replace('|', '/')}`", f"{took:.1f} s"])
    save_raw(snippets=raw)
    print(f"machine: {machine()}\n")
    print(table(["where", "kind", "first line", "time"], rows))
    print(f"\nTotal: {sum(r['seconds'] for r in raw):.0f} s. A python block's time is its own, after the blocks "
          "before it ran; a command's includes starting Python and importing torch.")


if __name__ == "__main__":
    main()
