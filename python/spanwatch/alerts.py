"""The alert record that goes to SOC pipelines, and its JSON Schema."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "SCHEMA_VERSION",
    "Alert",
    "Evidence",
    "GroupAlert",
    "GroupLink",
    "GroupMember",
    "Reason",
    "alert_id",
    "group_alert_id",
    "schema_json",
]

SCHEMA_VERSION: Literal["1.0"] = "1.0"
Severity = Literal["low", "medium", "high"]
SEVERITIES: tuple[Severity, ...] = ("low", "medium", "high")

# Fixed namespace: the same client, rule and moment always give the same id.
_NAMESPACE = uuid.UUID("5f0c6a52-8d0e-4d4e-9a51-3c1b2b7e9a10")


class Reason(BaseModel):
    """One signal that fired: its value against the threshold it crossed."""

    model_config = ConfigDict(frozen=True)

    signal: str = Field(description="name of the signal, e.g. coverage_ratio_256")
    value: float
    threshold: float
    detail: str = ""


class Evidence(BaseModel):
    """What the detector saw of the client when it decided."""

    model_config = ConfigDict(frozen=True)

    query_count: int
    coverage: dict[str, float] = Field(description="cells level -> share of cells touched")
    cells: dict[str, int] = Field(description="cells level -> distinct cells touched")
    expected_cells: dict[str, float] = Field(
        description="cells level -> distinct cells population-like sampling would touch"
    )
    near_duplicate_share: float
    distinct_prompts: float
    first_seen: datetime
    last_seen: datetime


class Alert(BaseModel):
    """A client whose queries span the input space like a model thief's."""

    model_config = ConfigDict(frozen=True)

    schema_version: Literal["1.0"] = SCHEMA_VERSION
    alert_id: str = Field(description="deterministic: a replay raises the same id")
    client_id: str
    time: datetime = Field(description="time of the event that triggered the alert")
    event_id: str | None = None
    severity: Severity
    score: float
    threshold: float
    reasons: list[Reason]
    evidence: Evidence
    detector: str = "spanwatch"

    def to_json(self) -> str:
        return self.model_dump_json()


class GroupMember(BaseModel):
    """One account of a group, with its own evidence."""

    model_config = ConfigDict(frozen=True)

    client_id: str
    query_count: int
    alarm_share: float = Field(
        description="its own sequential evidence over its own alarm bound (1 = alerts alone)"
    )


class GroupLink(BaseModel):
    """Why two accounts of the group are linked."""

    model_config = ConfigDict(frozen=True)

    a: str
    b: str
    kind: Literal["metadata", "content"]
    detail: str = Field(description="key=value for metadata, jaccard=x for shared shingles")
    value: float


class GroupAlert(BaseModel):
    """Accounts that act as one: linked by shared metadata or prompts, and
    together carrying more evidence than benign accounts linked alike could."""

    model_config = ConfigDict(frozen=True)

    schema_version: Literal["1.0"] = SCHEMA_VERSION
    kind: Literal["group"] = "group"
    alert_id: str = Field(description="deterministic: the same members and severity, the same id")
    time: datetime = Field(description="last activity of the group")
    severity: Severity
    score: float = Field(description="sum of the acting members' alarm shares")
    threshold: float = Field(description="what benign groups of this size stay below")
    members: list[GroupMember] = Field(
        description="accounts that take part (share at least groups.member_floor), by share"
    )
    linked_accounts: int = Field(
        description="accounts that take part and are linked to the members, "
        "but not densely enough to be in the group"
    )
    links: list[GroupLink] = Field(description="links among the members")
    reasons: list[Reason]
    joint: Evidence = Field(description="the union of all members' traffic")
    detector: str = "spanwatch"

    def to_json(self) -> str:
        return self.model_dump_json()


def group_alert_id(members: list[str], severity: str) -> str:
    name = json.dumps([sorted(members), "group-v1", severity], ensure_ascii=False)
    return str(uuid.uuid5(_NAMESPACE, name))


def alert_id(client_id: str, rule: str, severity: str, query_count: int) -> str:
    """UUIDv5 of what defines an alert, so reprocessing gives the same id."""
    name = json.dumps([client_id, rule, severity, query_count], ensure_ascii=False)
    return str(uuid.uuid5(_NAMESPACE, name))


def utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def schema_json(kind: Literal["client", "group"] = "client") -> str:
    """The JSON Schema of Alert (or GroupAlert), as committed in
    schemas/alert.schema.json (group-alert.schema.json)."""
    model = Alert if kind == "client" else GroupAlert
    schema: dict[str, Any] = model.model_json_schema()
    name = "alert" if kind == "client" else "group-alert"
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://spanwatch.dev/schemas/{name}-{SCHEMA_VERSION}.json"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def write_schema(path: str | Path) -> None:
    Path(path).write_text(schema_json(), encoding="utf-8")
