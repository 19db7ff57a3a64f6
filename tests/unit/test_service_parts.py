"""The service's pieces that need no broker: OCSF rendering, dead-letter
records, metrics registries and Kafka client settings."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest
from prometheus_client import generate_latest

from spanwatch.alerts import Alert, Evidence, Reason
from spanwatch.config import load_settings
from spanwatch.deadletter import dead_letter, reason_kind
from spanwatch.metrics import Metrics
from spanwatch.ocsf import to_ocsf


def _alert(severity: str = "high") -> Alert:
    t = datetime(2026, 1, 1, tzinfo=UTC)
    return Alert(
        alert_id="a-1",
        client_id="acct-9",
        time=t,
        severity=severity,  # type: ignore[arg-type]
        score=1.02,
        threshold=0.85,
        reasons=[Reason(signal="coverage_ratio_16", value=1.02, threshold=0.85)],
        evidence=Evidence(
            query_count=60,
            coverage={"16": 1.0},
            cells={"16": 16},
            expected_cells={"16": 15.9},
            near_duplicate_share=0.0,
            distinct_prompts=60.0,
            first_seen=t,
            last_seen=t,
        ),
    )


@pytest.mark.parametrize(("severity", "sid"), [("low", 2), ("medium", 3), ("high", 4)])
def test_ocsf_detection_finding_carries_the_alert(severity: str, sid: int) -> None:
    f = to_ocsf(_alert(severity), "9.9")
    assert (f["class_uid"], f["type_uid"], f["category_uid"]) == (2004, 200401, 2)
    assert f["severity_id"] == sid
    assert f["finding_info"]["uid"] == "a-1"
    assert f["actor"]["user"]["uid"] == "acct-9"
    assert f["time"] == 1767225600000
    assert f["metadata"]["product"]["version"] == "9.9"
    assert f["unmapped"]["reasons"][0]["signal"] == "coverage_ratio_16"
    json.dumps(f)


def test_dead_letter_keeps_original_bytes_and_source() -> None:
    raw = b'{"prompt": "\xff"}'
    rec = json.loads(dead_letter(raw, b"k1", "invalid UTF-8 at byte 12", "prompts", 3, 77))
    assert base64.b64decode(rec["value_b64"]) == raw
    assert base64.b64decode(rec["key_b64"]) == b"k1"
    assert "value_text" not in rec
    assert rec["source"] == {"topic": "prompts", "partition": 3, "offset": 77}
    assert rec["kind"] == "invalid_utf8"
    ok = json.loads(dead_letter(b"{bad", None, "malformed JSON: x", "t", 0, 1))
    assert ok["value_text"] == "{bad" and ok["key_b64"] is None


@pytest.mark.parametrize(
    ("reason", "kind"),
    [
        ("malformed JSON: Expecting value", "malformed_json"),
        ("missing field prompt", "missing_field"),
        ("prompt is 40000 bytes, over the limit of 32768", "too_large"),
        ("embedding has 5 dimensions, expected 384", "bad_embedding"),
        ("client_id: String should have at least 1 character", "empty_field"),
        ("ts: Value error, must be finite", "invalid_field"),
    ],
)
def test_reason_kinds_label_metrics(reason: str, kind: str) -> None:
    assert reason_kind(reason) == kind


def test_metrics_registries_are_separate() -> None:
    a, b = Metrics(), Metrics()
    a.events.inc(3)
    a.dead_letters.labels("too_large").inc()
    text_a = generate_latest(a.registry).decode()
    text_b = generate_latest(b.registry).decode()
    assert "spanwatch_events_total 3.0" in text_a
    assert 'spanwatch_dead_letters_total{reason="too_large"} 1.0' in text_a
    assert "spanwatch_events_total 0.0" in text_b


def test_kafka_security_settings_pass_through_without_leaking(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SPANWATCH_KAFKA__SASL_PLAIN_PASSWORD", "hunter2")
    s = load_settings(
        kafka={
            "bootstrap_servers": "b1:9093,b2:9093",
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_plain_username": "sw",
        }
    )
    cfg = s.kafka.client_config()
    assert cfg["bootstrap_servers"] == ["b1:9093", "b2:9093"]
    assert cfg["sasl_plain_password"] == "hunter2"
    assert cfg["security_protocol"] == "SASL_SSL"
    assert "hunter2" not in repr(s) and "hunter2" not in str(s.model_dump())


def test_a_poll_is_cut_into_pieces_that_keep_each_partitions_order() -> None:
    from spanwatch.stream import chunks

    poll = {"a": list(range(7)), "b": [], "c": list(range(100, 105))}
    pieces = list(chunks(poll, 3))
    assert [sum(map(len, p.values())) for p in pieces] == [3, 3, 3, 3]
    assert [x for p in pieces for x in p.get("a", [])] == poll["a"]
    assert [x for p in pieces for x in p.get("c", [])] == poll["c"]
    assert all(v for p in pieces for v in p.values())  # no empty lists
    assert list(chunks({}, 3)) == [] and list(chunks(poll, 100)) == [
        {"a": poll["a"], "c": poll["c"]}
    ]


def test_a_state_record_that_cannot_be_restored_is_skipped_not_fatal(
    settings: object, caplog: pytest.LogCaptureFixture
) -> None:
    """A state record of an older sketch format (or a damaged one) must not
    stop the consumer: the client is left out and starts afresh, the others
    restore, and the refusal is logged and counted."""
    import struct
    import zlib

    import numpy as np

    from spanwatch._core import SketchStore
    from spanwatch.config import Settings
    from spanwatch.detector import Detector
    from spanwatch.space import Space
    from spanwatch.stream import _OFFSET, _Partition, apply_state_record

    assert isinstance(settings, Settings)
    secret = settings.secret_key.get_secret_value().encode()
    src = SketchStore(secret=secret, levels=[4, 16])
    cells = np.zeros((2, 2), dtype=np.int64)
    src.update(["old", "new"], ["a b c d", "e f g h"], cells, np.zeros(2))
    good = _OFFSET.pack(7) + src.snapshot_client("new")
    body = bytearray(src.snapshot_client("old")[:-4])
    # version 2: older than the oldest format this build reads (3)
    struct.pack_into("<H", body, 8, 2)
    older = _OFFSET.pack(5) + bytes(body) + struct.pack("<I", zlib.crc32(body))

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 384)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    part = _Partition(detector=Detector(settings, space=Space.fit(x, levels=[4, 16], niter=2)))
    metrics = Metrics()
    assert apply_state_record(part, b"new", good, metrics) == 1
    assert apply_state_record(part, b"old", good[:8] + src.snapshot_client("old"), metrics) == 1
    with caplog.at_level("WARNING", logger="spanwatch"):
        assert apply_state_record(part, b"old", older, metrics) == 0
        assert apply_state_record(part, b"bad", b"\x00\x01", metrics) == 0
    assert "older sketch format" in caplog.text
    store = part.detector.store
    assert store is not None
    assert store.client_ids() == ["new"]  # the earlier "old" state does not stand either
    assert part.restored == {"new": 7}
    assert metrics.state_refused._value.get() == 2
    assert apply_state_record(part, b"new", None, metrics) == 0  # a tombstone
    assert len(store) == 0 and part.restored == {}
