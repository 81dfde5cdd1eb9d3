"""Window and grid attention: a spatial axis split into (window, position in the window) dims,
attention within each window, merged back.  Each window becomes a unit of a node whose grid is
the windows', so Swin, Swin-V2, MaxViT and Video Swin are followed exactly."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import rflens
from rflens.models import load_model


class Windows(nn.Module):
    """Swin's (shifted) window attention, reduced to its dataflow: partition into ws x ws windows
    after a cyclic shift, attention within each window, merge back and shift back."""

    def __init__(self, ws: int = 4, shift: int = 0):
        super().__init__()
        self.ws, self.shift = ws, shift
        self.embed = nn.Conv2d(3, 8, 1)
        self.qkv = nn.Linear(8, 24)

    def forward(self, x):
        x = self.embed(x).permute(0, 2, 3, 1)
        b, h, w, c = x.shape
        ws, n = self.ws, h // self.ws
        if self.shift:
            x = torch.roll(x, (-self.shift, -self.shift), (1, 2))
        x = x.view(b, n, ws, n, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(b * n * n, ws * ws, c)
        q, k, v = self.qkv(x).chunk(3, -1)
        x = (q @ k.transpose(-2, -1)).softmax(-1) @ v
        x = x.view(b, n, n, ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)
        if self.shift:
            x = torch.roll(x, (self.shift, self.shift), (1, 2))
        return x.permute(0, 3, 1, 2)


def test_window_attention_reads_its_window_exactly(exact):
    a = exact(Windows().eval(), (3, 16, 16), layers=["output"])
    out = a["output"]
    assert out.rf_size == (4, 4) and not out.is_global
    assert out.unit((5, 5)).box == ((4, 8), (4, 8)) and out.unit((5, 5)).support_size == 16


def test_shifted_windows_wrap_around_the_border(exact):
    a = exact(Windows(shift=2).eval(), (3, 16, 16), layers=["output"])
    out = a["output"]
    assert out.unit((5, 5)).box == ((2, 6), (2, 6))
    corner = out.unit((0, 0))   # its window holds rows and columns 14, 15, 0 and 1
    assert corner.support_size == 16 and corner.mask[14:, 14:].all() and corner.mask[:2, :2].all()
    assert corner.box == ((0, 16), (0, 16)) and out.stride == (1, 1)  # input pixels per unit


def test_swin_t_is_followed_exactly_through_shifted_windows_and_their_additive_mask(exact):
    # the -100 mask is finite: a masked pair still enters the softmax (weight ~e^-100), so the
    # exact field of a border window includes the rows the cyclic shift wrapped around
    model = load_model("swin_t")
    a = exact(model, (3, 112, 112), layers=["features.0", "features.1", "features.3", "features.5", "features.7"])
    assert a["features.0"].rf_size == (4, 4) and a["features.0"].stride == (4, 4)
    assert a["features.1"].stride == (4, 4) and not a["features.1"].is_global
    assert a["features.1"].unit((10, 10)).box == ((28, 84), (28, 84))  # two 7-patch windows, shifted by 3
    assert a["features.5"].is_global  # 7x7 windows over a 7x7 map: one window, global attention


def test_swin_v2_t_is_followed_exactly(exact):
    exact(load_model("swin_v2_t"), (3, 128, 128), layers=["features.0", "features.4", "features.7"])


def test_video_swin_windows_are_followed_in_three_dimensions(exact):
    a = exact(load_model("swin3d_t"), (3, 8, 64, 64), layers=["features.0", "features.2", "features.4", "features.6"])
    assert a["features.0"].rf_size == (8, 56, 56)


def test_maxvit_block_and_grid_attention_are_followed_exactly(exact):
    a = exact(load_model("maxvit_t"), (3, 224, 224), layers=["stem.0", "blocks.1", "blocks.3"])
    assert len(a) == 1315 and a["blocks.0"].grid_shape == (56, 56)


class Patches(nn.Module):
    """nn.Unfold's sliding patches, scaled, and nn.Fold summing them back into an image."""

    def __init__(self, k: int = 3, stride: int = 2, padding: int = 1, dilation: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.unfold = nn.Unfold(k, dilation, padding, stride)
        self.fold = nn.Fold((14, 14), k, dilation, padding, stride)
        self.out = nn.Conv2d(4, 2, 3)

    def forward(self, x):
        patches = self.unfold(self.conv(x))
        return self.out(self.fold(patches * 2))


@pytest.mark.parametrize("k, stride, padding, dilation", [(3, 2, 1, 1), (2, 2, 0, 1), (3, 1, 2, 2)])
def test_unfold_and_fold_move_pixels_exactly(exact, k, stride, padding, dilation):
    a = exact(Patches(k, stride, padding, dilation).eval(), (3, 16, 16), layers=["unfold", "output"])
    taps = a["unfold"]           # (channel x tap, patch): one input pixel each (a 3x3 conv's)
    assert taps.grid_shape == (4 * k * k, ((14 + 2 * padding - dilation * (k - 1) - 1) // stride + 1) ** 2)
    assert taps.rf_size == (3, 3) and a["output"].rf_size == (5, 5)  # fold(unfold) puts pixels back


def test_vision_outlookers_and_transformers_in_transformers_are_analysed():
    for name, layers in (("timm:volo_d1_224", 665),):
        assert len(rflens.analyze(load_model(name), (3, 224, 224))) == layers


class TalkingHeads(nn.Module):
    """EfficientFormerV2's talking heads: a 1x1 convolution over the heads of an attention map,
    whose two trailing dims are positions (queries, keys), not an image's rows and columns."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Conv2d(3, 8, 3, padding=1)
        self.qk = nn.Linear(8, 16)
        self.talk = nn.Conv2d(2, 2, 1)

    def forward(self, x):
        x = self.embed(x)
        tokens = x.flatten(2).transpose(1, 2)                          # (B, N, C)
        q, k = self.qk(tokens).view(x.shape[0], -1, 2, 8).transpose(1, 2).chunk(2, -1)
        attn = self.talk(q @ k.transpose(-2, -1)).softmax(-1)           # (B, heads, N, N)
        v = tokens.view(x.shape[0], -1, 2, 4).transpose(1, 2)
        return (attn @ v).transpose(1, 2).reshape(x.shape)


def test_a_1x1_convolution_over_an_attention_maps_heads_mixes_channels_in_place(exact):
    a = exact(TalkingHeads().eval(), (3, 8, 8), layers=["output"])
    assert a["output"].is_global and a["output"].local.rf_size == (3, 3)
    for name, layers in (("timm:efficientformerv2_s0", 593), ("timm:efficientvim_m1", 516)):
        assert len(rflens.analyze(load_model(name), (3, 224, 224))) == layers


class TokenPool(nn.Module):
    """NextViT's spatial reduction: tokens (rows and columns merged into one dim) pooled 2 by 2
    with a 1-D average pool, as keys and values of attention."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Conv2d(3, 4, 1)
        self.pool = nn.AvgPool1d(2, 2)

    def forward(self, x):
        tokens = self.embed(x).flatten(2)                    # (B, C, H*W)
        return self.pool(tokens).view(x.shape[0], 4, x.shape[2], -1)


def test_a_pool_over_merged_rows_and_columns_reduces_each_tile(exact):
    a = exact(TokenPool().eval(), (3, 8, 8), layers=["output"])
    assert a["output"].grid_shape == (8, 4) and a["output"].unit((3, 1)).box == ((3, 4), (2, 4))


@pytest.mark.parametrize("name, layers", [("timm:hiera_tiny_224", ["blocks.2", "blocks.10"]),
                                          ("timm:nextvit_small", ["stages.1.blocks.3"])])
def test_hieras_mask_units_and_nextvits_token_pooling_are_followed_exactly(exact, name, layers):
    exact(load_model(name), (3, 224, 224), layers=layers)
