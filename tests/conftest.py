"""Shared fixtures. The embedding model is real and loaded once per session;
its cache lives in a per-session temporary folder."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    """A SIGTERM (a CI timeout, a killed run) unwinds the session like
    Ctrl-C, so fixtures still stop what they started: the Kafka broker of
    the service tests would otherwise outlive the run."""
    signal.signal(signal.SIGTERM, _interrupt)


@pytest.fixture(scope="session")
def model_embedder() -> object:
    """The real all-MiniLM-L6-v2, uncached."""
    from spanwatch.embed import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder()


@pytest.fixture(scope="session")
def embedder(model_embedder: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """The real model behind a session-wide on-disk cache."""
    from spanwatch.embed import CachedEmbedder

    cached = CachedEmbedder(model_embedder, tmp_path_factory.mktemp("emb-cache"))  # type: ignore[arg-type]
    yield cached
    cached.close()


@pytest.fixture
def settings(tmp_path: Path) -> object:
    """Default settings with a test secret and no shared cache folder."""
    from spanwatch.config import load_settings

    return load_settings(secret_key="test-secret", embed={"cache_dir": str(tmp_path / "cache")})
