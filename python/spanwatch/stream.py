"""The Kafka service: consume prompts, detect, produce alerts, checkpoint state.

Delivery: at-least-once for alerts (ids are deterministic, so duplicates can
be dropped downstream), exactly-once for client state. Offsets are committed
only after the alerts of the events before them are acknowledged and the state
of every client they touched is written to the compacted state topic. Each
state record carries the source offset of the last event it includes, so
events replayed after a crash are skipped for clients whose restored state
already holds them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError
from kafka.structs import OffsetAndMetadata

from spanwatch import __version__
from spanwatch.alerts import Alert
from spanwatch.batch import Batch, parse_batch
from spanwatch.config import KafkaSettings, Settings
from spanwatch.deadletter import send_dead_letter
from spanwatch.detector import Detector
from spanwatch.embed import Embedder, LazyEmbedder
from spanwatch.errors import SnapshotError, SpanwatchError
from spanwatch.metrics import Metrics
from spanwatch.ocsf import to_ocsf
from spanwatch.space import Space

__all__ = ["Service", "durable_producer", "ensure_topics"]

log = logging.getLogger("spanwatch.stream")

_OFFSET = struct.Struct(">q")
# A poll (up to kafka.max_poll_records, 2000 by default) is processed in pieces
# of this many records: large polls let kafka-python fetch while the service
# works, and pieces keep each step, and the metrics it updates, short when
# prompts must be embedded.
CHUNK = 500


def chunks(records: dict[Any, list[Any]], size: int) -> Iterator[dict[Any, list[Any]]]:
    """A poll's records in pieces of at most `size`, each partition's in order."""
    piece: dict[Any, list[Any]] = {}
    room = size
    for tp, recs in records.items():
        i = 0
        while i < len(recs):
            take = recs[i : i + room]
            piece.setdefault(tp, []).extend(take)
            i += len(take)
            room -= len(take)
            if room == 0:
                yield piece
                piece, room = {}, size
    if piece:
        yield piece


@dataclass
class _Partition:
    """What the service holds for one assigned partition."""

    detector: Detector
    # client -> source offset of the last event folded in since the last checkpoint
    dirty: dict[str, int] = field(default_factory=dict)
    # client -> source offset its restored state already includes
    restored: dict[str, int] = field(default_factory=dict)
    next_offset: int | None = None
    committed: int | None = None
    last_record: float = field(default_factory=time.monotonic)


def apply_state_record(
    part: _Partition, key: bytes | None, value: bytes | None, metrics: Metrics
) -> int:
    """Applies one record of the state topic to a partition being restored;
    returns 1 if it restored a client, else 0. A tombstone drops the client.
    A record this build cannot read (written by an older sketch format, or
    damaged) is skipped with a warning and counted: that client starts afresh
    from its next events, and the consumer goes on with every other client."""
    store = part.detector.store
    assert store is not None
    if key is None:
        metrics.state_refused.inc()
        log.warning("state record without a key skipped")
        return 0
    client = key.decode("utf-8", errors="replace")
    if value is None:
        store.remove(client)
        part.restored.pop(client, None)
        return 0
    try:
        if len(value) < _OFFSET.size:
            raise SnapshotError("state record is truncated")
        (offset,) = _OFFSET.unpack_from(value)
        store.restore_client(value[_OFFSET.size :])
    except SnapshotError as e:
        # an earlier record of this client must not stand for it either
        store.remove(client)
        part.restored.pop(client, None)
        metrics.state_refused.inc()
        log.warning("state of client %s not restored, it starts afresh: %s", client, e)
        return 0
    part.restored[client] = offset
    return 1


def ensure_topics(k: KafkaSettings) -> None:
    """Creates the prompts, alerts, dead-letter, state, sketch and group
    alert topics if absent. The state topic is compacted and needs as many
    partitions as the prompts topic, since partition p's state lives in its
    partition p. The sketch topic is compacted too: one summary per client."""
    admin = KafkaAdminClient(**k.client_config())
    try:
        existing = set(admin.list_topics())

        def create(topics: list[NewTopic]) -> None:
            todo = [t for t in topics if t.name not in existing]
            if todo:
                with contextlib.suppress(TopicAlreadyExistsError):
                    admin.create_topics(todo)

        create(
            [
                NewTopic(k.prompts_topic, k.topic_partitions, k.replication_factor),
                NewTopic(k.alerts_topic, k.topic_partitions, k.replication_factor),
                NewTopic(k.dead_letter_topic, 1, k.replication_factor),
                NewTopic(k.group_alerts_topic, 1, k.replication_factor),
            ]
        )
        n = _partition_count(admin, k.prompts_topic)
        compact = {"cleanup.policy": "compact", "min.compaction.lag.ms": "0"}
        create(
            [
                NewTopic(t, n, k.replication_factor, topic_configs=compact)
                for t in (k.state_topic, k.sketch_topic)
            ]
        )
        ns = _partition_count(admin, k.state_topic)
        if ns < n:
            raise SpanwatchError(
                f"state topic {k.state_topic} has {ns} partitions but {k.prompts_topic} has {n}; "
                "it needs at least as many"
            )
    finally:
        admin.close()


def durable_producer(k: KafkaSettings) -> KafkaProducer:
    """A producer that waits for every replica and keeps retrying through a
    broker outage, so nothing sent is dropped while the service lives."""
    return KafkaProducer(
        **k.client_config(),
        acks="all",
        linger_ms=5,
        retries=2**31 - 1,
        delivery_timeout_ms=24 * 3600 * 1000,
        max_block_ms=24 * 3600 * 1000,
    )


def _partition_count(admin: Any, topic: str, wait_s: float = 30.0) -> int:
    """Partitions of a topic; a topic just created may show none for a
    moment, so this waits for its metadata."""
    deadline = time.monotonic() + wait_s
    while True:
        found = [
            t for t in admin.describe_topics([topic]) if t.get("name", t.get("topic")) == topic
        ]
        n = len(found[0]["partitions"]) if found else 0
        if n > 0:
            return n
        if time.monotonic() > deadline:
            raise SpanwatchError(f"topic {topic} has no partitions after {wait_s:.0f}s")
        time.sleep(0.2)


class Service:
    """One consumer of the group. Several processes with the same group id
    share the prompts topic's partitions, and their state moves with them."""

    def __init__(
        self,
        settings: Settings,
        space: Space,
        *,
        embedder: Embedder | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.k = settings.kafka
        self.space = space
        self._embedder = embedder
        self.metrics = metrics if metrics is not None else Metrics()
        self.parts: dict[int, _Partition] = {}
        self._stop = threading.Event()
        self._pending_assign: set[int] = set()
        self._last_checkpoint = time.monotonic()
        self._consumer: Any = None
        self._producer: Any = None
        self.alerts_sent = 0
        self._turns = 0  # polls that returned, for describe()
        self._last_turn = time.monotonic()

    # ------------------------------------------------------------ lifecycle

    def stop(self) -> None:
        """Asks the loop to finish its batch, checkpoint, commit and exit."""
        self._stop.set()

    def _detector(self) -> Detector:
        if self._embedder is None:
            # one model for all partitions, loaded when a prompt first needs it
            self._embedder = LazyEmbedder(self.settings.embed)
        return Detector(self.settings, space=self.space, embedder=self._embedder)

    def _connect(self) -> None:
        cfg = self.k.client_config()
        ensure_topics(self.k)
        self._producer = durable_producer(self.k)
        self._consumer = KafkaConsumer(
            **cfg,
            group_id=self.k.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self.k.max_poll_records,
            key_deserializer=None,
            value_deserializer=None,
        )
        self._consumer.subscribe([self.k.prompts_topic], listener=_Listener(self))

    def run(self, *, exit_when_idle: float | None = None) -> None:
        """Consumes until `stop()` (or SIGTERM via the CLI), or, with
        `exit_when_idle`, until caught up and idle that many seconds."""
        self._connect()
        idle_since: float | None = None
        try:
            while not self._stop.is_set():
                try:
                    records = self._poll()
                except KafkaError as e:  # the broker is away: wait, never give up
                    log.warning("poll failed (%s); retrying in 1s", e)
                    self._stop.wait(1.0)
                    continue
                self._turns += 1
                self._last_turn = time.monotonic()
                self._apply_assignments(records)
                if records:
                    idle_since = None
                    for chunk in chunks(records, CHUNK):
                        with self.metrics.batch_seconds.time():
                            self._process(chunk)
                elif exit_when_idle is not None:
                    now = time.monotonic()
                    idle_since = idle_since or now
                    if now - idle_since >= exit_when_idle and self._safe(self._caught_up):
                        log.info("caught up and idle for %.1fs: stopping", exit_when_idle)
                        break
                due = time.monotonic() - self._last_checkpoint >= self.k.checkpoint_interval_s
                if due:
                    self._safe(lambda: self._checkpoint(list(self.parts)))
                    self._safe(self._update_gauges)
                self._watch_stalls()
            self._checkpoint(list(self.parts))
        finally:
            self._close()

    def _poll(self) -> dict[Any, list[Any]]:
        return self._consumer.poll(  # type: ignore[no-any-return]
            timeout_ms=self.k.poll_timeout_ms, max_records=self.k.max_poll_records
        )

    @staticmethod
    def _safe(step: Any) -> Any:
        """Runs a step that talks to the broker; while the broker is away it
        logs and returns None, and the loop tries again on its next turn
        (nothing is committed that was not delivered)."""
        try:
            return step()
        except KafkaError as e:
            log.warning("%s failed (%s); will retry", getattr(step, "__name__", "step"), e)
            return None

    def _close(self) -> None:
        if self._consumer is not None:
            try:
                self._consumer.close(autocommit=False)
            except Exception as e:
                log.warning("consumer close: %s", e)
        if self._producer is not None:
            try:
                self._producer.flush(timeout=30)
                self._producer.close(timeout=30)
            except Exception as e:
                log.warning("producer close: %s", e)

    def describe(self) -> str:
        """One line on where the loop is, from the service's own counters
        (no broker call): for `kill -USR1` on a service that looks stuck."""
        now = time.monotonic()
        parts = ", ".join(
            f"{p}: next {part.next_offset}, committed {part.committed}, "
            f"last record {now - part.last_record:.0f}s ago"
            # a copy in one step: a rebalance callback may change the dict
            for p, part in sorted(dict(self.parts).items())
        )
        return (
            f"{self._turns} polls returned, the last {now - self._last_turn:.1f}s ago; "
            f"partitions {{{parts}}}; waiting to restore {sorted(self._pending_assign)}"
        )

    # ------------------------------------------------------------ rebalance

    def _on_assigned(self, partitions: set[int]) -> None:
        # Restoring needs its own consumer, which must not run inside this
        # consumer's callback: note it, and restore before the next batch.
        self._pending_assign |= {p for p in partitions if p not in self.parts}

    def _on_revoked(self, partitions: set[int], lost: bool) -> None:
        mine = [p for p in partitions if p in self.parts]
        if not lost:
            # This runs on the consumer's IO thread, where kafka-python cannot
            # commit. Flushing alerts and state is enough: the new owner
            # restores this state and skips the events it already holds.
            try:
                self._checkpoint(mine, commit=False)
            except Exception as e:
                log.warning("could not flush state of revoked partitions %s: %s", mine, e)
        for p in mine:
            del self.parts[p]
        self.metrics.partitions.set(len(self.parts))
        self._pending_assign -= set(partitions)
        log.info("partitions %s %s", sorted(partitions), "lost" if lost else "revoked")

    def _apply_assignments(self, records: dict[Any, list[Any]]) -> None:
        """Restores the state of partitions assigned during the last poll
        and, for those the poll returned no records of, settles where their
        reading starts. (One with records goes on from them: moving its
        position now would read them twice.)"""
        todo = sorted(self._pending_assign)
        self._pending_assign.clear()
        for p in todo:
            # No record of a partition may be processed before its state is
            # back, so a restore that meets a broker outage is retried.
            while True:
                try:
                    self.parts[p] = self._restore(p)
                    break
                except KafkaError as e:
                    if self._stop.is_set():
                        raise
                    log.warning("restoring partition %d failed (%s); retrying in 1s", p, e)
                    self._stop.wait(1.0)
        if todo:
            polled = {tp.partition for tp, recs in records.items() if recs}
            self._settle_positions([p for p in todo if p not in polled])
            self.metrics.partitions.set(len(self.parts))

    def _settle_positions(self, partitions: list[int]) -> None:
        """Puts each new partition's fetch position where its work begins:
        the group's committed offset, or the earliest. kafka-python keeps
        the position of a partition a consumer held before a rebalance, and
        it can lie past events the service processed but had not committed
        (the revocation callback cannot commit): left there, the partition's
        commit would never move again. The restored state skips the events
        read twice. An explicit position also ends an offset validation that
        poll() may never finish (dpkp/kafka-python#3106, #3131)."""
        for p in partitions:
            tp = TopicPartition(self.k.prompts_topic, p)
            try:
                self._consumer.seek(tp, self._start_offset(tp))
            except Exception as e:  # revoked meanwhile, or the broker is away
                log.info("partition %d: position not settled (%s)", p, e)

    def _restore(self, p: int) -> _Partition:
        """Reads partition p of the state topic from the start to its end."""
        part = _Partition(detector=self._detector())
        store = part.detector.store
        assert store is not None
        tp = TopicPartition(self.k.state_topic, p)
        c = KafkaConsumer(**self.k.client_config(), enable_auto_commit=False, group_id=None)
        n = 0
        try:
            c.assign([tp])
            c.seek_to_beginning(tp)
            end = c.end_offsets([tp])[tp]
            while c.position(tp) < end:
                for recs in c.poll(timeout_ms=1000).values():
                    for r in recs:
                        n += apply_state_record(part, r.key, r.value, self.metrics)
        finally:
            c.close()
        self.metrics.restored.inc(len(part.restored))
        log.info("partition %d: restored %d clients from %d state records", p, len(store), n)
        return part

    # ------------------------------------------------------------ processing

    def _process(self, records: dict[Any, list[Any]]) -> None:
        got = self._parse_poll(records)
        if got is None:
            return
        batch, recs, rows = got
        det = next(iter(self.parts.values())).detector
        # one embedding and one cell search for the whole poll, whatever the
        # partitions (they share the space); a failure falls back to each
        # partition's own batch, then to one event at a time
        try:
            emb = det.embed(batch)
            cells = self.space.assign(emb)
        except Exception as e:  # one bad prompt must not stop the batch
            log.warning("embedding the batch failed (%s): retrying event by event", e)
            emb, cells = None, None
        for p, ks in rows.items():
            whole = len(ks) == len(batch)  # rows are increasing: all of them
            sub = batch if whole else batch.take(ks)
            sub_cells = None if cells is None else cells if whole else cells[ks]
            # the embeddings too: a store that tracks stray queries needs them
            sub_emb = None if emb is None else emb if whole else emb[ks]
            recs_p = [recs[k] for k in ks]
            for a in self._observe(self.parts[p], recs_p, sub, sub_cells, sub_emb):
                self._send_alert(a)
        self.metrics.events.inc(len(batch))

    def _parse_poll(
        self, records: dict[Any, list[Any]]
    ) -> tuple[Batch, list[Any], dict[int, list[int]]] | None:
        """Parses a poll's records in one batch. Dead-letters the bad ones and
        skips the events a restored state already holds. Returns the batch of
        the rest, the record of each row, and each partition's rows; None if
        nothing is left."""
        recs: list[Any] = []
        parts: list[int] = []
        for tp, got in records.items():
            part = self.parts.get(tp.partition)
            if part is None:
                log.warning("records for unassigned partition %d dropped", tp.partition)
                continue
            if got:
                part.next_offset = got[-1].offset + 1
                part.last_record = time.monotonic()
                recs += got
                parts += [tp.partition] * len(got)
        if not recs:
            return None
        parsed = parse_batch(
            [r.value for r in recs],
            dim=self.space.dim,
            max_prompt_bytes=self.settings.max_prompt_bytes,
            default_ts=[
                r.timestamp / 1000.0 if r.timestamp and r.timestamp > 0 else None for r in recs
            ],
        )
        for i, reason in parsed.errors:
            self._dead_letter(recs[i], reason)
        keep: list[int] = []
        rows: dict[int, list[int]] = {}
        for j, i in enumerate(parsed.positions):
            p = parts[i]
            if self.parts[p].restored.get(parsed.batch.client_ids[j], -1) >= recs[i].offset:
                self.metrics.skipped.inc()
            else:
                rows.setdefault(p, []).append(len(keep))
                keep.append(j)
        if not keep:
            return None
        batch = parsed.batch if len(keep) == len(parsed.batch) else parsed.batch.take(keep)
        return batch, [recs[parsed.positions[j]] for j in keep], rows

    def _observe(
        self, part: _Partition, recs: list[Any], batch: Batch, cells: Any, emb: Any = None
    ) -> list[Alert]:
        """Observes a partition's events; if the batch fails as a whole, one
        event at a time, dead-lettering only the events that fail alone."""
        try:
            alerts = part.detector.observe(batch, emb, cells=cells)
            done = list(range(len(recs)))
        except Exception as e:
            log.warning("a batch of %d events failed (%s): retrying one by one", len(recs), e)
            alerts, done = [], []
            for j, r in enumerate(recs):
                try:
                    alerts += part.detector.observe(batch.take([j]))
                    done.append(j)
                except Exception as e1:
                    self._dead_letter(r, f"processing failed: {e1}")
        for j in done:
            part.dirty[batch.client_ids[j]] = recs[j].offset
        return alerts

    def _send_alert(self, a: Alert) -> None:
        if self.k.alerts_format == "ocsf":
            body = json.dumps(to_ocsf(a, __version__)).encode("utf-8")
        else:
            body = a.to_json().encode("utf-8")
        self._producer.send(self.k.alerts_topic, key=a.client_id.encode("utf-8"), value=body)
        self.metrics.alerts.labels(a.severity).inc()
        self.alerts_sent += 1

    def _dead_letter(self, r: Any, reason: str) -> None:
        send_dead_letter(self._producer, self.k.dead_letter_topic, self.metrics, r, reason)

    # ------------------------------------------------------------ checkpoints

    def _flush(self) -> None:
        """Blocks until every record sent so far is acknowledged, riding out a
        broker outage. Once asked to stop, it waits `shutdown_timeout_s` at
        most and then gives up without committing (the events are replayed
        on the next start)."""
        deadline: float | None = None
        while True:
            try:
                self._producer.flush(timeout=10)
                return
            except Exception as e:  # KafkaTimeoutError while the broker is away
                if self._stop.is_set():
                    deadline = deadline or time.monotonic() + self.shutdown_timeout_s
                    if time.monotonic() > deadline:
                        raise
                log.warning("waiting for the broker to acknowledge records: %s", e)

    shutdown_timeout_s = 60.0

    def _checkpoint(self, partitions: list[int], *, commit: bool = True) -> None:
        """Alerts acked, then state of dirty clients written and acked, then
        offsets committed: in that order, so a crash anywhere loses nothing."""
        self._last_checkpoint = time.monotonic()
        if self._producer is None:
            return
        self._flush()
        offsets = {}
        for p in partitions:
            part = self.parts.get(p)
            if part is None:
                continue
            store = part.detector.store
            assert store is not None
            for client, off in part.dirty.items():
                value = None
                if client in store:
                    value = _OFFSET.pack(off) + store.snapshot_client(client)
                self._producer.send(
                    self.k.state_topic, key=client.encode("utf-8"), value=value, partition=p
                )
            if self.settings.groups.enabled:
                self._publish_summaries(part)
            part.dirty.clear()
            if part.next_offset is not None and part.next_offset != part.committed:
                offsets[TopicPartition(self.k.prompts_topic, p)] = OffsetAndMetadata(
                    part.next_offset, "", -1
                )
        self._flush()
        if offsets and commit:
            self._consumer.commit(offsets)
            for tp, om in offsets.items():
                self.parts[tp.partition].committed = om.offset
            self.metrics.checkpoints.inc()

    def _publish_summaries(self, part: _Partition) -> None:
        """The summary of each dirty client, with its metadata link values,
        for the group detector; a tombstone for a client evicted since."""
        det = part.detector
        for client in part.dirty:
            found = det.summaries([client])
            value, headers = None, []
            if found:
                value = found[0][0]
                headers = [("links", json.dumps(list(found[0][1])).encode("utf-8"))]
            self._producer.send(
                self.k.sketch_topic, key=client.encode("utf-8"), value=value, headers=headers
            )
            self.metrics.summaries.inc()

    stall_after_s = 20.0
    _last_watch = 0.0

    def _watch_stalls(self) -> None:
        """kafka-python 3.0 can stop returning records of a partition after a
        rebalance (dpkp/kafka-python#3131). A partition that gave nothing for
        `stall_after_s` while records lie beyond the last one the service
        processed is sought back to that record's successor (or, before any,
        to the group's committed offset), which restarts its fetches. Lag is
        taken from what the service processed, not from the consumer's
        position, which can be ahead of it when fetched records were lost in a
        rebalance, or missing while an offset validation never ends."""
        now = time.monotonic()
        if now - self._last_watch < self.stall_after_s / 4 or not self.parts:
            return
        self._last_watch = now
        stale = {
            p: part for p, part in self.parts.items() if now - part.last_record > self.stall_after_s
        }
        if not stale:
            return
        tps = {p: TopicPartition(self.k.prompts_topic, p) for p in stale}
        try:
            ends = self._consumer.end_offsets(list(tps.values()))
            for p, tp in tps.items():
                pos = stale[p].next_offset
                if pos is None:
                    pos = self._start_offset(tp)
                if ends.get(tp, 0) > pos:
                    log.warning(
                        "partition %d: %d records behind but none fetched for %.0fs; "
                        "restarting its fetch at offset %d",
                        p,
                        ends[tp] - pos,
                        now - stale[p].last_record,
                        pos,
                    )
                    self._consumer.seek(tp, pos)
                stale[p].last_record = now
        except Exception as e:  # a broker outage: try again later
            log.warning("stall check failed: %s", e)

    def _start_offset(self, tp: TopicPartition) -> int:
        """Where this consumer's work on a partition begins: the group's
        committed offset, or with none the partition's first offset (the
        consumer reads from the earliest)."""
        committed = self._consumer.committed(tp, timeout_ms=5_000)
        if committed is not None:
            return int(committed)
        return int(self._consumer.beginning_offsets([tp], timeout_ms=5_000)[tp])

    # ------------------------------------------------------------ observability

    def _caught_up(self) -> bool:
        """Whether every partition's records up to its end were processed
        (by the service's own count where it has one, else from where its
        work begins: never the consumer's position, see _watch_stalls)."""
        if not self.parts:
            return False
        tps = {p: TopicPartition(self.k.prompts_topic, p) for p in self.parts}
        ends = self._consumer.end_offsets(list(tps.values()))

        def done(p: int) -> int:
            mine = self.parts[p].next_offset
            return mine if mine is not None else self._start_offset(tps[p])

        return all(done(p) >= ends[tp] for p, tp in tps.items())

    def _update_gauges(self) -> None:
        clients = evictions = 0
        for p, part in self.parts.items():
            store = part.detector.store
            if store is not None:
                clients += len(store)
                evictions += store.evictions
            hw = self._consumer.highwater(TopicPartition(self.k.prompts_topic, p))
            if hw is not None and part.next_offset is not None:
                self.metrics.lag.labels(str(p)).set(max(0, hw - part.next_offset))
        self.metrics.clients.set(clients)
        self.metrics.evictions.set(evictions)

    def counts(self) -> dict[str, int]:
        """Query count of every client held now (for tests and reports)."""
        out: dict[str, int] = {}
        for part in self.parts.values():
            store = part.detector.store
            assert store is not None
            ids = store.client_ids()
            if ids:
                col = store.feature_names.index("count")
                for cid, row in zip(ids, store.features(ids), strict=True):
                    out[cid] = int(row[col])
        return out


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Hands rebalance callbacks to the service."""

    def __init__(self, service: Service) -> None:
        self.service = service

    def on_partitions_revoked(self, revoked: Any) -> None:
        self.service._on_revoked({tp.partition for tp in revoked}, lost=False)

    def on_partitions_lost(self, lost: Any) -> None:
        self.service._on_revoked({tp.partition for tp in lost}, lost=True)

    def on_partitions_assigned(self, assigned: Any) -> None:
        self.service._on_assigned({tp.partition for tp in assigned})
