"""spanwatch: detects model extraction in the prompt stream of an LLM API.

>>> from spanwatch import Detector, Event
>>> det = Detector()
>>> det.fit_space(corpus_events)
>>> alerts = det.observe(batch_of_events)
"""

from spanwatch._core import SketchStore
from spanwatch.alerts import Alert, Evidence, Reason
from spanwatch.batch import Batch, Parsed, parse_batch
from spanwatch.config import Settings, load_settings
from spanwatch.detector import ClientReport, Detector
from spanwatch.embed import CachedEmbedder, Embedder, SentenceTransformerEmbedder
from spanwatch.errors import (
    ConfigError,
    EmbeddingError,
    EventError,
    InputError,
    SnapshotError,
    SpaceError,
    SpanwatchError,
)
from spanwatch.events import Event, parse_event
from spanwatch.space import Space

__version__ = "0.1.0"

__all__ = [
    "Alert",
    "Batch",
    "CachedEmbedder",
    "ClientReport",
    "ConfigError",
    "Detector",
    "Embedder",
    "EmbeddingError",
    "Event",
    "EventError",
    "Evidence",
    "InputError",
    "Parsed",
    "Reason",
    "SentenceTransformerEmbedder",
    "Settings",
    "SketchStore",
    "SnapshotError",
    "Space",
    "SpaceError",
    "SpanwatchError",
    "__version__",
    "load_settings",
    "parse_batch",
    "parse_event",
]
