"""The README's code, as a new user would run it: every ```python block (in order, in one
namespace, as one session) and every command of the ```bash blocks, in a folder holding the files
they name (photos, a cat, faces).  Used by tests/test_readme.py, and run alone to time them:

    python tests/readme.py            # prints one line per snippet: seconds, lines, first line

A few commands are not run, each for a reason listed in ``NOT_RUN``; a few numbers are made
smaller in the test only (``REDUCED``), so that the suite stays within minutes; the README's own
numbers are what a user runs, and ``docs/benchmarks.md`` times them.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

# commands that are not run, with why (matched at the start of a command)
NOT_RUN = {
    "make ": "the Makefile's targets are what CI itself runs",
    "rflens view vgg16 --image": "serves until Ctrl-C (tests/test_cli.py serves and interrupts one)",
    "rflens scan resnet50 --layer layer4 --images /mnt/": "the cluster recipe: an existing Ray cluster and its "
                                                          "shared storage (tests/test_ray.py runs a local one)",
    "rflens empirical resnet50 --layer layer4 --scan scan_layer4 --units 0-255 --checkpoint occ.npz --ray ray://":
        "the cluster recipe: an existing Ray cluster (tests/test_ray.py runs a local one)",
}
# a synopsis line names its arguments in capitals: not a command
SYNOPSIS = re.compile(r"\bMODEL\b|\bDIR\b|\bPATH\b|\[")
# (README text, what the test runs instead): sizes reduced for the suite only
REDUCED = [
    ("inputs=32)", "inputs=4)"),
    ("(3, 800, 800)", "(3, 320, 320)"),
    ("--noise 8 --scale log", "--noise 2 --scale log"),
]


@dataclass
class Snippet:
    kind: str        # "python" or "bash"
    line: int        # where it starts in the README
    code: str

    @property
    def title(self) -> str:
        return self.code.strip().splitlines()[0][:70]


def snippets(text: str | None = None) -> list[Snippet]:
    """The README's python blocks, and its bash blocks split into commands (one a line, with
    their ``#`` comments dropped), in the README's order."""
    text = README.read_text() if text is None else text
    out: list[Snippet] = []
    for m in re.finditer(r"^```(python|bash)\n(.*?)^```", text, re.M | re.S):
        line = text[:m.start()].count("\n") + 2
        if m.group(1) == "python":
            out.append(Snippet("python", line, m.group(2)))
            continue
        for i, command in enumerate(m.group(2).splitlines()):
            command = command.split(" #")[0].strip()
            if command and not command.startswith("#"):
                out.append(Snippet("bash", line + i, command))
    return out


def runnable(s: Snippet) -> str | None:
    """None where the snippet is run; else why not."""
    if s.kind == "python":
        return None
    for start, why in NOT_RUN.items():
        if s.code.startswith(start):
            return why
    if not s.code.startswith("rflens "):
        return "not an rflens command"
    if SYNOPSIS.search(s.code):
        return "a synopsis (placeholders in capitals, optional parts in brackets)"
    return None


def reduced(code: str) -> str:
    for old, new in REDUCED:
        code = code.replace(old, new)
    return code


def prepare(folder: Path) -> None:
    """The files the README names: photo.jpg and cat.jpg, photos/ (eight of scikit-image's
    photographs) and faces/ (the 100 faces of its LFW subset, for MTCNN's ONet)."""
    import numpy as np
    from PIL import Image
    from skimage import data
    Image.fromarray(data.astronaut()).save(folder / "photo.jpg")
    Image.fromarray(data.chelsea()).save(folder / "cat.jpg")
    photos = folder / "photos"
    photos.mkdir(exist_ok=True)
    for name in ("astronaut", "camera", "chelsea", "coffee", "coins", "moon", "rocket", "hubble_deep_field"):
        image = np.asarray(getattr(data, name)())
        Image.fromarray(image if image.ndim == 3 else np.stack([image] * 3, -1)).save(photos / f"{name}.png")
    faces = folder / "faces"
    faces.mkdir(exist_ok=True)
    for i, face in enumerate(data.lfw_subset()[:100]):
        Image.fromarray((face * 255).round().astype(np.uint8)).save(faces / f"lfw{i:03d}.png")


def _env() -> dict[str, str]:
    # the checkout's rflens, and tests/ for `tests/trained.py:trained_onet` run from another folder
    path = os.pathsep.join([str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "MPLBACKEND": "Agg"}


def run(s: Snippet, folder: Path, small: bool = True, timeout: float = 900) -> tuple[float, str]:
    """Run one snippet in ``folder`` (python: its lines appended to the session so far, in
    ``session.py``, each block timed alone); its seconds and output.  Raises CalledProcessError."""
    code = reduced(s.code) if small else s.code
    if s.kind == "python":
        code = "\n" * (s.line - 1) + code  # a traceback names the README's own lines
    start = time.perf_counter()
    if s.kind == "bash":
        argv = shlex.split(code.replace("tests/trained.py", str(ROOT / "tests" / "trained.py")))
        done = subprocess.run([sys.executable, "-m", "rflens.cli", *argv[1:]], cwd=folder, env=_env(),
                              capture_output=True, text=True, timeout=timeout)
    else:
        session = folder / "session.py"
        before = session.read_text() if session.exists() else ""
        # the blocks before this one ran already: replayed with their output dropped, this one timed;
        # seeded, so a replayed block builds the same random weights as when it ran (a scan folder
        # it made refuses other weights)
        script = (f"import contextlib, io, time, torch\ntorch.manual_seed(0)\n"
                  f"with contextlib.redirect_stdout(io.StringIO()):\n"
                  f"    exec(compile({before!r}, 'README.md', 'exec'))\n"
                  f"_t = time.perf_counter()\nexec(compile({code!r}, 'README.md', 'exec'))\n"
                  f"print(f'__took {{time.perf_counter() - _t:.3f}}')\n")
        done = subprocess.run([sys.executable, "-c", script], cwd=folder, env=_env(), capture_output=True,
                              text=True, timeout=timeout)
        session.write_text(before + code.lstrip("\n") + "\n")
    if done.returncode != 0:
        raise subprocess.CalledProcessError(done.returncode, s.title, done.stdout, done.stderr)
    took = time.perf_counter() - start
    found = re.search(r"__took ([\d.]+)", done.stdout)
    return (float(found.group(1)) if found else took), done.stdout + done.stderr


if __name__ == "__main__":
    import tempfile
    small = "--full" not in sys.argv
    with tempfile.TemporaryDirectory() as tmp:
        prepare(Path(tmp))
        for s in snippets():
            why = runnable(s)
            if why:
                print(f"  skip  README.md:{s.line}  {s.title}  ({why})")
                continue
            took, _ = run(s, Path(tmp), small)
            print(f"{took:6.1f} s  README.md:{s.line}  {s.kind}  {s.title}", flush=True)
