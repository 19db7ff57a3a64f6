"""`spanwatch._core.CellSearch` from Python: shapes, errors, and the cells it gives."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from spanwatch._core import CellSearch
from spanwatch.errors import InputError


def unit(n: int, dim: int, seed: int) -> npt.NDArray[np.float32]:
    x = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_exact_search_matches_numpy_on_every_level() -> None:
    levels = [unit(6, 40, 1), unit(50, 40, 2), unit(300, 40, 3)]
    x = unit(101, 40, 4)
    got = CellSearch(levels, widen=0).assign(x)
    assert got.dtype == np.int64 and got.shape == (101, 3)
    for j, c in enumerate(levels):
        assert np.array_equal(got[:, j], (x.astype(np.float64) @ c.T.astype(np.float64)).argmax(1))


def test_one_level_ignores_widen_and_searches_exactly() -> None:
    c, x = unit(30, 8, 5), unit(40, 8, 6)
    got = CellSearch([c], widen=4).assign(x)
    assert np.array_equal(got[:, 0], (x @ c.T).argmax(1))


def test_strided_and_empty_inputs() -> None:
    levels = [unit(4, 16, 7), unit(64, 16, 8)]
    search = CellSearch(levels, widen=2)
    x = unit(20, 32, 9)[:, ::2]  # not contiguous
    assert np.array_equal(search.assign(x), search.assign(np.ascontiguousarray(x)))
    assert search.assign(np.empty((0, 16), dtype=np.float32)).shape == (0, 2)


def test_wrong_shapes_raise_input_errors() -> None:
    with pytest.raises(InputError, match="dimension"):
        CellSearch([unit(4, 16, 1), unit(8, 12, 2)])
    with pytest.raises(InputError):
        CellSearch([])
    search = CellSearch([unit(4, 16, 1)])
    with pytest.raises(InputError, match="dimension 8"):
        search.assign(unit(3, 8, 2))
