"""What the reproduction scripts share: where things go, the command line, writing a figure."""

from __future__ import annotations

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMG = ROOT / "docs" / "img"


def parser(doc: str, models: list[str]) -> argparse.ArgumentParser:
    """The options every script takes: the networks, the photographs, where runs are kept."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--model", action="append", choices=sorted(models), help="default: all")
    ap.add_argument("--images", type=Path, default=ROOT / "data" / "images",
                    help="the image set (make data); give it as the runs that made the kept scans did")
    ap.add_argument("--runs", type=Path, default=ROOT / "data" / "runs", help="scans and checkpoints kept here")
    return ap


def heat_cmap():
    """rflens' heat colours with masked values (exact zeros: no dependency, or outside the crop
    the gradient ran on) in the darkest colour, for log-scaled maps."""
    import matplotlib.pyplot as plt
    from rflens.plot import HEAT_CMAP
    cmap = plt.get_cmap(HEAT_CMAP).copy()
    cmap.set_bad(cmap(0))
    return cmap


def save_figure(fig, out: Path, dpi: int = 150) -> None:
    """``out``.png for pages and ``out``.svg for papers."""
    import matplotlib.pyplot as plt
    for ext in ("png", "svg"):
        fig.savefig(out.with_suffix(f".{ext}"), dpi=dpi)
    plt.close(fig)
