"""Every error spanwatch raises. Catch `SpanwatchError` to catch them all."""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "EmbeddingError",
    "EventError",
    "InputError",
    "SnapshotError",
    "SpaceError",
    "SpanwatchError",
]


class SpanwatchError(Exception):
    """Base class of spanwatch's errors."""


class ConfigError(SpanwatchError, ValueError):
    """A configuration value is missing, out of range or inconsistent."""


class InputError(SpanwatchError, ValueError):
    """An argument passed to the sketch store has the wrong shape or range."""


class EventError(SpanwatchError, ValueError):
    """An event record cannot be used: malformed JSON, missing fields, bad types, too large."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SnapshotError(SpanwatchError):
    """Snapshot bytes are corrupt, truncated, foreign or made under another config or key."""


class SpaceError(SpanwatchError):
    """The input-space map cannot be fitted, loaded or used."""


class EmbeddingError(SpanwatchError):
    """The embedding model cannot be loaded or gave unusable output."""
