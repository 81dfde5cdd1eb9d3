"""The memory a request needs, checked before it is allocated.

Meta tensors cost nothing, but some of what rflens computes grows with the input: the per-axis
dependency matrices of the geometry (input length squared per axis), every unit's box of a layer
(its grid, which grows with the input's area), a unit's mask and the pictures (the input's
area).  At a size like 3x20000x20000 these run into tens of GiB; the kernel then kills the
process without a word, or numpy raises a bare ``MemoryError``.  ``check`` compares what an
allocation will need with what the system has available and refuses with a ``TooLargeError``
that says both and the way out.
"""

from __future__ import annotations

import math
import os

from ..errors import TooLargeError

LARGE = 64 << 20  # smaller needs are not checked (reading the system's numbers costs time)
# bytes per unit and input axis that a layer's per-unit arrays take at their peak: every unit's
# unclipped box (float64 low and high, and a temporary), its clipped box (int64 low and high, the
# first and last pixels it is made from, a temporary)
HULL_BYTES, BOX_BYTES = 24, 40


def available() -> int | None:
    """Bytes this process can still allocate: the system's ``MemAvailable`` (Linux), less where a
    cgroup (a container) limits memory further; free physical memory elsewhere; None where
    nothing is known."""
    found = []
    try:
        with open("/proc/meminfo") as f:
            found += [int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:")]
    except (OSError, ValueError, IndexError):
        pass
    for limit, usage in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                         ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            with open(limit) as f, open(usage) as g:
                found.append(int(f.read()) - int(g.read()))  # "max" (no limit) is no number
            break
        except (OSError, ValueError):
            continue
    if found:
        return max(0, min(found))
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def check(nbytes: float, what: str, input_size: tuple[int, ...] | None = None, power: int | None = None) -> None:
    """Refuse ``what`` (a phrase naming it) where it needs more than the memory available.
    With ``input_size`` (C, *spatial) and ``power`` (how the need grows with the input's side:
    2 for an area), the message suggests an input size that would fit.

    >>> check(10, "a small array")  # nothing to check
    >>> check(2 ** 50, "every unit's box of layer 'x'", (3, 20000, 20000), power=2)
    Traceback (most recent call last):
    ...
    rflens.errors.TooLargeError: every unit's box of layer 'x' would need about 1024.0 TiB of memory, ...
    """
    if nbytes < LARGE:
        return
    free = available()
    if free is None or nbytes <= free:
        return
    way = "use a smaller input size (CLI: --input-size)"
    if input_size is not None and power:
        scale = (free / nbytes) ** (1 / power) * 0.9
        fits = [max(1, int(n * scale) // 32 * 32 or int(n * scale)) for n in input_size[1:]]
        if all(f < n for f, n in zip(fits, input_size[1:])):
            way += f", about {'x'.join(map(str, (input_size[0], *fits)))} or smaller"
    raise TooLargeError(f"{what} would need about {size_text(nbytes)} of memory, and {size_text(free)} is "
                        f"available: {way}")


def size_text(nbytes: float) -> str:
    """``1.5 GiB``, ``300.0 MiB``."""
    units = ["B", "KiB", "MiB", "GiB", "TiB"]
    i = min(len(units) - 1, max(0, int(math.log(max(nbytes, 1), 1024))))
    return f"{nbytes / 1024 ** i:.1f} {units[i]}"
