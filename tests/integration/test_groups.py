"""Group detection on the real model: a harvest split over accounts that
share an organisation is alerted as one group, benign accounts are not, and
bad summaries change nothing."""

from __future__ import annotations

import pytest

from spanwatch import Detector, Event
from spanwatch.alerts import GroupAlert
from spanwatch.config import Settings
from spanwatch.embed import Embedder
from spanwatch.errors import ConfigError, SnapshotError
from spanwatch.simulate import simulate

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def calibrated(embedder: Embedder) -> Detector:
    from spanwatch.config import load_settings

    cfg = load_settings(secret_key="test-secret", groups={"link_keys": ["org"]})
    raw, _ = simulate(n_benign=80, n_harvesters=0, n_sweepers=0, n_template_sweepers=0, seed=21)
    events = [Event.model_validate(e) for e in raw]
    det = Detector(cfg, embedder=embedder)
    det.fit_space(events)
    det.calibrate(events, target_fpr=0.05)
    return det


def _traffic(accounts: int) -> tuple[list[Event], set[str], set[str]]:
    """Benign users (pairs of them share an org) and three harvesters'
    queries dealt round-robin to `accounts` accounts of one org."""
    raw, clients = simulate(
        n_benign=30, n_harvesters=3, n_sweepers=0, n_template_sweepers=0, seed=22
    )
    kinds = {c.client_id: c.kind for c in clients}
    benign = sorted(c for c, k in kinds.items() if k == "benign")
    org = {c: f"home-{i // 2}" for i, c in enumerate(benign)}
    events, sybils, n = [], set(), 0
    for e in raw:
        cid = str(e["client_id"])
        if kinds[cid] == "benign":
            events.append(Event.model_validate({**e, "meta": {"org": org[cid]}}))
        else:
            acct = f"acct-{n % accounts:02d}"
            n += 1
            sybils.add(acct)
            events.append(Event.model_validate({**e, "client_id": acct, "meta": {"org": "evil"}}))
    return events, sybils, set(benign)


def test_split_harvest_is_one_group_and_benign_accounts_stay_out(
    calibrated: Detector, settings: Settings
) -> None:
    det = Detector(calibrated.config, space=calibrated.space, embedder=calibrated.embedder)
    det.calibration = calibrated.calibration
    groups = det.group_detector()
    events, sybils, benign = _traffic(accounts=8)
    alerts: list[GroupAlert] = []
    for i in range(0, len(events), 200):
        det.observe(events[i : i + 200])
        alerts += groups.update(det.summaries(det.checkpointed))
    assert alerts, "no group alert"
    named = {m.client_id for a in alerts for m in a.members}
    assert len(named & sybils) >= len(sybils) // 2, named
    assert not named & benign, named & benign
    top = max(alerts, key=lambda a: len(a.members))
    assert top.score >= top.threshold > 0
    assert all(m.alarm_share >= det.config.groups.member_floor for m in top.members)
    assert {lk.kind for lk in top.links} >= {"metadata"}
    assert all(lk.detail == "org=evil" for lk in top.links if lk.kind == "metadata")
    assert top.joint.query_count == sum(m.query_count for m in top.members)
    assert top.reasons[0].signal == "group_evidence"
    # the same members at the same severity always get the same id
    assert GroupAlert.model_validate_json(top.to_json()) == top


def test_bad_summaries_change_nothing(calibrated: Detector) -> None:
    groups = calibrated.group_detector()
    det = Detector(calibrated.config, space=calibrated.space, embedder=calibrated.embedder)
    det.calibration = calibrated.calibration
    events, _, _ = _traffic(accounts=4)
    det.observe(events[:300])
    good = det.summaries(det.checkpointed)
    assert good
    data, vals = good[0]
    bad = bytearray(data)
    bad[len(bad) // 2] ^= 0xFF
    with pytest.raises(SnapshotError):
        groups.update([*good[1:], (bytes(bad), vals)])
    assert len(groups) == 0
    with pytest.raises(SnapshotError, match="client summary"):
        groups.update([(det.store.snapshot_client(det.checkpointed[0]), ())])  # type: ignore[union-attr]
    groups.update(good)
    assert len(groups) == len(good)


def test_group_detection_needs_group_thresholds(calibrated: Detector) -> None:
    assert calibrated.calibration is not None
    no_groups = Detector(calibrated.config, space=calibrated.space)
    with pytest.raises(ConfigError, match="calibrated"):
        no_groups.group_detector()
    import dataclasses

    import numpy as np

    no_groups.calibration = dataclasses.replace(calibrated.calibration, group_sums=np.zeros(0))
    with pytest.raises(ConfigError, match="group thresholds"):
        no_groups.group_detector()
