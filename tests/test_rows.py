"""unique_rows, the engine's inner loop: the same answer as np.unique(axis=0) on any matrix, hash
collisions included."""

import numpy as np
import pytest

from rflens.engine import rows


@pytest.mark.parametrize("shape, high, dtype", [((500, 40), 3, np.int64), ((64, 3000), 2, np.int64),
                                                ((200, 7), 2, bool), ((9, 1), 5, np.int32)])
def test_unique_rows_equals_numpys(shape, high, dtype):
    mat = np.random.default_rng(1).integers(-1, high, shape).astype(dtype)
    got, inverse = rows.unique_rows(mat)
    want, want_inverse = np.unique(mat, axis=0, return_inverse=True)
    assert np.array_equal(got, want) and np.array_equal(inverse, want_inverse.reshape(-1))
    assert np.array_equal(got[inverse], mat)


def test_rows_that_share_a_hash_are_still_told_apart(monkeypatch):
    monkeypatch.setattr(rows, "_hash_weights", lambda n: np.zeros(n, np.uint64))  # every row collides
    mat = np.array([[0, 1], [1, 0], [0, 1]])
    got, inverse = rows.unique_rows(mat)
    assert got.tolist() == [[0, 1], [1, 0]] and inverse.tolist() == [0, 1, 0]
