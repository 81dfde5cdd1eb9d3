"""Gradient receptive fields with real weights: ``gradient_field`` against the exact theoretical
support, every missed pixel put down to its cause, and ``effective_field``'s bookkeeping."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch import nn

import rflens
from rflens import RFLensError
from rflens.models import load_model

SIZE = (3, 64, 64)


def build(name: str, seed: int = 0) -> nn.Module:
    """A torchvision architecture with random weights, on the CPU, in eval mode."""
    torch.manual_seed(seed)
    return torchvision.models.get_model(name, weights=None).eval()


def noise(size=SIZE, seed: int = 1) -> torch.Tensor:
    return torch.randn(size, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def resnet18():
    return build("resnet18")


@pytest.fixture(scope="module")
def astronaut_png(tmp_path_factory):
    """scikit-image's astronaut (512x512 RGB photo) as a PNG file."""
    from skimage import data
    path = tmp_path_factory.mktemp("photos") / "astronaut.png"
    Image.fromarray(data.astronaut()).save(path)
    return path


def photo_tensor(path, size=SIZE) -> torch.Tensor:
    """What an image path means to rflens, spelled out: bilinear resize to the input size (the
    photo is square), [0, 1], ImageNet mean and std per channel."""
    img = Image.open(path).convert("RGB").resize((size[2], size[1]), Image.BILINEAR)
    arr = np.asarray(img, dtype=np.float64) / 255
    arr = (arr - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    return torch.from_numpy(arr.transpose(2, 0, 1).copy()).float()


# -- the gradient never leaves the theoretical support ------------------------------------------

@pytest.mark.parametrize("arch, layer, size", [
    ("resnet18", "layer2", (3, 96, 96)),
    ("vgg11", "features.12", (3, 64, 64)),
    ("mobilenet_v2", "features.7", (3, 96, 96)),
    ("densenet121", "features.transition1", (3, 64, 64)),
])
def test_nonzero_gradient_stays_inside_the_theoretical_support(arch, layer, size, astronaut_png):
    """Random weights; the centre unit and a corner unit with a noise input, the opposite corner
    with a real photo: every pixel with a nonzero gradient lies in the exact theoretical RF.
    The corner units' RFs are clipped by the border to well under the image, so the support
    is a real constraint, and the gradient fills most of it."""
    model = build(arch)
    grid = rflens.analyze(model, size)[layer].grid_shape
    last = (grid[0] - 1, grid[1] - 1)
    for x, unit in [(noise(size), "center"), (noise(size), (0, 0)), (str(astronaut_png), last)]:
        g = rflens.gradient_field(model, layer, unit, x, input_size=size, device="cpu")
        assert not g.outside.any(), f"{arch} {layer} unit {g.unit}: {int(g.outside.sum())} pixels outside"
        assert g.nonzero.sum() > 0.5 * g.rf.mask.sum()
        if unit != "center":
            assert g.rf.mask.sum() < 0.4 * np.prod(size[1:])
            assert g.rf.mask[unit[0] and -1, unit[1] and -1]  # the clipped RF holds its image corner


@pytest.mark.parametrize("layer, support", [("conv1", 49), ("maxpool", 121), ("layer1.0.conv2", 729), ("layer1", 1849)])
def test_with_a_noise_input_resnet18_gradient_reaches_every_pixel_of_early_units(resnet18, layer, support):
    """Summed over the layer's 64 channels, some channel is active and some maximum sits at every
    position: at these layers nothing of the theoretical support is missed (measured: true for
    the centre unit through layer2, 4096 pixels)."""
    g = rflens.gradient_field(resnet18, layer, "center", noise(), device="cpu")
    assert g.rf.mask.sum() == support
    assert np.array_equal(g.nonzero, g.rf.mask)
    assert all(not m.any() for m in g.missed.values())
    assert len(g.explain()) == 1 and g.explain()[0].startswith("computed on the ")  # where, and no cause


def test_at_a_zero_input_resnet18_gradient_is_zero_and_activations_explain_it(resnet18):
    """Zero image, no conv biases, BN at its initial statistics: every ReLU input is exactly 0,
    where PyTorch's derivative is 0.  With ReLUs passed straight through, max-pooling on the
    all-equal map still routes each window to one element, so 3844 of 4096 pixels are down to
    activations and the other 252 to max."""
    g = rflens.gradient_field(resnet18, "layer2", None, None, input_size=SIZE, device="cpu")
    assert g.input_kind == "zeros"
    assert np.all(g.gradient == 0) and not g.nonzero.any()
    support = int(g.rf.mask.sum())
    assert support == 4096
    assert {k: int(v.sum()) for k, v in g.missed.items()} == {"activations": 3844, "max": 252, "other": 0}
    at_zero, below, seen = g.kink_inputs
    assert at_zero == seen > 0 and below == 0
    lines = g.explain()
    assert lines[0].startswith("3844 of 4096 pixels (93.8%): activations")
    assert f"{seen} of {seen} activation inputs were exactly 0" in lines[0]
    assert "max-pooling" in lines[1]


# -- causes, on hand-made nets --------------------------------------------------------------------

def conv(weight, bias=None) -> nn.Conv2d:
    c = nn.Conv2d(1, 1, 3, bias=bias is not None)
    with torch.no_grad():
        c.weight.copy_(torch.as_tensor(weight, dtype=torch.float32).reshape(1, 1, 3, 3))
        if bias is not None:
            c.bias.fill_(bias)
    return c


RANDOM_KERNEL = torch.randn(3, 3, generator=torch.Generator().manual_seed(5)) + 3  # no zero entry


def test_max_pool_routes_the_gradient_to_one_element_per_window():
    """Conv 3x3 then MaxPool 2x2, no ReLU: a pooled unit sees a 4x4 support, but the gradient
    goes to one conv output, a 3x3 patch; the other 7 pixels are put down to max."""
    net = nn.Sequential(conv(RANDOM_KERNEL), nn.MaxPool2d(2))
    g = rflens.gradient_field(net, "1", (2, 3), torch.rand(1, 12, 12, generator=torch.Generator().manual_seed(2)),
                              device="cpu")
    assert g.rf.box == ((4, 8), (6, 10))
    assert g.nonzero.sum() == 9 and not g.outside.any()
    assert g.missed["max"].sum() == 7
    assert not g.missed["activations"].any() and not g.missed["other"].any()
    assert g.kink_inputs == (0, 0, 0)
    assert "max-pooling" in g.explain()[0]


def test_dead_relu_is_put_down_to_activations():
    net = nn.Sequential(conv(RANDOM_KERNEL, bias=-100.0), nn.ReLU(), conv(RANDOM_KERNEL))
    g = rflens.gradient_field(net, "2", (3, 3), torch.rand(1, 12, 12), device="cpu")
    assert g.rf.mask.sum() == 25 and not g.nonzero.any()
    assert np.array_equal(g.missed["activations"], g.rf.mask)
    assert not g.missed["max"].any() and not g.missed["other"].any()
    # counted in the forward pass that ran: the 3x3 activations of the 5x5 crop the unit reads,
    # or with crop=False all 10x10 of the 12x12 input
    assert g.crop == ((3, 8), (3, 8)) and g.kink_inputs == (0, 9, 9)
    assert "9 below 0" in g.explain()[0]
    whole = rflens.gradient_field(net, "2", (3, 3), torch.rand(1, 12, 12), device="cpu", crop=False)
    assert whole.crop is None and whole.kink_inputs == (0, 100, 100)
    assert whole.explain()[-1] == "computed on the whole input, as asked (crop=False)"


def test_zero_weight_column_is_put_down_to_other_causes():
    kernel = RANDOM_KERNEL.clone()
    kernel[:, 0] = 0
    g = rflens.gradient_field(nn.Sequential(conv(kernel)), "0", (4, 4), torch.rand(1, 10, 10), device="cpu")
    assert g.rf.box == ((4, 7), (4, 7))
    expected = np.zeros((10, 10), bool)
    expected[4:7, 4] = True
    assert np.array_equal(g.missed["other"], expected)
    assert g.nonzero.sum() == 6
    assert not g.missed["activations"].any() and not g.missed["max"].any()
    assert "exact zeros or cancellation" in g.explain()[0]


# -- channel, input forms, the model left as it was ------------------------------------------------

def test_channel_picks_one_output_channel(resnet18):
    x = noise()
    summed = rflens.gradient_field(resnet18, "maxpool", "center", x, device="cpu")
    one = rflens.gradient_field(resnet18, "maxpool", "center", x, channel=3, device="cpu")
    assert one.channel == 3 and summed.channel is None
    assert not np.allclose(one.gradient, summed.gradient)
    # a single channel's max-pool routes to one position of its 3x3 window: 7x7 of 11x11
    assert one.nonzero.sum() == 49 and summed.nonzero.sum() == 121
    assert not one.outside.any()
    with pytest.raises(RFLensError, match="64 channels"):
        rflens.gradient_field(resnet18, "maxpool", "center", x, channel=64, device="cpu")


def test_input_forms_give_the_same_gradient(resnet18, astronaut_png):
    x = noise()
    chw = rflens.gradient_field(resnet18, "layer1", "center", x, device="cpu")
    nchw = rflens.gradient_field(resnet18, "layer1", "center", x[None], device="cpu")
    assert chw.input_kind == nchw.input_kind == "tensor"
    np.testing.assert_array_equal(chw.gradient, nchw.gradient)

    from_file = rflens.gradient_field(resnet18, "layer1", "center", str(astronaut_png), input_size=SIZE,
                                      device="cpu")
    by_hand = rflens.gradient_field(resnet18, "layer1", "center", photo_tensor(astronaut_png), device="cpu")
    assert from_file.input_kind == f"image {astronaut_png}"
    np.testing.assert_allclose(from_file.gradient, by_hand.gradient, rtol=1e-4, atol=1e-7)

    zeros = rflens.gradient_field(resnet18, "layer1", "center", None, input_size=SIZE, device="cpu")
    explicit = rflens.gradient_field(resnet18, "layer1", "center", torch.zeros(SIZE), device="cpu")
    assert zeros.input_kind == "zeros" and zeros.gradient.shape == SIZE
    np.testing.assert_array_equal(zeros.gradient, explicit.gradient)


def test_model_is_left_as_it_was():
    model = build("resnet18")
    model.train()
    model.layer1.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    rflens.gradient_field(model, "layer2", (0, 3), noise(), device="cpu")
    rflens.effective_field(model, "layer2", inputs=3, input_size=SIZE, device="cpu")
    assert all(m.training for m in model.modules())
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert not flags["layer1.0.conv1.weight"] and flags["conv1.weight"]
    assert all(p.grad is None for p in model.parameters())
    assert {t.device.type for t in model.state_dict().values()} == {"cpu"}
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k  # BN running statistics included


# -- effective_field ----------------------------------------------------------------------------------

def test_effective_field_does_not_depend_on_batch_size():
    """17 noise inputs in batches of 1, 7 (7 + 7 + 3) and 16 (16 + 1).  In float64 the heats agree
    to rounding; in float32 they differ by up to 3e-4 of the maximum (batch-size-dependent
    convolution kernels), so the model is made float64."""
    model = build("resnet18").double()
    heats = [rflens.effective_field(model, "layer2", inputs=17, input_size=SIZE, batch_size=b,
                                    device="cpu").heat for b in (1, 7, 16)]
    np.testing.assert_allclose(heats[1], heats[0], rtol=1e-10)
    np.testing.assert_allclose(heats[2], heats[0], rtol=1e-10)


def test_same_seed_same_heat_other_seed_other_heat(resnet18):
    a, b, c = (rflens.effective_field(resnet18, "layer1", inputs=3, input_size=SIZE, seed=s, device="cpu")
               for s in (4, 4, 5))
    np.testing.assert_array_equal(a.heat, b.heat)
    assert not np.allclose(a.heat, c.heat)
    assert a.count == 3 and "seed 4" in a.source


def test_folder_with_a_corrupt_file_skips_and_lists_it(resnet18, tmp_path):
    from skimage import data
    for name, img in [("astronaut.png", data.astronaut()), ("coffee.jpg", data.coffee()), ("chelsea.png", data.chelsea())]:
        Image.fromarray(img).save(tmp_path / name)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a picture")
    field = rflens.effective_field(resnet18, "layer1", inputs=tmp_path, input_size=SIZE, batch_size=2, device="cpu")
    assert field.count == 3
    assert [s[0] for s in field.skipped] == [str(tmp_path / "broken.png")]
    assert "cannot read" in field.skipped[0][1]
    assert field.heat.shape == (64, 64) and field.heat.max() > 0


def test_checkpoint_resumes_after_an_interruption(tmp_path):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval().double()
    size = (3, 32, 32)
    whole = rflens.effective_field(model, "layer2", inputs=6, input_size=size, batch_size=2, device="cpu")

    def stop_after_first_batch(done, total):
        raise KeyboardInterrupt

    ckpt = tmp_path / "erf.npz"
    with pytest.raises(KeyboardInterrupt):
        rflens.effective_field(model, "layer2", inputs=6, input_size=size, batch_size=2, device="cpu",
                               checkpoint=ckpt, progress=stop_after_first_batch)
    assert ckpt.exists()
    seen = []
    resumed = rflens.effective_field(model, "layer2", inputs=6, input_size=size, batch_size=2, device="cpu",
                                     checkpoint=ckpt, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(4, 6), (6, 6)]  # the first batch was not run again
    assert resumed.count == 6
    np.testing.assert_allclose(resumed.heat, whole.heat, rtol=1e-10, atol=0)

    with pytest.raises(RFLensError, match="other settings.*seed"):
        rflens.effective_field(model, "layer2", inputs=6, input_size=size, batch_size=2, seed=1, device="cpu",
                               checkpoint=ckpt)
    with pytest.raises(RFLensError, match="other settings.*layer"):
        rflens.effective_field(model, "layer1", inputs=6, input_size=size, batch_size=2, device="cpu",
                               checkpoint=ckpt)


def test_tensor_and_dataloader_inputs_give_the_same_heat(resnet18):
    from torch.utils.data import DataLoader, TensorDataset
    images = torch.randn(5, *SIZE, generator=torch.Generator().manual_seed(9))
    direct = rflens.effective_field(resnet18, "layer2", inputs=images, device="cpu")
    loader = DataLoader(TensorDataset(images, torch.arange(5)), batch_size=2)
    looped = rflens.effective_field(resnet18, "layer2", inputs=loader, device="cpu")
    assert direct.count == looped.count == 5
    np.testing.assert_allclose(looped.heat, direct.heat, rtol=1e-5, atol=1e-7 * direct.heat.max())


def test_a_model_on_the_meta_device_is_refused():
    with pytest.raises(RFLensError, match="meta device"):
        rflens.effective_field(load_model("resnet18"), "layer2", inputs=2, input_size=SIZE, device="cpu")
    with pytest.raises(RFLensError, match="meta device"):
        rflens.gradient_field(load_model("resnet18"), "layer2", None, None, input_size=SIZE, device="cpu")
