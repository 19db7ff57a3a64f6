"""Alert records: deterministic ids, JSON round trip, and the committed
JSON Schema that SOC pipelines validate against."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from pydantic import ValidationError

from spanwatch.alerts import SCHEMA_VERSION, Alert, Evidence, Reason, alert_id, schema_json, utc

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "schemas" / "alert.schema.json"
ID_PARTS: tuple[str, str, str, int] = ("client-42", "coverage-v1", "high", 120)


def make_alert(**changes: Any) -> Alert:
    evidence = Evidence(
        query_count=120,
        coverage={"16": 1.0, "256": 0.4609375},
        cells={"16": 16, "256": 118},
        expected_cells={"16": 15.2, "256": 61.75},
        near_duplicate_share=0.0083,
        distinct_prompts=119.0,
        first_seen=utc(1_714_557_600.0),
        last_seen=utc(1_714_561_200.5),
    )
    fields: dict[str, Any] = {
        "alert_id": alert_id(*ID_PARTS),
        "client_id": "client-42",
        "time": utc(1_714_561_200.5),
        "event_id": "evt-9",
        "severity": "high",
        "score": 1.9123,
        "threshold": 0.85,
        "reasons": [
            Reason(signal="coverage_ratio_256", value=1.91, threshold=0.85, detail="118 vs 61.75"),
            Reason(signal="coverage_ratio_16", value=1.05, threshold=0.85),
        ],
        "evidence": evidence,
    }
    fields.update(changes)
    return Alert(**fields)


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(schema_json())
    return loaded


def validate(instance: Any, schema: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    ).validate(instance)


# --- ids -------------------------------------------------------------------------------------


def test_alert_id_is_deterministic_uuid5() -> None:
    a = alert_id(*ID_PARTS)
    assert a == alert_id(*ID_PARTS)
    parsed = uuid.UUID(a)
    assert parsed.version == 5
    assert str(parsed) == a


def test_alert_id_is_pinned_across_releases() -> None:
    # a replay after an upgrade must raise the same id, so the namespace may never change
    namespace = uuid.UUID("5f0c6a52-8d0e-4d4e-9a51-3c1b2b7e9a10")
    assert alert_id(*ID_PARTS) == str(
        uuid.uuid5(namespace, '["client-42", "coverage-v1", "high", 120]')
    )


@pytest.mark.parametrize(
    "changed",
    [
        ("client-43", "coverage-v1", "high", 120),
        ("client-42", "coverage-v2", "high", 120),
        ("client-42", "coverage-v1", "medium", 120),
        ("client-42", "coverage-v1", "high", 121),
    ],
    ids=["client_id", "rule", "severity", "query_count"],
)
def test_alert_id_differs_when_any_part_differs(changed: tuple[str, str, str, int]) -> None:
    assert alert_id(*changed) != alert_id(*ID_PARTS)


def test_alert_id_does_not_confuse_neighbouring_parts() -> None:
    assert alert_id("ab", "c", "low", 1) != alert_id("a", "bc", "low", 1)
    assert alert_id("a", "b", "low", 12) != alert_id("a", "b", "low1", 2)


def test_alert_id_is_unambiguous_for_separator_characters() -> None:
    assert alert_id("a\x1fb", "c", "low", 1) != alert_id("a", "b\x1fc", "low", 1)


# --- the record ---------------------------------------------------------------------------------


def test_alert_json_round_trip() -> None:
    alert = make_alert()
    text = alert.to_json()
    back = Alert.model_validate_json(text)
    assert back == alert
    assert back.to_json() == text


def test_alert_json_carries_version_detector_and_utc_times() -> None:
    data = json.loads(make_alert(event_id=None).to_json())
    assert data["schema_version"] == SCHEMA_VERSION == "1.0"
    assert data["detector"] == "spanwatch"
    assert data["event_id"] is None
    assert data["time"] == "2024-05-01T11:00:00.500000Z"
    assert data["evidence"]["first_seen"] == "2024-05-01T10:00:00Z"
    assert data["reasons"][1]["detail"] == ""


def test_utc_gives_an_aware_utc_datetime() -> None:
    assert utc(0.0) == datetime(1970, 1, 1, tzinfo=UTC)
    assert utc(1.5).tzinfo is UTC


def test_alert_refuses_unknown_severity() -> None:
    with pytest.raises(ValidationError, match="severity"):
        make_alert(severity="critical")


def test_alert_is_frozen() -> None:
    alert = make_alert()
    with pytest.raises(ValidationError, match="frozen"):
        alert.score = 0.0


# --- the schema --------------------------------------------------------------------------------


def test_committed_schema_file_equals_generated_schema() -> None:
    assert SCHEMA_FILE.read_text(encoding="utf-8") == schema_json(), (
        "schemas/alert.schema.json is stale: regenerate it with `spanwatch schema`"
    )


def test_schema_is_valid_draft_2020_12(schema: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == f"https://spanwatch.dev/schemas/alert-{SCHEMA_VERSION}.json"
    assert set(schema["required"]) == {
        "alert_id",
        "client_id",
        "time",
        "severity",
        "score",
        "threshold",
        "reasons",
        "evidence",
    }


@pytest.mark.parametrize(
    "alert",
    [make_alert(), make_alert(event_id=None, severity="low", reasons=[])],
    ids=["full", "minimal"],
)
def test_alert_json_validates_against_the_schema(alert: Alert, schema: dict[str, Any]) -> None:
    validate(json.loads(alert.to_json()), schema)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("severity",), "critical"),
        (("schema_version",), "2.0"),
        (("score",), "high"),
        (("evidence", "query_count"), 1.5),
        (("evidence", "cells"), {"16": "many"}),
        (("reasons",), [{"signal": "x"}]),
        (("time",), 1_714_561_200),
    ],
)
def test_schema_rejects_broken_alerts(
    schema: dict[str, Any], path: tuple[str, ...], value: Any
) -> None:
    data = json.loads(make_alert().to_json())
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError):
        validate(data, schema)


@pytest.mark.parametrize("field", ["alert_id", "client_id", "evidence"])
def test_schema_rejects_alert_missing_a_required_field(schema: dict[str, Any], field: str) -> None:
    data = json.loads(make_alert().to_json())
    del data[field]
    with pytest.raises(jsonschema.ValidationError, match=f"'{field}' is a required property"):
        validate(data, schema)


def test_committed_group_schema_equals_generated_and_validates_a_group_alert() -> None:
    from spanwatch.alerts import GroupAlert, GroupLink, GroupMember, group_alert_id

    path = SCHEMA_FILE.parent / "group-alert.schema.json"
    assert path.read_text(encoding="utf-8") == schema_json("group"), (
        "schemas/group-alert.schema.json is stale: regenerate it with `make schema`"
    )
    schema = json.loads(schema_json("group"))
    jsonschema.Draft202012Validator.check_schema(schema)
    members = [GroupMember(client_id=c, query_count=75, alarm_share=0.4) for c in ("b", "a")]
    g = GroupAlert(
        alert_id=group_alert_id(["b", "a"], "low"),
        time=utc(1_767_225_600.0),
        severity="low",
        score=0.8,
        threshold=0.5,
        members=members,
        linked_accounts=3,
        links=[GroupLink(a="a", b="b", kind="metadata", detail="org=x", value=1.0)],
        reasons=[Reason(signal="group_evidence", value=0.8, threshold=0.5)],
        joint=make_alert().evidence,
    )
    validate(json.loads(g.to_json()), schema)
    assert g.alert_id == group_alert_id(["a", "b"], "low") != group_alert_id(["a", "b"], "high")
    with pytest.raises(jsonschema.ValidationError):
        validate({**json.loads(g.to_json()), "kind": "client"}, schema)
