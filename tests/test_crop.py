"""Exact crops for gradient fields: ``gradient_field`` and ``effective_field`` run on the smallest
stride-aligned crop of the input that holds everything the unit reads, and give the maps the
whole image gives (float64, random weights), or say why they use the whole image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import rflens
from rflens.methods import gradient

CONE = "; of it, only the positions the unit depends on are computed (its dependency cone)"

SIZE = (3, 96, 96)


def noise(size=SIZE, seed: int = 1) -> torch.Tensor:
    return torch.randn(size, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def assert_same_maps(cropped, whole) -> None:
    """The crop's map equals the whole image's to rounding, with the same nonzero pixels."""
    a = torch.from_numpy(getattr(cropped, "gradient", cropped.heat))
    b = torch.from_numpy(getattr(whole, "gradient", whole.heat))
    assert torch.allclose(a, b, rtol=1e-12, atol=1e-12 * float(b.abs().max()))
    assert np.array_equal(a.numpy() != 0, b.numpy() != 0)


def both(fn, *args, **kwargs):
    """``fn`` on the crop (the default) and on the whole input."""
    return fn(*args, **kwargs), fn(*args, **kwargs, crop=False)


@pytest.fixture
def every_cone(monkeypatch):
    """``effective_field`` computes a unit's cone alone wherever it can, not only where that saves
    work: to test the cone where the default would not use it."""
    monkeypatch.setattr(gradient, "CONE_SHARE", 1.0)


@pytest.fixture(scope="module")
def resnet18():
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).eval().double()


@pytest.fixture(scope="module")
def densenet121():
    torch.manual_seed(0)
    return torchvision.models.densenet121(weights=None).eval().double()


def dilated() -> nn.Sequential:
    """A DeepLab-like stack: dilations 1, 2, 4, 8 around a stride-2 pool (RF 56, stride 2); float64
    weights with biases (the meta trace runs in the model's float type)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=2, dilation=2),
                         nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 8, 3, padding=4, dilation=4), nn.ReLU(),
                         nn.Conv2d(8, 4, 3, padding=8, dilation=8)).double().eval()


# -- the same maps as on the whole image ----------------------------------------------------------

@pytest.mark.parametrize("layer, unit, box", [
    ("layer1", (12, 12), ((24, 70), (24, 70))),   # interior: field [27, 70), from a multiple of 4
    ("layer1", (0, 0), ((0, 22), (0, 22))),       # corner: field [-21, 22), the crop keeps both edges
    ("layer2", (11, 0), ((32, 96), (0, 50))),     # border: field [39, 138) x [-49, 50)
])
def test_resnet18_gradient_on_the_crop_equals_the_whole_image(resnet18, layer, unit, box):
    x = noise()
    g, whole = both(rflens.gradient_field, resnet18, layer, unit, x, device="cpu")
    assert g.crop == box and whole.crop is None
    assert_same_maps(g, whole)
    assert all(np.array_equal(g.missed[k], whole.missed[k]) for k in whole.missed)
    rows, cols = (b - a for a, b in box)
    assert g.crop_note.startswith(f"the {rows}x{cols} crop {box_text(box)} of the 96x96 input, which holds all "
                                  "the unit reads")
    assert g.explain()[-1] == f"computed on {g.crop_note}"


def box_text(box) -> str:
    return " x ".join(f"[{a}, {b})" for a, b in box)


@pytest.mark.parametrize("unit, channel, box", [
    ("center", None, ((16, 78), (16, 78))),   # all 256 channels: field 59x59 [19, 78)
    ((12, 12), 0, ((40, 54), (40, 54))),      # channel 0 (the block's input): field 11x11 [43, 54)
    ((0, 3), None, ((0, 30), (0, 42))),       # top border
])
def test_densenet_block_gradient_on_the_crop_equals_the_whole_image(densenet121, unit, channel, box):
    g, whole = both(rflens.gradient_field, densenet121, "features.denseblock1", unit, noise(), channel=channel,
                    device="cpu")
    assert g.crop == box
    assert_same_maps(g, whole)


@pytest.mark.parametrize("unit, box", [
    ((24, 24), ((20, 77), (20, 77))),   # interior: field [21, 77), from an even pixel for the pool
    ((2, 40), ((0, 33), (52, 96))),     # top edge: field [-23, 33) x [53, 109)
])
def test_dilated_stack_gradient_and_effective_field_on_the_crop_equal_the_whole_image(unit, box, every_cone):
    net = dilated()
    g, whole = both(rflens.gradient_field, net, "7", unit, noise(), device="cpu")
    assert g.crop == box and g.rf.size == (56, 56)
    assert_same_maps(g, whole)
    e, whole_e = both(rflens.effective_field, net, "7", unit, inputs=3, input_size=SIZE, device="cpu")
    assert e.crop == box and e.count == whole_e.count == 3
    assert e.crop_note.endswith(CONE)
    assert_same_maps(e, whole_e)


@pytest.mark.parametrize("mode", ["luo", "replknet"])
def test_resnet18_effective_field_on_the_crop_equals_the_whole_image(resnet18, mode):
    """The crop, and in it only the unit's dependency cone (each node on the box of positions the
    unit needs): the whole image's map, in two batches."""
    e, whole = both(rflens.effective_field, resnet18, "layer2", (2, 9), inputs=4, input_size=SIZE, mode=mode,
                    batch_size=3, device="cpu")
    assert e.crop == ((0, 66), (16, 96)) and whole.crop is None
    assert e.crop_note.endswith(CONE)  # by default: the cone needs 43% of the convolutions' work
    assert_same_maps(e, whole)
    assert e.to_dict()["crop"] == [[0, 66], [16, 96]] and whole.to_dict()["crop"] is None
    assert e.to_dict()["crop_note"] == e.crop_note and whole.crop_note == "the whole input, as asked (crop=False)"


def test_a_field_that_covers_the_input_gets_no_crop_and_its_cone_only_where_that_saves_work(resnet18, monkeypatch):
    """resnet18 layer3's centre unit at 96x96: its cone needs 83% of the convolutions' work, more
    than the 60% where slicing the maps starts to cost more than it saves; forced, the same map."""
    e, whole = both(rflens.effective_field, resnet18, "layer3", "center", inputs=2, input_size=SIZE, device="cpu")
    assert e.crop is None and e.crop_note == "the whole input: the field covers it"
    assert_same_maps(e, whole)
    monkeypatch.setattr(gradient, "CONE_SHARE", 1.0)
    forced = rflens.effective_field(resnet18, "layer3", "center", inputs=2, input_size=SIZE, device="cpu")
    assert forced.crop_note == "the whole input: the field covers it" + CONE
    assert_same_maps(forced, whole)


def test_the_crop_is_the_smallest_on_the_grid():
    """On the dilated stack the crop of an interior unit is its field's box, its start moved to the
    pool's even grid; one pixel less on a side, or the field's own odd start, change the unit."""
    net, x = dilated(), noise()
    g = rflens.gradient_field(net, "7", (24, 24), x, device="cpu")
    assert g.rf.unclipped_box == ((21, 77), (21, 77)) and g.crop == ((20, 77), (20, 77))

    def unit(y0, y1, x0, x1):
        out = net(x[None, :, y0:y1, x0:x1])
        return out[0, :, 24 - y0 // 2, 24 - x0 // 2].sum()  # unit 24 on the crop's grid
    exact = net(x[None])[0, :, 24, 24].sum()
    assert torch.allclose(unit(20, 77, 20, 77), exact, rtol=1e-12)
    for y0, y1, x0, x1 in [(22, 77, 20, 77), (20, 76, 20, 77), (20, 77, 20, 76), (21, 77, 21, 77)]:
        assert not torch.allclose(unit(y0, y1, x0, x1), exact, rtol=1e-6), (y0, y1, x0, x1)


# -- the whole image, and why -----------------------------------------------------------------

class CoordConv(nn.Module):
    """Coordinates concatenated as channels (Liu et al. 2018): local, but not translation-equivariant."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(6, 4, 3, padding=1)

    def forward(self, x):
        y = self.a(x)
        h, w = y.shape[-2:]
        rows = torch.linspace(-1, 1, h, dtype=y.dtype).view(1, 1, h, 1).expand(y.shape[0], 1, h, w)
        cols = torch.linspace(-1, 1, w, dtype=y.dtype).view(1, 1, 1, w).expand(y.shape[0], 1, h, w)
        return self.b(torch.cat([y, rows, cols], 1))


class SamePadding(nn.Module):
    """TensorFlow's 'same' padding: how much depends on the input's size."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 3, stride=2), nn.Conv2d(4, 4, 3)

    def forward(self, x):
        n = x.shape[-1]
        pad = max(0, (-(-n // 2) - 1) * 2 + 3 - n)
        return self.b(self.a(F.pad(x, (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2))))


@pytest.mark.parametrize("net, layer, unit, why", [
    (nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.GroupNorm(2, 8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1)),
     "3", (16, 16), "layer '3' sees global context through native_group_norm in 1 (norm over spatial dims), so its "
                    "units read every pixel"),
    (CoordConv(), "b", (16, 16), "op 'cat' in the forward mixes the input with a constant that varies over "
                                 "positions"),
    (SamePadding(), "b", (8, 8), "at the crop's size, layer 'a' (node 1 of its trace) is not on the image's grid "
                                 "shifted by whole units (padding or resizing that depends on the input size)"),
    (nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Upsample(scale_factor=2), nn.Conv2d(4, 4, 3, padding=1)),
     "2", (30, 30), "layer '2' has a stride of 0.492063x0.492063 pixels, not a whole number"),
    (nn.Sequential(*[nn.Conv2d(3, 3, 5, padding=2) for _ in range(8)]), "7", (16, 16), "the field covers it"),
])
def test_where_a_crop_is_not_exact_the_whole_input_is_used_and_the_result_says_why(net, layer, unit, why):
    net = net.double().eval()
    x = noise((3, 33, 33) if isinstance(net, SamePadding) else (3, 32, 32))
    g, whole = both(rflens.gradient_field, net, layer, unit, x, device="cpu")
    assert g.crop is None and g.crop_note.startswith("the whole input: " + why)
    assert g.explain()[-1] == f"computed on {g.crop_note}" and g.to_dict()["crop_note"] == g.crop_note
    np.testing.assert_array_equal(g.gradient, whole.gradient)


class WantsWholeImages(nn.Module):
    """A model whose own code checks the size of real inputs: it refuses a crop."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3).double()

    def forward(self, x):
        if x.device.type != "meta" and x.shape[-1] < 32:
            raise ValueError("images of at least 32 pixels")
        return self.conv(x)


def test_a_model_that_refuses_the_crop_is_run_on_the_whole_input_and_says_so():
    net = WantsWholeImages()
    g = rflens.gradient_field(net, "output", (10, 10), noise((3, 32, 32)))
    assert g.crop is None
    assert g.crop_note == ("the whole input: the model failed on the crop, of shape (1, 3, 3, 3) (the model failed "
                           "when run on a batch of shape (1, 3, 3, 3): ValueError: images of at least 32 pixels)")
    assert_same_maps(g, rflens.gradient_field(net, "output", (10, 10), noise((3, 32, 32)), crop=False))
