"""Loading pictures to draw receptive fields on, at the model's input size."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import RFLensError


@dataclass(frozen=True)
class Picture:
    """An RGB float image in [0, 1] of the model's input size, and how it got there."""

    pixels: np.ndarray
    transform: str


def load_image(path: str | Path, size: tuple[int, int]) -> Picture:
    """Read any Pillow-readable file (PNG, JPEG, WebP, 16-bit, grayscale, RGBA, palette) and
    fit it to ``size`` = (height, width): resize so it covers the size (aspect kept, bilinear),
    then crop the centre.

    >>> import numpy as np, PIL.Image, tempfile, os
    >>> f = os.path.join(tempfile.mkdtemp(), "a.png")
    >>> PIL.Image.fromarray(np.zeros((40, 80), np.uint8)).save(f)
    >>> load_image(f, (20, 20)).transform
    'resized 80x40 -> 40x20 (bilinear), centre crop 20x20'
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.exists():
        raise RFLensError(f"no image at '{path}'")
    if path.is_dir():
        raise RFLensError(f"'{path}' is a folder, not an image")
    try:
        with Image.open(path) as img:
            img.load()
            pixels = _to_rgb(img)
    except UnidentifiedImageError:
        raise RFLensError(f"cannot read '{path}' as an image (not a format Pillow knows)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise RFLensError(f"cannot read '{path}' as an image: {e}") from None
    return fit(pixels, size)


def _to_rgb(img) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        gray = np.clip(arr / top, 0, 1)
        return np.repeat(gray[..., None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float64) / 255
        alpha = rgba[..., 3:]
        return rgba[..., :3] * alpha + (1 - alpha)  # on white
    return np.asarray(img.convert("RGB"), dtype=np.float64) / 255


def fit(pixels: np.ndarray, size: tuple[int, int]) -> Picture:
    """Resize to cover ``size`` (aspect kept), then crop the centre."""
    from PIL import Image

    h, w = pixels.shape[:2]
    th, tw = size
    scale = max(th / h, tw / w)
    nh, nw = max(th, round(h * scale)), max(tw, round(w * scale))
    img = Image.fromarray((np.clip(pixels, 0, 1) * 255).round().astype(np.uint8))
    if (nh, nw) != (h, w):
        img = img.resize((nw, nh), Image.BILINEAR)
    arr = np.asarray(img, dtype=np.float64) / 255
    top, left = (nh - th) // 2, (nw - tw) // 2
    arr = arr[top:top + th, left:left + tw]
    steps = []
    if (nh, nw) != (h, w):
        steps.append(f"resized {w}x{h} -> {nw}x{nh} (bilinear)")
    if (nh, nw) != (th, tw):
        steps.append(f"centre crop {tw}x{th}")
    return Picture(arr, ", ".join(steps) or "as is")
