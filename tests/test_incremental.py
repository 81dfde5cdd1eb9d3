"""Incremental re-inference (Krypton): the values of a layer on occluded copies of an image,
recomputing only each occluder's projective field, equal a full forward of the occluded copies."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from trained import lfw_faces, trained_onet

from rflens.methods.incremental import Incremental
from rflens.engine.trace import capture


def occluded(x: torch.Tensor, corners: np.ndarray, patches: torch.Tensor) -> torch.Tensor:
    s = patches.shape[-1]
    out = x.expand(len(corners), -1, -1, -1).clone()
    for b, (y, x0) in enumerate(corners.tolist()):
        out[b, :, y:y + s, x0:x0 + s] = patches[b]
    return out


def assert_matches_full_forward(model, layer: str, size: int, s: int = 11, batch: int = 12, seed: int = 0,
                                cells=None, changes: bool = True) -> Incremental:
    """Units at the corners, edges and centre of the layer, occluders anywhere (including the
    borders): incremental values equal those of full forwards of the occluded images."""
    model = model.eval().double()
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 3, size, size, generator=g, dtype=torch.float64)
    plan = Incremental.plan(model, layer)
    assert not isinstance(plan, str), plan
    with torch.no_grad():
        full = capture(model, x, layer)
        h, w = full.shape[2:]
        cells = cells or [(0, 0), (h - 1, w - 1), (h // 2, w // 2), (0, w - 1), (h // 3, 1)]
        channels = [i % full.shape[1] for i in range(len(cells))]
        ys, xs = [c[0] for c in cells], [c[1] for c in cells]
        clean = plan.prepare(x, cells, channels)
        torch.testing.assert_close(clean, full[0, channels, ys, xs], rtol=0, atol=0)
        corners = torch.randint(0, size - s + 1, (batch, 2), generator=g).numpy()
        corners[:4] = [[0, 0], [size - s, size - s], [0, size - s], [size - s, 0]]
        patches = torch.rand(batch, 3, s, s, generator=g, dtype=torch.float64)
        want = capture(model, occluded(x, corners, patches), layer)[:, channels, ys, xs]
        got = plan.values(corners, patches)
    assert (want != clean).any() or not changes  # the occluders do change the units
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    return plan


@pytest.mark.parametrize("name, layer, size", [
    ("alexnet", "features.12", 127),         # conv k11 s4 p2, max pools k3 s2
    ("vgg11", "features.10", 64),
    ("resnet18", "layer2", 64),              # residual adds, strided 1x1 downsample
    ("googlenet", "inception3a", 64),        # channel concatenation of four branches
    ("densenet121", "features.transition1", 64),  # concatenations, average pool
    ("mobilenet_v2", "features.4", 64),      # Conv2dNormActivation unrolled, depthwise, ReLU6
])
def test_incremental_values_equal_full_forwards_on_real_architectures(name, layer, size):
    model = torchvision.models.get_model(name, weights=None, **({"init_weights": False} if name == "googlenet" else {}))
    assert_matches_full_forward(model, layer, size)


def test_ceil_mode_pools_dilation_strides_past_the_kernel_padding_groups_and_same_padding():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=2, dilation=2), nn.LeakyReLU(),
        nn.MaxPool2d(3, 2, ceil_mode=True),
        nn.Conv2d(8, 8, 2, stride=3, padding=1, groups=4),       # stride > kernel: skipped pixels
        nn.AvgPool2d(3, 1, padding=1), nn.Conv2d(8, 6, 3, padding="same"), nn.BatchNorm2d(6),
        nn.MaxPool2d(2, ceil_mode=True, padding=1))
    net[6].running_mean.uniform_(-1, 1)
    assert_matches_full_forward(net, "7", 41, s=5)


def test_the_trained_mtcnn_onet_on_real_faces():
    net = trained_onet().double()
    plan = Incremental.plan(net, "pool3")  # PReLU, max pools in ceil mode
    face = lfw_faces(1).double()
    with torch.no_grad():
        plan.prepare(face, [(1, 1), (2, 2)], [3, 40])
        corners = np.array([[y, x] for y in range(0, 44, 6) for x in range(0, 44, 6)])
        patches = torch.rand(len(corners), 3, 5, 5, dtype=torch.float64)
        want = capture(net, occluded(face, corners, patches), "pool3")[:, [3, 40], [1, 2], [1, 2]]
        torch.testing.assert_close(plan.values(corners, patches), want, rtol=1e-10, atol=1e-10)


def test_only_what_the_units_need_is_recomputed():
    """One centre unit of AlexNet pool5 at 224: the first conv recomputes 8x8 of its 55x55
    outputs for an 11x11 occluder, and never more than the unit's receptive field needs."""
    net = torchvision.models.alexnet().features.eval()
    plan = Incremental.plan(net, "12")
    with torch.no_grad():
        plan.prepare(torch.rand(1, 3, 224, 224), [(3, 3)], [0])
    needed = {n.target: box for n, box in plan.needed.items() if n.op == "call_module"}
    assert needed["12"] == ((3, 4), (3, 4))
    assert needed["0"] == ((8, 55), (8, 55))  # the unit's RF on conv1's grid
    assert needed["3"] == ((6, 25), (6, 25))


def test_ops_it_does_not_know_are_named_and_refused():
    se = torchvision.models.mobilenet_v3_small()
    reason = Incremental.plan(se, "features.1")
    assert reason == "'features.1.block.1' (SqueezeExcitation): SqueezeExcitation is not a windowed op this engine knows"
    flat = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(1), nn.Unflatten(1, (4, 6, 6)))
    assert "'1' (Flatten)" in Incremental.plan(flat, "2")
    assert Incremental.plan(flat, "0") is not None and not isinstance(Incremental.plan(flat, "0"), str)
    reflect = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"))
    assert Incremental.plan(reflect, "0") == "'0' (Conv2d): padding_mode='reflect'"


@settings(max_examples=25, deadline=None)
@given(layers=st.lists(st.tuples(st.sampled_from(["conv", "max", "avg"]), st.integers(1, 4), st.integers(1, 3),
                                 st.integers(0, 2), st.integers(1, 2), st.booleans()), min_size=1, max_size=4),
       s=st.integers(1, 6), seed=st.integers(0, 10))
def test_random_chains_of_windowed_ops(layers, s, seed):
    torch.manual_seed(seed)
    mods, size = [], 40
    for kind, k, stride, pad, dil, ceil in layers:
        pad = min(pad, k // 2)
        if kind == "conv":
            mods += [nn.Conv2d(3, 3, k, stride, pad, dil), nn.Tanh()]
        elif kind == "max":
            mods.append(nn.MaxPool2d(k, stride, pad, dil, ceil_mode=ceil))
        else:
            mods.append(nn.AvgPool2d(k, stride, pad, ceil_mode=False))
    net = nn.Sequential(*mods)
    try:
        out = net(torch.rand(1, 3, size, size))
    except RuntimeError:
        return  # the chain shrinks the input to nothing
    h, w = out.shape[2:]
    assert_matches_full_forward(net, str(len(mods) - 1), size, s=s, batch=6, seed=seed,
                                cells=[(0, 0), (h - 1, w - 1), (h // 2, w // 2)], changes=False)
