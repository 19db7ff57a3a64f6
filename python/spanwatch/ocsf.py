"""An alert as an OCSF 1.1 Detection Finding (class 2004), for SIEMs."""

from __future__ import annotations

from typing import Any

from spanwatch.alerts import Alert

__all__ = ["to_ocsf"]

_SEVERITY_ID = {"low": 2, "medium": 3, "high": 4}


def to_ocsf(alert: Alert, version: str) -> dict[str, Any]:
    """The Detection Finding event for an alert; spanwatch's own evidence
    travels in `unmapped` so nothing is lost."""
    ms = int(alert.time.timestamp() * 1000)
    return {
        "class_uid": 2004,
        "class_name": "Detection Finding",
        "category_uid": 2,
        "category_name": "Findings",
        "activity_id": 1,
        "activity_name": "Create",
        "type_uid": 200401,
        "severity_id": _SEVERITY_ID[alert.severity],
        "severity": alert.severity.capitalize(),
        "status_id": 1,
        "time": ms,
        "message": (
            f"Client {alert.client_id} queries span the model's input space "
            f"(score {alert.score} against threshold {alert.threshold})"
        ),
        "finding_info": {
            "uid": alert.alert_id,
            "title": "Possible model extraction (OWASP LLM10)",
            "types": ["Model Theft"],
            "first_seen_time": int(alert.evidence.first_seen.timestamp() * 1000),
            "last_seen_time": int(alert.evidence.last_seen.timestamp() * 1000),
        },
        "actor": {"user": {"uid": alert.client_id}},
        "metadata": {
            "version": "1.1.0",
            "product": {"name": "spanwatch", "vendor_name": "spanwatch", "version": version},
            "uid": alert.alert_id,
        },
        "unmapped": {
            "reasons": [r.model_dump() for r in alert.reasons],
            "evidence": alert.evidence.model_dump(mode="json"),
            "event_id": alert.event_id,
        },
    }
