"""Where each element of a tensor lives in its storage, and layouts moved through storage slots.

Views, in-place writes into views (``out[..., 1:-1] = x``, circular padding) and raw restriding
(``as_strided``) are followed by the storage slot each element occupies, computed from the meta
tensors' real sizes, strides and offsets:

>>> import torch
>>> x = torch.empty(2, 3, device="meta")
>>> flat_index(x, x.t()).tolist()       # element (i, j) of x.t() is element 3 * j + i of x
[[0, 3], [1, 4], [2, 5]]
"""

from __future__ import annotations

import numpy as np
import torch

from .layout import LayoutError, Part, Tracked, compact, empty_part


def spec(t: torch.Tensor) -> tuple:
    """(size, stride, storage offset): where each element of ``t`` lives in its storage."""
    return tuple(t.shape), tuple(t.stride()), t.storage_offset()


def positions(t) -> np.ndarray:
    size, stride, offset = spec(t) if isinstance(t, torch.Tensor) else t
    pos = np.full(tuple(size), offset, np.int64)
    for d, (n, s) in enumerate(zip(size, stride)):
        shape = [1] * len(size)
        shape[d] = n
        pos = pos + (np.arange(n, dtype=np.int64) * s).reshape(shape)
    return pos


def flat_index(root, view) -> np.ndarray:
    """For each element of ``view``, the flat index of the element of ``root`` in the same
    storage slot (``root``/``view``: tensors or (size, stride, offset) specs)."""
    rp = positions(root).reshape(-1)
    vp = positions(view)
    if rp.size == 0:
        raise LayoutError("a view of an empty tensor")
    inv = np.full(int(max(rp.max(), vp.max() if vp.size else 0)) + 1, -1, np.int64)
    inv[rp] = np.arange(rp.size)
    idx = inv[vp] if vp.size else vp
    if (idx < 0).any():
        raise LayoutError("a strided view reads storage its base does not hold")
    return idx


def restride(tracked: Tracked, old, new, k: int) -> Tracked:
    """The layout of the elements at storage spec ``new``, given ``tracked`` at spec ``old``."""
    idx = flat_index(old, new)
    parts = [Part.of([compact(a[idx]) for a in arrays]) for arrays in _flat_parts(tracked, k)]
    return Tracked(tuple(new[0]), parts)


def _flat_parts(tr: Tracked, k: int) -> list[list[np.ndarray]]:
    return [[np.broadcast_to(a, tr.shape).reshape(-1).copy() for a in p.arrays()] for p in tr.parts]


def gather(root_tr: Tracked, root: torch.Tensor, view: torch.Tensor, k: int) -> Tracked:
    idx = flat_index(root, view)
    parts = [Part.of([compact(a[idx]) for a in arrays]) for arrays in _flat_parts(root_tr, k)]
    return Tracked(tuple(view.shape), parts)


def scatter(root_tr: Tracked, root, view, tracked: Tracked | None, k: int) -> Tracked:
    idx = flat_index(root, view).reshape(-1)
    base = _flat_parts(root_tr, k)
    new = _flat_parts(tracked, k) if tracked is not None else []
    n = max(len(base), len(new))
    empty = empty_part(root.ndim, k)
    while len(base) < n:
        base.append([np.broadcast_to(a, tuple(root.shape)).reshape(-1).copy() for a in empty.arrays()])
    for i in range(n):
        for j in range(1 + k):
            if i < len(new):
                base[i][j][idx] = new[i][j]
            elif j == 0:
                base[i][j][idx] = -1
    return Tracked(tuple(root.shape), [Part.of([compact(a.reshape(tuple(root.shape))) for a in arrays])
                                       for arrays in base])
