"""`spanwatch run` on a real Kafka broker: end to end, crashes, rebalances,
a broker outage and bad input."""

from __future__ import annotations

import base64
import json
import signal
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from kafka import KafkaConsumer, TopicPartition

from spanwatch import Detector, Event, Space
from spanwatch.config import load_settings
from spanwatch.detector import store_for
from spanwatch.embed import Embedder
from spanwatch.simulate import simulate
from spanwatch.stream import Service

from .kafka_env import Broker, Run, Topics, expected_counts, start_broker, wait_until

pytestmark = [pytest.mark.kafka, pytest.mark.model]

SECRET = "service-test-secret"


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    b = start_broker(tmp_path_factory.mktemp("kafka"))
    yield b
    b.sh("stop")


@pytest.fixture(autouse=True)
def reap_runs() -> Iterator[None]:
    yield
    Run.reap()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> dict[str, Any]:
    """Traffic, a fitted space, and what replay says of that traffic."""
    d = tmp_path_factory.mktemp("service")
    raw, _ = simulate(n_benign=14, n_harvesters=2, n_sweepers=1, n_template_sweepers=1, seed=5)
    lines = [json.dumps(e).encode() for e in raw]
    settings = load_settings(secret_key=SECRET)
    events = [Event.model_validate(e) for e in raw]
    det = Detector(settings, embedder=embedder)
    space = det.fit_space(events[:2000])
    space_path = d / "space.zip"
    space.save(space_path)
    replay = Detector(settings, space=Space.load(space_path), embedder=embedder)
    alerts = {a.alert_id: json.loads(a.to_json()) for a in replay.observe(events)}
    assert alerts, "the traffic must raise alerts for these tests to mean anything"
    return {
        "dir": d,
        "lines": lines,
        "space": space_path,
        "levels": space.levels,
        "alerts": alerts,
        "counts": expected_counts(lines),
        "cache": str(tmp_path_factory.getbasetemp() / "service-cache"),
    }


def _env(world: dict[str, Any], **extra: str) -> dict[str, str]:
    return {
        "SPANWATCH_SECRET_KEY": SECRET,
        "SPANWATCH_EMBED__CACHE_DIR": world["cache"],
        **extra,
    }


def _assert_alerts(t: Topics, expected: dict[str, Any]) -> None:
    """The alert topic holds exactly the expected alerts (copies allowed)."""
    got = t.alerts_by_id()

    def show(ids: set[str], alerts: dict[str, Any]) -> list[tuple[str, int]]:
        first = {i: a[0] if isinstance(a, list) else a for i, a in alerts.items()}
        return sorted((first[i]["client_id"], first[i]["evidence"]["query_count"]) for i in ids)

    extra, missing = set(got) - set(expected), set(expected) - set(got)
    assert not extra and not missing, (show(extra, got), show(missing, expected))
    for aid, copies in got.items():
        assert all(c == expected[aid] for c in copies), aid


def _assert_matches_replay(t: Topics, world: dict[str, Any]) -> None:
    _assert_alerts(t, world["alerts"])
    assert t.state_counts(SECRET.encode(), world["levels"]) == dict(world["counts"])


def test_end_to_end_alerts_equal_replay(broker: Broker, world: dict[str, Any]) -> None:
    t = Topics(broker)
    t.produce_lines(world["lines"])
    run = Run(t, world["space"], world["dir"] / "e2e.log", "--exit-when-idle", "4", **_env(world))
    assert run.wait(600) == 0, run.tail()
    got = t.alerts_by_id()
    assert all(len(c) == 1 for c in got.values()), "no duplicates without a crash"
    _assert_matches_replay(t, world)


def _slow(world: dict[str, Any]) -> dict[str, str]:
    # small polls, frequent checkpoints and every prompt embedded by the model
    # (not read from the cache, which the onnx default made fast enough to
    # finish the stream between two looks at the committed offsets), so a
    # kill lands mid-stream; onnx embeds each prompt alone, so the vectors
    # equal the cached ones
    return _env(
        world,
        SPANWATCH_KAFKA__MAX_POLL_RECORDS="15",
        SPANWATCH_KAFKA__CHECKPOINT_INTERVAL_S="0.2",
        SPANWATCH_EMBED__CACHE="false",
    )


def test_kill_9_mid_stream_then_restart_loses_nothing(
    broker: Broker, world: dict[str, Any]
) -> None:
    t = Topics(broker)
    t.produce_lines(world["lines"])
    total = len(world["lines"])
    first = Run(t, world["space"], world["dir"] / "kill.log", **_slow(world))
    wait_until(lambda: t.committed() >= total // 4, 300, "a quarter of the stream committed")
    # `kill -USR1` dumps the stacks and logs the loop's state, and the run goes on
    first.proc.send_signal(signal.SIGUSR1)
    wait_until(lambda: "state: " in first.tail(), 30, "the state line")
    logged = first.log.read_text(errors="replace")
    assert "Current thread" in logged and "polls returned" in logged
    assert first.proc.poll() is None
    first.kill()
    at_kill = t.committed()
    assert at_kill < total, "the kill must land mid-stream"
    second = Run(
        t, world["space"], world["dir"] / "kill.log", "--exit-when-idle", "4", **_env(world)
    )
    assert second.wait(600) == 0, second.tail()
    assert "restored" in second.tail()
    _assert_matches_replay(t, world)


def test_second_consumer_takes_over_partitions_with_state(
    broker: Broker, world: dict[str, Any]
) -> None:
    t = Topics(broker)
    t.produce_lines(world["lines"])
    total = len(world["lines"])
    a = Run(t, world["space"], world["dir"] / "a.log", **_slow(world))
    b = Run(t, world["space"], world["dir"] / "b.log", **_slow(world))
    wait_until(lambda: t.committed() >= total // 3, 300, "a third of the stream committed")
    assert b.term() == 0, b.tail()
    assert "revoked" in b.tail()
    wait_until(lambda: t.committed() >= total, 300, "the whole stream committed")
    assert a.term() == 0, a.tail()
    _assert_matches_replay(t, world)


def test_broker_outage_loses_no_events(broker: Broker, world: dict[str, Any]) -> None:
    t = Topics(broker)
    lines = world["lines"]
    half = len(lines) // 2
    t.produce_lines(lines[:half])
    run = Run(t, world["space"], world["dir"] / "outage.log", **_env(world))
    wait_until(lambda: t.committed() >= half, 300, "the first half committed")
    broker.sh("stop")
    import time

    time.sleep(8)
    broker.start()
    t.produce_lines(lines[half:])
    wait_until(lambda: t.committed() >= len(lines), 300, "the whole stream committed")
    assert run.term() == 0, run.tail()
    _assert_matches_replay(t, world)


def _settings(t: Topics, **extra: Any) -> Any:
    return load_settings(secret_key=SECRET, kafka={**t.kafka(), **extra})


class _Background:
    """A service run in a thread of the test, so the test can look at it."""

    def __init__(self, svc: Service) -> None:
        self.svc = svc
        self.thread = threading.Thread(target=svc.run)
        self.thread.start()

    def ends(self) -> dict[int, int]:
        c = KafkaConsumer(bootstrap_servers=[self.svc.k.bootstrap_servers])
        try:
            tps = [TopicPartition(self.svc.k.prompts_topic, p) for p in range(4)]
            return {tp.partition: off for tp, off in c.end_offsets(tps).items()}
        finally:
            c.close()

    def processed_all(self, ends: dict[int, int]) -> bool:
        parts = dict(self.svc.parts)
        return set(parts) == set(ends) and all(
            parts[p].next_offset == end for p, end in ends.items()
        )

    def stop(self) -> None:
        self.svc.stop()
        self.thread.join(120)
        assert not self.thread.is_alive()


def test_partitions_kept_through_a_rebalance_are_read_again_from_the_commit(
    broker: Broker, world: dict[str, Any], embedder: Embedder
) -> None:
    # The CI failure: a consumer keeps its fetch position for partitions it
    # holds before and after a rebalance, past events it processed but could
    # not commit; its new view of them must start from the commit, or their
    # offsets are never committed again.
    t = Topics(broker)
    t.produce_lines(world["lines"])
    settings = _settings(t, checkpoint_interval_s=3600.0)
    svc = Service(settings, Space.load(world["space"]), embedder=embedder)
    svc.stall_after_s = 3600.0  # the stall watch must not be what saves it
    run = _Background(svc)
    try:
        ends = run.ends()
        wait_until(lambda: run.processed_all(ends), 300, "every event processed")
        assert t.committed() == 0  # nothing committed before the rebalance
        other = KafkaConsumer(
            bootstrap_servers=[broker.bootstrap], group_id=t.group, enable_auto_commit=False
        )
        other.subscribe([t.prompts])
        wait_until(lambda: bool(other.poll(timeout_ms=200) or other.assignment()), 120, "a join")
        other.close(autocommit=False)
        wait_until(lambda: run.processed_all(ends), 120, "every partition read again")
    finally:
        run.stop()
    assert t.committed() == len(world["lines"])
    _assert_matches_replay(t, world)


class _SkipsAhead(Service):
    """A service whose consumer, on each new assignment, loses the records it
    fetched and moves past everything written so far, as kafka-python 3.0
    can after a rebalance (dpkp/kafka-python#3131): its position says there
    is nothing left to read while nothing was processed."""

    def _poll(self) -> dict[Any, list[Any]]:
        records = super()._poll()
        new = self._pending_assign - set(self.parts)
        return {tp: rs for tp, rs in records.items() if tp.partition not in new}

    def _settle_positions(self, partitions: list[int]) -> None:
        super()._settle_positions(partitions)
        for p in partitions:
            self._consumer.seek_to_end(TopicPartition(self.k.prompts_topic, p))


def test_a_partition_skipped_by_the_consumer_is_read_again_from_its_committed_offset(
    broker: Broker, world: dict[str, Any], embedder: Embedder
) -> None:
    t = Topics(broker)
    t.produce_lines(world["lines"])
    svc = _SkipsAhead(_settings(t), Space.load(world["space"]), embedder=embedder)
    svc.stall_after_s = 2.0
    run = _Background(svc)
    try:
        wait_until(lambda: t.committed() >= len(world["lines"]), 120, "the whole stream committed")
        # what `kill -USR1` logs: every partition read, none left to restore
        state = svc.describe()
        assert all(f"{p}: next " in state for p in range(4)), state
        assert "next None" not in state and "waiting to restore []" in state, state
    finally:
        run.stop()
    _assert_matches_replay(t, world)


STRAY_COLUMNS = ("count", "strays", "stray_mass")


def _stray_features(store: Any) -> dict[str, tuple[float, ...]]:
    ids = store.client_ids()
    cols = [store.feature_names.index(n) for n in STRAY_COLUMNS]
    return {c: tuple(row[cols]) for c, row in zip(ids, store.features(ids), strict=True)}


@pytest.fixture(scope="module")
def stray_world(
    tmp_path_factory: pytest.TempPathFactory, embedder: Embedder, world: dict[str, Any]
) -> dict[str, Any]:
    """The service's traffic with the stray tracker on and a calibration
    made with it, so alerts hang on the tracker's state; a one-process
    replay gives the alerts and each client's stray features."""
    d = tmp_path_factory.mktemp("strays")
    settings = load_settings(secret_key=SECRET, sketch={"strays": True})
    space = Space.load(world["space"])
    raw, _ = simulate(n_benign=80, n_harvesters=0, n_sweepers=0, n_template_sweepers=0, seed=21)
    det = Detector(settings, space=space, embedder=embedder)
    cal = det.calibrate([Event.model_validate(e) for e in raw], target_fpr=0.01)
    cal.save(d / "calibration.zip")
    replay = Detector(settings, space=space, embedder=embedder)
    replay.calibration = cal
    events = [Event.model_validate_json(line) for line in world["lines"]]
    alerts = {a.alert_id: json.loads(a.to_json()) for a in replay.observe(events)}
    features = _stray_features(replay.store)
    assert alerts, "the calibrated replay must alert for the test to mean anything"
    assert sum(f[1] > 0 for f in features.values()) >= 3, "clients must have strays"
    return {
        "settings": settings,
        "space": space,
        "alerts": alerts,
        "features": features,
        "env": {
            "SPANWATCH_SKETCH__STRAYS": "true",
            "SPANWATCH_SCORING__CALIBRATION": str(d / "calibration.zip"),
        },
    }


def test_kill_9_with_the_stray_tracker_on_loses_nothing(
    broker: Broker, world: dict[str, Any], stray_world: dict[str, Any]
) -> None:
    # The tracker's embeddings and random draws travel in the state records:
    # after a kill and a restart, alerts and stray counts equal the replay's.
    t = Topics(broker)
    t.produce_lines(world["lines"])
    total = len(world["lines"])
    env = stray_world["env"]
    first = Run(t, world["space"], world["dir"] / "strays.log", **_slow(world), **env)
    wait_until(lambda: t.committed() >= total // 4, 300, "a quarter of the stream committed")
    first.kill()
    assert t.committed() < total, "the kill must land mid-stream"
    second = Run(
        t, world["space"], world["dir"] / "strays.log", "--exit-when-idle", "4",
        **_env(world, **env),
    )  # fmt: skip
    assert second.wait(600) == 0, second.tail()
    assert "restored" in second.tail()
    _assert_alerts(t, stray_world["alerts"])
    store = store_for(stray_world["space"], stray_world["settings"])
    for value in t.latest_state().values():
        if value is not None:
            store.restore_client(value[8:])
    got = _stray_features(store)
    assert got.keys() == stray_world["features"].keys()
    for client, want in stray_world["features"].items():
        assert got[client] == pytest.approx(want, rel=1e-9), client


def test_bad_input_goes_to_dead_letters_and_the_next_event_is_processed(
    broker: Broker, world: dict[str, Any]
) -> None:
    t = Topics(broker)
    ok = {"client_id": "good-client", "prompt": "How do I repot a fern?", "ts": 1767225600.0}
    bad = [
        (b"{not json", "malformed JSON"),
        (b'{"prompt": "hi", "ts": 1}', "missing field client_id"),
        (b'{"client_id": "", "prompt": "hi", "ts": 1}', "client_id"),
        (b'{"client_id": "x", "prompt": "hi", "ts": "soon"}', "ts:"),
        (b'{"client_id": "x", "prompt": "' + b"p" * 40_000 + b'", "ts": 1}', "over the limit"),
        (b'{"client_id": "x", "prompt": "\xc3\x28", "ts": 1}', "invalid UTF-8"),
        (
            json.dumps(
                {"client_id": "x", "prompt": "hi", "ts": 1, "embedding": [0.1] * 5}
            ).encode(),
            "embedding has 5 dimensions, expected 384",
        ),
    ]
    lines = [raw for raw, _ in bad] + [json.dumps(ok).encode()]
    t.produce_lines(lines, keys=[b"k"] * len(lines))
    run = Run(t, world["space"], world["dir"] / "bad.log", "--exit-when-idle", "3", **_env(world))
    assert run.wait(300) == 0, run.tail()
    dead = [json.loads(r.value) for r in t.read_all(t.dead)]
    assert len(dead) == len(bad)
    dead.sort(key=lambda d: d["source"]["offset"])
    for d, (raw, reason) in zip(dead, bad, strict=True):
        assert reason in d["reason"], (d["reason"], reason)
        assert base64.b64decode(d["value_b64"]) == raw
        assert d["source"]["topic"] == t.prompts
    assert t.state_counts(SECRET.encode(), world["levels"]) == {"good-client": 1}


@pytest.fixture(scope="module")
def group_world(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> dict[str, Any]:
    """A calibrated detector's space and calibration files, traffic with a
    harvest split over 8 accounts of one org, and the accounts a
    single-process run names in group alerts."""
    from spanwatch.groups import GroupDetector

    from .test_groups import _traffic

    d = tmp_path_factory.mktemp("groups")
    settings = load_settings(secret_key=SECRET, groups={"link_keys": ["org"]})
    raw, _ = simulate(n_benign=80, n_harvesters=0, n_sweepers=0, n_template_sweepers=0, seed=21)
    det = Detector(settings, embedder=embedder)
    det.fit_space([Event.model_validate(e) for e in raw])
    cal = det.calibrate([Event.model_validate(e) for e in raw], target_fpr=0.01)
    assert det.space is not None
    det.space.save(d / "space.zip")
    cal.save(d / "calibration.zip")
    events, sybils, _ = _traffic(accounts=8)
    one = Detector(settings, space=det.space, embedder=embedder)
    one.calibration = cal
    groups: GroupDetector = one.group_detector()
    named: set[str] = set()
    for i in range(0, len(events), 200):
        one.observe(events[i : i + 200])
        named |= {
            m.client_id for a in groups.update(one.summaries(one.checkpointed)) for m in a.members
        }
    assert named == sybils, "the single-process run must name exactly the split harvest"
    lines = [e.model_dump_json(exclude_none=True).encode() for e in events]
    return {
        "dir": d,
        "lines": lines,
        "space": d / "space.zip",
        "levels": det.space.levels,
        "named": named,
        "counts": expected_counts(lines),
        "cache": str(tmp_path_factory.getbasetemp() / "service-cache"),
        "env": {
            "SPANWATCH_SCORING__CALIBRATION": str(d / "calibration.zip"),
            "SPANWATCH_GROUPS__ENABLED": "true",
            "SPANWATCH_GROUPS__LINK_KEYS": '["org"]',
        },
    }


def test_two_consumers_and_a_group_detector_match_one_process(
    broker: Broker, group_world: dict[str, Any]
) -> None:
    w = group_world
    t = Topics(broker)
    t.produce_lines(w["lines"])
    total = len(w["lines"])
    env = {**_slow(w), **w["env"]}
    a = Run(t, w["space"], w["dir"] / "a.log", **env)
    b = Run(t, w["space"], w["dir"] / "b.log", **env)
    g = Run(t, w["space"], w["dir"] / "g.log", "--role", "groups", **env)

    def named() -> set[str]:
        alerts = [json.loads(r.value) for r in t.read_all(t.group_alerts)]
        return {m["client_id"] for al in alerts for m in al["members"]}

    wait_until(lambda: t.committed() >= total // 3, 300, "a third of the stream committed")
    assert b.term() == 0, b.tail()  # one consumer stops mid-stream
    from kafka import KafkaProducer

    p = KafkaProducer(bootstrap_servers=[broker.bootstrap], acks="all")
    p.send(t.sketches, key=b"bogus", value=b"not a summary", headers=[("links", b"[]")])
    p.flush()
    p.close()
    wait_until(lambda: t.committed() >= total, 300, "the whole stream committed")
    assert a.term() == 0, a.tail()
    try:
        wait_until(lambda: named() == w["named"], 120, "group alerts naming the split harvest")
    except TimeoutError as e:
        raise AssertionError(f"named {sorted(named())}, want {sorted(w['named'])}\n{e}") from None
    assert g.term() == 0, g.tail()
    assert t.state_counts(SECRET.encode(), w["levels"]) == dict(w["counts"])
    alerts = [json.loads(r.value) for r in t.read_all(t.group_alerts)]
    assert all(al["kind"] == "group" and al["score"] >= al["threshold"] for al in alerts)
    (dead,) = [json.loads(r.value) for r in t.read_all(t.dead)]
    assert dead["reason"].startswith("bad summary") and dead["source"]["topic"] == t.sketches
    assert base64.b64decode(dead["value_b64"]) == b"not a summary"
