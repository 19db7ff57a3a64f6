"""End-to-end throughput of `spanwatch run` through a real local Kafka broker.

What is measured, in one run, on the same machine:

A. raw embedder: `SentenceTransformerEmbedder().embed(prompts)` (the default backend, the
   one `spanwatch run` uses) on simulated prompts, no embedding cache (the baseline of row B).
B. `spanwatch run` on prompt-only events: the same prompts are produced to a fresh topic,
   then the service runs as a child process (`python -m spanwatch.cli run`, cache off).
   Events/s is taken from its Prometheus counter `spanwatch_events_total`, polled every
   0.1 s: (last value - first non-zero value) / (time between them), so model load,
   topic creation and the idle wait at the end are not counted. Target: B/A >= 0.9.
C. `spanwatch run` on events that carry a precomputed `embedding` (384 floats rounded to
   4 decimals), N = 50,000 (10,000 with --quick), pre-produced. Target: >= 50k events/s.
C2. the same events with the vector in `embedding_b64` (base64 of little-endian float32)
   instead of a JSON list.
C3. row C2 with `space.assign = "exact"` (every centroid of every level) instead of the
   default "descent" (the 4,096-cell level searched among the children of the 16 best
   cells of the 256-cell level, in Rust).
C5. row C2 with `space.assign = "ivf"` (an inverted file for the 4,096-cell level).
C6. row C2 with `kafka.max_poll_records = 500` (the default before 2,000).
C4. row C2 on two `spanwatch run` processes in one consumer group (4 partitions), one per
   core: their summed counters, from the moment each holds two partitions to the moment
   the first has nothing left (row C2's events produced three times, so that most of them
   are left when the group has settled).
K. a bare kafka-python consumer reading row C's topic with no processing: the ceiling of
   any Python consumer on these records.
P. the benchmark's own kafka-python producer sending row C's records to a fresh topic:
   records/s and CPU time per record, which row D's producer takes from the shared cores.
D. lag at 80% of row C's rate: once the service holds its partitions, a thread produces
   at a steady rate; every second, lag = records produced - `spanwatch_events_total`
   (a scrape of the counter that fails is skipped, not read as zero).
   Reports max lag and whether it grows (the slope of a line through the samples above 5%
   of the produce rate).

A broker is started with scripts/kafka.sh in its own KAFKA_HOME and on free ports, and is
always stopped at the end. Run from the repo root:

    python bench/python/bench_service.py            # full run, a few minutes
    python bench/python/bench_service.py --quick    # smaller inputs
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sketch import (
    cpu_ticks,
    load_line,
    machine_line,
    status,
)

REPO = Path(__file__).resolve().parents[2]
KAFKA_SH = REPO / "scripts" / "kafka.sh"
OTHERS = "others' cpus"
TARGET_RATIO = 0.9
TARGET_EPS = 50_000.0
FIT_POINTS = 20_000
EVENTS_RE = re.compile(r"^spanwatch_events_total\s+([0-9.eE+]+)", re.M)
PARTITIONS_RE = re.compile(r"^spanwatch_assigned_partitions\s+([0-9.eE+]+)", re.M)

T = TypeVar("T")


@dataclass(frozen=True)
class Sizes:
    prompts: int  # rows A and B
    embedded: int  # row C
    unique_vectors: int  # distinct precomputed embeddings reused in row C
    lag_seconds: float  # row D


FULL = Sizes(2_000, 50_000, 2_000, 20.0)
QUICK = Sizes(600, 10_000, 600, 10.0)


@dataclass
class Row:
    name: str
    events: int
    eps: float
    others: float
    ratio: str = ""
    target: str = ""
    met: str = ""


# ---------------------------------------------------------------- machine


def busy_cpus(run: Callable[[], T]) -> tuple[T, float]:
    """Calls `run`; also returns how many cpus the whole machine kept busy meanwhile
    (broker, service and this process included: row B/C/D use all of them)."""
    idle0, total0 = cpu_ticks()
    wall0 = time.perf_counter()
    out = run()
    idle1, total1 = cpu_ticks()
    busy = (total1 - total0 - (idle1 - idle0)) / os.sysconf("SC_CLK_TCK")
    return out, busy / (time.perf_counter() - wall0)


# ---------------------------------------------------------------- broker


def free_port(low: int = 20_000, high: int = 32_000, skip: int = 0) -> int:
    rng = np.random.default_rng()
    while True:
        port = int(rng.integers(low, high))
        if port == skip:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port


class Broker:
    """scripts/kafka.sh with its own KAFKA_HOME and ports."""

    def __init__(self, home: Path) -> None:
        port = free_port()
        self.env = {
            **os.environ,
            "KAFKA_HOME": str(home),
            "KAFKA_PORT": str(port),
            "KAFKA_CONTROLLER_PORT": str(free_port(skip=port)),
        }
        self.bootstrap = f"127.0.0.1:{port}"

    def sh(self, *args: str, timeout: float = 300) -> None:
        subprocess.run(["bash", str(KAFKA_SH), *args], env=self.env, check=True, timeout=timeout)

    def start(self) -> None:
        self.sh("setup")
        self.sh("start", timeout=120)
        self.sh("wait", "90", timeout=120)

    def stop(self) -> None:
        self.sh("stop", timeout=90)


# ---------------------------------------------------------------- traffic


def prompts_events(n: int, seed: int) -> list[dict[str, Any]]:
    """At least n simulated events (seeds from `seed` up), cut to n."""
    from spanwatch.simulate import simulate

    out: list[dict[str, Any]] = []
    while len(out) < n:
        evs, _ = simulate(seed=seed)
        out += evs
        seed += 1
    return out[:n]


def embedded_events(
    base: list[dict[str, Any]], vectors: np.ndarray, n: int, b64: bool = False
) -> list[bytes]:
    """n JSON events that reuse `base` prompts and their vectors round-robin, with the
    client ids suffixed per pass so that clients keep growing. With `b64`, the vector goes
    in `embedding_b64` (little-endian float32, base64) instead of a JSON list."""
    out = []
    for i in range(n):
        j = i % len(base)
        ev = dict(base[j])
        ev["client_id"] = f"{ev['client_id']}-{i // len(base)}"
        ev["event_id"] = f"e{i}"
        if b64:
            ev["embedding_b64"] = base64.b64encode(vectors[j].astype("<f4").tobytes()).decode()
        else:
            ev["embedding"] = [round(float(x), 4) for x in vectors[j]]
        out.append(json.dumps(ev, separators=(",", ":")).encode())
    return out


def encode(events: list[dict[str, Any]]) -> list[bytes]:
    return [json.dumps(e, separators=(",", ":")).encode() for e in events]


def producer(bootstrap: str) -> Any:
    from kafka import KafkaProducer

    return KafkaProducer(
        bootstrap_servers=[bootstrap],
        acks=1,
        linger_ms=20,
        batch_size=1 << 20,
        max_request_size=8 << 20,
    )


def produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    p = producer(bootstrap)
    for v in values:
        p.send(topic, key=_key(v), value=v)
    p.flush(timeout=300)
    p.close()


def _key(value: bytes) -> bytes:
    i = value.index(b'"client_id":"') + len(b'"client_id":"')
    return value[i : value.index(b'"', i)]


# ---------------------------------------------------------------- service


@dataclass
class Run:
    """One `spanwatch run` child with topics and group unique to it."""

    bootstrap: str
    space: Path
    workdir: Path
    tag: str
    extra: dict[str, str] = field(default_factory=dict)  # more environment for the child

    def __post_init__(self) -> None:
        self.prompts_topic = f"bench-prompts-{self.tag}"
        self.metrics_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        k = "SPANWATCH_KAFKA__"
        return {
            **os.environ,
            f"{k}BOOTSTRAP_SERVERS": self.bootstrap,
            f"{k}PROMPTS_TOPIC": self.prompts_topic,
            f"{k}ALERTS_TOPIC": f"bench-alerts-{self.tag}",
            f"{k}DEAD_LETTER_TOPIC": f"bench-dead-{self.tag}",
            f"{k}STATE_TOPIC": f"bench-state-{self.tag}",
            f"{k}GROUP_ID": f"bench-group-{self.tag}",
            "SPANWATCH_SECRET_KEY": "bench-" + uuid.uuid4().hex,
            "SPANWATCH_EMBED__CACHE": "false",
            **self.extra,
        }

    def create_topics(self) -> None:
        from spanwatch.config import Settings
        from spanwatch.stream import ensure_topics

        old = dict(os.environ)
        os.environ.update(self.env())
        try:
            ensure_topics(Settings().kafka)
        finally:
            os.environ.clear()
            os.environ.update(old)

    def start(self, idle: float = 3.0) -> None:
        cmd = [
            sys.executable, "-m", "spanwatch.cli", "run", "--space", str(self.space),
            "--exit-when-idle", str(idle), "--metrics-port", str(self.metrics_port),
        ]  # fmt: skip
        # one log per process: the processes of a group share the tag, not the port
        log = (self.workdir / f"run-{self.tag}-{self.metrics_port}.log").open("wb")
        self.proc = subprocess.Popen(cmd, env=self.env(), stdout=log, stderr=log)

    def metric(self, pattern: re.Pattern[str], timeout: float = 1.0) -> float | None:
        try:
            url = f"http://127.0.0.1:{self.metrics_port}/metrics"
            with urllib.request.urlopen(url, timeout=timeout) as r:
                m = pattern.search(r.read().decode())
            return float(m.group(1)) if m else None
        except OSError:
            return None

    def events(self, timeout: float = 1.0) -> float | None:
        return self.metric(EVENTS_RE, timeout)

    def wait(self, timeout: float) -> list[tuple[float, float]]:
        """Polls the events counter until the child exits; returns (time, count) samples."""
        return poll_runs([self], timeout, self.events)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def poll_runs(
    runs: list[Run], timeout: float, read: Callable[[], T | None]
) -> list[tuple[float, T]]:
    """Calls `read` every 0.1 s until every run has exited, keeping (time, value) for each
    value that is not None. A run that outlives `timeout` is stopped and raises, as does
    one that exits with an error."""
    samples: list[tuple[float, T]] = []
    deadline = time.monotonic() + timeout
    while any(r.proc is not None and r.proc.poll() is None for r in runs):
        if time.monotonic() > deadline:
            for r in runs:
                r.kill()
            raise RuntimeError(f"service run {runs[0].tag} timed out (log in {runs[0].workdir})")
        v = read()
        if v is not None:
            samples.append((time.perf_counter(), v))
        time.sleep(0.1)
    bad = [r.proc.returncode for r in runs if r.proc is not None and r.proc.returncode]
    if bad:
        raise RuntimeError(f"service run {runs[0].tag} exited {bad}")
    return samples


def rate(samples: list[tuple[float, float]], n: int) -> float:
    """Events/s between the first non-zero sample and the first sample that reached the
    final count (the service is idle after that)."""
    live = [(t, v) for t, v in samples if v > 0]
    if len(live) < 2:
        raise RuntimeError("too few metric samples to time the run")
    final = live[-1][1]
    if final < n:
        raise RuntimeError(f"service processed {final:.0f} of {n} events")
    t_end = next(t for t, v in live if v >= final)
    t0, v0 = live[0]
    return (final - v0) / max(t_end - t0, 1e-9)


def consumer_eps(run: Run, n: int) -> float:
    """Records/s that a bare kafka-python consumer reads from the run's topic, with no
    processing at all: the ceiling for `spanwatch run` on these records."""
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=[run.bootstrap], enable_auto_commit=False)
    try:
        parts = c.partitions_for_topic(run.prompts_topic) or set()
        tps = [TopicPartition(run.prompts_topic, p) for p in sorted(parts)]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        got, t0 = 0, time.perf_counter()
        while got < n:
            for recs in c.poll(timeout_ms=1000, max_records=500).values():
                got += len(recs)
        return got / (time.perf_counter() - t0)
    finally:
        c.close()


def producer_cost(run: Run, values: list[bytes]) -> tuple[float, float]:
    """Records/s and CPU microseconds per record (this process, all its threads) of the
    benchmark's own producer sending `values` to a fresh topic: what row D's producer
    takes from the cores it shares with the broker and the service."""
    run.create_topics()
    t0, c0 = time.perf_counter(), time.process_time()
    produce(run.bootstrap, run.prompts_topic, values)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return len(values) / wall, cpu / len(values) * 1e6


def service_eps(run: Run, values: list[bytes], timeout: float) -> float:
    run.create_topics()
    produce(run.bootstrap, run.prompts_topic, values)
    run.start()
    try:
        return rate(run.wait(timeout), len(values))
    finally:
        run.kill()


def pair_eps(runs: list[Run], values: list[bytes], timeout: float, passes: int = 3) -> float:
    """Events/s of several `spanwatch run` processes in one consumer group (same tag,
    topics, group and secret; their own metrics ports), from their summed counters. The
    events go in `passes` times before the processes start. Only the window in which all
    of them work counts: from the moment each holds its share of the partitions (the
    group's join and rebalance are not timed) to the moment the first one has no more to
    do."""
    runs[0].create_topics()
    produce(runs[0].bootstrap, runs[0].prompts_topic, values * passes)
    for r in runs:
        r.start(idle=5.0)
    from spanwatch.config import Settings

    share = Settings().kafka.topic_partitions // len(runs)
    last = [0.0] * len(runs)  # a process's count outlives its exit
    settled = [False]

    def read() -> list[float] | None:
        last[:] = [r.events() or old for r, old in zip(runs, last, strict=True)]
        settled[0] = settled[0] or all(r.metric(PARTITIONS_RE) == share for r in runs)
        return list(last) if settled[0] else None

    try:
        samples = poll_runs(runs, timeout, read)
        if sum(last) < len(values) * passes or len(samples) < 2:
            raise RuntimeError(f"service runs {runs[0].tag}: {sum(last):,.0f} events counted")
        t0, first = samples[0]
        t_end, end = next(
            (t, c) for t, c in samples if any(x >= f for x, f in zip(c, last, strict=True))
        )
        return (sum(end) - sum(first)) / max(t_end - t0, 1e-9)
    finally:
        for r in runs:
            r.kill()


# ---------------------------------------------------------------- rows


def row_embedder(prompts: list[str]) -> float:
    from spanwatch.embed import SentenceTransformerEmbedder

    emb = SentenceTransformerEmbedder(batch_size=64)
    emb.embed(prompts[:64])  # warm-up
    t0 = time.perf_counter()
    emb.embed(prompts)
    return len(prompts) / (time.perf_counter() - t0)


def fit_space(events: list[dict[str, Any]], vectors: np.ndarray, out: Path) -> None:
    """Fits the space once on events that carry their embeddings."""
    from spanwatch.config import Settings
    from spanwatch.detector import Detector
    from spanwatch.events import parse_event

    # The finest level (4096 cells) needs ~16k points; to spare embedding that many
    # prompts, the vectors are repeated with small noise (throughput does not depend on
    # where the cells lie).
    rng = np.random.default_rng(0)
    copies = -(-FIT_POINTS // len(vectors))
    pts = np.concatenate([vectors + rng.normal(0, 0.02, vectors.shape) for _ in range(copies)])
    pts /= np.linalg.norm(pts, axis=1, keepdims=True)
    evs = [
        parse_event(json.dumps({**events[i % len(events)], "embedding": v.tolist()}).encode())
        for i, v in enumerate(pts)
    ]
    Detector(Settings()).fit_space(evs).save(out)


def lag_run(run: Run, values: list[bytes], eps: float, seconds: float) -> tuple[int, str]:
    """Produces at `eps` for `seconds` while the service runs; returns max lag and trend."""
    n = int(eps * seconds)
    run.create_topics()
    run.start(idle=3.0)
    # wait until the service holds its partitions (its model loaded, its state
    # restored), so that the row measures the steady state and not the start
    while (run.metric(PARTITIONS_RE) or 0) < 1:
        if run.proc is not None and run.proc.poll() is not None:
            raise RuntimeError(f"service run {run.tag} exited {run.proc.returncode}")
        time.sleep(0.2)
    alive, produced = start_producer(run, values, eps, n)
    lags: list[float] = []
    times: list[float] = []
    t_start = time.perf_counter()
    while alive():
        time.sleep(1.0)
        # a busy service can be slow to answer; a scrape that fails is no sample
        v = run.events(timeout=5.0)
        if v is not None:
            lags.append(produced() - v)
            times.append(time.perf_counter() - t_start)
    actual = n / (time.perf_counter() - t_start)
    try:
        run.wait(timeout=600)
    finally:
        run.kill()
    if not lags:
        raise RuntimeError(f"row D: no scrape of {run.tag}'s event counter answered")
    third = max(len(lags) // 3, 1)
    first, last = float(np.mean(lags[:third])), float(np.mean(lags[-third:]))
    # falling behind by more than 5% of the produce rate, over the whole run
    slope = float(np.polyfit(times, lags, 1)[0]) if len(lags) > 1 else 0.0
    grows = "grows" if slope > 0.05 * eps else "bounded"
    status(f"lag samples: {[int(x) for x in lags]}; achieved produce rate {actual:,.0f}/s")
    return int(max(lags)), (
        f"{grows} at {actual:,.0f}/s produced (trend {slope:+,.0f} events/s; "
        f"first third mean {first:,.0f}, last third {last:,.0f})"
    )


def start_producer(
    run: Run, values: list[bytes], eps: float, n: int
) -> tuple[Callable[[], bool], Callable[[], float]]:
    """A kafka-python producer thread sending n records at `eps`."""
    produced = [0]

    def feed() -> None:
        p = producer(run.bootstrap)
        t0 = time.perf_counter()
        for i in range(n):
            v = values[i % len(values)]
            p.send(run.prompts_topic, key=_key(v), value=v)
            produced[0] = i + 1
            ahead = (i + 1) / eps - (time.perf_counter() - t0)
            if ahead > 0.002:
                time.sleep(ahead)
        p.flush(timeout=300)
        p.close()

    th = threading.Thread(target=feed, daemon=True)
    th.start()
    return th.is_alive, lambda: float(produced[0])


# ---------------------------------------------------------------- output


def target_row(name: str, events: int, eps: float, busy: float) -> Row:
    """A row measured against the 50,000 events/s target."""
    met = "yes" if eps >= TARGET_EPS else "no"
    return Row(name, events, eps, busy, f"{eps / TARGET_EPS:.2f} of target", ">= 50,000/s", met)


def print_table(rows: list[Row]) -> None:
    head = ["row", "events", "events/s", "ratio", "target", "met?", OTHERS]
    body = [
        [r.name, f"{r.events:,}", f"{r.eps:,.0f}", r.ratio, r.target, r.met, f"{r.others:.1f}"]
        for r in rows
    ]
    widths = [max(len(x) for x in col) for col in zip(head, *body, strict=True)]
    for line in [head, ["-" * w for w in widths], *body]:
        print("  ".join(x.ljust(w) for x, w in zip(line, widths, strict=True)).rstrip())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--quick", action="store_true", help="smaller inputs")
    ap.add_argument("--no-lag", action="store_true", help="skip row D")
    args = ap.parse_args()
    size = QUICK if args.quick else FULL
    os.environ["SPANWATCH_EMBED__CACHE"] = "false"
    print(machine_line())
    print(load_line())
    print(
        "(the last column is the cpus the whole machine kept busy during the row: "
        "broker, service and producer included for B-D)"
    )
    with tempfile.TemporaryDirectory(prefix="bench-service-") as tmp:
        work = Path(tmp)
        broker = Broker(work / "kafka")
        status(f"starting a broker on {broker.bootstrap} (KAFKA_HOME {work / 'kafka'})")
        broker.start()
        try:
            rows, lag = measure(size, broker.bootstrap, work, not args.no_lag)
        finally:
            status("stopping the broker")
            broker.stop()
    print_table(rows)
    if lag is not None:
        print(f"D. lag at 80% of row C's rate: max {lag[0]:,} events, {lag[1]}")
    summarize(rows)


def measure(
    size: Sizes, bootstrap: str, work: Path, with_lag: bool
) -> tuple[list[Row], tuple[int, str] | None]:
    from spanwatch.embed import SentenceTransformerEmbedder

    status(f"simulating {size.prompts} prompt events")
    base = prompts_events(size.prompts, seed=int(time.time()) % 100_000 + 1000)
    prompts = [str(e["prompt"]) for e in base]
    status("row A: raw embedder")
    eps_a, busy_a = busy_cpus(lambda: row_embedder(prompts))
    status(f"row A: {eps_a:,.1f} prompts/s; embedding vectors for rows C/D and the space")
    n_vec = min(size.unique_vectors, len(base))
    vectors = SentenceTransformerEmbedder(batch_size=64).embed(prompts[:n_vec])
    space = work / "space.npz"
    fit_space(base[:n_vec], np.asarray(vectors), space)
    tag = uuid.uuid4().hex[:8]
    status("row B: service on prompt-only events")
    run_b = Run(bootstrap, space, work, f"{tag}-b")
    eps_b, busy_b = busy_cpus(lambda: service_eps(run_b, encode(base), 1800))
    status(f"row B: {eps_b:,.1f} events/s; encoding {size.embedded} embedded events")
    values = embedded_events(base[:n_vec], np.asarray(vectors), size.embedded)
    status(f"row C: {len(values)} events, {sum(map(len, values)) / len(values):,.0f} B each")
    run_c = Run(bootstrap, space, work, f"{tag}-c")
    eps_c, busy_c = busy_cpus(lambda: service_eps(run_c, values, 900))
    status(f"row C: {eps_c:,.0f} events/s; the benchmark's producer on the same records")
    run_p = Run(bootstrap, space, work, f"{tag}-p")
    (eps_p, cpu_p), busy_p = busy_cpus(lambda: producer_cost(run_p, values))
    status(f"row P: {eps_p:,.0f} records/s, {cpu_p:.1f} us cpu each; bare consumer")
    eps_k, busy_k = busy_cpus(lambda: consumer_eps(run_c, len(values)))
    values64 = embedded_events(base[:n_vec], np.asarray(vectors), size.embedded, b64=True)
    status(f"row C2: {len(values64)} events, {sum(map(len, values64)) / len(values64):,.0f} B each")
    run_c2 = Run(bootstrap, space, work, f"{tag}-c2")
    eps_c2, busy_c2 = busy_cpus(lambda: service_eps(run_c2, values64, 900))
    status(f"row C2: {eps_c2:,.0f} events/s; row C3 with space.assign = exact")
    run_c3 = Run(bootstrap, space, work, f"{tag}-c3", {"SPANWATCH_SPACE__ASSIGN": "exact"})
    eps_c3, busy_c3 = busy_cpus(lambda: service_eps(run_c3, values64, 900))
    status(f"row C3: {eps_c3:,.0f} events/s; row C5 with space.assign = ivf")
    run_c5 = Run(bootstrap, space, work, f"{tag}-c5", {"SPANWATCH_SPACE__ASSIGN": "ivf"})
    eps_c5, busy_c5 = busy_cpus(lambda: service_eps(run_c5, values64, 900))
    status(f"row C5: {eps_c5:,.0f} events/s; row C6 with kafka.max_poll_records = 500")
    run_c6 = Run(bootstrap, space, work, f"{tag}-c6", {"SPANWATCH_KAFKA__MAX_POLL_RECORDS": "500"})
    eps_c6, busy_c6 = busy_cpus(lambda: service_eps(run_c6, values64, 900))
    status(f"row C6: {eps_c6:,.0f} events/s; row C4: two processes in one group")
    pair = {"SPANWATCH_SECRET_KEY": f"bench-{tag}"}
    runs_c4 = [Run(bootstrap, space, work, f"{tag}-c4", pair) for _ in range(2)]
    eps_c4, busy_c4 = busy_cpus(lambda: pair_eps(runs_c4, values64, 900))
    ratio = eps_b / eps_a
    rows = [
        Row("A. raw embedder (default backend, no cache)", len(prompts), eps_a, busy_a),
        Row(
            "B. spanwatch run, prompts only", len(prompts), eps_b, busy_b,
            f"{ratio:.2f} of A", ">= 0.90 of A", "yes" if ratio >= TARGET_RATIO else "no",
        ),
        target_row("C. spanwatch run, precomputed embeddings", len(values), eps_c, busy_c),
        target_row("C2. the same, embedding_b64", len(values64), eps_c2, busy_c2),
        Row(
            "C3. row C2, space.assign = exact", len(values64), eps_c3, busy_c3,
            f"C2 is {eps_c2 / eps_c3:.2f}x of C3", "", "",
        ),
        target_row("C4. row C2 on two processes, one group", 3 * len(values64), eps_c4, busy_c4),
        Row(
            "C5. row C2, space.assign = ivf", len(values64), eps_c5, busy_c5,
            f"C2 is {eps_c2 / eps_c5:.2f}x of C5", "", "",
        ),
        Row(
            "C6. row C2, kafka.max_poll_records = 500", len(values64), eps_c6, busy_c6,
            f"C2 is {eps_c2 / eps_c6:.2f}x of C6", "", "",
        ),
        Row(
            "K. bare kafka-python consumer, row C records", len(values), eps_k, busy_k,
            f"C is {eps_c / eps_k:.2f} of K", "", "",
        ),
        Row(
            "P. the benchmark's producer, row C records", len(values), eps_p, busy_p,
            f"{cpu_p:.1f} us cpu/record", "", "",
        ),
    ]  # fmt: skip
    lag = None
    if with_lag:
        status(f"row D: producing at {0.8 * eps_c:,.0f}/s for {size.lag_seconds:.0f}s")
        run_d = Run(bootstrap, space, work, f"{tag}-d")
        lag = lag_run(run_d, values, 0.8 * eps_c, size.lag_seconds)
    return rows, lag


def summarize(rows: list[Row]) -> None:
    for r in rows[1:]:
        if r.met == "no":
            print(f"missed: {r.name}: {r.eps:,.0f} events/s, {r.ratio} (target {r.target})")


if __name__ == "__main__":
    main()
