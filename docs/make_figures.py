"""Make every picture of docs/gallery.md with the rflens commands (``make figures``).

    python docs/make_figures.py                           # every picture
    python docs/make_figures.py erf_resnet50_layer3.png   # only these (gallery.md is rewritten)
"""

from __future__ import annotations

import json
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


# Gradients need real weights: these run the models (random weights, seed 0) on the CPU, with
# small input counts so the whole set takes a couple of minutes.  Captions are filled in with the
# numbers each command prints (--format json; the picture is the same without it).
GRADIENT_INTRO = (
    "The theoretical RF is where a unit *could* look. With the model's own weights, the gradient "
    "says where it *does*: `rflens erf` averages |d unit / d input| over many inputs (the effective "
    "RF of Luo et al., 2016) and `rflens grad` shows it for one input, with every missing pixel put "
    "down to its cause. The effective RF is much smaller than the theoretical one (a Gaussian-like "
    "blob whose 4σ extent is a fraction of the box) and grows with depth. At a zero input the "
    "gradient RF of a ReLU network is empty: every ReLU sits exactly at its kink, where PyTorch's "
    "derivative is 0, so a \"nonzero gradient\" RF measured at zeros shows nothing of the "
    "architecture; on a photograph nearly the whole support is reached.")


def _erf_layers(recs) -> str:
    sigmas = " → ".join(f"{r['sigma'][0]:.0f}" for r in recs)
    ratios = ", ".join(f"{r['trf_ratio'][0]:.2f}" for r in recs)
    return (f"ResNet-50 (random weights), centre unit of layer1 to layer4 at 224x224, mean over "
            f"{recs[0]['inputs']} Gaussian noise inputs, log scale, each panel scaled to its own maximum. "
            f"σ grows {sigmas} px with depth while its share of the theoretical RF shrinks, as Luo et "
            f"al. predict: 4σ over the RF's extent {ratios} (the layer3 and layer4 boxes are clipped by "
            f"the 224 px input, which inflates their ratio).")


def _ratio(r) -> str:
    return "not reached" if r is None else f"{r['ratio']:.3f}"


def _erf_layer3(rec) -> str:
    area = rec["area_ratio"]
    return (f"One effective RF in detail: ResNet-50 layer3, unit ({rec['unit'][0]}, {rec['unit'][1]}), "
            f"{rec['inputs']} noise inputs, linear and log scale, with the theoretical box, the exact RF "
            f"centre (+), the centre of mass (x) and the 1σ/2σ ellipses of the moment Gaussian "
            f"(σ {rec['sigma'][0]:.1f} x {rec['sigma'][1]:.1f} px). RepLKNet's area ratio: "
            f"{_ratio(area['20%'])} at 20%, {_ratio(area['50%'])} at 50%, {_ratio(area['99%'])} at 99%.")


def _grad_zeros(rec) -> str:
    m = rec["missed"]
    return (f"ResNet-18 layer2, unit (14, 14), at a zero input: {rec['nonzero']} of "
            f"{rec['theoretical_support']} pixels of the theoretical RF have a nonzero gradient. "
            f"{m['activations']} are missed because the ReLUs sit at 0 (orange), {m['max']} because "
            f"max-pooling routes the gradient of equal inputs to the first of each window (purple).")


def _grad_photo(rec) -> str:
    m = rec["missed"]
    return (f"VGG-16 conv5_3 (features.29), unit (7, 7), on a photograph: {rec['nonzero']} of "
            f"{rec['theoretical_support']} pixels are reached; {m['max']} are missed through max-pooling "
            f"and {m['activations']} through activations, {rec['outside']} lie outside the theoretical RF.")


GRADIENT_FIGURES = [
    ("erf_resnet50_layers.png", _erf_layers, 1200,
     ["erf", "resnet50", "--layer", "layer1,layer2,layer3,layer4", "--noise", "8", "--scale", "log"]),
    ("erf_resnet50_layer3.png", _erf_layer3, 1000,
     ["erf", "resnet50", "--layer", "layer3", "--noise", "16", "--scale", "both"]),
    ("grad_resnet18_zeros.png", _grad_zeros, 900,
     ["grad", "resnet18", "--layer", "layer2", "--unit", "14,14"]),
    ("grad_vgg16_astronaut.png", _grad_photo, 900,
     ["grad", "vgg16", "--layer", "features.29", "--unit", "7,7", "--image", "{photo}"]),
]


def main(only: set[str] | None = None) -> None:
    """Write docs/gallery.md and the pictures (all, or the names in ``only``)."""
    from PIL import Image
    from skimage import data

    IMG.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "toynet.py").write_text(TOY)
        photo = tmp / "astronaut.png"  # scikit-image's public-domain NASA photograph
        Image.fromarray(data.astronaut()).save(photo)

        def shown(argv: list[str]) -> str:
            return " ".join(a.replace(str(tmp / "toynet.py"), "toynet.py").replace(str(photo), "astronaut.png")
                            for a in argv)

        lines = ["# Gallery", "", "Every picture below was made by `python docs/make_figures.py` "
                 "(`make figures`) with the command shown.", ""]
        for name, caption, argv in FIGURES:
            argv = [a.format(toy=tmp / "toynet.py", photo=photo) for a in argv]
            if only is None or name in only:
                out = tmp / name
                subprocess.run([sys.executable, "-m", "rflens.cli", *argv, "-o", str(out)], check=True,
                               stdout=subprocess.DEVNULL)
                _shrink(out, IMG / name)
            lines += [f"## {name[:-4].replace('_', ' ')}", "", caption, "", f"`rflens {shown(argv)}`", "",
                      f"![{name}](img/{name})", ""]
        lines += ["## Gradients and effective receptive fields", "", GRADIENT_INTRO, ""]
        captions = _captions_in_gallery()
        for name, caption, width, argv in GRADIENT_FIGURES:
            argv = [a.format(photo=photo) for a in argv]
            if only is None or name in only:
                out = tmp / name
                res = subprocess.run([sys.executable, "-m", "rflens.cli", *argv, "--format", "json",
                                      "-o", str(out)], check=True, stdout=subprocess.PIPE, text=True)
                captions[name] = caption(json.loads(res.stdout))
                _shrink(out, IMG / name, width)
            lines += [f"### {name[:-4].replace('_', ' ')}", "", captions.get(name, ""), "",
                      f"`rflens {shown(argv)}`", "", f"![{name}](img/{name})", ""]
        (DOCS / "gallery.md").write_text("\n".join(lines))
    print(DOCS / "gallery.md")


def _captions_in_gallery() -> dict[str, str]:
    """The measured captions of the gradient figures already in gallery.md, kept by a run that
    remakes only some of them."""
    path = DOCS / "gallery.md"
    lines = path.read_text().splitlines() if path.exists() else []
    return {line[4:].replace(" ", "_") + ".png": lines[i + 2] for i, line in enumerate(lines[:-2])
            if line.startswith("### ")}


def _shrink(src: Path, dst: Path, width: int = 900) -> None:
    """Keep the repository light: at most ``width`` px wide, palette PNG."""
    from PIL import Image

    with Image.open(src) as img:
        img = img.convert("RGB")
        if img.width > width:
            img = img.resize((width, round(img.height * width / img.width)), Image.LANCZOS)
        img.quantize(colors=256).save(dst, optimize=True)


if __name__ == "__main__":
    names = set(sys.argv[1:])
    unknown = names - {f[0] for f in FIGURES} - {f[0] for f in GRADIENT_FIGURES}
    if unknown:
        sys.exit(f"make_figures: no figure named {', '.join(sorted(unknown))}")
    if not names:  # a full run starts clean; named figures are remade in place
        shutil.rmtree(IMG, ignore_errors=True)
    main(names or None)
