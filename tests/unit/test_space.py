"""`Space`: spherical k-means levels fitted with FAISS, cell assignment,
expected coverage, and the on-disk format with its error messages."""

from __future__ import annotations

import io
import json
import logging
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from spanwatch.embed import Embedder
from spanwatch.errors import SpaceError
from spanwatch.space import FORMAT_VERSION, Space

F32 = npt.NDArray[np.float32]

TOPICS = [
    "sourdough bread",
    "the French Revolution",
    "black holes",
    "photosynthesis",
    "the Rust borrow checker",
    "SQL joins",
    "marathon training",
    "tax deductions for freelancers",
    "growing tomatoes",
    "the stock market",
    "quantum entanglement",
    "Shakespeare's sonnets",
    "climate change",
    "overfitting in machine learning",
    "the Roman Empire",
    "vaccines",
    "jazz improvisation",
    "chess openings",
    "knitting a scarf",
    "learning Japanese",
    "electric cars",
    "the human heart",
    "volcanoes",
    "cryptocurrency wallets",
    "dog training",
    "impressionist painting",
    "public speaking",
    "the water cycle",
    "kubernetes deployments",
    "meditation",
]
TEMPLATES = [
    "Explain {} to a ten year old.",
    "What are the most common mistakes people make with {}?",
    "Write a short poem about {}.",
    "Give me three surprising facts about {}.",
    "How would a beginner get started with {}?",
    "Summarize the history of {} in one paragraph.",
    "What is the scientific explanation behind {}?",
    "List the pros and cons of {}.",
    "Recommend a good book about {}.",
    "Write a quiz question about {} with the answer.",
]
PROMPTS = [t.format(topic) for topic in TOPICS for t in TEMPLATES]  # 300 varied prompts
REAL_LEVELS = (8, 32, 4096)


def unit_vectors(n: int, dim: int = 16, seed: int = 0) -> F32:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    out: F32 = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


@pytest.fixture(scope="module")
def real_embeddings(embedder: Embedder) -> F32:
    x = embedder.embed(PROMPTS)
    assert x.shape == (300, 384)
    return x


@pytest.fixture(scope="module")
def real_space(real_embeddings: F32) -> Space:
    return Space.fit(real_embeddings, levels=REAL_LEVELS, seed=0, model_id="minilm@test")


@pytest.fixture(scope="module")
def small_space() -> Space:
    return Space.fit(unit_vectors(200), levels=(4, 16), seed=3, model_id="random")


# --- fit ------------------------------------------------------------------------------------


@pytest.mark.model
def test_fit_on_real_embeddings_gives_the_levels(real_space: Space, real_embeddings: F32) -> None:
    # 300 points at 4 per cell support 75 cells: the finest level is shrunk to that
    assert real_space.levels == [8, 32, 75]
    assert real_space.requested_levels == [8, 32, 4096]
    assert real_space.dim == 384
    assert real_space.model_id == "minilm@test"
    for c, n, k in zip(real_space.centroids, real_space.counts, real_space.levels, strict=True):
        assert c.shape == (k, 384)
        assert c.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(c, axis=1), 1.0, atol=1e-4)  # spherical
        assert n.shape == (k,)
        assert int(n.sum()) == len(real_embeddings)


@pytest.mark.model
def test_same_topic_prompts_share_a_mid_level_cell(real_space: Space, real_embeddings: F32) -> None:
    cells = real_space.assign(real_embeddings)[:, 1].reshape(len(TOPICS), len(TEMPLATES))
    purity = [np.bincount(row).max() / len(row) for row in cells]
    assert float(np.mean(purity)) > 0.6


@pytest.mark.model
def test_nearby_vectors_mostly_share_the_coarse_cell(
    real_space: Space, real_embeddings: F32
) -> None:
    rng = np.random.default_rng(7)
    noise = rng.standard_normal(real_embeddings.shape).astype(np.float32) * (0.3 / np.sqrt(384))
    near = real_embeddings + noise
    near /= np.linalg.norm(near, axis=1, keepdims=True)
    assert float(np.mean(np.sum(near * real_embeddings, axis=1))) > 0.9
    a, b = real_space.assign(real_embeddings), real_space.assign(near)
    assert float(np.mean(a[:, 0] == b[:, 0])) >= 0.9
    # against a baseline: unrelated prompts share a coarse cell far less often
    shuffled = a[rng.permutation(len(a)), 0]
    assert float(np.mean(a[:, 0] == shuffled)) < 0.5


def test_fit_shrinks_a_level_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="spanwatch.space"):
        space = Space.fit(unit_vectors(100), levels=(4, 64), min_points_per_cell=4)
    assert space.levels == [4, 25]
    assert space.requested_levels == [4, 64]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warnings] == [
        "level 64 shrunk to 25 cells: only 100 points to fit on"
    ]


def test_fit_without_shrinking_logs_no_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="spanwatch.space"):
        space = Space.fit(unit_vectors(100), levels=(4, 16))
    assert space.levels == space.requested_levels == [4, 16]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_min_points_per_cell_sets_the_cap() -> None:
    space = Space.fit(unit_vectors(100), levels=(4, 64), min_points_per_cell=10)
    assert space.levels == [4, 10]


@pytest.mark.parametrize(
    ("levels", "needle"),
    [
        ((25, 30), "level 30 would not be finer than the level before it"),
        ((16, 16), "level 16 would not be finer"),
        ((16, 8), "level 8 would not be finer"),
    ],
)
def test_fit_raises_when_a_level_cannot_be_finer(levels: tuple[int, int], needle: str) -> None:
    with pytest.raises(SpaceError) as info:
        Space.fit(unit_vectors(100), levels=levels)
    assert "100 points support at most 25 cells" in str(info.value)
    assert needle in str(info.value)


def test_fit_raises_for_a_level_of_one_cell() -> None:
    with pytest.raises(SpaceError, match="would not be finer"):
        Space.fit(unit_vectors(100), levels=(1, 4))


@pytest.mark.parametrize(
    "x",
    [unit_vectors(1), unit_vectors(10)[0], np.zeros((0, 16), dtype=np.float32)],
    ids=["one point", "one-dimensional", "empty"],
)
def test_fit_raises_for_too_few_points_or_wrong_rank(x: F32) -> None:
    with pytest.raises(SpaceError, match=r"need an \(n, dim\) matrix with n >= 2"):
        Space.fit(x, levels=(2,))


def test_fit_raises_for_non_finite_embeddings() -> None:
    x = unit_vectors(50)
    x[3, 2] = np.inf
    with pytest.raises(SpaceError, match="NaN or infinite"):
        Space.fit(x, levels=(4,))


def test_fit_is_deterministic_for_a_seed() -> None:
    x = unit_vectors(200)
    a = Space.fit(x, levels=(4, 16), seed=5)
    b = Space.fit(x, levels=(4, 16), seed=5)
    for ca, cb in zip(a.centroids, b.centroids, strict=True):
        np.testing.assert_array_equal(ca, cb)


# --- assign ----------------------------------------------------------------------------------


@pytest.mark.model
def test_assign_returns_int64_cells_within_range(real_space: Space, real_embeddings: F32) -> None:
    cells = real_space.assign(real_embeddings)
    assert cells.shape == (300, 3)
    assert cells.dtype == np.int64
    assert (cells >= 0).all()
    assert (cells < np.array(real_space.levels)).all()
    # every cell at the coarse level is in use
    assert len(np.unique(cells[:, 0])) == 8


@pytest.mark.model
def test_assign_gives_the_same_cell_for_the_same_vector(
    real_space: Space, real_embeddings: F32
) -> None:
    first = real_space.assign(real_embeddings)
    again = real_space.assign(real_embeddings[::-1].copy())[::-1]
    np.testing.assert_array_equal(first, again)
    dup = real_space.assign(np.repeat(real_embeddings[:1], 5, axis=0))
    assert (dup == first[0]).all()


def test_assign_is_the_nearest_centroid(small_space: Space) -> None:
    x = unit_vectors(300, seed=11)
    cells = small_space.assign(x)
    for j, c in enumerate(small_space.centroids):
        np.testing.assert_array_equal(cells[:, j], np.argmax(x @ c.T, axis=1))


def test_assign_accepts_float64_and_empty_input(small_space: Space) -> None:
    x = unit_vectors(5, seed=2)
    np.testing.assert_array_equal(small_space.assign(x.astype(np.float64)), small_space.assign(x))
    empty = small_space.assign(np.zeros((0, 16), dtype=np.float32))
    assert empty.shape == (0, 2)
    assert empty.dtype == np.int64


@pytest.mark.parametrize("shape", [(3, 8), (16,), (2, 3, 16)])
def test_assign_raises_for_wrong_shape(small_space: Space, shape: tuple[int, ...]) -> None:
    with pytest.raises(SpaceError, match=r"embeddings must be \(n, 16\)"):
        small_space.assign(np.zeros(shape, dtype=np.float32))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_assign_raises_for_non_finite_embeddings(small_space: Space, bad: float) -> None:
    x = unit_vectors(3, seed=4)
    x[1, 0] = bad
    with pytest.raises(SpaceError):
        small_space.assign(x)


# --- expected cells -------------------------------------------------------------------------


def test_expected_cells_is_increasing_and_bounded(small_space: Space) -> None:
    ns = [1, 2, 3, 5, 10, 20, 50, 100, 1000]
    values = np.array([small_space.expected_cells(n) for n in ns])
    assert values.shape == (len(ns), 2)
    assert (np.diff(values, axis=0) > 0).all()
    levels = np.array(small_space.levels, dtype=np.float64)
    assert (values <= levels + 1e-9).all()
    assert (values <= np.array(ns, dtype=np.float64)[:, None] + 1e-9).all()


def test_expected_cells_at_zero_one_and_many_draws(small_space: Space) -> None:
    np.testing.assert_allclose(small_space.expected_cells(0), [0.0, 0.0])
    np.testing.assert_allclose(small_space.expected_cells(1), [1.0, 1.0])
    np.testing.assert_allclose(small_space.expected_cells(1e6), small_space.levels)


def test_expected_cells_follows_the_smoothed_frequencies() -> None:
    c = [np.eye(2, 4, dtype=np.float32)]
    space = Space(c, [np.array([3, 1])])
    np.testing.assert_allclose(space.freqs[0], [4 / 6, 2 / 6])
    expected = 2 - (1 - 4 / 6) ** 3 - (1 - 2 / 6) ** 3
    np.testing.assert_allclose(space.expected_cells(3), [expected])


@pytest.mark.model
def test_expected_cells_is_bounded_on_real_space(real_space: Space) -> None:
    for n in (1, 10, 100, 10_000):
        e = real_space.expected_cells(n)
        assert (e <= np.minimum(n, real_space.levels) + 1e-9).all()


# --- constructor ----------------------------------------------------------------------------


def test_constructor_refuses_inconsistent_levels() -> None:
    c4 = np.eye(4, 8, dtype=np.float32)
    with pytest.raises(SpaceError, match="one centroid matrix and one count vector per level"):
        Space([], [])
    with pytest.raises(SpaceError, match="one centroid matrix and one count vector per level"):
        Space([c4], [])
    with pytest.raises(SpaceError, match="disagree on the embedding dimension"):
        Space([c4, np.eye(4, 6, dtype=np.float32)], [np.ones(4, np.int64), np.ones(4, np.int64)])
    with pytest.raises(SpaceError, match="counts do not match its centroids"):
        Space([c4], [np.ones(3, np.int64)])


# --- save and load --------------------------------------------------------------------------


@pytest.mark.model
def test_save_load_round_trip_gives_identical_assignments(
    real_space: Space, real_embeddings: F32, tmp_path: Path
) -> None:
    path = tmp_path / "space.zip"
    real_space.save(path)
    back = Space.load(path)
    assert back.levels == real_space.levels
    assert back.requested_levels == real_space.requested_levels
    assert back.model_id == real_space.model_id
    assert back.dim == real_space.dim
    for a, b in zip(real_space.counts, back.counts, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(back.assign(real_embeddings), real_space.assign(real_embeddings))
    np.testing.assert_array_equal(back.expected_cells(50), real_space.expected_cells(50))
    assert [p.name for p in tmp_path.iterdir()] == ["space.zip"]  # no temporary left


def test_save_overwrites_an_existing_file(small_space: Space, tmp_path: Path) -> None:
    path = tmp_path / "space.zip"
    Space.fit(unit_vectors(100, seed=9), levels=(2, 4)).save(path)
    small_space.save(str(path))
    assert Space.load(str(path)).levels == [4, 16]


def test_load_of_missing_file_raises_space_error(tmp_path: Path) -> None:
    missing = tmp_path / "absent.zip"
    with pytest.raises(SpaceError) as info:
        Space.load(missing)
    assert str(info.value) == f"space file not found: {missing}"


@pytest.mark.parametrize("content", [b"", b"not a zip at all", b"PK\x03\x04truncated"])
def test_load_of_non_zip_file_raises_space_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "junk.zip"
    path.write_bytes(content)
    with pytest.raises(SpaceError, match=r"is not a readable space file: File is not a zip file"):
        Space.load(path)


def test_load_of_a_directory_raises_space_error(tmp_path: Path) -> None:
    with pytest.raises(SpaceError, match="is not a readable space file"):
        Space.load(tmp_path)


Rewrite = Callable[[dict[str, bytes]], dict[str, bytes]]


def rewritten(source: Path, target: Path, change: Rewrite) -> Path:
    with zipfile.ZipFile(source) as z:
        items = {name: z.read(name) for name in z.namelist()}
    with zipfile.ZipFile(target, "w") as z:
        for name, data in change(items).items():
            z.writestr(name, data)
    return target


def with_meta(**changes: object) -> Rewrite:
    def change(items: dict[str, bytes]) -> dict[str, bytes]:
        meta = json.loads(items["meta.json"])
        meta.update(changes)
        return {**items, "meta.json": json.dumps(meta).encode()}

    return change


@pytest.fixture
def saved(small_space: Space, tmp_path: Path) -> Path:
    path = tmp_path / "good.zip"
    small_space.save(path)
    return path


def test_load_of_zip_without_meta_raises_space_error(saved: Path, tmp_path: Path) -> None:
    bad = rewritten(
        saved, tmp_path / "bad.zip", lambda it: {k: v for k, v in it.items() if k != "meta.json"}
    )
    with pytest.raises(SpaceError, match=r"not a readable space file: .*meta\.json"):
        Space.load(bad)


def test_load_of_other_zip_raises_space_error(tmp_path: Path) -> None:
    path = tmp_path / "other.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("readme.txt", "hello")
    with pytest.raises(SpaceError, match=r"meta\.json"):
        Space.load(path)


def test_load_of_wrong_version_raises_space_error(saved: Path, tmp_path: Path) -> None:
    bad = rewritten(saved, tmp_path / "v2.zip", with_meta(version=FORMAT_VERSION + 1))
    with pytest.raises(SpaceError) as info:
        Space.load(bad)
    assert f"space format version {FORMAT_VERSION + 1} is not supported" in str(info.value)
    assert f"this build reads {FORMAT_VERSION}" in str(info.value)


def test_load_of_wrong_format_name_raises_space_error(saved: Path, tmp_path: Path) -> None:
    bad = rewritten(saved, tmp_path / "fmt.zip", with_meta(format="something-else"))
    with pytest.raises(SpaceError, match="is not a spanwatch space file"):
        Space.load(bad)


def test_load_of_unparsable_meta_raises_space_error(saved: Path, tmp_path: Path) -> None:
    bad = rewritten(saved, tmp_path / "json.zip", lambda it: {**it, "meta.json": b"{"})
    with pytest.raises(SpaceError, match="is not a readable space file"):
        Space.load(bad)


def test_load_of_missing_array_raises_space_error(saved: Path, tmp_path: Path) -> None:
    bad = rewritten(
        saved, tmp_path / "arr.zip", lambda it: {k: v for k, v in it.items() if k != "counts_1.npy"}
    )
    with pytest.raises(SpaceError, match=r"counts_1\.npy"):
        Space.load(bad)


def test_load_refuses_pickled_arrays(saved: Path, tmp_path: Path) -> None:
    buf = io.BytesIO()
    np.save(buf, np.array([None, None, None, None], dtype=object), allow_pickle=True)
    bad = rewritten(
        saved, tmp_path / "pickle.zip", lambda it: {**it, "counts_0.npy": buf.getvalue()}
    )
    with pytest.raises(SpaceError, match="pickled"):
        Space.load(bad)


def test_load_refuses_header_that_disagrees_with_arrays(saved: Path, tmp_path: Path) -> None:
    bad = rewritten(saved, tmp_path / "dim.zip", with_meta(dim=17))
    with pytest.raises(SpaceError, match="header does not match the arrays"):
        Space.load(bad)


def one_d_centroids(items: dict[str, bytes]) -> dict[str, bytes]:
    buf = io.BytesIO()
    np.save(buf, np.zeros(4, dtype=np.float32))
    return {**items, "centroids_0.npy": buf.getvalue()}


MALFORMED: dict[str, Rewrite] = {
    "meta is a JSON list": lambda it: {**it, "meta.json": b"[]"},
    "meta without dim": lambda it: {
        **it,
        "meta.json": json.dumps(
            {k: v for k, v in json.loads(it["meta.json"]).items() if k != "dim"}
        ).encode(),
    },
    "levels is a number": with_meta(levels=5),
    "centroids are one-dimensional": one_d_centroids,
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_load_of_malformed_space_file_raises_space_error(
    saved: Path, tmp_path: Path, case: str
) -> None:
    bad = rewritten(saved, tmp_path / "malformed.zip", MALFORMED[case])
    with pytest.raises(SpaceError):
        Space.load(bad)


def test_repr_names_levels_dim_and_model(small_space: Space) -> None:
    assert repr(small_space) == "Space(levels=[4, 16], dim=16, model_id='random')"


def test_ivf_search_agrees_with_exact_when_it_probes_every_list() -> None:
    import numpy as np

    from spanwatch.space import Space

    rng = np.random.default_rng(3)
    x = rng.normal(size=(6000, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    exact = Space.fit(x, levels=[8, 1024], niter=3)
    probe = rng.normal(size=(500, 16)).astype(np.float32)
    want = exact.assign(probe)
    ivf = Space(exact.centroids, exact.counts)
    ivf.use_ivf(nprobe=32)  # sqrt(1024) = 32 lists: all of them
    assert ivf.search == "ivf:32:1024"
    assert np.array_equal(ivf.assign(probe), want)
    few = Space(exact.centroids, exact.counts)
    few.use_ivf(nprobe=1)
    got = few.assign(probe)
    assert np.array_equal(got[:, 0], want[:, 0])  # 8 cells: below min_cells, still exact
    assert 0.3 < float(np.mean(got[:, 1] == want[:, 1])) < 1.0


def test_assigning_on_one_thread_gives_the_same_cells_and_restores_faiss_threads(
    small_space: Space,
) -> None:
    import faiss

    x = unit_vectors(500, seed=9)
    before = faiss.omp_get_max_threads()
    small_space.threads = 0
    everywhere = small_space.assign(x)
    small_space.threads = 1
    try:
        assert (small_space.assign(x) == everywhere).all()
    finally:
        small_space.threads = 0
    assert faiss.omp_get_max_threads() == before


def test_descent_probing_every_coarse_cell_is_exact_search() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(6000, 20)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    exact = Space.fit(x, levels=[8, 64, 1024], niter=3)
    probe = rng.normal(size=(700, 20)).astype(np.float32)
    probe /= np.linalg.norm(probe, axis=1, keepdims=True)
    want = exact.assign(probe)
    wide = Space(exact.centroids, exact.counts)
    wide.use_descent(widen=64)  # every cell of the 64-cell level
    assert wide.search == "descent:64"
    got = wide.assign(probe)
    assert got.dtype == np.int64 and got.shape == want.shape
    # float32 sums in another order may flip a near tie; nothing else may differ
    scores = [probe @ c.T for c in exact.centroids]
    for j, s in enumerate(scores):
        rows = np.flatnonzero(got[:, j] != want[:, j])
        gap = s[rows, want[rows, j]] - s[rows, got[rows, j]]
        assert len(rows) <= 1 and np.all(gap < 1e-5), (j, rows, gap)
    narrow = Space(exact.centroids, exact.counts)
    narrow.use_descent(widen=2)
    few = narrow.assign(probe)
    assert np.mean(few[:, :2] == want[:, :2]) > 0.998  # coarse levels stay exact
    assert 0.3 < float(np.mean(few[:, 2] == want[:, 2])) < 1.0


def test_descent_is_chosen_by_config_and_refuses_a_zero_width(small_space: Space) -> None:
    from spanwatch.config import load_settings
    from spanwatch.detector import Detector

    cfg = load_settings(secret_key="t", space={"assign": "descent", "widen": 3})
    det = Detector(cfg, space=Space(small_space.centroids, small_space.counts))
    assert det.space is not None and det.space.search == "descent:3"
    with pytest.raises(SpaceError, match="widen"):
        small_space.use_descent(0)


def test_configure_follows_the_settings_both_ways(small_space: Space) -> None:
    from spanwatch.config import SpaceSettings

    space = Space(small_space.centroids, small_space.counts)
    x = unit_vectors(300, seed=12)
    want = space.assign(x)
    space.configure(SpaceSettings(assign="descent", widen=2, threads=0))
    assert (space.search, space.threads) == ("descent:2", 0)
    space.configure(SpaceSettings(assign="ivf", nprobe=1))
    assert space.search.startswith("ivf:1:")
    space.configure(SpaceSettings(assign="exact"))
    assert (space.search, space.threads) == ("exact", 1)
    assert SpaceSettings().assign == "descent"  # the default
    assert np.array_equal(space.assign(x), want)
