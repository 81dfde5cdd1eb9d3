"""Distinct rows of an integer matrix, fast where rows are long: the engine's inner loop."""

from __future__ import annotations

import numpy as np


def unique_rows(mat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(mat, axis=0, return_inverse=True)``, fast on long rows: rows are grouped by a
    hash, the grouping is checked element by element, and only the distinct rows are sorted
    (numpy sorts whole rows as opaque bytes, slowly, where there are thousands of them)."""
    if mat.shape[0] == 1 or (mat == mat[:1]).all():
        return mat[:1], np.zeros(mat.shape[0], np.int64)
    if mat.dtype.kind in "biu" and mat.ndim == 2:
        hashes = (mat.astype(np.uint64) * _hash_weights(mat.shape[1])).sum(1, dtype=np.uint64)
        _, first, inv = np.unique(hashes, return_index=True, return_inverse=True)
        reps = mat[first]
        if (mat == reps[inv]).all():  # no two different rows share a hash
            order = np.lexsort(reps.T[::-1])
            rank = np.empty(len(order), np.int64)
            rank[order] = np.arange(len(order))
            return reps[order], rank[inv.reshape(-1)]
    rows, inv = np.unique(mat, axis=0, return_inverse=True)
    return rows, inv.reshape(-1)


_WEIGHTS = np.zeros(0, np.uint64)


def _hash_weights(n: int) -> np.ndarray:
    global _WEIGHTS
    if len(_WEIGHTS) < n:
        # odd multipliers: a difference in one element always changes the hash
        _WEIGHTS = np.random.default_rng(0).integers(0, 2 ** 63, max(n, 2 * len(_WEIGHTS)),
                                                     dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    return _WEIGHTS[:n]
