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
from rflens.engine.field import Unit
from rflens.methods.gradient import EffectiveField
from rflens.methods.images import load_image
from rflens.methods.occlusion import EmpiricalField, EmpiricalLayer
from rflens.plot import (CATEGORIES, DIM, EMPIRICAL_RGB, GAUSS_RGB, HEAT_BOX_RGB, MASK_ALPHA, MASK_RGB, SEGMENT_RGB,
                         centred_square, empirical_figure, empirical_grid_figure, erf_comparison_figure, erf_figure,
                         gradient_categories, gradient_figure, grid_figure, growth_figure, main_path, mask_outline,
                         overlay_figure, segment_sheet, select_layers)
from rflens.methods.scan import TopImage
from rflens.methods.segment import Segment

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


def test_titles_of_global_layers_say_global_and_give_the_local_field():
    # was "RF 627, stride 224" for ResNet-18's avgpool (issue 17)
    from rflens.models import load_model
    from rflens.plot import grid_figure
    a = rflens.analyze(load_model("resnet18"), (3, 224, 224))
    a.model_name = "resnet18"
    title = a["avgpool"].unit().plot()._suptitle.get_text()
    assert title.endswith("RF global (local 435), stride 32, clipped by the border")
    panels = [ax.get_title() for ax in grid_figure(a, (3, 3), ["layer4", "avgpool"]).axes]
    assert panels[:2] == ["layer4  RF 435\n224x224 px, clipped by the border",
                          "avgpool  RF global (local 435)\n224x224 px, clipped by the border\nclamped to (0, 0)"]


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


def test_an_input_wider_than_a_figure_is_drawn_in_blocks_that_keep_every_pixel_of_the_field():
    """A 20000x20000 input made 29 GiB of picture arrays; no figure shows more than about 1000 pixels,
    so a wide input is drawn in blocks, each marked where any of its pixels is in the field."""
    from rflens.plot.fields import unit_figure
    layer = rflens.analyze(nn.Conv2d(1, 1, 3), (1, 3000, 3000))["output"]
    fig = unit_figure(layer, layer.unit((2, 2)))           # reads [2, 5) x [2, 5): blocks 0 and 1
    left = fig.axes[0]
    overlay = left.images[-1].get_array()
    assert overlay.shape == (1000, 1000, 4) and "drawn in 3x3 blocks" in left.get_title()
    assert (overlay[..., 3] > 0).sum() == 4 and (overlay[:2, :2, 3] > 0).all()
    assert left.get_xlim() == (-0.5, 2999.5) and fig.axes[1].images[0].get_array().shape == (1, 1)


def test_grid_clamps_units_on_small_layers_and_says_so():
    a = rflens.analyze(rflens.models.load_model("vgg11"), (3, 64, 64))
    layers = select_layers(a, "conv,pool")
    fig = grid_figure(a, (5, 5), layers)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert len(titles) == len(layers)
    assert any("clamped to (3, 3)" in t for t in titles) and not any("clamped" in t for t in titles[:3])


def test_grid_titles_say_what_of_each_field_lies_inside_and_small_fields_get_a_zoomed_inset():
    a = rflens.analyze(rflens.models.load_model("vgg16"), (3, 224, 224))
    layers = ["features.0", "features.12", "features.14", "features.30"]
    fig = grid_figure(a, (3, 3), layers)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["features.0  RF 3\n3x3 px, inside the input", "features.12  RF 32\n30x30 px, clipped by the border",
                      "features.14  RF 40\n34x34 px, clipped by the border", "features.30  RF 212\n212x212 px, inside the input"]
    # fields under 15% of the input's side (33 px) are zoomed: 3 and 30 px, not 34 and 212
    assert [len(ax.child_axes) for ax in fig.axes[:4]] == [1, 1, 0, 0]
    assert [t.get_text() for t in fig.axes[3].get_xticklabels()] == ["0", "112", "223"]


def test_the_deepest_path_of_inception_never_steps_back_to_a_finer_stride():
    a = rflens.analyze(rflens.models.load_model("inception_v3"), (3, 299, 299))
    strides = [max(layer.stride) for layer in main_path(a)]
    assert all(b >= a for a, b in zip(strides, strides[1:])), strides  # it went 16, 8, 16 through Mixed_6a
    assert strides[0] == 2 and strides[-1] == 32


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


# -- gradient and effective receptive fields ---------------------------------------------------

def colour_at(image: np.ndarray, ax, x: float, y: float) -> np.ndarray:
    """The rendered colour at data point (x, y) = (column, row)."""
    dx, dy = ax.transData.transform((x, y))
    return image[int(round(image.shape[0] - dy)), int(round(dx))]


def is_colour(rgb, target, tol: float = 40) -> bool:
    return np.abs(np.asarray(rgb) - 255 * np.asarray(target)).max() < tol


def ones_convs(n: int) -> nn.Sequential:
    net = nn.Sequential(*[nn.Conv2d(1, 1, 3, padding=1, bias=False) for _ in range(n)])
    for c in net:
        nn.init.ones_(c.weight)
    return net


@pytest.fixture(scope="module")
def five_convs():
    """Five all-ones 3x3 convolutions on 33x33: the centre unit's RF is the 11x11 box [11, 22)."""
    return rflens.effective_field(ones_convs(5), "4", inputs=2, input_size=(1, 33, 33), device="cpu")


def synthetic(heat: np.ndarray) -> EffectiveField:
    box = tuple((0, n) for n in heat.shape)
    unit = Unit("synthetic", (0, 0), np.ones(heat.shape, bool), box, box, tuple((n - 1) / 2 for n in heat.shape))
    return EffectiveField(heat, 1, "synthetic", (0, 0), None, "luo", unit, "a synthetic map")


def test_erf_box_is_drawn_between_the_right_pixel_rows_and_columns(five_convs):
    assert five_convs.rf.box == ((11, 22), (11, 22))
    fig = erf_figure(five_convs, scale="both")
    image = rendered(fig)
    ax = fig.axes[1]  # the log panel (the legend sits on the linear one)
    for t in range(12, 21):
        for edge in (10.5, 21.5):  # left and right edges run between columns 10|11 and 21|22
            assert is_colour(colour_at(image, ax, edge, t), HEAT_BOX_RGB)
            assert is_colour(colour_at(image, ax, t, edge), HEAT_BOX_RGB)  # top and bottom
        for inside_or_out in (10, 11, 21, 22):
            assert not is_colour(colour_at(image, ax, inside_or_out, t), HEAT_BOX_RGB)
    assert [a.get_title() for a in fig.axes[:2]] == [
        "linear colour scale", "log colour scale (values below max/1000 shown at that floor)"]
    title = fig._suptitle.get_text()
    assert "effective RF · 4 · unit (16, 16) (all channels) · mode luo · 2 inputs" in title
    assert "σ = 1.8 x 1.8 px" in title  # sqrt(2n/3) for n = 5 all-ones 3x3 convolutions


def test_sigma_ellipses_follow_the_full_covariance_around_the_centre_of_mass():
    cov = np.array([[16.0, 6.0], [6.0, 9.0]])  # (rows, cols): tilted, taller than wide
    rows, cols = np.indices((41, 41), dtype=float)
    d = np.stack([rows - 20.3, cols - 18.6])
    heat = np.exp(-0.5 * np.einsum("i...,ij,j...->...", d, np.linalg.inv(cov), d))
    field = synthetic(heat)
    assert np.allclose(field.covariance, cov, atol=0.01) and np.allclose(field.center_of_mass, (20.3, 18.6))
    fig = erf_figure(field, scale="both")
    image = rendered(fig)
    ax = fig.axes[1]
    height = image.shape[0]
    box = ax.get_window_extent()
    ys, xs = np.nonzero(np.abs(image - 255 * np.array(GAUSS_RGB)).max(axis=2) < 60)
    inside = (xs > box.x0 + 2) & (xs < box.x1 - 2) & (height - ys > box.y0 + 2) & (height - ys < box.y1 - 2)
    points = ax.transData.inverted().transform(np.column_stack([xs[inside] + 0.5, height - ys[inside] - 0.5]))
    v = np.column_stack([points[:, 1] - 20.3, points[:, 0] - 18.6])  # (row, col) offsets
    mahalanobis = np.sqrt(np.einsum("ni,ij,nj->n", v, np.linalg.inv(field.covariance), v))
    ring = mahalanobis[mahalanobis > 0.6]  # leave out the centre-of-mass cross
    one, two = ring[ring < 1.5], ring[ring >= 1.5]
    assert len(one) > 100 and len(two) > 100
    assert np.abs(one - 1).max() < 0.12 and np.abs(two - 2).max() < 0.12
    near = points[mahalanobis < 1.5][mahalanobis[mahalanobis < 1.5] > 0.6]
    assert np.allclose(near.mean(axis=0), (18.6, 20.3), atol=0.3)  # the 1-sigma ring's centre (x, y)


def test_erf_caption_gives_the_numbers_and_says_not_reached():
    field = synthetic(np.ones((9, 9)))  # mass to the border: no centred square holds 99%
    assert field.area_ratio[0.99] is None
    caption = erf_figure(field, scale="linear")._supxlabel.get_text()
    assert "σ 2.6 x 2.6 px; 4σ/TRF 1.15 x 1.15; centre of mass (4.0, 4.0) vs RF centre (4.0, 4.0)" in caption
    assert "RepLKNet area ratio 20%: 0.309, 30%: 0.309, 50%: 0.605, 99%: not reached" in caption
    assert "inputs: a synthetic map, 1 used" in caption


def test_erf_of_a_3d_input_is_projected_and_says_so():
    net = nn.Sequential(nn.Conv3d(1, 1, 3, padding=1), nn.Conv3d(1, 1, 3, padding=1))
    field = rflens.effective_field(net, "1", inputs=1, input_size=(1, 5, 9, 9), device="cpu")
    fig = erf_figure(field, scale="log")
    assert fig.axes[0].images[0].get_array().shape == (9, 9)
    assert "3-D input: max over the first axis" in fig._supxlabel.get_text()


def test_erf_comparison_scales_each_panel_by_its_own_maximum(five_convs):
    three = rflens.effective_field(ones_convs(3), "2", inputs=2, input_size=(1, 33, 33), device="cpu")
    fig = erf_comparison_figure({"3 convs": three, "5 convs": five_convs}, scale="log")
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["3 convs", "5 convs"]
    assert len(fig.axes) == 3  # one colour bar shared by both panels
    image = rendered(fig)
    for ax, (lo, hi) in zip(panels, [(13, 20), (11, 22)]):
        assert np.isclose(ax.images[0].get_array().max(), 1.0)
        assert sum(type(p).__name__ == "Ellipse" for p in ax.patches) == 2
        assert is_colour(colour_at(image, ax, lo - 0.5, 16), HEAT_BOX_RGB)
        assert is_colour(colour_at(image, ax, hi - 0.5, 16), HEAT_BOX_RGB)
    assert "σ 1.4 x 1.4 px" in panels[0].get_xlabel() and "σ 1.8 x 1.8 px" in panels[1].get_xlabel()


def painted_categories(fig, ax, shape) -> np.ndarray:
    """For each input pixel, the index of the ``CATEGORIES`` colour drawn at its centre."""
    image = rendered(fig)
    palette = 255 * np.array([rgb for _, _, rgb in CATEGORIES])
    out = np.zeros(shape, int)
    for r in range(shape[0]):
        for c in range(shape[1]):
            out[r, c] = np.abs(palette - colour_at(image, ax, c, r)).max(axis=1).argmin()
    return out


def legend_texts(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_gradient_map_at_zeros_blames_every_pixel_on_the_relu_kink():
    net = nn.Sequential(nn.Conv2d(1, 1, 3, bias=False), nn.ReLU(), nn.Conv2d(1, 1, 3, bias=False))
    gf = rflens.gradient_field(net, "2", (4, 4), input_size=(1, 12, 12), device="cpu")
    fig = gradient_figure(gf)
    right = fig.axes[1]
    expected = np.zeros((12, 12), int)
    expected[4:9, 4:9] = 3  # the 5x5 support, every pixel missed for the activations
    assert np.array_equal(painted_categories(fig, right, (12, 12)), expected)
    assert "missed: activations with derivative 0 (ReLU input <= 0): 25" in legend_texts(right)
    assert "nonzero gradient: 0" in legend_texts(right)
    assert ("0 of 25 pixels of the theoretical RF have a nonzero gradient; missed: 25 activations, 0 max, "
            "0 other; outside: 0") in fig._suptitle.get_text()


def test_gradient_map_shows_max_pooling_routing_and_zeros_in_white():
    torch = pytest.importorskip("torch")
    net = nn.Sequential(nn.Conv2d(1, 1, 3, bias=False), nn.MaxPool2d(2))
    nn.init.ones_(net[0].weight)
    gf = rflens.gradient_field(net, "1", (1, 1), torch.rand(1, 12, 12, generator=torch.Generator().manual_seed(0)),
                               device="cpu")
    fig = gradient_figure(gf)
    left, right = fig.axes[:2]
    painted = painted_categories(fig, right, (12, 12))
    assert np.array_equal(painted, gradient_categories(gf))
    # the 4x4 support at rows/cols 2-5; the max picks one 3x3 window of it
    assert (painted == 4).sum() == 9 and (painted == 2).sum() == 7 and (painted[2:6, 2:6] > 0).all()
    assert "missed: max routing: 7" in legend_texts(right) and "nonzero gradient: 9" in legend_texts(right)
    image = rendered(fig)
    for r in range(12):
        for c in range(12):
            white = is_colour(colour_at(image, left, c, r), (1, 1, 1), tol=3)
            assert white == (not gf.nonzero[r, c])


# -- empirical receptive fields and segmentations ---------------------------------------------

def share_of_colour(image: np.ndarray, ax, points, target, tol: float = 40) -> float:
    """The fraction of data points (x, y) drawn in ``target`` within a screen pixel (a thin
    antialiased line straddles two; a dashed one shows in part)."""
    def near(x: float, y: float) -> bool:
        dx, dy = ax.transData.transform((x, y))
        r, c = round(image.shape[0] - dy), round(dx)
        return any(is_colour(image[r + i, c + j], target, tol) for i in (-1, 0, 1) for j in (-1, 0, 1))
    return float(np.mean([near(x, y) for x, y in points]))


def along(fixed: float, lo: float, hi: float, vertical: bool) -> list[tuple[float, float]]:
    return [(fixed, t) if vertical else (t, fixed) for t in np.linspace(lo, hi, 60)]


def square_field(theoretical, half: int = 2, channel: int = 3) -> EmpiricalField:
    """A 40x40 canvas with a uniform (2 half + 1)-pixel square of mass around its centre (20, 20)."""
    heat = np.zeros((40, 40))
    heat[20 - half:21 + half, 20 - half:21 + half] = 1.0
    return EmpiricalField("conv", channel, (), heat, theoretical)


def test_empirical_figure_outlines_the_theoretical_and_empirical_squares_at_the_canvas_centre():
    field = square_field((9, 7))  # 9 rows by 7 columns
    assert field.size == 5
    fig = empirical_figure(field, rflens.Occluder(5, 2), "abs")
    image = rendered(fig)
    ax = fig.axes[0]
    # theoretical: rows 16..24, columns 17..23 around pixel (20, 20): edges at 15.5/24.5 and 16.5/23.5
    for x in (16.5, 23.5):
        assert share_of_colour(image, ax, along(x, 16, 24, vertical=True), HEAT_BOX_RGB) > 0.9
    for y in (15.5, 24.5):
        assert share_of_colour(image, ax, along(y, 17, 23, vertical=False), HEAT_BOX_RGB) > 0.9
    # empirical: the 5x5 square, rows and columns 18..22, dashed
    for edge in (17.5, 22.5):
        assert share_of_colour(image, ax, along(edge, 18, 22, vertical=True), EMPIRICAL_RGB) > 0.4
        assert share_of_colour(image, ax, along(edge, 18, 22, vertical=False), EMPIRICAL_RGB) > 0.4
    # pixel centres on either side of the lines carry neither colour
    for x in (15, 16, 17, 18, 22, 23, 24):
        for target in (HEAT_BOX_RGB, EMPIRICAL_RGB):
            assert share_of_colour(image, ax, along(x, 18, 22, vertical=True), target) == 0
    assert fig._suptitle.get_text() == ("empirical RF · conv · channel 3 · 0 top images\n"
                                        "occluder 5x5 stride 2, random fill, discrepancy abs")
    caption = fig._supxlabel.get_text()
    assert ("empirical RF 5 px (smallest centred square holding 90% of the map) vs theoretical 9x7 px: ratio 0.56"
            in caption)
    assert "each map placed with its peak unit's RF centre at pixel (20, 20)" in caption
    assert fig.axes[1].get_ylabel() == "mean |activation change|"


def test_an_even_theoretical_square_runs_exactly_around_a_box_units_occlusion_map():
    # a 6x6 all-ones conv on an all-ones image, 1x1 zero occluders: the map is the RF itself.
    # An even RF's centre lies between pixels; the library puts the lower one at the canvas
    # centre, so the square reaches one pixel further after the centre than before it.
    conv = nn.Conv2d(1, 1, 6, bias=False)
    nn.init.ones_(conv.weight)
    torch = pytest.importorskip("torch")
    res = rflens.empirical_field(conv, "output", [0], torch.ones(1, 1, 16, 16), k=1,
                                 occluder=rflens.Occluder(1, 1, "zeros"), device="cpu")
    field = res.fields[0]
    rows, cols = np.nonzero(field.heat)
    assert (rows.min(), rows.max() + 1) == (cols.min(), cols.max() + 1) == centred_square(16, 6) == (14, 20)
    assert field.size == 7  # the smallest odd centred square holding 90% of a 6x6 block
    fig = empirical_figure(field, res.occluder, res.discrepancy)
    image = rendered(fig)
    ax = fig.axes[0]
    assert share_of_colour(image, ax, along(13.5, 14, 19, vertical=True), HEAT_BOX_RGB) > 0.9
    assert share_of_colour(image, ax, along(13.5, 14, 19, vertical=False), HEAT_BOX_RGB) > 0.9
    assert share_of_colour(image, ax, along(12.5, 13, 19, vertical=True), EMPIRICAL_RGB) > 0.4
    assert "top images (score): input 0 (36.00)" in fig._supxlabel.get_text()


def test_empirical_grid_gives_each_channel_a_panel_and_the_table_row_in_the_title():
    fields = {0: square_field((9, 9), 2, 0), 3: square_field((9, 9), 4, 3),
              5: EmpiricalField("conv", 5, (), np.zeros((40, 40)), (9, 9))}
    result = EmpiricalLayer("conv", fields, (9, 9), rflens.Occluder(5, 2), "abs", None)
    fig = empirical_grid_figure(result, title="toy")
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["channel 0: 5 px", "channel 3: 9 px", "channel 5: n/a px"]
    assert "no occluder changed\nthis unit" in [t.get_text() for t in panels[2].texts]
    title = fig._suptitle.get_text()
    assert title.startswith("toy · empirical RF · conv: theoretical 9 px (cyan), empirical 7.0 ± 2.0 px over 2 units")


def test_empirical_maps_say_how_many_were_cut_by_the_border_and_read_in_px_from_the_rf_centre():
    from rflens.methods.occlusion import Discrepancy
    inside = rflens.analyze(nn.Conv2d(1, 1, 5, padding=2), (1, 20, 20))["output"].unit((10, 10))
    corner = rflens.analyze(nn.Conv2d(1, 1, 5, padding=2), (1, 20, 20))["output"].unit((0, 0))
    assert not inside.clipped and corner.clipped
    maps = tuple(Discrepancy(TopImage(i, f"im{i}.png", 1.0, (0, 0)), 1.0, np.zeros(1), np.zeros((20, 20)), rf)
                 for i, rf in enumerate((inside, corner, corner)))
    field = EmpiricalField("conv", 0, maps, square_field((5, 5)).heat, (5, 5))
    fig = empirical_figure(field)
    assert "2 of 3 maps cut by the image border" in fig._supxlabel.get_text()
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert "0" in labels and ax.get_xlabel() == "px from the RF centre"
    grid = empirical_grid_figure(EmpiricalLayer("conv", {0: field}, (5, 5), rflens.Occluder(3, 1), "abs", None))
    assert [a.get_title() for a in grid.axes if a.get_title()] == ["channel 0: 5 px (2/3 cut)"]
    assert grid.axes[-1].get_ylabel() == "fraction of the panel's maximum"  # one shared colour bar


def face_segment(mask: np.ndarray, method: str, score: float = 2.5, level: float = 1.25) -> Segment:
    picture = np.full(mask.shape + (3,), 0.8)
    return Segment(TopImage(4, "/data/faces/face004.png", score, (3, 3)), picture, mask.astype(float), mask, level,
                   method)


def test_segment_sheet_dims_outside_the_mask_and_outlines_it_along_pixel_edges():
    mask = np.zeros((20, 20), bool)
    mask[5:15, 6:13] = True  # rows 5..14, columns 6..12
    other = np.zeros((20, 20), bool)
    other[0:4, 0:4] = True
    fig = segment_sheet([face_segment(mask, "netdissect"), face_segment(mask, "netdissect", 2.0),
                         face_segment(other, "occlusion", level=0.3)], "pool2 · channel 0")
    image = rendered(fig)
    axes = [ax for ax in fig.axes]
    top, second, bottom, empty = axes
    for r in range(20):
        for c in range(20):
            want = 0.8 * 255 * (1 if mask[r, c] else DIM)
            assert abs(colour_at(image, top, c, r) - want).max() < 3
    assert share_of_colour(image, top, along(5.5, 5, 14, vertical=True), SEGMENT_RGB) > 0.9   # left edge
    assert share_of_colour(image, top, along(14.5, 6, 12, vertical=False), SEGMENT_RGB) > 0.9  # bottom edge
    assert share_of_colour(image, bottom, along(3.5, 0, 3, vertical=True), SEGMENT_RGB) > 0.9
    assert [top.get_title(), second.get_title()] == ["face004.png\nscore 2.50 · 18%", "face004.png\nscore 2.00 · 18%"]
    assert top.get_ylabel() == "NetDissect\nactivation ≥ 1.25\n(scan's top 0.5%)"
    assert bottom.get_ylabel().startswith("occlusion") and not empty.axison  # one row per method
    assert fig._suptitle.get_text() == "pool2 · channel 0"


def test_mask_outline_follows_every_pixel_edge_between_mask_and_rest():
    mask = np.array([[1, 1, 0],
                     [1, 0, 0],
                     [0, 0, 1]], bool)
    edges = {tuple(sorted(e)) for e in mask_outline(mask)}
    # the L: 8 unit edges; the lone corner pixel: 4, two of them on the image border
    assert len(edges) == len(mask_outline(mask)) == 12
    assert ((-0.5, -0.5), (0.5, -0.5)) in edges and ((1.5, 1.5), (1.5, 2.5)) in edges
    assert ((1.5, 2.5), (2.5, 2.5)) in edges  # along the bottom border
