"""The library entry point on the real model: observe, report, snapshot."""

from __future__ import annotations

import pytest

from spanwatch import Detector, Event, SnapshotError, SpaceError
from spanwatch.config import Settings, load_settings
from spanwatch.embed import Embedder
from spanwatch.errors import EventError
from spanwatch.simulate import simulate

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def traffic() -> tuple[list[Event], dict[str, str]]:
    raw, clients = simulate(
        n_benign=12, n_harvesters=2, n_sweepers=1, n_template_sweepers=1, seed=3
    )
    return [Event.model_validate(e) for e in raw], {c.client_id: c.kind for c in clients}


@pytest.fixture
def det(
    settings: Settings, embedder: Embedder, traffic: tuple[list[Event], dict[str, str]]
) -> Detector:
    d = Detector(settings, embedder=embedder)
    d.fit_space(traffic[0][:1500])
    return d


def _run(d: Detector, events: list[Event], size: int) -> list[str]:
    out = []
    for i in range(0, len(events), size):
        out += [a.model_dump_json() for a in d.observe(events[i : i + size])]
    return out


def test_observe_before_a_space_is_an_error(settings: Settings, embedder: Embedder) -> None:
    with pytest.raises(SpaceError, match="no space"):
        Detector(settings, embedder=embedder).observe([Event(client_id="a", prompt="p", ts=0)])


def test_harvesters_alert_and_report_explains(
    det: Detector, traffic: tuple[list[Event], dict[str, str]]
) -> None:
    events, kinds = traffic
    alerts = [a for i in range(0, len(events), 256) for a in det.observe(events[i : i + 256])]
    alerted = {a.client_id for a in alerts}
    assert {c for c, k in kinds.items() if k == "harvester"} <= alerted
    assert not {c for c, k in kinds.items() if k == "benign"} & alerted
    first = alerts[0]
    assert first.reasons and first.reasons[0].value >= first.reasons[0].threshold
    assert first.evidence.query_count >= det.config.scoring.min_queries
    rep = det.report(first.client_id)
    # alerts only escalate, so the client's last alert holds its level now
    last = [a for a in alerts if a.client_id == first.client_id][-1]
    assert rep.alerted == last.severity
    assert rep.query_count == sum(e.client_id == first.client_id for e in events)
    with pytest.raises(KeyError):
        det.report("nobody")


def test_snapshot_restore_continues_exactly(
    settings: Settings, embedder: Embedder, traffic: tuple[list[Event], dict[str, str]]
) -> None:
    events = traffic[0]
    whole = Detector(settings, embedder=embedder)
    space = whole.fit_space(events[:1500])
    expected = _run(whole, events, 200)

    first = Detector(settings, space=space, embedder=embedder)
    half = len(events) // 2
    got = _run(first, events[:half], 200)
    blob = first.snapshot()
    second = Detector(settings, space=space, embedder=embedder)
    second.restore(blob)
    got += _run(second, events[half:], 200)
    assert got == expected

    other = Detector(load_settings(secret_key="another"), space=space, embedder=embedder)
    with pytest.raises(SnapshotError, match="different secret key"):
        other.restore(blob)
    with pytest.raises(SnapshotError):
        second.restore(blob[:-10])


def test_precomputed_embeddings_are_used_and_checked(det: Detector, embedder: Embedder) -> None:
    vec = tuple(float(x) for x in embedder.embed(["how do I bake sourdough bread"])[0])
    ev = Event(client_id="pre", prompt="ignored for cells", ts=1.0, embedding=vec)
    det.observe([ev])
    assert det.report("pre").query_count == 1
    with pytest.raises(EventError, match="383 dimensions, expected 384"):
        det.observe([Event(client_id="pre", prompt="x", ts=2.0, embedding=vec[:-1])])
    assert det.report("pre").query_count == 1
