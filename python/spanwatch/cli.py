"""The `spanwatch` command."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from spanwatch import __version__
from spanwatch.config import Settings, load_settings
from spanwatch.errors import EventError, SpanwatchError
from spanwatch.events import Event, parse_event

log = logging.getLogger("spanwatch")


def _setup_logging(verbose: int, fmt: str) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("spanwatch")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(
            {
                "ts": record.created,
                "level": record.levelname.lower(),
                "logger": record.name,
                "msg": record.getMessage(),
            }
        )


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _progress(total: int | None, desc: str, unit: str, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(
        total=total, desc=desc, unit=unit, disable=None if enabled else True, file=sys.stderr
    )


# ---------------------------------------------------------------- event files


class RejectWriter:
    """Bad input lines, with line number and reason, as JSONL."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0
        self._fh: IO[str] | None = None

    def write(self, line_no: int, raw: bytes, reason: str) -> None:
        if self._fh is None:
            self._fh = self.path.open("w", encoding="utf-8")
        text = raw.decode("utf-8", "backslashreplace")
        rec = {"line": line_no, "reason": reason, "raw": text[:2000]}
        self._fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
        self._fh.flush()
        self.count += 1

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()


def read_events(
    path: Path, rejects: RejectWriter, max_prompt_bytes: int
) -> Iterator[tuple[int, Event]]:
    """Valid events of a JSONL file with their line numbers; bad lines go to
    `rejects` and reading goes on."""
    with path.open("rb") as fh:
        for line_no, raw in enumerate(fh, start=1):
            stripped = raw.strip()
            if not stripped:
                continue
            try:
                yield line_no, parse_event(stripped, max_prompt_bytes=max_prompt_bytes)
            except EventError as e:
                rejects.write(line_no, stripped, e.reason)


def _count_lines(path: Path) -> int:
    with path.open("rb") as fh:
        return sum(1 for line in fh if line.strip())


# ---------------------------------------------------------------- commands


def cmd_simulate(args: argparse.Namespace, cfg: Settings) -> int:
    from spanwatch.simulate import simulate, write_events, write_truth

    events, clients = simulate(
        n_benign=args.benign,
        n_harvesters=args.harvesters,
        n_sweepers=args.sweepers,
        n_template_sweepers=args.template_sweepers,
        seed=args.seed,
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_events(events, str(out))
    truth = Path(args.truth) if args.truth else out.with_name(out.stem + ".truth.jsonl")
    write_truth(clients, str(truth))
    kinds = Counter(c.kind for c in clients)
    _say(
        f"wrote {len(events)} events from {len(clients)} clients to {out} "
        f"({', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))}); truth in {truth}"
    )
    return 0


def _lenient_corpus(path: Path, rejects: RejectWriter, limit: int) -> list[Event]:
    """Events from a JSONL corpus whose lines are events or {"text": ...}."""
    out: list[Event] = []
    with path.open("rb") as fh:
        for line_no, raw in enumerate(fh, start=1):
            raw = raw.strip()
            if not raw:
                continue
            try:
                data = json.loads(raw)
                if isinstance(data, dict) and "prompt" not in data and "text" in data:
                    data = {"prompt": data["text"], "client_id": "corpus", "ts": 0.0}
                out.append(Event.model_validate(data))
            except Exception as e:  # any bad line is reported, never fatal
                rejects.write(line_no, raw, str(e).splitlines()[0])
            if len(out) >= limit:
                break
    return out


def cmd_fit_space(args: argparse.Namespace, cfg: Settings) -> int:
    from spanwatch.detector import Detector

    src = Path(args.corpus)
    rejects = RejectWriter(Path(args.rejects or f"{args.out}.rejects.jsonl"))
    limit = args.limit or 10**9
    events = _lenient_corpus(src, rejects, limit)
    rejects.close()
    if rejects.count:
        _say(f"skipped {rejects.count} bad lines (see {rejects.path})")
    t0 = time.perf_counter()
    det = Detector(cfg)
    _say(f"embedding {len(events)} prompts and fitting levels {cfg.sketch.levels} ...")
    space = det.fit_space(events)
    space.save(args.out)
    _say(f"saved {space!r} to {args.out} in {time.perf_counter() - t0:.1f}s")
    return 0


def cmd_replay(args: argparse.Namespace, cfg: Settings) -> int:
    from spanwatch.detector import Detector
    from spanwatch.space import Space

    src = Path(args.events)
    if not src.is_file():
        raise SpanwatchError(f"events file not found: {src}")
    rejects_path = Path(args.rejects) if args.rejects else Path(f"{args.out or src}.rejects.jsonl")
    rejects = RejectWriter(rejects_path)
    out_fh: IO[str] = open(args.out, "w", encoding="utf-8") if args.out else sys.stdout  # noqa: SIM115
    total_lines = _count_lines(src)
    events = read_events(src, rejects, cfg.max_prompt_bytes)
    det = Detector(cfg)
    buffered: list[Event] = []
    if args.space:
        det.use_space(Space.load(args.space))
    else:
        n_fit = cfg.space.fit_events
        for _, ev in events:
            buffered.append(ev)
            if len(buffered) >= n_fit:
                break
        _say(
            f"no --space given: fitting the input space on the first {len(buffered)} events "
            f"(space.fit_events = {n_fit}) ..."
        )
        space = det.fit_space(buffered)
        _say(f"fitted {space!r}")
        if args.save_space:
            space.save(args.save_space)
            _say(f"saved the space to {args.save_space}")

    def batches() -> Iterator[list[Event]]:
        batch: list[Event] = []
        for ev in buffered:
            batch.append(ev)
            if len(batch) >= cfg.batch_size:
                yield batch
                batch = []
        for _, ev in events:
            batch.append(ev)
            if len(batch) >= cfg.batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    alerts = []
    n_events = 0
    t0 = time.perf_counter()
    bar = _progress(total_lines, "replay", "ev", not args.no_progress)
    try:
        for batch in batches():
            for alert in det.observe(batch):
                alerts.append(alert)
                out_fh.write(alert.to_json() + "\n")
            out_fh.flush()
            n_events += len(batch)
            bar.update(len(batch))
    finally:
        bar.close()
        rejects.close()
        if out_fh is not sys.stdout:
            out_fh.close()
    elapsed = time.perf_counter() - t0
    stats = det.stats()
    by_sev = Counter(a.severity for a in alerts)
    _say(
        f"\nreplayed {n_events} events from {stats['clients']} clients in {elapsed:.1f}s "
        f"({n_events / max(elapsed, 1e-9):.0f} events/s); {rejects.count} lines rejected"
        + (f" (see {rejects.path})" if rejects.count else "")
    )
    alerted = sorted({a.client_id for a in alerts})
    _say(
        f"{len(alerts)} alerts on {len(alerted)} clients"
        + (f" ({', '.join(f'{n} {s}' for s, n in sorted(by_sev.items()))})" if alerts else "")
        + (f"; written to {args.out}" if args.out else "")
    )
    if alerts and args.out:
        _say(f"\n{'client':<20} {'severity':<8} {'score':>6} {'queries':>8}  first alert")
        seen: set[str] = set()
        for a in alerts:
            if a.client_id in seen:
                continue
            seen.add(a.client_id)
            top = max((x for x in alerts if x.client_id == a.client_id), key=lambda x: x.score)
            _say(
                f"{a.client_id:<20} {top.severity:<8} {top.score:>6.2f} "
                f"{a.evidence.query_count:>8}  {a.time.isoformat()}"
            )
    return 0


def cmd_run(args: argparse.Namespace, cfg: Settings) -> int:
    import signal

    from spanwatch.space import Space
    from spanwatch.stream import Service

    space = Space.load(args.space)
    service = Service(cfg, space)
    if cfg.metrics_port:
        service.metrics.serve(cfg.metrics_port)
        log.info("metrics on :%d/metrics", cfg.metrics_port)

    def on_signal(signum: int, frame: object) -> None:
        log.info("signal %d: finishing the batch, checkpointing, committing", signum)
        service.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    k = cfg.kafka
    _say(
        f"spanwatch run: group {k.group_id!r} on {k.bootstrap_servers}, "
        f"{k.prompts_topic!r} -> {k.alerts_topic!r} (state {k.state_topic!r}, "
        f"dead letters {k.dead_letter_topic!r})"
    )
    service.run(exit_when_idle=args.exit_when_idle)
    _say(f"stopped: {service.alerts_sent} alerts sent")
    return 0


def cmd_produce(args: argparse.Namespace, cfg: Settings) -> int:
    from kafka import KafkaProducer

    from spanwatch.stream import ensure_topics

    src = Path(args.events)
    if not src.is_file():
        raise SpanwatchError(f"events file not found: {src}")
    k = cfg.kafka
    ensure_topics(k)
    producer = KafkaProducer(**k.client_config(), acks="all", linger_ms=20)
    total = _count_lines(src)
    sent = 0
    t0 = time.perf_counter()
    bar = _progress(total, "produce", "ev", not args.no_progress)
    with src.open("rb") as fh:
        for raw in fh:
            line = raw.rstrip(b"\r\n")
            if not line.strip():
                continue
            key = None
            try:
                data = json.loads(line)
                if isinstance(data, dict) and isinstance(data.get("client_id"), str):
                    key = data["client_id"].encode("utf-8")
            except (ValueError, UnicodeDecodeError):
                pass  # sent as is: the service dead-letters it with a reason
            producer.send(k.prompts_topic, key=key, value=line)
            sent += 1
            bar.update(1)
    producer.flush()
    producer.close()
    bar.close()
    dt = time.perf_counter() - t0
    _say(f"produced {sent} records to {k.prompts_topic!r} in {dt:.1f}s")
    return 0


def cmd_schema(args: argparse.Namespace, cfg: Settings) -> int:
    from spanwatch.alerts import schema_json

    text = schema_json()
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


# ---------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="spanwatch",
        description="Detect model extraction in the prompt stream of an LLM API.",
    )
    p.add_argument("--version", action="version", version=f"spanwatch {__version__}")
    p.add_argument("--config", help="TOML config file (env SPANWATCH_* and flags override it)")
    p.add_argument("-v", "--verbose", action="count", default=0, help="-v info, -vv debug")
    p.add_argument("--log-format", choices=["text", "json"], default="text")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("replay", help="run the detector over an events file (no Kafka)")
    s.add_argument("events", help="JSONL file of events")
    s.add_argument("--space", help="space file from `spanwatch fit-space`")
    s.add_argument("--out", help="alerts JSONL (default: stdout)")
    s.add_argument("--rejects", help="bad lines go here (default: OUT.rejects.jsonl)")
    s.add_argument("--fit-events", type=int, help="without --space, fit on this many events")
    s.add_argument("--save-space", help="save the fitted space to this file")
    s.add_argument("--batch-size", type=int, help="events per store update")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_replay)

    s = sub.add_parser("fit-space", help="fit the map of the input space on a corpus")
    s.add_argument("corpus", help='JSONL of events or of {"text": ...} records')
    s.add_argument("--out", required=True, help="space file to write")
    s.add_argument("--limit", type=int, help="use at most this many records")
    s.add_argument("--rejects", help="bad lines go here (default: OUT.rejects.jsonl)")
    s.set_defaults(func=cmd_fit_space)

    s = sub.add_parser("simulate", help="write demo traffic: benign and extracting clients")
    s.add_argument("--out", required=True, help="events JSONL to write")
    s.add_argument("--truth", help="who is who (default: OUT.truth.jsonl)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--benign", type=int, default=40)
    s.add_argument("--harvesters", type=int, default=2)
    s.add_argument("--sweepers", type=int, default=1)
    s.add_argument("--template-sweepers", type=int, default=1)
    s.set_defaults(func=cmd_simulate)

    s = sub.add_parser("run", help="the streaming service on Kafka")
    s.add_argument("--space", required=True, help="space file from `spanwatch fit-space`")
    s.add_argument("--bootstrap-servers", help="overrides kafka.bootstrap_servers")
    s.add_argument("--group-id", help="overrides kafka.group_id")
    s.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port")
    s.add_argument(
        "--exit-when-idle", type=float, metavar="SECONDS", help="stop once caught up and idle"
    )
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("produce", help="load an events file into the prompts topic")
    s.add_argument("events", help="JSONL file; lines are sent as they are, keyed by client_id")
    s.add_argument("--bootstrap-servers", help="overrides kafka.bootstrap_servers")
    s.add_argument("--topic", help="overrides kafka.prompts_topic")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_produce)

    s = sub.add_parser("schema", help="print the JSON Schema of alerts")
    s.add_argument("--out", help="write it to this file")
    s.set_defaults(func=cmd_schema)
    return p


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    o: dict[str, Any] = {}
    if getattr(args, "fit_events", None):
        o["space"] = {"fit_events": args.fit_events}
    if getattr(args, "batch_size", None):
        o["batch_size"] = args.batch_size
    kafka = {
        name: getattr(args, attr)
        for name, attr in (
            ("bootstrap_servers", "bootstrap_servers"),
            ("group_id", "group_id"),
            ("prompts_topic", "topic"),
        )
        if getattr(args, attr, None)
    }
    if kafka:
        o["kafka"] = kafka
    if getattr(args, "metrics_port", None):
        o["metrics_port"] = args.metrics_port
    return o


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose, args.log_format)
    try:
        cfg = load_settings(args.config, **_overrides(args))
        return int(args.func(args, cfg))
    except SpanwatchError as e:
        _say(f"spanwatch: error: {e}")
        return 2
    except KeyboardInterrupt:
        _say("spanwatch: interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
