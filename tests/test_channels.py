"""Per-neuron fields: a neuron is one channel at one position.  Where a layer's channels come from
different branches, each channel's field is its own, equal to the gradient oracle's for that one
channel; ``layer.unit(u)`` stays the union over the channels at the position."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

import rflens
from rflens.errors import UnitError


def groups(layer) -> list[tuple[int, int, tuple[int, ...]]]:
    return [(g.channels.start, g.channels.stop, g.rf_size) for g in layer.channel_groups]


@pytest.fixture(scope="module")
def densenet():
    torch.manual_seed(0)
    return torchvision.models.densenet121().eval()


def test_a_densenet_block_holds_seven_fields_one_per_concatenated_layer(densenet, exact_per_channel):
    a = exact_per_channel(densenet, (3, 64, 64), ["features.denseblock1", "features.transition1"],
                          units=[(0, 0), (4, 5), (7, 7)])
    block = a["features.denseblock1"]
    assert groups(block) == [(0, 64, (11, 11)), (64, 96, (19, 19)), (96, 128, (27, 27)), (128, 160, (35, 35)),
                             (160, 192, (43, 43)), (192, 224, (51, 51)), (224, 256, (59, 59))]
    assert block.varies_by_channel and block.rf_size == (59, 59)
    assert block.unit((8, 8), channel=0).support_size == 121
    assert block.to_dict()["rf_size_by_channel"] == [[11, 11], [59, 59]]
    # the transition's 1x1 convolution mixes every channel: one field again
    assert groups(a["features.transition1"]) == [(0, 128, (63, 63))]  # + the 2x2 average pool
    assert not a["features.transition1"].varies_by_channel
    assert a["features.transition1"].to_dict()["rf_size_by_channel"] is None


def test_inception_mixed_5b_branches_see_31_63_and_47_pixels(exact_per_channel):
    net = torchvision.models.inception_v3(init_weights=False, aux_logits=False).eval()
    a = exact_per_channel(net, (3, 299, 299), ["Mixed_5b"], units=[(17, 17), (0, 34)])
    assert groups(a["Mixed_5b"]) == [(0, 64, (31, 31)), (64, 224, (63, 63)), (224, 256, (47, 47))]
    sides = [tuple(h - lo for lo, h in a["Mixed_5b"].unit((17, 17), channel=c).box) for c in (0, 64, 224)]
    assert sides == [(31, 31), (63, 63), (47, 47)]


class UNet(nn.Module):
    """One level of a U-Net: the skip connection is concatenated with the upsampled path."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Conv2d(3, 4, 3, padding=1)
        self.down = nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU())
        self.up = nn.ConvTranspose2d(6, 6, 2, stride=2)
        self.dec = nn.Conv2d(10, 2, 3, padding=1)

    def forward(self, x):
        skip = self.enc(x)
        merged = torch.cat([skip, self.up(self.down(skip))], 1)
        return self.dec(merged)


def test_a_unet_skip_concatenation_keeps_the_skips_small_field(exact_per_channel):
    a = exact_per_channel(UNet().eval(), (3, 32, 32), ["cat", "dec"])
    assert groups(a["cat"]) == [(0, 4, (3, 3)), (4, 10, (8, 8))]
    assert groups(a["dec"]) == [(0, 2, (10, 10))]


def test_shufflenets_channel_shuffle_interleaves_the_two_branches(exact_per_channel):
    net = torchvision.models.shufflenet_v2_x0_5().eval()
    a = exact_per_channel(net, (3, 64, 64), ["stage2.1"], units=[(4, 4), (0, 7)])
    runs = a["stage2.1"].channel_groups
    assert len(runs) == 48 and all(len(g.channels) == 1 for g in runs)  # 48 channels, alternating
    sizes = [g.rf_size for g in runs]
    assert sizes[0::2] == [sizes[0]] * 24 and sizes[1::2] == [sizes[1]] * 24 and sizes[0] != sizes[1]


class Split(nn.Module):
    """Half the channels go through a 5x5 convolution, the other half pass: chunk, then cat."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 1)
        self.wide = nn.Conv2d(4, 4, 5, padding=2)

    def forward(self, x):
        a, b = self.stem(x).chunk(2, dim=1)
        return torch.cat([b, self.wide(a)], 1)


def test_a_channel_split_network(exact_per_channel):
    a = exact_per_channel(Split().eval(), (3, 12, 12), ["output"])
    assert groups(a["output"]) == [(0, 4, (1, 1)), (4, 8, (5, 5))]


def test_the_position_is_the_union_of_its_channels(densenet):
    block = rflens.analyze(densenet, (3, 64, 64))["features.denseblock1"]
    union = np.zeros((64, 64), bool)
    for g in block.channel_groups:
        union |= block.unit((8, 8), channel=g.channels.start).mask
    whole = block.unit((8, 8))
    assert np.array_equal(union, whole.mask) and whole.channel is None
    one = block.unit((8, 8), channel=70)
    assert one.channel == 70 and one.to_dict((3, 64, 64), False)["channel"] == 70
    assert block.for_channel(70).rf_size == (19, 19) and block.for_channel(70).unit((8, 8)).box == one.box


@pytest.mark.parametrize("channel, message", [
    (256, r"channel 256 is outside layer 'features.denseblock1', which has 256 channels \(0..255\)"),
    (-1, "channel -1 is outside layer 'features.denseblock1'"),
    ("red", "a channel is a number, not 'red'"),
])
def test_a_channel_outside_the_layer_is_refused_with_its_range(densenet, channel, message):
    block = rflens.analyze(densenet, (3, 64, 64))["features.denseblock1"]
    with pytest.raises(UnitError, match=message):
        block.unit((8, 8), channel=channel)


def test_the_gradient_rf_of_a_channel_is_compared_with_that_channels_field(densenet):
    torch.manual_seed(0)
    x = torch.rand(3, 64, 64)
    for channel, side in ((0, 11), (70, 19), (250, 59)):
        g = rflens.gradient_field(densenet, "features.denseblock1", (8, 8), x, channel=channel, device="cpu")
        assert [h - lo for lo, h in g.rf.box] == [side, side] and g.rf.channel == channel
        assert not g.outside.any() and 0 < g.nonzero.sum() <= side * side
