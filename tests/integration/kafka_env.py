"""A real local broker for the integration tests, started with
scripts/kafka.sh, and helpers to drive `spanwatch run` as a real process."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaError

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "kafka.sh"


def free_port() -> int:
    """A free port below the ephemeral range, where outgoing connections
    cannot be holding it."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 20000-32000")


@dataclass
class Broker:
    home: Path
    port: int
    controller_port: int

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def sh(self, *args: str, timeout: float = 180) -> None:
        env = {
            **os.environ,
            "KAFKA_HOME": str(self.home),
            "KAFKA_PORT": str(self.port),
            "KAFKA_CONTROLLER_PORT": str(self.controller_port),
        }
        subprocess.run(["bash", str(SCRIPT), *args], env=env, check=True, timeout=timeout)

    def start(self) -> None:
        self.sh("start")
        self.sh("wait", "90")


def start_broker(home: Path) -> Broker:
    b = Broker(home, free_port(), free_port())
    b.sh("setup", timeout=900)
    b.start()
    return b


@dataclass
class Topics:
    """One test's own topics and group, so tests never see each other's data."""

    broker: Broker
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    @property
    def prompts(self) -> str:
        return f"prompts-{self.tag}"

    @property
    def alerts(self) -> str:
        return f"alerts-{self.tag}"

    @property
    def dead(self) -> str:
        return f"dead-{self.tag}"

    @property
    def state(self) -> str:
        return f"state-{self.tag}"

    @property
    def sketches(self) -> str:
        return f"sketches-{self.tag}"

    @property
    def group_alerts(self) -> str:
        return f"group-alerts-{self.tag}"

    @property
    def group(self) -> str:
        return f"group-{self.tag}"

    def kafka(self) -> dict[str, str]:
        """The `[kafka]` settings that point spanwatch at these topics."""
        return {
            "bootstrap_servers": self.broker.bootstrap,
            "prompts_topic": self.prompts,
            "alerts_topic": self.alerts,
            "dead_letter_topic": self.dead,
            "state_topic": self.state,
            "sketch_topic": self.sketches,
            "group_alerts_topic": self.group_alerts,
            "group_id": self.group,
        }

    def env(self, **extra: str) -> dict[str, str]:
        mine = {f"SPANWATCH_KAFKA__{k.upper()}": v for k, v in self.kafka().items()}
        return {**os.environ, **mine, **extra}

    def produce_lines(self, lines: list[bytes], keys: list[bytes | None] | None = None) -> None:
        p = KafkaProducer(bootstrap_servers=[self.broker.bootstrap], acks="all")
        for i, line in enumerate(lines):
            key = keys[i] if keys is not None else _key(line)
            p.send(self.prompts, key=key, value=line)
        p.flush()
        p.close()

    def read_all(self, topic: str, timeout: float = 10.0) -> list[Any]:
        """Every record of a topic, from the beginning to its current end."""
        c = KafkaConsumer(bootstrap_servers=[self.broker.bootstrap], enable_auto_commit=False)
        try:
            parts = c.partitions_for_topic(topic) or set()
            tps = [TopicPartition(topic, p) for p in sorted(parts)]
            if not tps:
                return []
            c.assign(tps)
            c.seek_to_beginning(*tps)
            ends = c.end_offsets(tps)
            out: list[Any] = []
            deadline = time.monotonic() + timeout
            while any(c.position(tp) < ends[tp] for tp in tps):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"could not read {topic} to its end")
                for recs in c.poll(timeout_ms=500).values():
                    out.extend(recs)
            return out
        finally:
            c.close()

    def alerts_by_id(self) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for r in self.read_all(self.alerts):
            a = json.loads(r.value)
            out.setdefault(a["alert_id"], []).append(a)
        return out

    def latest_state(self) -> dict[str, bytes | None]:
        """The latest record of each client in the state topic (None for a
        tombstone); a value is the 8-byte offset, then the client's sketch."""
        latest: dict[str, bytes | None] = {}
        for r in self.read_all(self.state):
            latest[r.key.decode()] = r.value
        return latest

    def state_counts(self, secret: bytes, levels: list[int]) -> dict[str, int]:
        """Query count per client from the latest record of each client in
        the state topic (a tombstone removes the client)."""
        from spanwatch._core import SketchStore

        store = SketchStore(secret=secret, levels=levels)
        for value in self.latest_state().values():
            if value is not None:
                store.restore_client(value[8:])
        col = store.feature_names.index("count")
        ids = store.client_ids()
        return {cid: int(row[col]) for cid, row in zip(ids, store.features(ids), strict=True)}

    def committed(self) -> int:
        """Offsets committed by the group, summed over partitions."""
        admin = KafkaAdminClient(bootstrap_servers=[self.broker.bootstrap])
        try:
            try:
                offs = admin.list_group_offsets(self.group).get(self.group, {})
            except KafkaError:  # the group's coordinator is not there yet
                return 0
            mine = [o.offset for tp, o in offs.items() if tp.topic == self.prompts]
            return sum(o for o in mine if o > 0)
        finally:
            admin.close()


def _key(line: bytes) -> bytes | None:
    try:
        cid = json.loads(line).get("client_id")
        return cid.encode() if isinstance(cid, str) else None
    except (ValueError, AttributeError, UnicodeDecodeError):
        return None


def expected_counts(lines: list[bytes]) -> Counter[str]:
    c: Counter[str] = Counter()
    for line in lines:
        c[json.loads(line)["client_id"]] += 1
    return c


class Run:
    """`spanwatch run` as a child process. Every one started is killed at the
    end of its test if still alive (see `reap`)."""

    started: ClassVar[list[Run]] = []

    def __init__(self, topics: Topics, space: Path, log: Path, *args: str, **env: str) -> None:
        Run.started.append(self)
        self.stopped = False
        self.log = log
        self._fh = log.open("ab")
        cmd = [sys.executable, "-m", "spanwatch.cli", "-v", "run", "--space", str(space), *args]
        self.proc = subprocess.Popen(cmd, env=topics.env(**env), stdout=self._fh, stderr=self._fh)

    def wait(self, timeout: float = 300) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self._fh.close()

    def term(self) -> int:
        self.stopped = True
        self.proc.send_signal(signal.SIGTERM)
        return self.wait(120)

    def kill(self) -> None:
        self.stopped = True
        self.proc.kill()
        self.wait(30)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    @classmethod
    def reap(cls) -> None:
        for run in cls.started:
            if run.proc.poll() is None:
                run.proc.kill()
                run.proc.wait(30)
            if not run._fh.closed:
                run._fh.close()
        cls.started.clear()


def wait_until(cond: Any, timeout: float, what: str, every: float = 0.1) -> None:
    """Waits for cond(); fails at once if a service process has died."""
    deadline = time.monotonic() + timeout
    while not cond():
        for run in Run.started:
            code = run.proc.poll()
            if code is not None and code != -signal.SIGKILL and not run.stopped:
                raise AssertionError(f"spanwatch run exited with {code}:\n{run.tail()}")
        if time.monotonic() > deadline:
            tails = []
            for run in Run.started:
                if run.proc.poll() is None:
                    run.proc.send_signal(signal.SIGUSR1)  # the service dumps its stacks
            time.sleep(1.5)
            tails = [f"--- {run.log.name}:\n{run.tail()}" for run in Run.started]
            raise TimeoutError(f"timed out waiting for {what}\n" + "\n".join(tails))
        time.sleep(every)


def lines_of(path: Path) -> Iterator[bytes]:
    for line in path.read_bytes().splitlines():
        if line.strip():
            yield line
