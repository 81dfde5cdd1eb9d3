"""What a long call (a scan, an effective RF, an empirical RF, a segmentation) does with its
``progress=`` argument: the library never prints, except into a bar the caller asked for or a
notebook shows.

``progress``:

* ``None`` (the default): a tqdm bar in a notebook (a Jupyter or VS Code kernel, with ``tqdm``
  and ``ipywidgets`` importable), nothing in a plain script;
* ``False``: nothing;
* ``True``: a tqdm bar (the notebook widget in a notebook, text on stderr elsewhere);
* a callable: called as ``progress(done, total)`` (``total`` may be None where the inputs do not
  say how many there are), as before.

>>> calls = []
>>> with reporting(lambda done, total: calls.append((done, total)), "scanning", "image") as report:
...     report(3, 10)
>>> calls, reporting(False, "x").__enter__() is None
([(3, 10)], True)
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from collections.abc import Callable, Iterator
from typing import Union

from ..errors import RFLensError

Report = Callable[[int, Union[int, None]], None]
ProgressLike = Union[Report, bool, None]


def in_notebook() -> bool:
    """Whether this is a Jupyter kernel (JupyterLab, VS Code, Colab): IPython's shell there is
    the ZMQ one, a terminal IPython's is not."""
    if "IPython" not in sys.modules:  # never imported here: not a notebook, and no import
        return False
    shell = sys.modules["IPython"].get_ipython()
    return shell is not None and type(shell).__name__ in ("ZMQInteractiveShell", "Shell")  # Shell: Colab


def _has(*modules: str) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in modules)


@contextlib.contextmanager
def reporting(progress: ProgressLike, what: str, unit: str = "it") -> Iterator[Report | None]:
    """The ``progress(done, total)`` callback a method calls (None: report nothing), from the
    user's ``progress=``; a bar made here is closed when the block ends."""
    if progress is False or (progress is None and not (in_notebook() and _has("tqdm", "ipywidgets"))):
        yield None
        return
    if callable(progress) and not isinstance(progress, bool):
        yield progress
        return
    if progress is not True and progress is not None:
        raise RFLensError(f"progress must be None (a bar in notebooks), True, False or a function "
                          f"progress(done, total), not {progress!r}")
    if not _has("tqdm"):
        raise RFLensError("progress=True draws a tqdm bar: install tqdm (pip install tqdm), or pass a "
                          "function progress(done, total)")
    from tqdm.auto import tqdm
    bar = tqdm(desc=what, unit=unit, total=None, dynamic_ncols=True)

    def report(done: int, total: int | None) -> None:
        if total is not None and bar.total != total:
            bar.total = total
        bar.update(done - bar.n)
    try:
        yield report
    finally:
        bar.close()
