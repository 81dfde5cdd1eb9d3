"""Shared checks: the analytic engine against the brute-force gradient oracle."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import rflens
from rflens.engine.probe import ProbeAnalysis

import os

# pytest -n N runs N workers; more torch threads than cores per worker only fight each other
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else max(1, torch.get_num_threads()))


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster (2 CPUs, no dashboard) for the whole session, as Ray advises: starting
    one takes seconds.  The tests using it are all in test_ray.py, and `make test` runs with
    `--dist loadfile`: one worker, one cluster.  Skipped, with the reason, where Ray is not installed."""
    ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'rflens[ray]' (make setup does)")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="warning")
    yield ray
    if started:
        ray.shutdown()


def sample_units(grid: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Corners, edge midpoints and the centre of a grid."""
    if not grid:
        return [()]
    picks = set()
    for corner in np.ndindex(*(2,) * len(grid)):
        picks.add(tuple((n - 1) * c for n, c in zip(grid, corner)))
    picks.add(tuple(n // 2 for n in grid))
    picks.add(tuple(0 if i else n // 2 for i, n in enumerate(grid)))
    picks.add(tuple(n // 2 if i else n - 1 for i, n in enumerate(grid)))
    picks.add(tuple(min(1, n - 1) for n in grid))
    return sorted(picks)


def assert_exact(model: torch.nn.Module, input_size, layers=None, max_layers: int | None = None,
                 analysis=None):
    """Analytic masks equal probe masks for sampled units of the given (or sampled) layers;
    reported sizes and strides agree with the masks.  The oracle side is loud: a gradient that is
    not finite raises in the probe, and an empty oracle mask where the analytic field is not
    empty fails as the oracle's failure, not as a disagreement.  Where the analysis is partial
    (some layers refused), the probe stops at the op it cannot follow too, and the layers with
    fields are compared.  Returns the analysis."""
    a = analysis or rflens.analyze(model, input_size)
    refused = {n for n in a.layers if a[n].refused}
    p = ProbeAnalysis(model, input_size, partial=bool(refused))
    names = [n for n in (layers or a.layers) if n in p.layers and n not in refused]
    if layers is not None:
        missing = set(layers) - set(names)
        assert not missing, f"layers missing from the probe run: {missing}"
    if max_layers and len(names) > max_layers:
        idx = np.unique(np.linspace(0, len(names) - 1, max_layers).round().astype(int))
        names = [names[i] for i in idx]
    requests = {n: (sample_units(a[n].grid_shape), a[n].spatial_dims) for n in names}
    got = p.masks_many(requests)   # a gradient that is not finite raises there
    failures, unanswered = [], []
    for n in names:
        layer = a[n]
        for u, probe_mask in zip(requests[n][0], got[n]):
            unit = layer.unit(u)
            if not probe_mask.any() and unit.mask.any():
                unanswered.append(f"{n} unit {u}: analytic {unit.mask.sum()} px, oracle 0 px")
            elif not np.array_equal(unit.mask, probe_mask):
                failures.append(f"{n} unit {u}: analytic {unit.mask.sum()} px, probe {probe_mask.sum()} px")
            _check_box_agrees(unit, input_size)
        _check_summary_agrees(layer)
    # an empty oracle mask for a unit that reads pixels is the oracle failing (a gradient that
    # vanished), not an answer to compare
    assert not unanswered, "the oracle gave no answer (an empty mask) for units whose analytic field is " \
        "not empty:\n" + "\n".join(unanswered)
    assert not failures, "\n".join(failures)
    return a


def _check_box_agrees(unit, input_size) -> None:
    mask = unit.mask
    if not mask.any():
        return
    for axis, (lo, hi) in enumerate(unit.box):
        proj = mask.any(axis=tuple(i for i in range(mask.ndim) if i != axis))
        idx = np.flatnonzero(proj)
        assert (lo, hi) == (idx[0], idx[-1] + 1), f"box {unit.box} disagrees with the mask"
        ulo, uhi = unit.unclipped_box[axis]
        assert ulo <= lo and hi <= uhi, f"unclipped box {unit.unclipped_box} does not contain {unit.box}"


def _check_summary_agrees(layer) -> None:
    """On uniform layers, interior units' unclipped boxes have the reported size and step by
    the reported stride."""
    if layer.is_global:
        layer = layer.local
        if layer is None:
            return
    g = layer.grid_shape
    if not layer.uniform or len(g) != len(layer.rf_size) or any(n < 2 for n in g):
        return
    c = tuple(n // 2 for n in g)
    u0 = layer.unit(c)
    for axis in range(len(g)):
        nxt = list(c)
        nxt[axis] = c[axis] + 1 if c[axis] + 1 < g[axis] else c[axis] - 1
        u1 = layer.unit(tuple(nxt))
        lo0, hi0 = u0.unclipped_box[axis]
        lo1, _ = u1.unclipped_box[axis]
        assert hi0 - lo0 == layer.rf_size[axis]
        assert abs(lo1 - lo0) == layer.stride[axis]


def assert_exact_per_channel(model: torch.nn.Module, input_size, layers: list[str], units=None,
                             analysis=None):
    """Per neuron: each channel group's first and last channel, at sampled units (or ``units``),
    has the analytic mask of the probe's gradient of that one channel.  Returns the analysis."""
    a = analysis or rflens.analyze(model, input_size)
    p = ProbeAnalysis(model, input_size)
    requests, expected = {}, {}
    for n in layers:
        layer = a[n]
        cells = units or sample_units(layer.grid_shape)
        picks = sorted({c for g in layer.channel_groups for c in (g.channels.start, g.channels.stop - 1)})
        pairs = [(u, c) for c in picks for u in cells]
        requests[n] = ([u for u, _ in pairs], layer.spatial_dims, [c for _, c in pairs])
        expected[n] = pairs
    got = p.masks_many(requests)
    failures = []
    for n in layers:
        for (u, c), probe_mask in zip(expected[n], got[n]):
            assert probe_mask.any(), f"{n} unit {u} channel {c}: the probe's mask is empty"
            unit = a[n].unit(u, channel=c)
            if not np.array_equal(unit.mask, probe_mask):
                failures.append(f"{n} unit {u} channel {c}: analytic {unit.mask.sum()} px, probe {probe_mask.sum()} px")
            _check_box_agrees(unit, input_size)
    assert not failures, "\n".join(failures)
    return a


@pytest.fixture
def exact():
    return assert_exact


@pytest.fixture
def exact_per_channel():
    return assert_exact_per_channel
