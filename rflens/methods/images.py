"""Loading pictures to draw receptive fields on, at the model's input size."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..engine.memory import check
from ..errors import RFLensError

if TYPE_CHECKING:  # for the annotation only: pictures load without torch
    import torch


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
    # the resized picture as bytes and as float64, and the float64 crop
    check(th * tw * 3 * 17, f"the picture fitted to {th}x{tw} pixels", (3, th, tw), 2)
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


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def image_files(folder: str | Path) -> list[Path]:
    """Every file under ``folder`` (recursive, sorted, hidden files and folders left out);
    which of them Pillow can read is found out when they are loaded."""
    folder = Path(folder)
    if not folder.exists():
        raise RFLensError(f"no folder at '{folder}'")
    if not folder.is_dir():
        raise RFLensError(f"'{folder}' is a file, not a folder of images")
    files = sorted(p for p in folder.rglob("*")
                   if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    if not files:
        raise RFLensError(f"folder '{folder}' holds no files")
    return files


def to_tensor(picture: Picture, channels: int = 3, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """A (C, H, W) float32 tensor normalised as the model expects (ImageNet statistics by
    default; ``mean=0, std=1`` keeps [0, 1]).  One-channel models get the grey level.

    >>> import numpy as np
    >>> to_tensor(Picture(np.ones((4, 4, 3)), "as is"), mean=0, std=1).shape
    torch.Size([3, 4, 4])
    """
    import torch

    pixels = picture.pixels
    if channels == 1:
        pixels = pixels.mean(axis=2, keepdims=True)
    elif channels != 3:
        raise RFLensError(f"images have 1 or 3 channels; this model takes {channels}")
    mean = np.broadcast_to(np.asarray(mean, np.float64), (channels,))
    std = np.broadcast_to(np.asarray(std, np.float64), (channels,))
    arr = (pixels - mean) / std
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))).float()
