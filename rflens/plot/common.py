"""What every picture shares: the colours, the 1-D/3-D to 2-D view of masks and heat maps, and
writing a figure out (``save`` to a file, ``to_png`` to bytes).

>>> import tempfile
>>> save(Figure(), Path(tempfile.mkdtemp()) / "empty.svg").suffix
'.svg'
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ..errors import RFLensError
from ..files import atomic_write

MASK_RGB = (1.0, 0.42, 0.0)       # the support: orange
MASK_ALPHA = 0.6
BOX_RGB = (0.0, 0.45, 0.9)        # the clipped box
UNCLIPPED_RGB = (0.5, 0.5, 0.5)   # the classic box, reaching into padding
UNIT_RGB = (0.85, 0.1, 0.1)
# Okabe and Ito's colour-blind-safe palette, yellow last (it reads poorly on white)
LAYER_COLOURS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"]
HEAT_CMAP = "magma"
HEAT_BOX_RGB = (0.0, 0.85, 1.0)     # the theoretical RF box on a heat map: cyan reads on magma


def _fmt(values) -> str:
    values = [v for v in values]
    return str(values[0]) if len(set(values)) == 1 else "x".join(str(v) for v in values)


HEAT_PROJECTED = "3-D input: max over the first axis"


def _plane(values: np.ndarray, projected: str = "projected over time") -> tuple[np.ndarray, str]:
    """A 2-D view of a 1-, 2- or 3-D mask or heat map (3-D: the maximum over the first axis),
    and a note on how it was made."""
    if values.ndim == 1:
        return values[None, :], ""
    if values.ndim == 3:
        return values.max(axis=0), projected
    return values, ""


def _yx(box, k: int):
    if k == 1:
        return (0, 1), box[0]
    return box[-2], box[-1]


def save(fig: Figure, path: str | Path) -> Path:
    """Write the figure (format from the extension) without leaving a half-written file."""
    path = Path(path)
    ext = path.suffix.lower().lstrip(".")
    if ext not in ("png", "svg", "pdf"):
        raise RFLensError(f"cannot write '{path}': use a .png, .svg or .pdf name")
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format=ext))


def to_png(fig: Figure) -> bytes:
    """The figure as PNG bytes (what Jupyter shows for a result's ``_repr_png_``).

    >>> to_png(Figure())[:4]
    b'\\x89PNG'
    """
    import io
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
