"""Property-based tests: on random chains and small DAGs of convs, pools, pads, upsamples,
transposed convs and adaptive pools, with random kernels, strides, paddings, dilations,
ceil modes and input sizes, the analytic mask of every sampled unit equals the probe's
(the brute-force gradient oracle), and the layer summaries (``rf_size``, ``stride``,
``start``, boxes) agree with those masks.

How to run::

    .venv/bin/pytest tests/test_property.py                    # profile "ci": quick, reproducible
    HYPOTHESIS_PROFILE=thorough .venv/bin/pytest tests/test_property.py   # 500 examples a test
    HYPOTHESIS_PROFILE=thorough HYPOTHESIS_MAX_EXAMPLES=2000 .venv/bin/pytest tests/test_property.py

Profiles (chosen by the environment variable ``HYPOTHESIS_PROFILE``, default ``ci``):

* ``ci``: 30 examples a test, derandomized (the same examples on every run), no example
  database, no deadline: the whole file takes well under a minute on a 2-core machine.
* ``thorough``: 500 examples a test, fresh random examples on every run, failures saved in
  ``.hypothesis/`` and replayed first next time.

``HYPOTHESIS_MAX_EXAMPLES`` overrides the example count of either profile.  A failure prints
the model (``print(model)`` form), the input size, the layer and unit, and both masks' boxes;
keep a minimal one as an explicit regression test at the bottom of this file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, assume, given, note, settings
from hypothesis import strategies as st
from torch import nn

import rflens
from rflens.engine.probe import ProbeAnalysis

_common = dict(deadline=None, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                      HealthCheck.filter_too_much])
settings.register_profile("ci", max_examples=30, derandomize=True, database=None, **_common)
settings.register_profile("thorough", max_examples=500, **_common)
_profile = os.environ.get("HYPOTHESIS_PROFILE", "ci")
if os.environ.get("HYPOTHESIS_MAX_EXAMPLES"):
    settings.register_profile(_profile + "+n", settings.get_profile(_profile),
                              max_examples=int(os.environ["HYPOTHESIS_MAX_EXAMPLES"]))
    _profile += "+n"
settings.load_profile(_profile)

MAX_SIDE_2D = 64    # cap on every intermediate spatial size, so the probe stays cheap
MAX_SIDE_1D = 200


# -- models ----------------------------------------------------------------------------------

class TwoBranch(nn.Module):
    """Two chains from the same input, aligned to a common size and merged by add or cat."""

    def __init__(self, a: nn.Module, b: nn.Module, align: str, target: tuple[int, ...],
                 offsets: tuple[tuple[int, ...], tuple[int, ...]], merge: str, nd: int):
        super().__init__()
        self.a, self.b = a, b
        self.align, self.target, self.offsets, self.merge, self.nd = align, target, offsets, merge, nd

    def _crop(self, y, off):
        idx = (slice(None), slice(None)) + tuple(slice(o, o + t) for o, t in zip(off, self.target))
        return y[idx]

    def forward(self, x):
        ya, yb = self.a(x), self.b(x)
        if self.align == "crop":
            ya, yb = self._crop(ya, self.offsets[0]), self._crop(yb, self.offsets[1])
        elif self.align != "none":
            kw = {"align_corners": False} if self.align in ("linear", "bilinear") else {}
            yb = F.interpolate(yb, size=self.target, mode=self.align, **kw)
        return ya + yb if self.merge == "add" else torch.cat([ya, yb], dim=1)

    def extra_repr(self) -> str:
        return f"align={self.align}, target={self.target}, offsets={self.offsets}, merge={self.merge}"


class Residual(nn.Module):
    """y = x + f(x), f's output brought back to x's size by F.pad (negative pads crop) or
    interpolation where f does not preserve it."""

    def __init__(self, f: nn.Module, fix: str, pads: tuple[int, ...], target: tuple[int, ...]):
        super().__init__()
        self.f, self.fix, self.pads, self.target = f, fix, pads, target

    def forward(self, x):
        y = self.f(x)
        if self.fix == "pad":
            y = F.pad(y, self.pads)
        elif self.fix != "none":
            y = F.interpolate(y, size=self.target, mode=self.fix)
        return x + y

    def extra_repr(self) -> str:
        return f"fix={self.fix}, pads={self.pads}, target={self.target}"


@dataclass
class Case:
    model: nn.Module
    input_size: tuple[int, ...]

    def __repr__(self) -> str:
        return f"Case(input_size={self.input_size}, model=\n{self.model})"


def out_shape(module: nn.Module, c: int, size: tuple[int, ...]) -> tuple[int, tuple[int, ...]] | None:
    """(channels, spatial) of ``module`` on a (1, c, *size) input, or None where PyTorch
    refuses it (input too small, reflect pad too large, ...)."""
    try:
        with torch.no_grad():
            y = module(torch.zeros((1, c, *size)))
    except (RuntimeError, ValueError):
        return None
    if y.numel() == 0:
        return None
    return y.shape[1], tuple(y.shape[2:])


# -- strategies -------------------------------------------------------------------------------

def _tup(draw, nd, elements, square_p=True):
    """A per-axis tuple; often the same value on every axis."""
    if nd == 1 or (square_p and draw(st.booleans())):
        v = draw(elements)
        return (v,) * nd
    return tuple(draw(elements) for _ in range(nd))


def _conv(draw, nd, c, size, preserve):
    k = _tup(draw, nd, st.integers(1, 5))
    d = _tup(draw, nd, st.integers(1, 3))
    stride = (1,) * nd if preserve else _tup(draw, nd, st.integers(1, 3))
    if preserve or (all(s == 1 for s in stride) and draw(st.booleans())):
        padding = "same"
        pads = [di * (ki - 1) - di * (ki - 1) // 2 for ki, di in zip(k, d)]  # the larger side
    else:
        padding = _tup(draw, nd, st.integers(0, 3))
        pads = list(padding)
    modes = ["zeros", "replicate"]
    if all(p <= n for p, n in zip(pads, size)):
        modes.append("circular")
    if all(p < n for p, n in zip(pads, size)):
        modes.append("reflect")
    mode = draw(st.sampled_from(modes))
    if c > 1 and draw(st.booleans()):
        groups, out = c, c * draw(st.integers(1, 2)) if not preserve else c
    else:
        groups, out = 1, draw(st.integers(1, 3))
    cls = (nn.Conv1d, nn.Conv2d)[nd - 1]
    return cls(c, out, k, stride=stride, padding=padding, dilation=d, groups=groups,
               bias=draw(st.booleans()), padding_mode=mode)


def _pool(draw, nd, c, size, preserve):
    if preserve:
        k = _tup(draw, nd, st.sampled_from([1, 3]))
        stride, padding, ceil = 1, tuple(ki // 2 for ki in k), draw(st.booleans())
    else:
        k = _tup(draw, nd, st.integers(1, 4))
        stride = _tup(draw, nd, st.integers(1, 3)) if draw(st.booleans()) else None
        padding = tuple(draw(st.integers(0, ki // 2)) for ki in k)
        ceil = draw(st.booleans())
    if draw(st.booleans()):
        cls = (nn.MaxPool1d, nn.MaxPool2d)[nd - 1]
        dil = 1 if preserve else _tup(draw, nd, st.integers(1, 3))
        return cls(k, stride, padding, dilation=dil, ceil_mode=ceil)
    cls = (nn.AvgPool1d, nn.AvgPool2d)[nd - 1]
    return cls(k, stride, padding, ceil_mode=ceil, count_include_pad=draw(st.booleans()))


def _pad(draw, nd, c, size, preserve):
    kind = draw(st.sampled_from(["zero", "constant", "reflect", "replicate", "circular"]))
    lo = -2 if kind in ("zero", "constant") else 0  # negative constant pads crop
    pads = []
    for n in reversed(size):  # F.pad order: last axis first
        hi = {"reflect": min(3, n - 1), "circular": min(3, n)}.get(kind, 3)
        pads += [draw(st.integers(lo, hi)), draw(st.integers(lo, hi))]
    pads = tuple(pads)
    if kind == "zero":
        return nn.ZeroPad1d(pads) if nd == 1 else nn.ZeroPad2d(pads)
    if kind == "constant":
        return (nn.ConstantPad1d, nn.ConstantPad2d)[nd - 1](pads, draw(st.sampled_from([0.0, 1.5])))
    return {"reflect": (nn.ReflectionPad1d, nn.ReflectionPad2d),
            "replicate": (nn.ReplicationPad1d, nn.ReplicationPad2d),
            "circular": (nn.CircularPad1d, nn.CircularPad2d)}[kind][nd - 1](pads)


def _upsample(draw, nd, c, size, preserve):
    scale = _tup(draw, nd, st.sampled_from([2, 3]))
    smooth = "linear" if nd == 1 else "bilinear"
    mode = draw(st.sampled_from(["nearest", smooth]))
    if mode == "nearest":
        return nn.Upsample(scale_factor=tuple(float(s) for s in scale), mode=mode)
    return nn.Upsample(scale_factor=tuple(float(s) for s in scale), mode=mode,
                       align_corners=draw(st.booleans()))


def _conv_transpose(draw, nd, c, size, preserve):
    k = _tup(draw, nd, st.integers(1, 4))
    stride = _tup(draw, nd, st.integers(1, 3))
    d = _tup(draw, nd, st.integers(1, 2))
    padding = _tup(draw, nd, st.integers(0, 3))
    output_padding = tuple(draw(st.integers(0, s - 1)) for s in stride)
    groups = c if c > 1 and draw(st.booleans()) else 1
    out = groups * draw(st.integers(1, 2)) if groups > 1 else draw(st.integers(1, 3))
    cls = (nn.ConvTranspose1d, nn.ConvTranspose2d)[nd - 1]
    return cls(c, out, k, stride=stride, padding=padding, output_padding=output_padding,
               groups=groups, dilation=d, bias=draw(st.booleans()))


def _adaptive(draw, nd, c, size, preserve):
    target = tuple(draw(st.integers(1, n)) for n in size)
    if draw(st.integers(0, 3)) == 0:
        return (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)[nd - 1](target)
    return (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)[nd - 1](target)


KINDS = {"conv": _conv, "pool": _pool, "pad": _pad, "upsample": _upsample,
         "conv_transpose": _conv_transpose, "adaptive": _adaptive}
PRESERVING = {"conv": _conv, "pool": _pool}


@st.composite
def chain(draw, nd: int, c: int, size: tuple[int, ...], min_layers: int = 1, max_layers: int = 4,
          preserve: bool = False):
    """A list of layers valid on (c, *size) inputs, with the output (channels, spatial).
    Drawn layers PyTorch refuses at the running size, or that would grow the size past the
    cap, are left out (so a chain may come out shorter than drawn)."""
    cap = MAX_SIDE_2D if nd == 2 else MAX_SIDE_1D
    kinds = PRESERVING if preserve else KINDS
    layers = []
    for _ in range(draw(st.integers(min_layers, max_layers))):
        kind = draw(st.sampled_from(list(kinds)))  # in KINDS order: shrinks towards convs
        layer = kinds[kind](draw, nd, c, size, preserve)
        got = out_shape(layer, c, size)
        if got is None or max(got[1]) > cap or (preserve and got[1] != size):
            continue
        layers.append(layer)
        c, size = got
    return layers, c, size


@st.composite
def input_sizes(draw, nd: int):
    c = draw(st.integers(1, 3))
    if nd == 1:
        return (c, draw(st.integers(5, 60)))
    return (c, draw(st.integers(5, 40)), draw(st.integers(5, 40)))


def unit_indices(grid: tuple[int, ...]):
    """A unit of ``grid``: each coordinate the first, the last, or any (corners are likely)."""
    return st.tuples(*[st.one_of(st.just(0), st.just(n - 1), st.integers(0, n - 1)) for n in grid])


@st.composite
def chains(draw, nd: int):
    size = draw(input_sizes(nd))
    layers, _, _ = draw(chain(nd, size[0], size[1:]))
    assume(layers)
    return Case(nn.Sequential(*layers), size)


@st.composite
def two_branch(draw, nd, c, size):
    a, ca, sa = draw(chain(nd, c, size, 0, 3))
    b, cb, sb = draw(chain(nd, c, size, 0, 3))
    merge = draw(st.sampled_from(["add", "cat"]))
    if merge == "add" and ca != cb:
        b.append((nn.Conv1d, nn.Conv2d)[nd - 1](cb, ca, 1))
        cb = ca
    offsets = ((0,) * nd, (0,) * nd)
    if sa == sb and draw(st.booleans()):
        align, target = "none", sa
    elif draw(st.booleans()):
        align = "crop"
        target = tuple(draw(st.integers(1, min(x, y))) for x, y in zip(sa, sb))
        offsets = tuple(tuple(draw(st.integers(0, n - t)) for n, t in zip(s, target)) for s in (sa, sb))
    else:
        align, target = draw(st.sampled_from(["nearest", "linear" if nd == 1 else "bilinear"])), sa
    block = TwoBranch(nn.Sequential(*a), nn.Sequential(*b), align, target, offsets, merge, nd)
    return block, ca + cb if merge == "cat" else ca, target


@st.composite
def residual(draw, nd, c, size):
    preserve = draw(st.booleans())
    f, cf, sf = draw(chain(nd, c, size, 1, 3, preserve=preserve))
    if cf != c:
        f.append((nn.Conv1d, nn.Conv2d)[nd - 1](cf, c, 1))
    pads: tuple[int, ...] = ()
    if sf == size:
        fix = "none"
    elif draw(st.booleans()):
        fix = "pad"
        for want, have in zip(reversed(size), reversed(sf)):
            before = draw(st.integers(min(0, want - have), max(0, want - have)))
            pads += (before, want - have - before)
    else:
        fix = draw(st.sampled_from(["nearest", "linear" if nd == 1 else "bilinear"]))
    return Residual(nn.Sequential(*f), fix, pads, size), c, size


@st.composite
def dags(draw, nd: int):
    """A chain with one or two branching blocks (two chains merged, or a residual) inside."""
    size = draw(input_sizes(nd))
    c, s = size[0], size[1:]
    blocks = []
    pre, c, s = draw(chain(nd, c, s, 0, 2))
    blocks += pre
    for _ in range(draw(st.integers(1, 2))):
        kind = draw(st.sampled_from([two_branch, residual]))
        block, c, s = draw(kind(nd, c, s))
        blocks.append(block)
    post, c, s = draw(chain(nd, c, s, 0, 2))
    blocks += post
    return Case(nn.Sequential(*blocks), size)


# -- the property -----------------------------------------------------------------------------

def _bbox(mask: np.ndarray) -> tuple[tuple[int, int], ...]:
    out = []
    for a in range(mask.ndim):
        idx = np.flatnonzero(mask.any(axis=tuple(i for i in range(mask.ndim) if i != a)))
        out.append((int(idx[0]), int(idx[-1]) + 1) if idx.size else (0, 0))
    return tuple(out)


# rflens bugs these properties found are regression tests at the bottom of this file.  A new
# one is kept there as a strict xfail, and the properties step around exactly it (a ``_known_*``
# predicate skipping the unit, the summary check or the example) so that they keep hunting;
# the predicate goes when the fix lands.  None is known now.

def _is_container(model: nn.Module, name: str) -> bool:
    """A block whose output is its last inner value's (checked under that name already)."""
    try:
        return isinstance(model.get_submodule(name), (nn.Sequential, TwoBranch, Residual))
    except AttributeError:
        return False


def check_case(case: Case, data, layers: str = "all") -> None:
    """Analytic == probe masks for 1-3 drawn units (corners likely) of every layer (of the last
    layer only where ``layers == "last"``); the summaries agree with the masks."""
    model, size = case.model, case.input_size
    note(repr(case))
    a = rflens.analyze(model, size)  # valid at this size (PyTorch ran it): no error allowed
    p = ProbeAnalysis(model, size)
    names = [n for n in a.layers if n in p.layers and n != "output" and not _is_container(model, n)]
    assert names, f"no layers in {a.layers}"
    if layers != "all":
        names = names[-1:]
    assert a[names[-1]].output_shape == p[names[-1]].output_shape
    requests = {}
    for n in names:
        grid = a[n].grid_shape  # may index channels too, where they carry position (space-to-depth)
        units = data.draw(st.lists(unit_indices(grid), min_size=1, max_size=min(3, int(np.prod(grid))),
                                   unique=True),
                          label=f"units of layer {n!r} (grid {grid})")
        requests[n] = (units, a[n].spatial_dims)
    got = p.masks_many(requests)
    for n in names:
        layer = a[n]
        for u, probe_mask in zip(requests[n][0], got[n]):
            unit = layer.unit(u)
            assert np.array_equal(unit.mask, probe_mask), (
                f"layer {n!r} ({layer.op}, grid {layer.grid_shape}) unit {u}: analytic box {unit.box} "
                f"({unit.support_size} px) != probe box {_bbox(probe_mask)} ({int(probe_mask.sum())} px); "
                f"analytic-only px {np.argwhere(unit.mask & ~probe_mask)[:5].tolist()}, "
                f"probe-only px {np.argwhere(probe_mask & ~unit.mask)[:5].tolist()}")
            _check_unit_summary(layer, unit, len(size) - 1)


def _check_unit_summary(layer, unit, k: int) -> None:
    """The unit's box is its mask's bounding box, inside its unclipped box; no mask is wider
    than the layer's rf_size; on uniform layers every unclipped box has size rf_size and starts
    at start +- index * stride (``stride`` is unsigned: a flip or a circular wrap walks back)."""
    if layer.is_global:
        return
    mask = unit.mask
    box = _bbox(mask)
    rf_size = layer.rf_size
    if mask.any():
        assert tuple(unit.box) == box, f"{layer.name} unit {unit.index}: box {unit.box} != mask bbox {box}"
        for (lo, hi), (ulo, uhi) in zip(box, unit.unclipped_box):
            assert ulo is not None and uhi is not None and ulo <= lo and hi <= uhi, (
                f"{layer.name} unit {unit.index}: unclipped box {unit.unclipped_box} does not contain {box}")
    for (lo, hi), rf in zip(box, rf_size):  # the largest unclipped box is at least any mask's bbox
        assert hi - lo <= rf, f"{layer.name} unit {unit.index}: mask bbox {box} wider than rf_size {rf_size}"
    if layer.uniform and len(layer.grid_shape) == k:
        for a, ((ulo, uhi), rf, step, start) in enumerate(zip(unit.unclipped_box, rf_size,
                                                                layer.stride, layer.start)):
            assert uhi - ulo == rf, (
                f"{layer.name} uniform, unit {unit.index}: unclipped box {unit.unclipped_box} not of size {rf}")
            if layer.grid_shape[a] > 1:
                assert abs(ulo - start) == pytest.approx(unit.index[a] * step), (
                    f"{layer.name} uniform, unit {unit.index}: box start {ulo} != {start} +- i * {step}")


@given(chains(2), st.data())
def test_random_2d_chains_are_exact(case, data):
    check_case(case, data)


@given(chains(1), st.data())
def test_random_1d_chains_are_exact(case, data):
    check_case(case, data)


@given(st.sampled_from([1, 2]).flatmap(dags), st.data())
def test_random_dags_are_exact(case, data):
    check_case(case, data)


@st.composite
def tiny_cases(draw):
    """One random layer on an input of 1-6 pixels a side, where PyTorch may refuse it."""
    nd = draw(st.sampled_from([1, 2]))
    size = (draw(st.integers(1, 2)),) + tuple(draw(st.integers(1, 6)) for _ in range(nd))
    kind = draw(st.sampled_from([k for k in KINDS if k not in ("pad", "adaptive")]))
    return nd, size, KINDS[kind](draw, nd, size[0], size[1:], False)


@given(tiny_cases(), st.data())
def test_inputs_too_small_give_a_clean_error_else_exact_masks(tiny, data):
    nd, size, layer = tiny
    model = nn.Sequential(layer)
    if out_shape(layer, size[0], size[1:]) is None:
        note(f"PyTorch refuses {layer} on {size}")
        try:
            rflens.analyze(model, size)
        except rflens.InputTooSmallError:
            return
        pytest.fail(f"rflens analysed {layer} on {size}, which PyTorch refuses")
    check_case(Case(model, size), data, layers="last")


# -- counterexamples found by the properties above (rflens bugs, now regression tests) ---------

class ConvPaddingThen(nn.Module):
    """``after(cat([x, conv(x)[..., :1]]))`` (or without the cat): element 0 of the conv's last
    axis reads only its zero padding, so that part of the value depends on no input pixel."""

    def __init__(self, nd: int, cat: bool, after: nn.Module):
        super().__init__()
        self.conv = (nn.Conv1d, nn.Conv2d)[nd - 1](1, 1, 1, padding=(1,) if nd == 1 else (0, 1))
        self.cat, self.after = cat, after

    def forward(self, x):
        b = self.conv(x)[..., :1]
        return self.after(torch.cat([x[..., :1], b], 1) if self.cat else b)


@pytest.mark.parametrize("net,size,layer", [
    # the conv itself: every output position reads only padding (probe: empty masks)
    (nn.Sequential(nn.Conv1d(1, 1, 1, stride=2, padding=1)), (1, 1), "0"),
    (nn.Sequential(nn.Conv1d(1, 1, 1, stride=3, padding=1)), (1, 2), "0"),
    (nn.Sequential(nn.Conv2d(1, 1, 1, stride=2, padding=1)), (1, 1, 1), "0"),
    (nn.Sequential(nn.AdaptiveMaxPool1d(1), nn.Conv1d(1, 1, 1, stride=2, padding=1)), (1, 5), "1"),
    # a padding-only slice of a conv through an op (probe: empty mask)
    (ConvPaddingThen(1, False, nn.MaxPool1d(1)), (1, 1), "after"),
    # concatenated with real channels first: probe masks are non-empty (1 px / a 1x1 box per unit)
    (ConvPaddingThen(1, True, nn.MaxPool1d(1)), (1, 1), "after"),
    (ConvPaddingThen(2, True, nn.MaxPool2d(1)), (1, 3, 1), "after"),
    (ConvPaddingThen(2, True, nn.Upsample(scale_factor=2.0)), (1, 3, 3), "after"),
], ids=["conv1d-len1", "conv1d-len2", "conv2d-1x1", "after-adaptive-pool", "slice-pool",
        "cat-maxpool1d", "cat-maxpool2d", "cat-upsample"])
def test_units_after_a_conv_output_reading_only_padding(net, size, layer):
    # a value (or part of one) that depends on no input pixel contributes an empty mask
    a, p = rflens.analyze(net, size), ProbeAnalysis(net, size)
    L = a[layer]
    units = list(np.ndindex(*L.grid_shape))
    for u, probe_mask in zip(units, p.masks(layer, units, spatial_dims=L.spatial_dims)):
        assert np.array_equal(L.unit(u).mask, probe_mask)


def test_a_unit_reading_only_padding_has_an_empty_mask_and_its_classic_box_in_the_padding():
    # Conv1d(k=1, stride 2, padding 1) on one pixel: unit 0 reads pixel -1, unit 1 pixel 1
    L = rflens.analyze(nn.Sequential(nn.Conv1d(1, 1, 1, stride=2, padding=1)), (1, 1))["0"]
    u0, u1 = L.unit(0), L.unit(1)
    assert u0.support_size == u1.support_size == 0
    assert u0.box == u1.box == ((0, 0),)                 # as the probe reports an empty mask
    assert (u0.unclipped_box, u1.unclipped_box) == (((-1, 0),), ((1, 2),))
    assert (u0.center, u1.center) == ((-1,), (1,))
    assert (L.rf_size, L.stride, L.start, L.uniform) == ((1,), (2,), (-1,), True)
    # the same on a 2-D one-pixel input, per axis
    L2 = rflens.analyze(nn.Sequential(nn.Conv2d(1, 1, 1, stride=2, padding=1)), (1, 1, 1))["0"]
    assert L2.unit((1, 0)).unclipped_box == ((1, 2), (-1, 0))
    assert L2.unit((1, 0)).mask.shape == (1, 1) and not L2.unit((1, 0)).mask.any()


class ShiftThenMix(nn.Module):
    """Channels holding different spatial shifts of the input (crops at different offsets,
    concatenated), then a 1x1 conv mixing them: TSM / ShiftNet style."""

    def __init__(self, shifts):
        super().__init__()
        self.shifts = shifts
        self.mix = nn.Conv2d(len(shifts), 1, 1)

    def forward(self, x):
        return self.mix(torch.cat([x[:, :, r:r + 2, c:c + 2] for r, c in self.shifts], 1))


@pytest.mark.parametrize("shifts,size", [(((0, 0), (0, 1)), (1, 2, 3)), (((0, 0), (1, 1)), (1, 3, 3))],
                         ids=["row-shift", "diagonal-shift"])
def test_channel_mixing_after_spatially_shifted_channels(shifts, size):
    from conftest import assert_exact
    L = assert_exact(ShiftThenMix(shifts), size)["mix"]
    # unit (0, 1) reads input (0, 1) through channel 0 and its shifted place through channel 1
    (r, c), = shifts[1:]
    assert L.unit((0, 1)).support_size == 2
    assert L.unit((0, 1)).box == ((0, 1 + r), (1, 2 + c))


class TemporalShift(nn.Module):
    """TSM's shift along the width: a third of the channels moves left, a third right (the
    vacated column stays zero), then a conv mixes all channels."""

    def __init__(self, c: int, k: int, groups: int = 1):
        super().__init__()
        self.fold = c // 3
        self.mix = nn.Conv2d(c, c, k, padding=k // 2, groups=groups)

    def forward(self, x):
        f = self.fold
        out = torch.zeros_like(x)
        out[:, :f, :, :-1] = x[:, :f, :, 1:]
        out[:, f:2 * f, :, 1:] = x[:, f:2 * f, :, :-1]
        out[:, 2 * f:] = x[:, 2 * f:]
        return self.mix(out)


@pytest.mark.parametrize("groups", [1, 3], ids=["dense", "grouped"])
def test_tsm_shift_then_conv_is_exact_with_the_vacated_column_as_padding(groups):
    from conftest import assert_exact
    L = assert_exact(TemporalShift(6, 3, groups), (6, 5, 6))["mix"]
    u = L.unit((1, 1))
    # rows 0-2; columns 0-2 shifted by -1, 0, +1: columns 0-3, and the zero column -1 of the
    # right-shifted channels counts like padding
    assert (u.box, u.unclipped_box, u.support_size) == (((0, 3), (0, 4)), ((0, 3), (-1, 4)), 12)
    assert (L.rf_size, L.stride, L.uniform) == ((3, 5), (1, 1), True)


class RollShift(nn.Module):
    """ShiftNet-style: four channel groups rolled by one pixel down, up, right or not at all."""

    def __init__(self):
        super().__init__()
        self.mix = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        g = torch.chunk(x, 4, 1)
        return self.mix(torch.cat([torch.roll(g[0], 1, 2), torch.roll(g[1], -1, 2),
                                   torch.roll(g[2], 1, 3), g[3]], 1))


def test_rolled_channel_groups_mixed_by_a_1x1_conv_are_exact():
    from conftest import assert_exact
    L = assert_exact(RollShift(), (8, 6, 7))["mix"]
    assert np.argwhere(L.unit((2, 3)).mask).tolist() == [[1, 3], [2, 2], [2, 3], [3, 3]]
    # at the corner the rolls wrap the last row and column in
    assert np.argwhere(L.unit((0, 0)).mask).tolist() == [[0, 0], [0, 6], [1, 0], [5, 0]]
    assert L.unit((0, 0)).box == ((0, 6), (0, 7))


@pytest.mark.parametrize("pool", [nn.MaxPool1d(2), nn.MaxPool1d(2, stride=1)], ids=["k2s2", "k2s1"])
def test_1d_max_pool_on_too_small_input_is_input_too_small(pool):
    with pytest.raises(rflens.InputTooSmallError):
        rflens.analyze(nn.Sequential(pool), (1, 1))


@pytest.mark.parametrize("layer,size", [
    (nn.ConvTranspose2d(1, 1, (1, 2), padding=(0, 1)), (1, 1, 1)),   # width (1-1) - 2 + 1 + 1 = 0
    (nn.ConvTranspose2d(1, 1, (1, 2), padding=(0, 1)), (1, 5, 1)),
], ids=["width0-1x1", "width0-5x1"])
def test_transposed_conv_empty_along_one_axis_is_input_too_small(layer, size):
    # on meta tensors PyTorch returns an empty output here instead of its size check
    with pytest.raises(RuntimeError):
        layer(torch.zeros((1, *size)))  # PyTorch itself refuses it on real tensors
    with pytest.raises(rflens.InputTooSmallError, match=(
            r"op 'convolution' in module '0' would produce an empty output \(output size \(1, 1, \d, 0\)\)")):
        rflens.analyze(nn.Sequential(layer), size)


@pytest.mark.parametrize("net,size,unit,box,unclipped,rf_size", [
    # output 2i reads input i, 2i + 1 nothing; unit 0 reads padding at -1: half a pixel to the
    # left in the transposed conv's lattice, rounded outwards
    (nn.Sequential(nn.ConvTranspose1d(1, 1, 1, stride=2), nn.Conv1d(1, 1, 3, padding=1)), (1, 5), (0,),
     ((0, 1),), ((-1, 1),), (2,)),
    (nn.Sequential(nn.ConvTranspose1d(1, 1, 1, stride=2), nn.MaxPool1d(3, 1, padding=1)), (1, 5), (0,),
     ((0, 1),), ((-1, 1),), (2,)),
    (nn.Sequential(nn.ConvTranspose1d(1, 1, 1, stride=2), nn.ZeroPad1d(1), nn.Conv1d(1, 1, 3)), (1, 5), (0,),
     ((0, 1),), ((-1, 1),), (2,)),
    (nn.Sequential(nn.ConvTranspose1d(1, 1, 1, stride=2), nn.Conv1d(1, 1, 2, padding="same")), (1, 5), (8,),
     ((4, 5),), ((4, 6),), (2,)),
    # output_padding leaves two holes at the end: unit 12 reads input 4 and the hole 13
    (nn.Sequential(nn.ConvTranspose1d(1, 1, 1, stride=3, output_padding=2),
                   nn.Conv1d(1, 1, 2, padding="same")), (1, 5), (12,), ((4, 5),), ((4, 5),), (1,)),
    (nn.Sequential(nn.ConvTranspose2d(1, 1, 1, stride=2), nn.Conv2d(1, 1, 3, padding=1)), (1, 5, 5), (0, 0),
     ((0, 1), (0, 1)), ((-1, 1), (-1, 1)), (2, 2)),
], ids=["conv-pad1", "maxpool-pad1", "zeropad-conv", "same-k2", "same-k2-output-padding", "2d"])
def test_padding_next_to_the_holes_of_a_transposed_conv(net, size, unit, box, unclipped, rf_size):
    # the lattice is continued into the padding from the units that read something, not from
    # the holes (which read nothing and have no box)
    from conftest import assert_exact
    layer = assert_exact(net, size)[str(len(net) - 1)]
    u = layer.unit(unit)
    assert (u.box, u.unclipped_box, layer.rf_size) == (box, unclipped, rf_size)


def test_the_holes_of_a_transposed_conv_have_no_box_and_do_not_count_in_rf_size():
    L = rflens.analyze(nn.Sequential(nn.ConvTranspose1d(1, 1, 1, stride=3, output_padding=2)), (1, 5))["0"]
    hole = L.unit(14)
    assert (hole.support_size, hole.box, hole.unclipped_box, hole.center) == (0, ((0, 0),), ((None, None),), (None,))
    assert (L.rf_size, L.stride, L.start) == ((1,), (0.333333,), (0,))


class PlusShifted(nn.Module):
    """``after(x + g(x))``: x plus a shifted or cropped-and-padded copy of itself."""

    def __init__(self, g, after: nn.Module):
        super().__init__()
        self.g, self.after = g, after

    def forward(self, x):
        return self.after(x + self.g(x))


@pytest.mark.parametrize("g,after,size", [
    (lambda x: F.pad(x, (1, -1)), nn.AvgPool1d(1), (1, 2)),              # x + x shifted right by 1
    (lambda x: F.pad(x, (1, -1)), nn.Conv1d(1, 1, 1), (1, 2)),
    (lambda x: F.pad(x, (1, -1), mode="constant"), nn.MaxPool1d(1), (1, 2)),
    (lambda x: F.pad(x[..., :-1], (0, 1)), nn.AvgPool1d(1), (1, 5)),     # crop the last, pad it back
    (lambda x: F.pad(x[..., :-1], (0, 1), mode="replicate"), nn.AvgPool1d(1), (1, 2)),
    (lambda x: F.pad(x[..., :-1], (0, 1)), nn.Upsample(scale_factor=2.0), (1, 4, 4)),
], ids=["shift-avgpool", "shift-conv", "shift-maxpool", "crop-pad-avgpool", "crop-replicate-avgpool",
        "crop-pad-upsample-2d"])
def test_windowed_op_after_adding_a_shifted_or_cropped_copy(g, after, size):
    # the op reads the same node at two placements, one with padding slots (memo keys mix
    # placements with and without masks)
    from conftest import assert_exact
    assert_exact(PlusShifted(g, after), size)


def test_a_value_plus_its_shifted_copy_reads_each_pixel_and_its_left_neighbour():
    L = rflens.analyze(PlusShifted(lambda x: F.pad(x, (1, -1)), nn.Conv1d(1, 1, 1)), (1, 5))["after"]
    assert [np.flatnonzero(L.unit(i).mask).tolist() for i in range(5)] == [[0], [0, 1], [1, 2], [2, 3], [3, 4]]
    assert L.unit(0).unclipped_box == ((-1, 1),)    # the pad slot counts like padding
    assert (L.rf_size, L.stride, L.uniform) == ((2,), (1,), True)


def test_transposed_conv_with_a_negative_output_width_is_input_too_small():
    # width (1 - 1) - 2 + 0 + 1 = -1
    with pytest.raises(rflens.InputTooSmallError):
        rflens.analyze(nn.Sequential(nn.ConvTranspose2d(1, 1, 1, padding=(0, 1))), (1, 1, 1))


@pytest.mark.parametrize("pool,reads", [(nn.AvgPool1d(1), [True, False]),
                                        (nn.MaxPool1d(2, 1, padding=1), [True, True, False])],
                         ids=["avg-k1", "max-k2-pad1"])
def test_1d_pool_over_a_padded_global_value_separates_the_padding_slot(pool, reads):
    # found with 500 examples a test: 1-D pools run as 2-D ones on a size-1 dim, and the
    # global value (one unit) is present along the other dim at some positions only
    from conftest import assert_exact
    net = nn.Sequential(nn.AdaptiveMaxPool1d(1), nn.ZeroPad1d((0, 1)), pool)
    L = assert_exact(net, (1, 5))["2"]
    assert [L.unit(i).support_size for i in range(L.grid_shape[0])] == [5 * r for r in reads]
    assert L.is_global and L.unit(0).box == ((0, 5),)


def test_two_adaptive_pools_whose_windows_hold_the_same_numbers_are_not_confused():
    # found with 500 examples a test: the 6 -> 6 windows [[0], ..., [5]] and the 6 -> 2 windows
    # [[0, 1, 2], [3, 4, 5]] are equal as bytes, and a memo key of bytes alone mixed them up
    from conftest import assert_exact
    net = nn.Sequential(nn.AdaptiveMaxPool1d(6), nn.AdaptiveMaxPool1d(2))
    L = assert_exact(net, (1, 6))["1"]
    assert [np.flatnonzero(L.unit(i).mask).tolist() for i in range(2)] == [[0, 1, 2], [3, 4, 5]]
    assert (L.rf_size, L.stride, L.uniform) == ((3,), (3,), True)


def test_linear_resize_lands_a_source_position_a_hair_below_an_integer_on_it():
    # found with 1500 examples a test: 143 * (47 / 143) is 46.99999999999999 in float64;
    # PyTorch takes floorf of it (47), so the last unit reads input 47 alone
    from conftest import assert_exact
    net = nn.Sequential(nn.Upsample(scale_factor=3.0, mode="linear", align_corners=True))
    L = assert_exact(net, (1, 48))["0"]
    assert [np.flatnonzero(L.unit(u).mask).tolist() for u in (141, 142, 143)] == [[46, 47], [46, 47], [47]]
