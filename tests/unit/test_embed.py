"""The real all-MiniLM-L6-v2 embedder and the SQLite cache in front of it."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from spanwatch.embed import CachedEmbedder, Embedder, SentenceTransformerEmbedder
from spanwatch.errors import EmbeddingError, SpanwatchError

F32 = npt.NDArray[np.float32]

TEXTS = [
    "How do I bake sourdough bread at home?",
    "What is a good recipe for a sourdough loaf?",
    "Explain the Rust borrow checker.",
]


class CountingEmbedder:
    """Delegates to a real embedder and records what reached it (not a mock:
    every vector comes from the real model)."""

    def __init__(self, inner: Embedder, model_id: str | None = None) -> None:
        self.inner = inner
        self._model_id = model_id or inner.model_id
        self.calls = 0
        self.seen: list[str] = []

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def dim(self) -> int:
        return self.inner.dim

    def embed(self, texts: Sequence[str]) -> F32:
        self.calls += 1
        self.seen.extend(texts)
        return self.inner.embed(texts)


@pytest.fixture
def counting(model_embedder: Embedder) -> CountingEmbedder:
    return CountingEmbedder(model_embedder)


@pytest.fixture
def cached(counting: CountingEmbedder, tmp_path: Path) -> Iterator[CachedEmbedder]:
    c = CachedEmbedder(counting, tmp_path / "cache")
    yield c
    c.close()


# --- the model ---------------------------------------------------------------------------


@pytest.mark.model
def test_model_gives_unit_float32_rows_of_384(model_embedder: Embedder) -> None:
    assert isinstance(model_embedder, Embedder)
    assert model_embedder.dim == 384
    out = model_embedder.embed(TEXTS)
    assert out.shape == (3, 384)
    assert out.dtype == np.float32
    assert out.flags["C_CONTIGUOUS"]
    assert np.isfinite(out).all()
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


@pytest.mark.model
def test_model_of_no_texts_is_an_empty_matrix(model_embedder: Embedder) -> None:
    out = model_embedder.embed([])
    assert out.shape == (0, 384)
    assert out.dtype == np.float32


@pytest.mark.model
def test_similar_sentences_are_closer_than_unrelated(model_embedder: Embedder) -> None:
    bread, loaf, rust = model_embedder.embed(TEXTS)
    assert float(bread @ loaf) > float(bread @ rust) + 0.3
    assert float(bread @ loaf) > float(loaf @ rust) + 0.3


@pytest.mark.model
def test_model_id_names_the_weights(model_embedder: Embedder) -> None:
    name, _, rest = model_embedder.model_id.partition("@")
    digest, _, backend = rest.partition("+")
    assert name
    assert backend == "onnx"  # the default backend
    assert len(digest) == 16
    int(digest, 16)


def test_missing_model_folder_raises_embedding_error() -> None:
    with pytest.raises(EmbeddingError, match="model folder not found: /nonexistent"):
        SentenceTransformerEmbedder("/nonexistent")


@pytest.mark.model  # imports sentence-transformers and torch: as slow as loading the model
def test_folder_without_a_model_raises_embedding_error(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}", encoding="utf-8")
    with pytest.raises(EmbeddingError, match="cannot load sentence-transformers model from"):
        SentenceTransformerEmbedder(tmp_path)


def test_embedding_error_is_a_spanwatch_error() -> None:
    assert issubclass(EmbeddingError, SpanwatchError)


# --- the cache ----------------------------------------------------------------------------


@pytest.mark.model
def test_cache_passes_model_id_and_dim_through(
    cached: CachedEmbedder, counting: CountingEmbedder
) -> None:
    assert cached.model_id == counting.model_id
    assert cached.dim == 384
    assert isinstance(cached, Embedder)


@pytest.mark.model
def test_cached_vectors_equal_the_models(cached: CachedEmbedder, model_embedder: Embedder) -> None:
    np.testing.assert_allclose(cached.embed(TEXTS), model_embedder.embed(TEXTS), atol=1e-5)


@pytest.mark.model
def test_second_call_is_served_from_the_cache(
    cached: CachedEmbedder, counting: CountingEmbedder
) -> None:
    first = cached.embed(TEXTS)
    assert (counting.calls, cached.hits, cached.misses) == (1, 0, 3)
    second = cached.embed(TEXTS)
    np.testing.assert_array_equal(second, first)
    assert second.dtype == np.float32
    assert counting.calls == 1  # the model was not asked again
    assert (cached.hits, cached.misses) == (3, 3)


@pytest.mark.model
def test_only_unseen_texts_reach_the_model(
    cached: CachedEmbedder, counting: CountingEmbedder
) -> None:
    cached.embed(TEXTS[:2])
    out = cached.embed([TEXTS[1], TEXTS[2], TEXTS[0]])
    assert counting.seen == [TEXTS[0], TEXTS[1], TEXTS[2]]
    assert (cached.hits, cached.misses) == (2, 3)
    np.testing.assert_array_equal(out[2], cached.embed([TEXTS[0]])[0])


@pytest.mark.model
def test_repeated_text_in_one_call_is_embedded_once(
    cached: CachedEmbedder, counting: CountingEmbedder
) -> None:
    out = cached.embed([TEXTS[0], TEXTS[2], TEXTS[0], TEXTS[0]])
    assert counting.seen == [TEXTS[0], TEXTS[2]]
    np.testing.assert_array_equal(out[0], out[2])
    np.testing.assert_array_equal(out[0], out[3])
    assert float(out[0] @ out[1]) < 0.9


@pytest.mark.model
def test_cache_of_no_texts_does_not_call_the_model(
    cached: CachedEmbedder, counting: CountingEmbedder
) -> None:
    assert cached.embed([]).shape == (0, 384)
    assert counting.calls == 0


@pytest.mark.model
def test_cache_survives_reopening(model_embedder: Embedder, tmp_path: Path) -> None:
    first_model = CountingEmbedder(model_embedder)
    first = CachedEmbedder(first_model, tmp_path)
    vectors = first.embed(TEXTS)
    first.close()
    assert (tmp_path / "embeddings.sqlite").is_file()

    second_model = CountingEmbedder(model_embedder)
    second = CachedEmbedder(second_model, tmp_path)
    try:
        np.testing.assert_array_equal(second.embed(TEXTS), vectors)
        assert second_model.calls == 0
        assert (second.hits, second.misses) == (3, 0)
    finally:
        second.close()


@pytest.mark.model
def test_another_model_id_does_not_share_entries(model_embedder: Embedder, tmp_path: Path) -> None:
    a = CachedEmbedder(CountingEmbedder(model_embedder, "model-a@0000"), tmp_path)
    b_model = CountingEmbedder(model_embedder, "model-b@0000")
    b = CachedEmbedder(b_model, tmp_path)
    try:
        a.embed(TEXTS[:1])
        b.embed(TEXTS[:1])
        assert b_model.seen == TEXTS[:1]
        assert (b.hits, b.misses) == (0, 1)
    finally:
        a.close()
        b.close()


@pytest.mark.model
def test_cache_creates_its_folder(model_embedder: Embedder, tmp_path: Path) -> None:
    folder = tmp_path / "a" / "b"
    c = CachedEmbedder(model_embedder, folder)
    c.close()
    assert (folder / "embeddings.sqlite").is_file()


@pytest.mark.model
def test_cache_of_garbage_file_raises_embedding_error(
    model_embedder: Embedder, tmp_path: Path
) -> None:
    (tmp_path / "embeddings.sqlite").write_bytes(bytes(range(256)) * 64)
    with pytest.raises(EmbeddingError) as info:
        CachedEmbedder(model_embedder, tmp_path)
    assert "embeddings.sqlite is unusable" in str(info.value)


@pytest.mark.model
def test_cache_with_corrupt_data_pages_raises_embedding_error(
    model_embedder: Embedder, tmp_path: Path
) -> None:
    c = CachedEmbedder(model_embedder, tmp_path)
    c.embed([f"note {i}: water the plants" for i in range(5)])
    c.close()
    path = tmp_path / "embeddings.sqlite"
    size = path.stat().st_size
    assert size > 8192
    with path.open("r+b") as f:
        f.seek(4096)  # keep page 1 (header and schema), scramble the rest
        f.write(bytes((i * 37 + 11) & 0xFF for i in range(size - 4096)))
    reopened = CachedEmbedder(model_embedder, tmp_path)
    try:
        with pytest.raises(EmbeddingError):
            reopened.embed(["note 1: water the plants"])
    finally:
        reopened.close()


@pytest.mark.model
def test_session_cache_fixture_gives_model_vectors(
    embedder: Embedder, model_embedder: Embedder
) -> None:
    np.testing.assert_allclose(
        embedder.embed(TEXTS[:2]), model_embedder.embed(TEXTS[:2]), atol=1e-5
    )


def test_lazy_embedder_loads_the_model_only_when_a_prompt_needs_it(
    settings: object, model_embedder: Embedder
) -> None:
    from spanwatch.config import Settings
    from spanwatch.detector import Detector
    from spanwatch.embed import LazyEmbedder
    from spanwatch.events import Event
    from spanwatch.space import Space

    assert isinstance(settings, Settings)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 384)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    lazy = LazyEmbedder(settings.embed)
    det = Detector(settings, space=Space.fit(x, levels=[4, 16], niter=2), embedder=lazy)
    given = [
        Event(client_id="c", prompt=f"p{i}", embedding=x[i].tolist(), ts=float(i))
        for i in range(20)
    ]
    det.observe(given, det.embed(given))
    assert not lazy.loaded  # every event carried its embedding
    bare = [Event(client_id="c", prompt=TEXTS[0], ts=30.0)]
    got = det.embed(bare)
    assert lazy.loaded
    assert lazy.model_id == model_embedder.model_id and lazy.dim == 384
    np.testing.assert_allclose(got, model_embedder.embed(TEXTS[:1]), atol=1e-6)


def test_service_partitions_share_one_embedder_that_has_not_loaded(settings: object) -> None:
    from spanwatch.config import Settings
    from spanwatch.embed import LazyEmbedder
    from spanwatch.space import Space
    from spanwatch.stream import Service

    assert isinstance(settings, Settings)
    x = np.random.default_rng(1).normal(size=(100, 384)).astype(np.float32)
    svc = Service(settings, Space.fit(x, levels=[4, 8], niter=2))
    a, b = svc._detector(), svc._detector()
    assert isinstance(a.embedder, LazyEmbedder)
    assert a.embedder is b.embedder
    assert not a.embedder.loaded


def test_lazy_embedder_refuses_a_missing_model_folder_at_once(tmp_path: Path) -> None:
    from spanwatch.config import EmbedSettings
    from spanwatch.embed import LazyEmbedder

    with pytest.raises(EmbeddingError, match="model folder not found"):
        LazyEmbedder(EmbedSettings(model_path=str(tmp_path / "nowhere")))


def test_lazy_embedder_that_cannot_load_says_so_each_time(tmp_path: Path) -> None:
    from spanwatch.config import EmbedSettings
    from spanwatch.embed import LazyEmbedder

    lazy = LazyEmbedder(EmbedSettings(model_path=str(tmp_path), cache=False))  # no model in it
    for _ in range(2):
        with pytest.raises(EmbeddingError, match="cannot load"):
            lazy.embed(["hello"])
    assert not lazy.loaded
