"""Make every picture of docs/gallery.md with the rflens commands (``make figures``).

    python docs/make_figures.py
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

DOCS = Path(__file__).resolve().parent
IMG = DOCS / "img"
TOY = '''import torch.nn as nn


def build():
    """The Mathematica answer's net: a 5x5 convolution, then a 2x2 mean pool."""
    return nn.Sequential(nn.Conv2d(1, 1, 5), nn.AvgPool2d(2))
'''

FIGURES = [
    ("toy.png", "The two-layer net on a 30x30 input: unit {5,6} counted from 1 is unit (4, 5) here; "
     "its field is the 6x6 square at rows 8-13, columns 10-15.",
     ["show", "{toy}:build", "--input-size", "1x30x30", "--layer", "1", "--unit", "4,5"]),
    ("vgg16_show.png", "The main job: VGG-16 conv5_3 (features.29), unit (7, 7), on a photograph.",
     ["show", "vgg16", "--layer", "features.29", "--unit", "7,7", "--image", "{photo}"]),
    ("vgg16_corner.png", "A corner unit: the exact mask is clipped by the border (blue), the classic "
     "box reaches into the padding (dashed).",
     ["show", "vgg16", "--layer", "features.29", "--unit", "0,0"]),
    ("vgg16_grid.png", "Unit (3, 3) in every convolution and pooling layer of VGG-16.",
     ["grid", "vgg16", "--unit", "3,3"]),
    ("alexnet_overlay.png", "Receptive fields of the centre and corner units of four AlexNet layers "
     "(pool1, pool2, conv3, pool5: 19, 67, 99, 195 px) on a photograph.",
     ["overlay", "alexnet", "--image", "{photo}", "--layers", "features.2,features.5,features.7,features.12"]),
    ("growth.png", "RF size and effective stride against depth: VGG-16, ResNet-50 and Inception-v3.",
     ["growth", "vgg16", "resnet50", "inception_v3"]),
]


def main() -> None:
    from PIL import Image
    from skimage import data

    IMG.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "toynet.py").write_text(TOY)
        photo = tmp / "astronaut.png"  # scikit-image's public-domain NASA photograph
        Image.fromarray(data.astronaut()).save(photo)
        lines = ["# Gallery", "", "Every picture below was made by `python docs/make_figures.py` "
                 "(`make figures`) with the command shown.", ""]
        for name, caption, argv in FIGURES:
            argv = [a.format(toy=tmp / "toynet.py", photo=photo) for a in argv]
            out = tmp / name
            subprocess.run([sys.executable, "-m", "rflens.cli", *argv, "-o", str(out)], check=True,
                           stdout=subprocess.DEVNULL)
            _shrink(out, IMG / name)
            shown = " ".join(a.replace(str(tmp / "toynet.py"), "toynet.py")
                             .replace(str(photo), "astronaut.png") for a in argv)
            lines += [f"## {name[:-4].replace('_', ' ')}", "", caption, "", f"`rflens {shown}`", "",
                      f"![{name}](img/{name})", ""]
        (DOCS / "gallery.md").write_text("\n".join(lines))
    print(DOCS / "gallery.md")


def _shrink(src: Path, dst: Path, width: int = 900) -> None:
    """Keep the repository light: at most ``width`` px wide, palette PNG."""
    from PIL import Image

    with Image.open(src) as img:
        img = img.convert("RGB")
        if img.width > width:
            img = img.resize((width, round(img.height * width / img.width)), Image.LANCZOS)
        img.quantize(colors=256).save(dst, optimize=True)


if __name__ == "__main__":
    shutil.rmtree(IMG, ignore_errors=True)
    main()
