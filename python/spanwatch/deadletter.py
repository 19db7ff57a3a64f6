"""Dead-letter records: the original bytes, why they were refused, and where
they came from."""

from __future__ import annotations

import base64
import contextlib
import json
import logging
from typing import Any

__all__ = ["dead_letter", "reason_kind", "send_dead_letter"]

log = logging.getLogger("spanwatch.deadletter")


def reason_kind(reason: str) -> str:
    """A short label for metrics, from an EventError reason."""
    r = reason.lower()
    for needle, kind in (
        ("utf-8", "invalid_utf8"),
        ("malformed json", "malformed_json"),
        ("json object", "not_an_object"),
        ("missing field", "missing_field"),
        ("over the limit", "too_large"),
        ("embedding", "bad_embedding"),
        ("blank", "empty_field"),
        ("at least 1 character", "empty_field"),
    ):
        if needle in r:
            return kind
    return "invalid_field"


def dead_letter(
    value: bytes | None, key: bytes | None, reason: str, topic: str, partition: int, offset: int
) -> bytes:
    """The JSON body of a dead-letter record."""
    rec: dict[str, Any] = {
        "reason": reason,
        "kind": reason_kind(reason),
        "source": {"topic": topic, "partition": partition, "offset": offset},
        "value_b64": base64.b64encode(value).decode("ascii") if value is not None else None,
        "key_b64": base64.b64encode(key).decode("ascii") if key is not None else None,
    }
    if value is not None:
        with contextlib.suppress(UnicodeDecodeError):
            rec["value_text"] = value.decode("utf-8")
    return json.dumps(rec, ensure_ascii=False).encode("utf-8")


def send_dead_letter(producer: Any, topic: str, metrics: Any, r: Any, reason: str) -> None:
    """Sends consumer record `r` to the dead-letter `topic` with its reason,
    counts it in `metrics.dead_letters` and logs it."""
    body = dead_letter(r.value, r.key, reason, r.topic, r.partition, r.offset)
    producer.send(topic, key=r.key, value=body)
    metrics.dead_letters.labels(reason_kind(reason)).inc()
    log.info("dead letter %s/%d@%d: %s", r.topic, r.partition, r.offset, reason)
