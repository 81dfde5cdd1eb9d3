"""The gradient oracle never fails silently: its positive copy stays finite at any depth, and where
it cannot answer it says so, naming the op and where it ran, instead of returning empty masks.

Positive values grow layer after layer (attention cubes them: q k^T v), so before the probe
rescaled its values, deep attention models overflowed float64, their gradients were NaN and
their masks empty.  Each test here failed that way, or passed for the wrong reason."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

import rflens
from conftest import assert_exact
from rflens.engine.probe import ProbeAnalysis
from rflens.errors import RFLensError

WHOLE = 224 * 224


def _timm(name: str, **kwargs) -> nn.Module:
    return rflens.load_model(f"timm:{name}", kwargs, device="cpu")


# name: (layers early, middle, late; pixels the centre unit of each reads); all overflowed
DEEP = {
    # a 16 x 16 patch, then global after the first attention
    "deit_tiny_patch16_224": (["patch_embed", "blocks.5", "blocks.11"], [256, WHOLE, WHOLE]),
    # convolutional stem (31 x 31 at the centre), then attention with biases
    "levit_128s": (["stem", "stages.1", "stages.2"], [31 * 31, WHOLE, WHOLE]),
    # a convnet with RMS norms and layer scales: its late stages overflowed (no attention at all)
    "convnext_zepto_rms": (["stages.0", "stages.2", "stages.3"], [52 * 52, WHOLE, WHOLE]),
}
# heavier (30-90 s each on a loaded 2-core machine); the early layers of the windowed models are
# inside their windows, local, and followed by the analytic engine too
DEEP_SLOW = {
    "vit_tiny_patch16_224": (["patch_embed", "blocks.5", "blocks.11"], [256, WHOLE, WHOLE]),
    # locally grouped attention: a window of 7 x 7 tokens of 4 x 4 pixels
    "twins_svt_small": (["blocks.0.0", "blocks.1.0", "blocks.3.1"], [28 * 28, WHOLE, WHOLE]),
    "twins_pcpvt_small": (["patch_embeds.0.norm", "blocks.1.1", "blocks.3.2"], [16, WHOLE, WHOLE]),
    # window attention in stage 1
    "tiny_vit_5m_224": (["stages.0", "stages.1.blocks.0", "stages.3"], [23 * 23, 135 * 135, WHOLE]),
    # window attention, before the first channel attention makes the field global
    "davit_tiny": (["stages.0.blocks.0.0", "stages.2", "stages.3"], [67 * 67, WHOLE, WHOLE]),
    # squeeze-excitation in the stem: global from there on
    "gcvit_xxtiny": (["stem.down.conv_block.act", "stages.1", "stages.3"], [7 * 7, WHOLE, WHOLE]),
}


@pytest.mark.parametrize("name", [*DEEP, *(pytest.param(n, marks=pytest.mark.slow) for n in DEEP_SLOW)])
def test_deep_models_that_overflowed_are_answered_and_equal_the_analytic_masks(name):
    layers, pixels = {**DEEP, **DEEP_SLOW}[name]
    a = assert_exact(_timm(name), (3, 224, 224), layers=layers)
    for layer, px in zip(layers, pixels):
        centre = a[layer].unit("center")
        assert centre.support_size == px, (layer, centre.support_size)


class Overflowing(nn.Module):
    """A deliberately deep transformer: 60 attention blocks, each cubing the positive copy's
    magnitudes, which left float64's range after four blocks."""

    def __init__(self):
        super().__init__()
        self.vit = timm.models.vision_transformer.VisionTransformer(
            img_size=32, patch_size=8, embed_dim=16, depth=60, num_heads=2, num_classes=0, global_pool="")

    def forward(self, x):
        return self.vit(x)


def test_sixty_attention_blocks_stay_finite_and_are_answered_exactly():
    a = assert_exact(Overflowing(), (3, 32, 32), layers=["vit.patch_embed", "vit.blocks.3", "vit.blocks.59"])
    assert a["vit.patch_embed"].unit((0,)).support_size == 64         # one 8 x 8 patch
    assert a["vit.blocks.59"].unit((5,)).support_size == 32 * 32      # attention: every pixel
    p = ProbeAnalysis(Overflowing(), (3, 32, 32))
    mask = p.layer("vit.blocks.59", spatial_dims=[1]).unit((5,)).mask
    assert mask.sum() == 32 * 32


class Amplify(nn.Module):
    """Multiplies in place by 1e100, four times: in-place results alias what the caller holds,
    so the probe checks them but cannot rescale them."""

    def forward(self, x):
        for _ in range(4):
            x.mul_(1e100)
        return x


def test_a_value_float64_cannot_hold_is_an_error_naming_the_op_and_module_not_an_empty_mask():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), Amplify(), nn.Conv2d(4, 4, 3))
    with pytest.raises(RFLensError, match=r"made inf at op 'mul_' in module '1' \(first reported as the value "
                                          r"named '1.mul__3'\)"):
        rflens.analyze(net, (3, 16, 16), method="probe")


class Zeroed(nn.Module):
    def forward(self, x):
        return x * 0.0


class Length(nn.Module):
    """The length of the vector (x, x): its derivative at the zero vector is 0/0."""

    def forward(self, x):
        return torch.hypot(x, x)


def test_a_gradient_that_is_not_finite_is_an_error_naming_where_it_broke():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), Zeroed(), Length(), nn.Conv2d(4, 2, 3))
    p = ProbeAnalysis(net, (3, 16, 16))   # every value of the forward pass is finite
    with pytest.raises(RFLensError, match=r"layer '3'.*not finite.*flowing back from '2.*' into '1.*'"):
        p["3"].unit((5, 5))


def test_an_empty_oracle_mask_where_the_analytic_field_is_not_empty_fails_as_the_oracle_failing():
    # x * 0 reads x (the analytic field: 3 x 3 pixels) but its gradient is 0: the oracle has no
    # answer, and the helper says so rather than comparing an empty mask
    net = nn.Sequential(nn.Conv2d(3, 4, 3), Zeroed())
    assert rflens.analyze(net, (3, 16, 16))["1"].unit((5, 5)).support_size == 9
    with pytest.raises(AssertionError, match=r"the oracle gave no answer.*\n\s*1 unit \(0, 0\): analytic 9 px, oracle 0 px"):
        assert_exact(net, (3, 16, 16), layers=["1"])


class SamePool(nn.Module):
    """timm's "same" max pool: pad with -inf, then pool (the stand-in sums, so the pad must not)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)

    def forward(self, x):
        return nn.functional.max_pool2d(nn.functional.pad(self.conv(x), (1, 1, 1, 1), value=-float("inf")), 3, 2)


def test_padding_with_minus_infinity_before_a_max_pool_is_followed_not_an_overflow():
    # was: "its positive copy made inf at op 'pad'" (timm vit_tiny_r_s16_p8_224 in the zoo)
    probe = ProbeAnalysis(SamePool(), (1, 16, 16))
    assert probe["output"].unit((0, 0)).box == ((0, 4), (0, 4))
    assert_exact(SamePool(), (1, 16, 16))


class RelativeIndex(nn.Module):
    """Indexes a table by distances it computes from arange (MViT-v2's relative positions): the
    probe's positive twin of subtraction would make them sums and index out of the table."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)
        self.table = nn.Parameter(torch.ones(15))

    def forward(self, x):
        n = x.shape[-1]
        dist = torch.arange(n).unsqueeze(-1) * 1.0 - torch.arange(n).unsqueeze(0) * 1.0 + (n - 1)
        return self.conv(x) * self.table[dist.long()].sum()


def test_arithmetic_on_what_carries_no_gradient_keeps_its_real_values():
    # was: IndexError: index 112 is out of bounds (timm mvitv2_tiny in the zoo)
    assert ProbeAnalysis(RelativeIndex(), (1, 8, 8))["output"].unit((0, 0)).box == ((0, 2), (0, 2))
    assert_exact(RelativeIndex(), (1, 8, 8))


def test_the_probes_layers_answer_layer_wide_questions_as_the_analytic_ones_on_resnet18():
    # was: AttributeError, then an RFLensError pointing to analyze (issue 17)
    model = rflens.load_model("resnet18")
    analytic = rflens.analyze(model, (3, 64, 64))
    probe = rflens.analyze(model, (3, 64, 64), method="probe")
    for name, size, stride, start in (("conv1", 7, 2, -3), ("maxpool", 11, 4, -5), ("layer1.0.conv1", 19, 4, -9),
                                      ("layer1", 43, 4, -21)):
        a, p = analytic[name], probe[name]
        assert (p.rf_size, p.stride, p.start) == ((size,) * 2, (stride,) * 2, (start,) * 2)
        assert (p.rf_size, p.stride, p.start, p.center) == (a.rf_size, a.stride, a.start, a.center)
    assert probe["layer4"].covers_input == analytic["layer4"].covers_input == (True, True)
    assert probe["layer1"].covers_input == analytic["layer1"].covers_input == (False, False)


def test_the_probe_answers_through_dilation_and_gives_projective_fields_of_every_unit():
    net = nn.Sequential(nn.Conv2d(1, 1, 3, dilation=3, padding=3), nn.Conv2d(1, 1, 3, stride=2, padding=1))
    analytic = rflens.analyze(net, (1, 24, 24))
    probe = rflens.analyze(net, (1, 24, 24), method="probe")
    for name in ("0", "1"):
        a, p = analytic[name], probe[name]
        assert (p.rf_size, p.stride, p.start, p.center) == (a.rf_size, a.stride, a.start, a.center)
        assert (probe[name].projective_field((5, 17)) == a.projective_field((5, 17))).all()
    assert (probe["0"].rf_size, probe["1"].rf_size, probe["1"].start, probe["1"].stride) == ((7, 7), (9, 9), (-4, -4), (2, 2))


def test_what_the_probe_cannot_see_is_a_clear_error_naming_the_way_out():
    model = rflens.load_model("resnet18")
    probe = rflens.analyze(model, (3, 64, 64), method="probe")
    # layer2's field (99) is wider than the input: the probe sees pixels, not padding
    with pytest.raises(RFLensError, match=r"unit \(4, 4\) of layer 'layer2' sees \[0, 64\) along input axis 0 of 64 "
                                          r"pixels: its field reaches the border.*rflens.analyze\(model, input_size\)"):
        probe["layer2"].rf_size
    with pytest.raises(RFLensError, match="has a grid of one unit, not a 2-D grid of several units per axis"):
        probe["fc"].stride
    with pytest.raises(RFLensError, match=r"^the gradient probe cannot answer 'min_rf' of layer 'layer1': it sees "
                                          r"one unit's pixels at a time, not paths"):
        probe["layer1"].min_rf
    analytic_box = rflens.analyze(model, (3, 64, 64))["layer2"].unit((0, 0)).box
    assert probe["layer2"].unit((0, 0)).box == analytic_box == ((0, 50), (0, 50))