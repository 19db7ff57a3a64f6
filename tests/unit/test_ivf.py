"""`InvertedFile`: the batched inverted-file search gives FAISS's own answer."""

from __future__ import annotations

import faiss
import numpy as np
import numpy.typing as npt
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from spanwatch.ivf import InvertedFile


def unit(n: int, dim: int, seed: int) -> npt.NDArray[np.float32]:
    x = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def faiss_ivf_search(
    c: npt.NDArray[np.float32], nlist: int, nprobe: int, x: npt.NDArray[np.float32]
) -> npt.NDArray[np.int64]:
    quantizer = faiss.IndexFlatIP(c.shape[1])
    index = faiss.IndexIVFFlat(quantizer, c.shape[1], nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = 0
    index.train(c)
    index.add(c)
    index.nprobe = nprobe
    return index.search(x, 1)[1][:, 0]


@pytest.mark.parametrize("nprobe", [1, 3, 8])
def test_search_matches_faiss_ivf_with_the_same_nprobe(nprobe: int) -> None:
    c = unit(1024, 24, seed=1)
    x = unit(2000, 24, seed=2)
    want = faiss_ivf_search(c, 32, nprobe, x)
    got = InvertedFile(c, 32, nprobe).search(x)
    assert got.dtype == np.int64
    assert np.array_equal(got, want)


def test_probing_every_list_is_exact_search() -> None:
    c = unit(300, 16, seed=3)
    x = unit(700, 16, seed=4)
    got = InvertedFile(c, 10, 50).search(x)  # nprobe past nlist: all lists
    assert np.array_equal(got, (x @ c.T).argmax(axis=1))


def test_a_query_whose_lists_are_all_empty_still_gets_its_nearest_cell() -> None:
    c = unit(200, 16, seed=5)
    ivf = InvertedFile(c, 8, 1)
    x = unit(3, 16, seed=6)
    # empty every list, then put all centroids back in one list nobody probes
    probed = np.argmax(x @ ivf.coarse.T, axis=1)
    spare = int(np.setdiff1d(np.arange(8), probed)[0])
    ivf.starts = np.where(np.arange(9) <= spare, 0, len(c))
    assert np.array_equal(ivf.search(x), (x @ c.T).argmax(axis=1))


def test_empty_batch() -> None:
    ivf = InvertedFile(unit(100, 8, seed=7), 4, 2)
    assert ivf.search(np.empty((0, 8), dtype=np.float32)).shape == (0,)


def blas_threads() -> dict[str, int]:
    return {i["filepath"]: i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}


def test_search_runs_blas_on_one_thread_and_restores_the_callers_setting() -> None:
    seen: list[dict[str, int]] = []

    class Watched(InvertedFile):
        def _search(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.int64]:
            seen.append(blas_threads())
            return super()._search(x)

    ivf = Watched(unit(1024, 16, seed=8), 32, 4)
    with threadpool_limits(limits=2, user_api="blas"):
        ivf.search(unit(500, 16, seed=9))
        after = blas_threads()
    # numpy's own BLAS (loaded with numpy, before any search) is among those limited
    numpy_blas = [p for p in after if "numpy" in p]
    assert numpy_blas and all(seen[0][p] == 1 for p in numpy_blas)
    assert after and all(n == 2 for n in after.values())
