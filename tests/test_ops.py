"""Every op rule against the gradient oracle, on small nets built for the purpose, with the
expected receptive fields written out."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import rflens
from conftest import assert_exact


class Lambda(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def test_conv5_then_mean_pool_unit_5_6_is_the_6x6_square():
    # the Mathematica answer: unit {5,6} counted from 1 is (4, 5) here
    net = nn.Sequential(nn.Conv2d(1, 1, 5), nn.AvgPool2d(2))
    a = assert_exact(net, (1, 30, 30))
    unit = a["1"].unit((4, 5))
    assert unit.box == ((8, 14), (10, 16))
    assert unit.support_size == 36
    assert a["1"].rf_size == (6, 6) and a["1"].stride == (2, 2)


def test_dilation_leaves_holes():
    net = nn.Sequential(nn.Conv2d(1, 2, 3, dilation=2, padding=2), nn.Conv2d(2, 2, 3, dilation=2, padding=2))
    a = assert_exact(net, (1, 21, 21))
    unit = a["1"].unit((10, 10))
    rows = np.flatnonzero(unit.mask.any(axis=1))
    assert rows.tolist() == [6, 8, 10, 12, 14]
    assert unit.support_size == 25 and a["1"].rf_size == (9, 9)


def test_dilated_1_2_4_stack_fills_a_15_square():
    net = nn.Sequential(*[nn.Conv2d(1, 1, 3, dilation=d, padding=d) for d in (1, 2, 4)])
    a = assert_exact(net, (1, 32, 32))
    assert a["2"].rf_size == (15, 15)
    assert a["2"].unit((16, 16)).support_size == 15 * 15


def test_strided_1x1_conv_sees_every_other_pixel():
    net = nn.Sequential(nn.Conv2d(1, 4, 1, stride=2), nn.Conv2d(4, 4, 3, padding=1))
    a = assert_exact(net, (1, 16, 16))
    unit = a["1"].unit((3, 3))
    assert np.flatnonzero(unit.mask.any(axis=0)).tolist() == [4, 6, 8]
    assert unit.support_size == 9 and a["1"].rf_size == (5, 5) and a["1"].stride == (2, 2)


def test_circular_padding_wraps_around():
    net = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1, padding_mode="circular"))
    a = assert_exact(net, (1, 10, 10))
    unit = a["0"].unit((0, 0))
    assert sorted(np.flatnonzero(unit.mask.any(axis=1)).tolist()) == [0, 1, 9]
    assert unit.support_size == 9


def test_reflect_and_replicate_padding():
    net = nn.Sequential(nn.Conv2d(1, 1, 5, padding=2, padding_mode="reflect"),
                        nn.Conv2d(1, 1, 3, padding=1, padding_mode="replicate"))
    a = assert_exact(net, (1, 12, 12))
    assert a["1"].unit((0, 0)).box == ((0, 4), (0, 4))


def test_ceil_mode_and_asymmetric_padding():
    net = nn.Sequential(Lambda(lambda x: F.pad(x, (0, 2, 1, 0))), nn.MaxPool2d(3, 2, ceil_mode=True),
                        nn.Conv2d(1, 1, 2, stride=2), nn.AvgPool2d(2, ceil_mode=True))
    a = assert_exact(net, (1, 17, 19))
    assert a["1"].grid_shape == (9, 10)  # rows: ceil((18 - 3) / 2) + 1


def test_same_padding_with_an_even_kernel():
    net = nn.Sequential(nn.Conv2d(1, 1, 4, padding="same"), nn.Conv2d(1, 1, (2, 3), padding="same"))
    a = assert_exact(net, (1, 11, 9))
    assert a["1"].rf_size == (5, 6)


def test_transposed_conv_with_output_padding():
    net = nn.Sequential(nn.Conv2d(1, 2, 3, stride=2, padding=1),
                        nn.ConvTranspose2d(2, 2, 3, stride=2, padding=1, output_padding=1),
                        nn.ConvTranspose2d(2, 1, 2, stride=3))
    a = assert_exact(net, (1, 9, 10))
    assert a["1"].output_shape[2:] == (10, 10)
    assert not a["2"].uniform  # stride 3 > kernel 2 leaves units that read nothing


def test_grouped_and_depthwise_convs():
    net = nn.Sequential(nn.Conv2d(4, 8, 3, groups=2), nn.Conv2d(8, 8, 5, groups=8, padding=2),
                        nn.Conv2d(8, 2, 1))
    assert_exact(net, (4, 12, 12))


def test_adaptive_pooling_with_uneven_bins():
    net = nn.Sequential(nn.Conv2d(1, 1, 3), nn.AdaptiveAvgPool2d((4, 3)), nn.AdaptiveMaxPool2d((3, 5)))
    a = assert_exact(net, (1, 13, 11))
    assert not a["1"].uniform


@pytest.mark.parametrize("mode,align", [("nearest", None), ("nearest-exact", None), ("bilinear", False),
                                        ("bilinear", True), ("bicubic", False)])
def test_interpolation(mode, align):
    kw = {} if align is None else {"align_corners": align}
    net = nn.Sequential(nn.Conv2d(1, 1, 3, stride=2),
                        Lambda(lambda x: F.interpolate(x, scale_factor=2.5, mode=mode, **kw)),
                        Lambda(lambda x: F.interpolate(x, size=(7, 9), mode=mode, **kw)))
    assert_exact(net, (1, 15, 17))


def test_pixel_shuffle_then_unshuffle_is_exact_per_channel():
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.PixelShuffle(2), nn.PixelUnshuffle(2),
                        nn.PixelShuffle(2))
    a = assert_exact(net, (1, 6, 6))
    assert a["1"].grid_shape == (12, 12)
    assert a["1"].unit((5, 5)).box == ((1, 4), (1, 4))


def test_lp_pool_and_max_pool_with_dilation():
    net = nn.Sequential(nn.LPPool2d(2, 3, stride=2), nn.MaxPool2d(3, stride=1, dilation=2, padding=1))
    a = assert_exact(net, (1, 15, 15))
    assert a["1"].rf_size == (11, 11)
    assert a["1"].unit((3, 3)).support_size == 9 * 9  # rows 3..11: dilation by 2 on a stride-2 grid


def test_wavenet_style_causal_dilated_stack():
    layers = []
    for d in (1, 2, 4, 8):
        layers += [Lambda(lambda x, d=d: F.pad(x, (d, 0))), nn.Conv1d(2 if layers else 1, 2, 2, dilation=d)]
    net = nn.Sequential(*layers)
    a = assert_exact(net, (1, 40))
    last = a["7"]
    assert last.rf_size == (16,) and last.stride == (1,)
    unit = last.unit((20,))
    assert unit.box == ((5, 21),) and unit.support_size == 16
    assert last.unit((3,)).box == ((0, 4),)


class UNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc1 = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
        self.down = nn.MaxPool2d(2)
        self.enc2 = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU())
        self.up = nn.ConvTranspose2d(8, 4, 2, stride=2)
        self.dec = nn.Conv2d(8, 2, 3, padding=1)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(self.down(e1))
        return self.dec(torch.cat([self.up(e2), e1], dim=1))


def test_unet_with_transposed_convs_and_skip_concatenation():
    a = assert_exact(UNet(), (1, 16, 16))
    assert "cat" in a.layers
    assert a["dec"].rf_size == (10, 10)


class Cross(nn.Module):
    """Inception-E style: parallel 1x3 and 3x1 branches make a cross, not a square."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 2, (1, 3), padding=(0, 1))
        self.b = nn.Conv2d(1, 2, (3, 1), padding=(1, 0))

    def forward(self, x):
        return torch.cat([self.a(x), self.b(x)], 1)


def test_parallel_branches_are_a_union_not_a_bounding_box():
    a = assert_exact(Cross(), (1, 9, 9))
    unit = a["cat"].unit((4, 4))
    assert unit.support_size == 5 and unit.box == ((3, 6), (3, 6))


class Video(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv3d(1, 2, (3, 5, 5), stride=(1, 2, 2), padding=(1, 2, 2))
        self.pool = nn.MaxPool3d((2, 3, 3), stride=2, padding=(0, 1, 1))
        self.c2 = nn.Conv3d(2, 2, 3, dilation=(2, 1, 1), padding=(2, 1, 1))

    def forward(self, x):
        return self.c2(self.pool(self.c1(x)))


def test_three_dimensional_convs_and_pools():
    a = assert_exact(Video(), (1, 8, 20, 20))
    assert a["c2"].rf_size == (12, 17, 17)


class SE(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        y = self.conv(x)
        return y * torch.sigmoid(self.fc(F.adaptive_avg_pool2d(y, 1)))


def test_squeeze_excitation_is_global_with_a_3x3_local_field():
    a = assert_exact(SE(), (1, 10, 10))
    layer = a["mul"]
    assert layer.is_global and "global pooling" in layer.global_via[0]
    assert layer.unit((0, 0)).support_size == 100
    assert layer.local.rf_size == (3, 3) and layer.local.unit((5, 5)).support_size == 9


@pytest.mark.parametrize("norm", [nn.GroupNorm(2, 4), nn.InstanceNorm2d(4), nn.LayerNorm([4, 8, 8])])
def test_norms_over_spatial_dims_are_global(norm):
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), norm)
    a = assert_exact(net, (1, 8, 8))
    assert a["1"].is_global and a["1"].local.rf_size == (3, 3)


def test_batch_norm_in_eval_and_layer_norm_over_channels_stay_local():
    class ChannelsLast(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3)
            self.bn = nn.BatchNorm2d(4)
            self.ln = nn.LayerNorm(4)
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            y = self.bn(self.conv(x)).permute(0, 2, 3, 1)
            return self.fc(self.ln(y)).permute(0, 3, 1, 2)
    a = assert_exact(ChannelsLast(), (1, 9, 9))
    assert not a["permute_1"].is_global and a["permute_1"].rf_size == (3, 3)


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Conv2d(1, 8, 2, stride=2)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)

    def forward(self, x):
        t = self.embed(x).flatten(2).transpose(1, 2)
        return t + F.scaled_dot_product_attention(t[:, None], t[:, None], t[:, None])[:, 0]


def test_attention_is_global_and_tokens_keep_their_patch_locally():
    a = assert_exact(Attention(), (1, 8, 8))
    layer = a["add"]
    assert layer.is_global and layer.local.rf_size == (2, 2)


def test_flatten_then_linear_is_global():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 6 * 6, 5))
    a = assert_exact(net, (1, 8, 8))
    assert a["2"].is_global and a["2"].local is None
    assert a["2"].unit(()).support_size == 64


def test_slicing_cropping_and_stacking():
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1),
                        Lambda(lambda x: torch.stack([x[:, :, 1:-1, 2:], x[:, :, 2:, :-2].flip(-1)], 1).sum(1)),
                        Lambda(lambda x: x[:, :, ::2, 1::3]))
    assert_exact(net, (1, 10, 11))


def test_in_place_ops_and_residual_add():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 3, padding=1)

        def forward(self, x):
            out = self.conv(x)
            out += x
            return F.relu(out, inplace=True)
    net = nn.Sequential(nn.Conv2d(1, 2, 1), Block(), Block())
    a = assert_exact(net, (1, 9, 9))
    assert a["2"].rf_size == (5, 5)


class Spectrum(nn.Module):
    def forward(self, x):
        return torch.fft.rfft2(x).abs()


class Sorts(nn.Module):
    def forward(self, x):
        return torch.sort(x, dim=-1).values


@pytest.mark.parametrize("module,op", [(Spectrum(), "_fft_r2c"), (Sorts(), "sort")])
def test_an_op_without_an_exact_rule_names_itself_and_its_module(module, op):
    net = nn.Sequential(nn.Conv2d(1, 1, 3), module)
    with pytest.raises(rflens.UnsupportedOpError) as e:
        # an op missing from the op table stops the analysis; a sort refuses the layers after it
        rflens.analyze(net, (1, 8, 8))["1"].unit()
    msg = str(e.value)
    assert f"'{op}" in msg and "module '1'" in msg and "method='probe'" in msg and "\n" not in msg


class RowColumnContext(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(1, 3, 3)

    def forward(self, x):
        y = self.c(x)
        return y + y.mean(dim=2, keepdim=True) + y.amax(dim=-1, keepdim=True)


def test_reductions_over_one_spatial_axis_give_a_cross_of_full_strips():
    a = assert_exact(RowColumnContext(), (1, 9, 11))
    layer = a["add_1"]
    assert layer.is_global and layer.local.rf_size == (3, 3)
    # its 3 columns over the full height plus its 3 rows over the full width
    assert layer.unit((3, 4)).support_size == 9 * 3 + 3 * 11 - 9
