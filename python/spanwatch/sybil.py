"""`spanwatch eval --sybil N`: one harvest split over N accounts, judged by
the group detector.

Every account sends `stream_length // N` queries. Scenarios:

- sybil_metadata: the N accounts share one value of a metadata key (an
  organisation), as when one customer opens many keys;
- sybil_content: the N accounts share no metadata at all; only their
  prompts can link them.

Held-out benign accounts send as many queries each as a sybil account. Some
share an organisation with others, in groups of 1 to N, so metadata links
benign accounts as well. The group thresholds come from the calibration
clients only.

A sybil group counts as detected when a group alert names at least half of
its accounts as members. A benign account counts as pulled in when any group
alert names it as a member.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from spanwatch.alerts import GroupAlert
from spanwatch.calibrate import Calibration
from spanwatch.config import Settings
from spanwatch.events import Event
from spanwatch.space import Space

__all__ = ["SYBIL_SCENARIOS", "SybilStream", "run_sybil"]

SYBIL_SCENARIOS = ("sybil_metadata", "sybil_content")
ORG_KEY = "org"
I64 = npt.NDArray[np.int64]


class SybilStream:
    """One account's queries, its organisation and what it belongs to."""

    def __init__(self, client: str, kind: str, texts: I64, org: str, group: str) -> None:
        self.client, self.kind, self.texts, self.org, self.group = client, kind, texts, org, group


def build_streams(
    rng: np.random.Generator,
    n: int,
    length: int,
    n_groups: int,
    n_benign: int,
    benign: Callable[[int], I64],
    harvest: Callable[[int], I64],
) -> list[SybilStream]:
    """Sybil groups of each scenario, and benign accounts in organisations
    of 1 to n accounts."""
    out = []
    for kind in SYBIL_SCENARIOS:
        for g in range(n_groups):
            gid = f"{kind}-{g:03d}"
            for j in range(n):
                org = f"org-{gid}" if kind == "sybil_metadata" else f"org-{gid}-{j:03d}"
                out.append(SybilStream(f"{gid}-{j:03d}", kind, harvest(length), org, gid))
    i = 0
    while i < n_benign:
        size = min(int(rng.integers(1, n + 1)), n_benign - i)
        org = f"org-benign-{i:05d}"
        for _ in range(size):
            out.append(SybilStream(f"benign-{i:05d}", "benign", benign(length), org, ""))
            i += 1
    return out


def run_sybil(
    space: Space,
    settings: Settings,
    cal: Calibration,
    streams: Sequence[SybilStream],
    texts: Sequence[str],
    emb: npt.NDArray[np.float32],
    *,
    batch: int = 2048,
    progress: Callable[[int], None] | None = None,
) -> tuple[dict[str, Any], list[GroupAlert]]:
    """Feeds the streams, interleaved, through a calibrated `Detector` and
    its `GroupDetector`, as one service would, and measures the groups."""
    from spanwatch.detector import Detector

    cfg = settings.model_copy(
        update={"groups": settings.groups.model_copy(update={"link_keys": [ORG_KEY]})}
    )
    det = Detector(cfg, space=space)
    det.calibration = cal
    groups = det.group_detector()
    order = [(p, j) for p in range(max(len(s.texts) for s in streams)) for j in range(len(streams))]
    order = [(p, j) for p, j in order if p < len(streams[j].texts)]
    alerts: list[GroupAlert] = []
    alone: set[str] = set()
    for start in range(0, len(order), batch):
        chunk = order[start : start + batch]
        tix = [int(streams[j].texts[p]) for p, j in chunk]
        events = [
            Event.model_construct(
                client_id=streams[j].client,
                prompt=texts[t],
                ts=1.7e9 + start + k,
                event_id=None,
                embedding=None,
                meta={ORG_KEY: streams[j].org},
            )
            for k, ((p, j), t) in enumerate(zip(chunk, tix, strict=True))
        ]
        alone.update(a.client_id for a in det.observe(events, emb[tix]))
        alerts.extend(groups.update(det.summaries(det.checkpointed)))
        if progress is not None:
            progress(len(chunk))
    return _measure(streams, alerts, alone), alerts


def _measure(
    streams: Sequence[SybilStream], alerts: Sequence[GroupAlert], alone: set[str]
) -> dict[str, Any]:
    acting = {m.client_id for a in alerts for m in a.members}
    by_group: dict[str, list[str]] = {}
    kind_of: dict[str, str] = {}
    for s in streams:
        if s.group:
            by_group.setdefault(s.group, []).append(s.client)
            kind_of[s.group] = s.kind
    out: dict[str, Any] = {}
    for kind in SYBIL_SCENARIOS:
        named = [
            np.mean([c in acting for c in members])
            for g, members in sorted(by_group.items())
            if kind_of[g] == kind
        ]
        accounts = [c for g, m in by_group.items() if kind_of[g] == kind for c in m]
        out[kind] = {
            "groups": len(named),
            "detected": float(np.mean([x >= 0.5 for x in named])) if named else 0.0,
            "accounts_named": float(np.mean(named)) if named else 0.0,
            "accounts_alerted_alone": float(np.mean([c in alone for c in accounts]))
            if accounts
            else 0.0,
        }
    benign = [s.client for s in streams if s.kind == "benign"]
    out["benign"] = {
        "accounts": len(benign),
        "pulled_in": float(np.mean([c in acting for c in benign])),
        "alerted_alone": float(np.mean([c in alone for c in benign])),
    }
    out["group_alerts"] = len(alerts)
    out["median_members"] = float(np.median([len(a.members) for a in alerts])) if alerts else 0.0
    out["median_linked_outside"] = (
        float(np.median([a.linked_accounts for a in alerts])) if alerts else 0.0
    )
    return out
