"""Pictures, checked by reading the drawn pixels back."""

from __future__ import annotations

import os

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from PIL import Image
from torch import nn

import rflens
from rflens.cli import main
from rflens.images import load_image
from rflens.plot import MASK_ALPHA, MASK_RGB, grid_figure, growth_figure, overlay_figure, select_layers

PAINT = np.array([255 * (MASK_ALPHA * c + 1 - MASK_ALPHA) for c in MASK_RGB])


def rendered(fig) -> np.ndarray:
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].astype(float)


def painted_pixels(fig, ax, shape) -> np.ndarray:
    """For each input pixel, whether the figure shows the mask colour at its centre."""
    image = rendered(fig)
    height = image.shape[0]
    out = np.zeros(shape, bool)
    for r in range(shape[0]):
        for c in range(shape[1]):
            x, y = ax.transData.transform((c, r))
            rgb = image[int(round(height - y)), int(round(x))]
            out[r, c] = np.abs(rgb - PAINT).max() < 12
    return out


@pytest.fixture(scope="module")
def toy():
    return rflens.analyze(nn.Sequential(nn.Conv2d(1, 1, 5), nn.AvgPool2d(2)), (1, 30, 30))


def test_toy_unit_paints_exactly_the_6x6_square(toy):
    fig = toy["1"].unit((4, 5)).plot()
    painted = painted_pixels(fig, fig.axes[0], (30, 30))
    expected = np.zeros((30, 30), bool)
    expected[8:14, 10:16] = True
    assert np.array_equal(painted, expected)
    assert "RF 6, stride 2, not clipped" in fig._suptitle.get_text()


def test_dilation_holes_stay_unpainted():
    net = nn.Sequential(nn.Conv2d(1, 1, 3, dilation=2, padding=2), nn.Conv2d(1, 1, 3, dilation=2, padding=2))
    unit = rflens.analyze(net, (1, 21, 21))["1"].unit((10, 10))
    fig = unit.plot()
    painted = painted_pixels(fig, fig.axes[0], (21, 21))
    assert np.array_equal(painted, unit.mask)
    assert not painted[7, 7] and painted[6, 6] and painted[14, 14]  # a hole inside the box


def test_a_clipped_box_touches_the_image_border():
    net = nn.Sequential(nn.Conv2d(1, 1, 5, padding=2), nn.Conv2d(1, 1, 5, padding=2))
    layer = rflens.analyze(net, (1, 16, 16))["1"]
    fig = layer.unit((0, 0)).plot()
    ax = fig.axes[0]
    painted = painted_pixels(fig, ax, (16, 16))
    assert painted[0, 0] and painted[4, 4] and not painted[5, 5]
    image = rendered(fig)
    # the box's left edge runs along the image's left border
    x, y = ax.transData.transform((-0.5, 2))
    edge = image[int(round(image.shape[0] - y)), int(round(x)) - 1:int(round(x)) + 2]
    assert (np.abs(edge - np.array([0, 115, 230])).max(axis=1) < 60).any()
    assert "clipped by the border" in fig._suptitle.get_text()


def test_grid_clamps_units_on_small_layers_and_says_so():
    a = rflens.analyze(rflens.models.load_model("vgg11"), (3, 64, 64))
    layers = select_layers(a, "conv,pool")
    fig = grid_figure(a, (5, 5), layers)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert len(titles) == len(layers)
    assert any("clamped to (3, 3)" in t for t in titles) and not any("clamped" in t for t in titles[:3])


def test_growth_chart_draws_each_model_and_the_input_size():
    a = rflens.analyze(rflens.models.load_model("vgg11"), (3, 96, 96))
    b = rflens.analyze(rflens.models.load_model("resnet18"), (3, 96, 96))
    fig = growth_figure({"vgg11": a, "resnet18": b})
    size_ax = fig.axes[0]
    labels = [line.get_label() for line in size_ax.get_lines()]
    assert "vgg11" in labels and "resnet18" in labels
    assert any(np.allclose(line.get_ydata(), 96) for line in size_ax.get_lines())


def test_overlay_on_a_real_photograph(tmp_path):
    from skimage import data
    path = tmp_path / "astronaut.jpg"
    Image.fromarray(data.astronaut()).save(path)
    a = rflens.analyze(rflens.models.load_model("alexnet"), (3, 224, 224))
    picture = load_image(path, (224, 224))
    fig = overlay_figure(a, picture, ["features.2", "features.12"], "center,corners")
    ax = fig.axes[0]
    assert len(ax.patches) == 10
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["features.2: RF 19", "features.12: RF 195"]


@pytest.mark.parametrize("mode,dtype,ext", [("L", np.uint8, "png"), ("I;16", np.uint16, "png"),
                                            ("RGBA", np.uint8, "png"), ("RGB", np.uint8, "webp"),
                                            ("RGB", np.uint8, "jpg"), ("P", np.uint8, "png")])
def test_images_of_every_kind_load_at_the_input_size(tmp_path, mode, dtype, ext):
    rng = np.random.default_rng(0)
    shape = (30, 50, 4) if mode == "RGBA" else (30, 50, 3) if mode == "RGB" else (30, 50)
    arr = rng.integers(0, 255 if dtype == np.uint8 else 65535, shape).astype(dtype)
    img = Image.fromarray(arr) if mode != "P" else Image.fromarray(arr).convert("P")
    path = tmp_path / f"a.{ext}"
    img.save(path)
    pic = load_image(path, (20, 24))
    assert pic.pixels.shape == (20, 24, 3) and 0 <= pic.pixels.min() and pic.pixels.max() <= 1
    assert pic.transform == "resized 50x30 -> 33x20 (bilinear), centre crop 24x20"


def test_missing_and_broken_images_are_clear_errors(tmp_path):
    with pytest.raises(rflens.RFLensError, match="no image at"):
        load_image(tmp_path / "none.png", (8, 8))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(rflens.RFLensError, match="cannot read"):
        load_image(broken, (8, 8))


def test_show_writes_a_named_png_and_prints_its_path(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["show", "vgg16", "--layer", "features.29", "--unit", "7,7"]) == 0
    out = capsys.readouterr().out.strip()
    assert out == "rf_vgg16_features.29_7-7.png" and (tmp_path / out).read_bytes()[:4] == b"\x89PNG"
    for ext, magic in (("svg", b"<?xml"), ("pdf", b"%PDF")):
        assert main(["show", "alexnet", "--layer", "features.5", "--unit", "0,0", "-o", f"rf.{ext}"]) == 0
        assert (tmp_path / f"rf.{ext}").read_bytes()[:5].startswith(magic)
    assert [p for p in os.listdir(tmp_path) if p.endswith(".part")] == []


@pytest.mark.parametrize("argv,needle", [
    (["show", "vgg16", "--layer", "features.29", "-o", "rf.bmp"], ".png, .svg or .pdf"),
    (["show", "vgg16", "--layer", "features.29", "--image", "nope.jpg"], "no image at"),
    (["grid", "vgg16", "--unit", "1,1", "--layers", "(("], "neither op kinds"),
    (["overlay", "alexnet", "--image", "nope.jpg", "--layers", "features.2"], "no image at"),
])
def test_picture_commands_refuse_bad_input(tmp_path, capsys, monkeypatch, argv, needle):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert needle in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_module_callable_models_draw_too(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "toynet.py").write_text(
        "import torch.nn as nn\n\ndef build():\n    return nn.Sequential(nn.Conv2d(1, 1, 5), nn.AvgPool2d(2))\n")
    assert main(["show", "toynet.py:build", "--input-size", "1x30x30", "--layer", "1", "--unit", "4,5",
                 "-o", "toy.png"]) == 0
    assert main(["grid", "toynet.py:build", "--input-size", "1x30x30", "--unit", "4,5", "-o", "g.png"]) == 0
    assert main(["growth", "toynet.py:build", "--input-size", "1x30x30", "-o", "gr.png"]) == 0


def test_jupyter_shows_a_table_and_a_picture(toy):
    assert "<table>" in toy._repr_html_() and "AvgPool2d" in toy._repr_html_()
    assert toy["1"].unit((4, 5))._repr_png_()[:4] == b"\x89PNG"
