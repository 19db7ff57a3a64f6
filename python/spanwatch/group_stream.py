"""`spanwatch run --role groups`: the group detector on Kafka.

It reads the compacted sketch topic, where every consumer of the group
publishes each client's latest summary at its checkpoints, and produces
group alerts. The topic is its state: on start it reads every partition
from the beginning (compaction keeps one record per client), so a restart
or a move to another machine loses nothing. One process runs this role.
Group alert ids depend on the members and severity only, so alerts raised
again after a restart carry the same id when the group has not changed.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from spanwatch.alerts import GroupAlert
from spanwatch.config import Settings
from spanwatch.deadletter import send_dead_letter
from spanwatch.detector import Detector
from spanwatch.errors import SpanwatchError
from spanwatch.groups import GroupDetector, Summary
from spanwatch.metrics import Metrics
from spanwatch.space import Space
from spanwatch.stream import durable_producer, ensure_topics

__all__ = ["GroupService"]

log = logging.getLogger("spanwatch.group_stream")


class GroupService:
    """Consumes client summaries, raises group alerts."""

    def __init__(self, settings: Settings, space: Space, *, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.k = settings.kafka
        self.groups: GroupDetector = Detector(settings, space=space).group_detector()
        self.metrics = metrics if metrics is not None else Metrics()
        self._stop = threading.Event()
        self._consumer: Any = None
        self._producer: Any = None
        self.alerts_sent = 0

    def stop(self) -> None:
        self._stop.set()

    def _connect(self) -> list[TopicPartition]:
        cfg = self.k.client_config()
        ensure_topics(self.k)
        self._producer = durable_producer(self.k)
        self._consumer = KafkaConsumer(**cfg, group_id=None, enable_auto_commit=False)
        parts = self._consumer.partitions_for_topic(self.k.sketch_topic)
        if not parts:
            raise SpanwatchError(f"sketch topic {self.k.sketch_topic} has no partitions")
        tps = [TopicPartition(self.k.sketch_topic, p) for p in sorted(parts)]
        self._consumer.assign(tps)
        self._consumer.seek_to_beginning(*tps)
        return tps

    def run(self, *, exit_when_idle: float | None = None) -> None:
        """Consumes until `stop()`, or, with `exit_when_idle`, until caught
        up and idle that many seconds."""
        tps = self._connect()
        idle_since: float | None = None
        try:
            while not self._stop.is_set():
                try:
                    polled = self._consumer.poll(timeout_ms=self.k.poll_timeout_ms)
                except KafkaError as e:
                    log.warning("poll failed (%s); retrying in 1s", e)
                    self._stop.wait(1.0)
                    continue
                records = [r for recs in polled.values() for r in recs]
                if records:
                    idle_since = None
                    self._process(records)
                    self._producer.flush()
                elif exit_when_idle is not None:
                    now = time.monotonic()
                    idle_since = idle_since or now
                    if now - idle_since >= exit_when_idle and self._caught_up(tps):
                        log.info("caught up and idle for %.1fs: stopping", exit_when_idle)
                        break
        finally:
            self._close()

    def _caught_up(self, tps: list[TopicPartition]) -> bool:
        try:
            end = self._consumer.end_offsets(tps)
            return all(self._consumer.position(tp) >= end[tp] for tp in tps)
        except KafkaError:
            return False

    def _close(self) -> None:
        for c, what in ((self._consumer, "consumer"), (self._producer, "producer")):
            if c is None:
                continue
            try:
                if what == "producer":
                    c.flush(timeout=30)
                c.close()
            except Exception as e:
                log.warning("%s close: %s", what, e)

    def _process(self, records: list[Any]) -> None:
        """The latest summary of each client in the batch; tombstones drop a
        client; a record that is not a valid summary is dead-lettered."""
        latest: dict[str, Any] = {}
        for r in records:
            if r.key is None:
                self._dead_letter(r, "summary record has no key")
                continue
            latest[r.key.decode("utf-8", "replace")] = r
        batch: list[Summary] = []
        sources = []
        for client, r in latest.items():
            if r.value is None:
                self.groups.forget(client)
                continue
            try:
                links = _links(r.headers)
                self.groups.check(r.value)
            except (SpanwatchError, ValueError) as e:
                self._dead_letter(r, f"bad summary: {e}")
                continue
            batch.append((r.value, links))
            sources.append(r)
        self.metrics.summaries.inc(len(batch))
        try:
            alerts = self.groups.update(batch)
        except Exception as e:  # as the detect role does: never stop on one record
            log.warning("a batch of %d summaries failed (%s): retrying one by one", len(batch), e)
            alerts = []
            for one, r in zip(batch, sources, strict=True):
                try:
                    alerts += self.groups.update([one])
                except Exception as e1:
                    self._dead_letter(r, f"processing failed: {e1}")
        for alert in alerts:
            self._send(alert)

    def _send(self, a: GroupAlert) -> None:
        self._producer.send(
            self.k.group_alerts_topic,
            key=a.alert_id.encode("utf-8"),
            value=a.to_json().encode("utf-8"),
        )
        self.metrics.group_alerts.labels(a.severity).inc()
        self.alerts_sent += 1

    def _dead_letter(self, r: Any, reason: str) -> None:
        send_dead_letter(self._producer, self.k.dead_letter_topic, self.metrics, r, reason)


def _links(headers: Any) -> list[str]:
    """The metadata link values from a summary record's `links` header."""
    for key, value in headers or []:
        if key == "links":
            vals = json.loads(value)
            if not isinstance(vals, list) or not all(isinstance(v, str) for v in vals):
                raise ValueError("the links header must be a JSON list of strings")
            return vals
    return []
