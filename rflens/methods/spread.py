"""How a non-negative heat map spreads around a point: the numbers ERF papers quote.

Every function takes a map over the input (any number of axes, pixel ``i`` at coordinate
``i``) and returns plain numbers, so the definitions can be read and checked in one place:

* ``moments``: the Gaussian with the map's mean and covariance (moment matching, the
  maximum-likelihood Gaussian for the map read as a distribution of mass).  For ``n`` stacked
  all-ones 3x3 convolutions it gives sigma = sqrt(2n/3) exactly, as Luo et al. (2016) derive.
* ``mass_radius``: the smallest radius around a point holding a fraction of the mass.
* ``replknet_area_ratio``: RepLKNet's high-contribution area ratio, computed exactly as their
  ``erf/analyze_erf.py`` does, but returning ``None`` where their script crashes.
* ``centred_square``: the same idea on the linear mass, centred where you say, always defined.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Moments:
    """Mass, centre of mass and covariance of a map (pixel units, one entry per axis)."""

    mass: float
    center: tuple[float, ...]
    covariance: np.ndarray

    @property
    def sigma(self) -> tuple[float, ...]:
        return tuple(float(np.sqrt(max(v, 0.0))) for v in np.diag(self.covariance))


def moments(heat: np.ndarray) -> Moments:
    """Centre of mass and covariance of ``heat`` (non-negative).

    >>> m = moments(np.array([[0, 1, 0], [1, 4, 1], [0, 1, 0]], float))
    >>> m.center, round(m.sigma[0] ** 2, 4)
    ((1.0, 1.0), 0.25)
    """
    heat = np.asarray(heat, dtype=np.float64)
    mass = float(heat.sum())
    if not mass > 0:
        nan = tuple(float("nan") for _ in range(heat.ndim))
        return Moments(mass, nan, np.full((heat.ndim, heat.ndim), np.nan))
    coords = np.indices(heat.shape, dtype=np.float64)
    center = np.array([(c * heat).sum() / mass for c in coords])
    d = coords - center.reshape((-1,) + (1,) * heat.ndim)
    cov = np.array([[(d[a] * d[b] * heat).sum() / mass for b in range(heat.ndim)]
                    for a in range(heat.ndim)])
    return Moments(mass, tuple(float(c) for c in center), cov)


def mass_radius(heat: np.ndarray, fraction: float, center) -> float:
    """Smallest Euclidean radius around ``center`` whose closed ball holds ``fraction`` of the
    mass (pixel centres decide membership).

    >>> mass_radius(np.array([[0, 1, 0], [1, 4, 1], [0, 1, 0]], float), 0.5, (1, 1))
    0.0
    """
    heat = np.asarray(heat, dtype=np.float64)
    total = heat.sum()
    if not total > 0:
        return float("nan")
    coords = np.indices(heat.shape, dtype=np.float64)
    dist = np.sqrt(sum((c - p) ** 2 for c, p in zip(coords, center))).ravel()
    order = np.argsort(dist, kind="stable")
    cum = np.cumsum(heat.ravel()[order])
    k = int(np.searchsorted(cum, fraction * total * (1 - 1e-12)))
    return float(dist[order][min(k, len(order) - 1)])


def replknet_area_ratio(heat: np.ndarray, threshold: float) -> tuple[int, float] | None:
    """RepLKNet's high-contribution area ratio (Ding et al., CVPR 2022, ``erf/analyze_erf.py``):
    take ``log10(heat + 1)``, divide by its maximum, and find the smallest square of odd side
    ``2i + 1`` (``i`` from 1 to ``h // 2 - 1``) centred at ``(h // 2, w // 2)`` whose sum is
    *more* than ``threshold`` of the total.  Returns ``(side, side**2 / (h * w))``, or ``None``
    where no such square exists (their script crashes there).

    Note the log makes the result depend on the map's scale (inputs, normalisation, batch).

    >>> replknet_area_ratio(np.ones((9, 9)), 0.5)
    (7, 0.6049382716049383)
    """
    data = np.log10(np.asarray(heat, dtype=np.float64) + 1)
    data = data / np.max(data)
    h, w = data.shape
    total = np.sum(data)
    for i in range(1, h // 2):
        # their slice, kept inside the map (on non-square maps theirs would wrap to a sliver)
        part = data[max(0, h // 2 - i):h // 2 + 1 + i, max(0, w // 2 - i):w // 2 + 1 + i]
        if np.sum(part) / total > threshold:
            side = i * 2 + 1
            clipped = part.shape != (side, side)
            return side, part.size / (h * w) if clipped else side / h * side / w
    return None


def centred_square(heat: np.ndarray, threshold: float, center) -> tuple[int, float]:
    """Smallest square (cube) of odd side ``s = 2i + 1``, ``i = 0, 1, ...``, centred on the
    pixel ``center`` and clipped to the map, holding at least ``threshold`` of the linear mass.
    Returns ``(s, clipped area / map area)``; always defined for ``threshold <= 1``.

    >>> centred_square(np.array([[0, 1, 0], [1, 4, 1], [0, 1, 0]], float), 0.5, (1, 1))
    (1, 0.1111111111111111)
    """
    heat = np.asarray(heat, dtype=np.float64)
    total = heat.sum()
    center = [int(c) for c in center]
    reach = max(max(c, n - 1 - c) for c, n in zip(center, heat.shape))
    for i in range(reach + 1):
        window = tuple(slice(max(0, c - i), c + i + 1) for c in center)
        part = heat[window]
        if part.sum() >= threshold * total * (1 - 1e-12):
            return 2 * i + 1, part.size / heat.size
    return 2 * reach + 1, 1.0
