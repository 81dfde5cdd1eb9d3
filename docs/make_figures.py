"""Make every picture of docs/gallery.md with the rflens commands (``make figures``).

    python docs/make_figures.py                           # every picture
    python docs/make_figures.py erf_resnet50_layer3.png   # only these (gallery.md is rewritten)
    python docs/make_figures.py segment_onet_pool2.png    # the Zhou et al. section (its figures and table)
"""

from __future__ import annotations

import json
import os
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


# The interactive viewer, photographed in headless Chromium (Debian's chromium, driven by
# Playwright: `make setup` installs both) from its static page, with a unit and a pixel chosen.
VIEWER = "viewer_vgg16.png"
VIEWER_STATE = "#layer=features.22&unit=10,14&pixel=150,60"
VIEWER_CAPTION = (
    "`rflens view` in a browser: VGG-16 on a photograph, layer features.22 (conv4_3, 28x28 units), unit "
    "(10, 14) chosen in the grid: its exact support (cyan) and box (magenta) on the input and its numbers; "
    "the pixel clicked on the input (orange square) and the units of the layer that see it (orange cells). "
    "This is the static page; `rflens view` without `--html` serves the same page with gradient RF and ERF "
    "heat maps.")


def _viewer_shot(photo: Path, tmp: Path, out: Path) -> list[str]:
    """Export the static page, open it at VIEWER_STATE and take a screenshot; the command."""
    from playwright.sync_api import sync_playwright
    argv = ["view", "vgg16", "--image", str(photo), "--html", str(tmp / "viewer.html")]
    subprocess.run([sys.executable, "-m", "rflens.cli", *argv], check=True, stdout=subprocess.DEVNULL)
    chromium = os.environ.get("RFLENS_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("make_figures: the viewer's picture needs Chromium (make setup installs Debian's chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium)
        page = browser.new_page(viewport={"width": 1400, "height": 1000}, device_scale_factor=1)
        page.goto((tmp / "viewer.html").as_uri() + VIEWER_STATE)
        page.wait_for_selector("#grid[data-pf]")
        page.wait_for_selector('#numbers[data-unit="10,14"]')
        page.screenshot(path=str(out))
        browser.close()
    return argv


# The viewer in a notebook (rflens.widget), photographed by its test: docs/widget.ipynb run by a
# real JupyterLab server in headless Chromium, a unit clicked, a layer chosen from Python, a pixel.
WIDGET = "widget_notebook.png"
WIDGET_CAPTION = (
    "`rflens.widget` in JupyterLab (docs/widget.ipynb): ResNet-18, the unit (5, 9) of layer2 chosen from Python "
    "with `view.select(\"layer2\", (5, 9))`, its exact support and box on the input, and a clicked pixel with the "
    "156 units of layer2 that see it. The same view as `rflens view`, in the cell's output, answered by the kernel.")


def _widget_shot(out: Path) -> None:
    """Run the notebook test, which saves its screenshot where RFLENS_WIDGET_SHOT says."""
    test = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "browser",
            str(DOCS.parent / "tests" / "test_widget.py")]
    res = subprocess.run(test, env=dict(os.environ, RFLENS_WIDGET_SHOT=str(out)), cwd=DOCS.parent,
                         stdout=subprocess.PIPE, text=True)
    if res.returncode or not out.exists():
        sys.exit(f"make_figures: the notebook widget's picture needs JupyterLab and Chromium (make setup):\n"
                 f"{res.stdout[-2000:]}")


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


# Zhou et al. (2015) on a genuinely trained network and real photographs, offline: MTCNN's ONet
# with facenet-pytorch's weights (tests/trained.py) and the 100 LFW faces of scikit-image. The
# settings keep the whole section to a few minutes on two CPU cores.
REPO = DOCS.parent
ONET = f"{REPO / 'tests' / 'trained.py'}:trained_onet"
AS_ONET = ["--input-size", "3x48x48", "--normalize", "0.5,0.5"]  # ONet's own input: (x * 255 - 127.5) / 128
ZHOU_LAYERS = ["pool1", "pool2", "pool3", "prelu4"]
ZHOU = ["--units", "0-15", "--top-k", "5", "--occluder", "5", "--stride", "2"]
ZHOU_HEADER = "## Empirical receptive fields and segmentations (Zhou et al. 2015)"
ZHOU_FIGURES = ["empirical_onet_prelu4.png", "empirical_onet_prelu4_units.png", "segment_onet_pool2.png"]
SEGMENT_CHANNEL = 14  # pool2 channel 14 fires on mouths: its top faces show it at a glance
ZHOU_INTRO = (
    "The empirical RF of Zhou et al. (2015, *Object detectors emerge in deep scene CNNs*): for each of a "
    "unit's top images, slide a small occluder over the image and record how much the unit's activation "
    "changes; centre each discrepancy map on the exact RF centre of the unit that peaked, on a canvas twice "
    "the image size, and average. The empirical RF is the smallest centred square holding 90% of the "
    "averaged map. Here on a genuinely trained network, MTCNN's ONet (facenet-pytorch's weights), and "
    "real photographs: `faces/` holds the 100 faces of scikit-image's `lfw_subset()` as 25x25 grey PNGs, "
    "brought to ONet's 48x48 input with its own normalisation (mean 0.5, std 0.5).")


def _zhou_table(rows: list[dict]) -> list[str]:
    lines = ["| layer | theoretical RF (px) | empirical RF (px), mean ± std | empirical / theoretical | "
             "smallest – largest unit |", "|---|---|---|---|---|"]
    for r in rows:
        theo = r["theoretical_size"][0]
        sizes = [s for s in r["unit_sizes"].values() if s > 0]
        lines.append(f"| {r['layer']} | {theo} | {r['empirical_mean']:.1f} ± {r['empirical_std']:.1f} | "
                     f"{r['empirical_mean'] / theo:.2f} | {min(sizes)} – {max(sizes)} |")
    return lines


def _zhou_section(tmp: Path) -> list[str]:
    """Scan the faces for each layer, measure 16 units per layer, draw a unit and a segmentation."""
    import numpy as np
    from PIL import Image
    from skimage.data import lfw_subset

    faces = tmp / "faces"
    faces.mkdir()
    for i, face in enumerate(lfw_subset()[:100]):  # the first 100 are the faces, the rest are not
        Image.fromarray((face * 255).round().astype(np.uint8)).save(faces / f"lfw{i:03d}.png")

    def cli(argv: list[str]) -> dict:
        res = subprocess.run([sys.executable, "-m", "rflens.cli", *argv, "--format", "json"], check=True,
                             stdout=subprocess.PIPE, text=True)
        return json.loads(res.stdout)

    def shown(argv: list[str]) -> str:
        return " ".join(a.replace(f"{tmp}/", "").replace(f"{REPO}/", "") for a in argv)

    scans, rows = [], []
    for layer in ZHOU_LAYERS:
        scan = ["scan", ONET, "--layer", layer, "--images", str(faces), *AS_ONET, "--top-k", "5",
                "--out", str(tmp / f"scan_{layer}")]
        cli(scan)
        scans.append(scan)
        rows.append(cli(["empirical", ONET, "--layer", layer, "--scan", str(tmp / f"scan_{layer}"), *ZHOU,
                         "-o", str(tmp / f"empirical_{layer}.png")]))
    _shrink(tmp / "empirical_prelu4.png", IMG / "empirical_onet_prelu4_units.png", 800)
    one = ["empirical", ONET, "--layer", "prelu4", "--scan", str(tmp / "scan_prelu4"), "--units", "0", "--top-k", "5",
           "--occluder", "5", "--stride", "2"]
    unit = cli([*one, "-o", str(tmp / "one.png")])
    _shrink(tmp / "one.png", IMG / "empirical_onet_prelu4.png", 640)
    seg = ["segment", ONET, "--layer", "pool2", "--channel", str(SEGMENT_CHANNEL), "--scan", str(tmp / "scan_pool2"),
           "--method", "both", "--occluder", "5", "--stride", "2"]
    sheet = cli([*seg, "-o", str(tmp / "sheet.png")])
    _shrink(tmp / "sheet.png", IMG / "segment_onet_pool2.png", 900)

    by_layer = {r["layer"]: r for r in rows}
    p4 = by_layer["prelu4"]
    level = sheet["segments"][0]["level"]
    names = ", ".join(Path(s["image"]).name for s in sheet["segments"] if s["method"] == "netdissect")
    table_cmd = shown(["rflens", "empirical", ONET, "--layer", "$L", "--scan", "scan_$L", *ZHOU, "--format", "json"])
    scan_cmd = shown(["rflens", "scan", ONET, "--layer", "$L", "--images", "faces/", *AS_ONET, "--top-k", "5",
                      "--out", "scan_$L"])
    return [
        ZHOU_HEADER, "", ZHOU_INTRO, "",
        "### theoretical against empirical size", "",
        f"Theoretical against empirical RF size on ONet, in the manner of Zhou et al.'s Table 1: channels 0-15 "
        f"of each layer, each unit's top 5 of the 100 faces, 5x5 occluders of uniform random pixels slid with "
        f"stride 2, |activation change|, 90% of the mass. A unit's map includes the occluder's overhang (an "
        f"occluder touching the RF changes the unit, and the change is spread over all its 25 pixels), so a "
        f"layer can measure up to 8 px above its theoretical size: shallow layers do (pool1, RF 5, measures "
        f"{by_layer['pool1']['empirical_mean']:.1f}), while from pool3 on the empirical RF is smaller than the "
        f"theoretical one ({by_layer['pool3']['empirical_mean'] / 25:.2f} and {p4['empirical_mean'] / 33:.2f} of "
        f"it), as Zhou et al. found.", "",
        "```bash",
        f"for L in {' '.join(ZHOU_LAYERS)}; do",
        f"  {scan_cmd}",
        f"  {table_cmd}",
        "done",
        "```", "",
        *_zhou_table(rows), "",
        "### empirical onet prelu4 units", "",
        f"The sixteen prelu4 units of the table (theoretical RF 33 px; empirical "
        f"{p4['empirical_mean']:.1f} ± {p4['empirical_std']:.1f} px): each averaged map with the theoretical "
        f"square (cyan) and the empirical one (green, dashed), each panel scaled to its own maximum.", "",
        f"`{shown(['rflens', 'empirical', ONET, '--layer', 'prelu4', '--scan', 'scan_prelu4', *ZHOU])}`", "",
        "![empirical_onet_prelu4_units.png](img/empirical_onet_prelu4_units.png)", "",
        "### empirical onet prelu4", "",
        f"One unit in detail: prelu4 channel 0, the averaged discrepancy map of its top 5 faces on the 96x96 "
        f"canvas (centre shown), each face's map placed with the exact RF centre of the unit that peaked at "
        f"the canvas centre (+). Empirical RF {unit['fields'][0]['empirical_size']} px against the theoretical "
        f"33 px.", "",
        f"`{shown(['rflens', *one])}`", "",
        "![empirical_onet_prelu4.png](img/empirical_onet_prelu4.png)", "",
        "### segment onet pool2", "",
        f"What pool2 channel {SEGMENT_CHANNEL} responds to on its top 5 faces ({names}): NetDissect's "
        f"segmentation (top row: the activation map brought to the image between the units' exact RF centres, "
        f"thresholded at {level:.2f}, the level the channel's top 0.5% of activations over all 100 faces "
        f"reach) and the occlusion segmentation (bottom row: the discrepancy map at half its maximum). On four "
        f"of the five faces both find the mouth; on lfw061.png both point to the lower right corner.", "",
        f"`{shown(['rflens', *seg])}`", "",
        "![segment_onet_pool2.png](img/segment_onet_pool2.png)", "",
    ]


# made by the reproduction scripts on trained networks and real photographs (`make reproductions`,
# minutes to an hour on 2 cores), shown here, not remade by this script
TRAINED_FIGURES = [
    ("depth_vgg16_hed.png", "A trained VGG-16 (HED trunk) on scikit-image's cat: the most active neuron of each pool, "
     "its exact RF, gradient RF and occlusion map.", "python reproductions/pictures.py --only depth"),
    ("depth_mobilenet_v2.png", "The same for torchvision's trained MobileNetV2, block by block.",
     "python reproductions/pictures.py --only depth"),
    ("zhou_ratio.png", "Zhou et al.'s Table 1 on trained VGG-16 and MobileNetV2: empirical against theoretical RF.",
     "python reproductions/zhou.py"),
    ("luo_erf.png", "Luo et al.: effective RFs of the trained networks against their random initialisation.",
     "python reproductions/luo.py"),
    ("vgg16_grid_trained.png", "The VGG-16 grid with the trained trunk's gradient RF on a photograph.",
     "python reproductions/pictures.py --only grid"),
]


def _trained_section() -> list[str]:
    lines = ["## Trained networks (docs/reproductions.md)", "",
             "Tables, numbers and what holds of the papers' findings: [reproductions.md](reproductions.md).", ""]
    for name, caption, command in TRAINED_FIGURES:
        lines += [f"### {name[:-4].replace('_', ' ')}", "", caption, "", f"`{command}`", "",
                  f"![{name}](img/{name})", ""]
    return lines


def _section_in_gallery(header: str) -> list[str]:
    """A section of the gallery.md already written (up to the next section), kept by a run that
    does not remake it."""
    path = DOCS / "gallery.md"
    lines = path.read_text().splitlines() if path.exists() else []
    if header not in lines:
        return []
    start = lines.index(header)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    return lines[start:end] + ([""] if lines[end - 1:end] != [""] else [])


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
        argv = ["view", "vgg16", "--image", "astronaut.png", "--html", "viewer.html"]
        if only is None or VIEWER in only:
            argv = [a.replace(str(photo), "astronaut.png").replace(str(tmp) + "/", "")
                    for a in _viewer_shot(photo, tmp, tmp / VIEWER)]
            _shrink(tmp / VIEWER, IMG / VIEWER, 1200)
        lines += ["## viewer", "", VIEWER_CAPTION, "", f"`rflens {' '.join(argv)}`, opened at "
                  f"`viewer.html{VIEWER_STATE}`", "", f"![{VIEWER}](img/{VIEWER})", ""]
        if only is None or WIDGET in only:
            _widget_shot(tmp / WIDGET)
            _shrink(tmp / WIDGET, IMG / WIDGET, 1200)
        lines += ["## notebook widget", "", WIDGET_CAPTION, "", "`pytest -m browser tests/test_widget.py` with "
                  f"`RFLENS_WIDGET_SHOT=docs/img/{WIDGET}`", "", f"![{WIDGET}](img/{WIDGET})", ""]
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
        if only is None or only & set(ZHOU_FIGURES):
            lines += _zhou_section(tmp)
        else:
            lines += _section_in_gallery(ZHOU_HEADER)
        lines += _trained_section()
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
    unknown = names - {f[0] for f in FIGURES} - {f[0] for f in GRADIENT_FIGURES} - set(ZHOU_FIGURES) - {VIEWER, WIDGET}
    if unknown:
        sys.exit(f"make_figures: no figure named {', '.join(sorted(unknown))}")
    if not names:  # a full run starts clean; named figures are remade in place
        shutil.rmtree(IMG, ignore_errors=True)
    main(names or None)
