"""The `spanwatch` command."""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from spanwatch import __version__
from spanwatch.config import Settings, load_settings
from spanwatch.errors import EventError, SpanwatchError
from spanwatch.events import Event, parse_event, vector_dim, vector_problem

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


def _fit_vectors(
    numbered: Sequence[tuple[int, Event]], dim: int, rejects: RejectWriter
) -> list[tuple[int, Event]]:
    """The numbered events whose own embeddings fit `dim`; the others go to
    `rejects` with their line and reason."""
    kept = []
    for line_no, ev in numbered:
        why = vector_problem(ev, dim)
        if why is None:
            kept.append((line_no, ev))
        else:
            rejects.write(line_no, ev.model_dump_json().encode(), why)
    return kept


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


def _lenient_corpus(path: Path, rejects: RejectWriter, limit: int) -> list[tuple[int, Event]]:
    """Events from a JSONL corpus whose lines are events or {"text": ...},
    with their lines."""
    out: list[tuple[int, Event]] = []
    with path.open("rb") as fh:
        for line_no, raw in enumerate(fh, start=1):
            raw = raw.strip()
            if not raw:
                continue
            try:
                data = json.loads(raw)
                if isinstance(data, dict) and "prompt" not in data and "text" in data:
                    data = {"prompt": data["text"], "client_id": "corpus", "ts": 0.0}
                out.append((line_no, Event.model_validate(data)))
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
    numbered = _lenient_corpus(src, rejects, limit)
    det = Detector(cfg)
    dim = vector_dim([e for _, e in numbered], None, lambda: det.embedder.dim)
    events = [e for _, e in _fit_vectors(numbered, dim, rejects)]
    rejects.close()
    if rejects.count:
        _say(f"skipped {rejects.count} bad lines (see {rejects.path})")
    t0 = time.perf_counter()
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
    buffered: list[tuple[int, Event]] = []
    space_file = args.space or cfg.space.path
    if space_file:
        det.use_space(Space.load(space_file))
    else:
        n_fit = cfg.space.fit_events
        for numbered in events:
            buffered.append(numbered)
            if len(buffered) >= n_fit:
                break
        plain = [e for _, e in buffered]
        buffered = _fit_vectors(
            buffered, vector_dim(plain, None, lambda: det.embedder.dim), rejects
        )
        _say(
            f"no --space given: fitting the input space on the first {len(buffered)} events "
            f"(space.fit_events = {n_fit}) ..."
        )
        space = det.fit_space([e for _, e in buffered])
        _say(f"fitted {space!r}")
        if args.save_space:
            space.save(args.save_space)
            _say(f"saved the space to {args.save_space}")
    assert det.space is not None
    dim = det.space.dim

    def batches() -> Iterator[list[Event]]:
        # an event whose own embedding does not fit goes to the rejects, not
        # the batch: the detector refuses a batch with one such event whole
        batch: list[Event] = []
        for line_no, ev in itertools.chain(buffered, events):
            why = vector_problem(ev, dim)
            if why is not None:
                rejects.write(line_no, ev.model_dump_json().encode(), why)
                continue
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
    import faulthandler
    import signal

    from spanwatch.space import Space
    from spanwatch.stream import Service

    space_file = args.space or cfg.space.path
    if not space_file:
        raise SpanwatchError("run needs a space: --space FILE or space.path in the config")
    space = Space.load(space_file)
    k = cfg.kafka
    service: Any
    if args.role == "groups":
        from spanwatch.group_stream import GroupService

        service = GroupService(cfg, space)
        banner = (
            f"spanwatch run --role groups: {k.sketch_topic!r} -> {k.group_alerts_topic!r} "
            f"on {k.bootstrap_servers}"
        )
    else:
        service = Service(cfg, space)
        banner = (
            f"spanwatch run: group {k.group_id!r} on {k.bootstrap_servers}, "
            f"{k.prompts_topic!r} -> {k.alerts_topic!r} (state {k.state_topic!r}, "
            f"dead letters {k.dead_letter_topic!r}"
            + (f", summaries {k.sketch_topic!r}" if cfg.groups.enabled else "")
            + ")"
        )
    if cfg.metrics_port:
        service.metrics.serve(cfg.metrics_port)
        log.info("metrics on :%d/metrics", cfg.metrics_port)

    def on_signal(signum: int, frame: object) -> None:
        log.info("signal %d: finishing the batch, checkpointing, committing", signum)
        service.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def on_usr1(signum: int, frame: object) -> None:
        describe = getattr(service, "describe", None)
        try:
            if describe is not None:
                log.info("state: %s", describe())
        except Exception as e:  # a diagnostic must never stop the service
            log.warning("state: not available (%s)", e)

    # `kill -USR1 <pid>` prints every thread's stack to stderr and the loop's
    # state to the log: for a service that looks stuck.
    signal.signal(signal.SIGUSR1, on_usr1)
    faulthandler.register(signal.SIGUSR1, all_threads=True, chain=True)
    _say(banner)
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


class _Bars:
    """Progress bars for work done in steps, as `evaluate` and
    `Detector.calibrate` report it: each step gets its own bar, and a new
    step closes the last one."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: Any = None

    def __call__(self, desc: str, total: int) -> Any:
        self.close()
        self.bar = _progress(total, desc, "it", self.enabled)
        return self.bar.update

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _embedder(cfg: Settings) -> Any:
    from spanwatch.detector import Detector

    return Detector(cfg).embedder


def _print_groups(g: dict[str, Any]) -> None:
    from spanwatch.sybil import SYBIL_SCENARIOS

    print(
        f"\ngroups: a harvest split over {g['accounts_per_group']} accounts of "
        f"{g['queries_per_account']} queries (group target FPR {g['target_fpr']:g})"
    )
    print(f"{'scenario':<22} {'groups':>7} {'detected':>9} {'named':>7} {'alone':>7}")
    for k in SYBIL_SCENARIOS:
        v = g[k]
        print(
            f"{k:<22} {v['groups']:>7} {v['detected']:>9.1%} {v['accounts_named']:>7.1%} "
            f"{v['accounts_alerted_alone']:>7.1%}"
        )
    b = g["benign"]
    print(
        f"{'benign accounts':<22} {b['accounts']:>7} pulled in {b['pulled_in']:.2%}, "
        f"alerted alone {b['alerted_alone']:.2%}"
    )
    print(
        f"{g['group_alerts']} group alerts, median {g['median_members']:.0f} members and "
        f"{g['median_linked_outside']:.0f} linked but not in the group"
    )


def cmd_eval(args: argparse.Namespace, cfg: Settings) -> int:
    from spanwatch.evaluate import MIXES, SCENARIOS, evaluate, load_pool
    from spanwatch.plots import plot_eval
    from spanwatch.thresholds import check_enough_clients, range_wording

    check_enough_clients(args.calibration_clients, args.target_fpr, args.confidence)
    benign, attack = load_pool(args.benign), load_pool(args.attack)
    templates = load_pool(args.templates) if args.templates else None
    _say(
        f"benign pool: {len(benign.texts)} texts in {len(set(benign.groups))} groups; "
        f"attack pool: {len(attack.texts)} texts in {len(set(attack.groups))} groups"
    )
    t0 = time.perf_counter()
    bars = _Bars(not args.no_progress)
    res = evaluate(
        benign,
        attack,
        _embedder(cfg),
        cfg,
        templates=templates,
        stream_length=args.stream_length,
        n_clients=args.clients,
        n_calibration=args.calibration_clients,
        n_attackers=args.attackers,
        target_fpr=args.target_fpr,
        seed=args.seed,
        progress=bars,
        sybil=args.sybil,
        confidence=args.confidence,
    )
    bars.close()
    r, d = res.report, res.details
    out = Path(args.report)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(r, indent=2) + "\n", encoding="utf-8")
    (out / "details.json").write_text(json.dumps(d, indent=2) + "\n", encoding="utf-8")
    plots = plot_eval(res, out)

    def qtd(q: dict[str, float | None]) -> str:
        if q["median"] is None:
            return "-"
        return f"{q['median']:.0f} / {q['p90']:.0f}"

    print(
        f"\nstream length {r['stream_length']}, {r['n_clients']} held-out benign clients, "
        f"{d['attackers_per_scenario']} attackers per scenario, seed {d['seed']}"
    )
    print(
        f"threshold {d['threshold']:.3f} (target FPR {d['target_fpr']:.2%}; reference tables "
        f"from {d['calibration_clients']['reference']} other benign clients, threshold from "
        f"the peaks of {d['calibration_clients']['threshold']}"
        + (f", confidence {d['confidence']:g}" if d["confidence"] else "")
        + ")"
    )
    b = d["benign_fpr_bound"]
    lo, hi = d["threshold_range"]
    print(
        f"the calibration's peaks bound the benign rate at {b['rate']:.2%} "
        f"with confidence {b['confidence']:g}; threshold resampled "
        f"{range_wording(lo, hi)}\n"
    )
    print(f"{'clients':<22} {'alerted':>8} {'AUC':>6}  queries to detect (median / p90)")
    print(f"{'benign (false pos.)':<22} {r['benign_fpr']:>8.2%} {'':>6}")
    for k in SCENARIOS:
        print(f"{k:<22} {r['tpr'][k]:>8.1%} {d['auc'][k]:>6.3f}  {qtd(r['queries_to_detect'][k])}")
    for label, style, tpr, q in (
        ("mixed", "mixed", r["mixed_tpr"], d["mixed_queries_to_detect"]),
        ("mixed, same style", "mixed_same", d["same_style_mixed_tpr"],
         d["same_style_mixed_queries_to_detect"]),
    ):  # fmt: skip
        for f in MIXES:
            key = f"{f:.2f}"
            auc = d["auc"][f"{style}_{key}"]
            print(f"{label + ' ' + key:<22} {tpr[key]:>8.1%} {auc:>6.3f}  {qtd(q[key])}")
    print(f"{'population-like':<22} {d['population_like_alert_rate']:>8.1%}  (reported apart)")
    fams = ", ".join(
        f"{f} {v['fpr']:.1%} of {v['clients']}" for f, v in d["benign_fpr_by_family"].items()
    )
    print(f"benign false positives by family of main interest: {fams}")
    for kind, what in (("benign", "benign false positives"), ("mixed_0.05", "mixed 0.05 alerts")):
        lead = d["lead_signals"].get(kind, {})
        if lead:
            print(
                f"{what} by the signal that led: " + ", ".join(f"{k} {n}" for k, n in lead.items())
            )
    if res.groups:
        _print_groups(res.groups)
        (out / "groups.json").write_text(json.dumps(res.groups, indent=2) + "\n", "utf-8")
    _say(
        f"\nreport in {out / 'report.json'}; plots: {', '.join(p.name for p in plots)}; "
        f"{time.perf_counter() - t0:.0f}s"
    )
    return 0


def _toml_value(v: Any) -> str:
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return repr(v)


def cmd_tune(args: argparse.Namespace, cfg: Settings) -> int:
    from spanwatch.detector import Detector
    from spanwatch.plots import plot_tune
    from spanwatch.space import Space
    from spanwatch.thresholds import (
        check_enough_clients,
        range_wording,
        target_wording,
        wilson_interval,
    )

    src = Path(args.benign)
    out = Path(args.out)
    stem = out.with_suffix("")
    rejects = RejectWriter(Path(f"{stem}.rejects.jsonl"))
    numbered = _lenient_events(
        src, rejects, args.stream_length, args.clients, args.seed, cfg.max_prompt_bytes
    )
    det = Detector(cfg)
    given = args.space or cfg.space.path
    if given:
        det.use_space(Space.load(Path(given)))
    plain = [e for _, e in numbered]
    dim = vector_dim(plain, det.space.dim if det.space else None, lambda: det.embedder.dim)
    events = [e for _, e in _fit_vectors(numbered, dim, rejects)]
    rejects.close()
    if not events:
        raise SpanwatchError(f"{src} holds no usable benign events")
    clients = len({e.client_id for e in events})
    _say(
        f"{len(events)} benign events from {clients} clients"
        + (f"; {rejects.count} bad lines in {rejects.path}" if rejects.count else "")
    )
    if not 0 <= args.holdout < 1:
        raise SpanwatchError(f"--holdout must be in [0, 1), got {args.holdout}")
    held_ids = {c for c in {e.client_id for e in events} if _held_out(c, args.holdout)}
    held = [e for e in events if e.client_id in held_ids]
    # as in the calibration, only clients long enough to be scored can alert
    sizes = Counter(e.client_id for e in held)
    held = [e for e in held if sizes[e.client_id] >= cfg.scoring.checkpoint_every]
    events = [e for e in events if e.client_id not in held_ids]
    if held_ids:
        _say(f"{len(held_ids)} clients held out to check the threshold on")
    check_enough_clients(clients - len(held_ids), args.target_fpr, args.confidence)
    progress = _Bars(not args.no_progress)
    if given:
        space_file = Path(given)
    else:
        space_file = Path(f"{stem}.space.zip")
        _say("fitting the input space on the benign events ...")
        det.fit_space(events[: max(cfg.space.fit_events, 20000)], progress=progress).save(
            space_file
        )
    _say("calibrating on the benign clients ...")
    cal = det.calibrate(
        events, target_fpr=args.target_fpr, confidence=args.confidence, progress=progress
    )
    progress.close()
    bound_at, bound = cal.benign_bound()
    cal_file = Path(f"{stem}.calibration.zip")
    cal.save(cal_file)
    assert det.space is not None
    peaks = det.calibration_peaks
    if held:
        _say("scoring the held-out clients ...")
    held_peaks = (
        np.array(list(det.peaks(held, progress=progress).values())) if held else np.zeros(0)
    )
    progress.close()
    spread = cal.threshold_range()
    png = plot_tune(
        peaks,
        cal.threshold,
        args.target_fpr,
        Path(f"{stem}.png"),
        held_peaks,
        args.confidence,
        spread,
    )
    check = ""
    if len(held_peaks):
        k, n = int((held_peaks >= cal.threshold).sum()), len(held_peaks)
        lo, hi = wilson_interval(k, n)
        check = f"{k} of {n} held-out clients ({k / n:.2%}; 95% interval {lo:.2%}-{hi:.2%})"
    lines = [
        f"# written by spanwatch tune from {src} ({clients} benign clients, "
        f"{len(held_ids)} of them held out)",
        f"# {(peaks >= cal.threshold).mean():.2%} of the calibration clients reach the threshold "
        f"(target {args.target_fpr:.2%} {target_wording(args.confidence)}; half of them set it)",
        f"# benign rate at most {bound:.2%} with confidence {bound_at:g}, from those clients",
        *([f"# reaching it: {check}"] if check else []),
        "",
        "[space]",
        f"path = {_toml_value(str(space_file))}",
        "",
        "[scoring]",
        f"calibration = {_toml_value(str(cal_file))}",
        f"threshold = {cal.threshold!r}",
        f"drift = {cal.drift!r}",
        f"checkpoint_every = {cal.every}",
        "",
    ]
    out.write_text("\n".join(lines), encoding="utf-8")
    print(
        f"\ncalibrated on {cal.clients_threshold} benign clients: {cal.clients_ref} for the "
        f"reference tables, {cal.clients_threshold - cal.clients_ref} for the threshold, "
        f"which is taken over the peaks of all {cal.clients_threshold} (cross-fitted)"
    )
    print(f"  target false-positive rate  {args.target_fpr:.2%} {target_wording(args.confidence)}")
    print(f"  benign rate, at most        {bound:.2%} with confidence {bound_at:g}")
    q = cfg.scoring.drift_quantile
    drift_from = "from the config" if cfg.scoring.drift is not None else f"benign {q:g} quantile"
    print(f"  threshold (evidence ratio)  {cal.threshold:.3f}")
    print(f"  drift                       {cal.drift:.3f} ({drift_from})")
    tables = (
        f"{cal.bags} bags of {int(cal.held[0].sum())} clients"
        if cal.bags > 1
        else f"one set of {cal.clients_ref} clients"
    )
    print(f"  reference tables            {tables}")
    print(f"  clients reaching it here    {(peaks >= cal.threshold).mean():.2%}")
    print(f"  highest peaks               {_top_peaks(cal.peaks, det.peak_clients, cal.threshold)}")
    print(f"  threshold, resampled        {range_wording(*spread)}")
    if check:
        print(f"  held out, reaching it       {check}")
    print(f"  signals                     {', '.join(cal.signals)}")
    print(f"  space                       {space_file} (levels {det.space.levels})")
    print(f"\nwrote {out}, {cal_file}, {png}")
    print(f"use it with: spanwatch --config {out} replay EVENTS.jsonl  (or run)")
    return 0


def _top_peaks(peaks: list[float], ids: list[str], threshold: float, n: int = 5) -> str:
    """The calibration clients with the highest evidence, which set the
    threshold: a few far above the rest are worth a look (an extractor in
    the benign traffic, or a user broad enough to pass for one)."""
    order = sorted(range(len(peaks)), key=lambda i: -peaks[i])
    top = ", ".join(f"{ids[i]} {peaks[i]:.1f}" for i in order[:n])
    above = sum(p >= threshold for p in peaks)
    return f"{top} (the threshold is the {above}{_ordinal(above)} highest)"


def _ordinal(n: int) -> str:
    return "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")


def _held_out(client_id: str, fraction: float) -> bool:
    """Whether tune keeps a client out of the calibration, by a hash of its
    id (another byte than calibrate's split into halves)."""
    import hashlib

    return hashlib.sha256(client_id.encode()).digest()[1] < fraction * 256


def _lenient_events(
    path: Path, rejects: RejectWriter, length: int, n_clients: int, seed: int, max_bytes: int
) -> list[tuple[int, Event]]:
    """Benign traffic for tune, with the line of each event (0 for those
    drawn from a pool): events as they are (real clients), or a pool of
    {"text", "group"} records from which clients are drawn like the eval's
    benign clients. Prompts over `max_bytes` are rejected, as replay and run
    reject them."""
    from spanwatch.evaluate import _benign

    events: list[tuple[int, Event]] = []
    pool_texts: list[str] = []
    pool_groups: dict[str, list[int]] = {}
    with path.open("rb") as fh:
        for line_no, raw in enumerate(fh, start=1):
            raw = raw.strip()
            if not raw:
                continue
            try:
                data = json.loads(raw)
                if isinstance(data, dict) and "text" in data and "group" in data:
                    pool_groups.setdefault(str(data["group"]), []).append(len(pool_texts))
                    pool_texts.append(str(data["text"]))
                    continue
                events.append((line_no, parse_event(raw, max_prompt_bytes=max_bytes)))
            except (EventError, ValueError) as e:
                rejects.write(line_no, raw, getattr(e, "reason", str(e)))
    if pool_texts:
        rng = np.random.default_rng(seed)
        for c in range(n_clients):
            for pos, t in enumerate(_benign(rng, pool_groups, length)):
                drawn = Event(client_id=f"pool-{c:04d}", prompt=pool_texts[int(t)], ts=float(pos))
                events.append((0, drawn))
    if not events:
        raise SpanwatchError(f"{path} holds no usable benign events or pool records")
    return events


def cmd_schema(args: argparse.Namespace, cfg: Settings) -> int:
    from spanwatch.alerts import schema_json

    text = schema_json(args.kind)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


# ---------------------------------------------------------------- parser


_TARGET = "share of benign clients that may alert at some point of their stream"


def _confidence_arg(s: argparse.ArgumentParser) -> None:
    s.add_argument(
        "--confidence",
        type=float,
        help="keep the benign rate within --target-fpr with this probability (e.g. 0.9), "
        "not only on average: a higher threshold",
    )


class _Help(argparse.HelpFormatter):
    """Help that names an option's default, when it has one worth naming."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        d = action.default
        quiet = d is None or isinstance(d, bool) or d == argparse.SUPPRESS
        if action.option_strings and not quiet and "%(default)" not in text:
            text += (" " if text else "") + "(default: %(default)s)"
        return text


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="spanwatch",
        description="Detect model extraction in the prompt stream of an LLM API.",
        formatter_class=_Help,
    )
    p.add_argument("--version", action="version", version=f"spanwatch {__version__}")
    p.add_argument("--config", help="TOML config file (env SPANWATCH_* and flags override it)")
    p.add_argument("-v", "--verbose", action="count", default=0, help="-v info, -vv debug")
    p.add_argument("--log-format", choices=["text", "json"], default="text")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=text, description=text, formatter_class=_Help)

    s = command("replay", "run the detector over an events file (no Kafka)")
    s.add_argument("events", help="JSONL file of events")
    s.add_argument("--space", help="space file from `spanwatch fit-space`")
    s.add_argument("--out", help="alerts JSONL (default: stdout)")
    s.add_argument("--rejects", help="bad lines go here (default: OUT.rejects.jsonl)")
    s.add_argument("--fit-events", type=int, help="without --space, fit on this many events")
    s.add_argument("--save-space", help="save the fitted space to this file")
    s.add_argument("--batch-size", type=int, help="events per store update")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_replay)

    s = command("fit-space", "fit the map of the input space on a corpus")
    s.add_argument("corpus", help='JSONL of events or of {"text": ...} records')
    s.add_argument("--out", required=True, help="space file to write")
    s.add_argument("--limit", type=int, help="use at most this many records")
    s.add_argument("--rejects", help="bad lines go here (default: OUT.rejects.jsonl)")
    s.set_defaults(func=cmd_fit_space)

    s = command("simulate", "write demo traffic: benign and extracting clients")
    s.add_argument("--out", required=True, help="events JSONL to write")
    s.add_argument("--truth", help="who is who (default: OUT.truth.jsonl)")
    s.add_argument("--seed", type=int, default=0, help="seed of the simulated traffic")
    s.add_argument("--benign", type=int, default=40, help="benign clients")
    s.add_argument("--harvesters", type=int, default=2, help="clients harvesting every topic")
    s.add_argument("--sweepers", type=int, default=1, help="clients sweeping the benign topics")
    s.add_argument("--template-sweepers", type=int, default=1, help="clients filling one template")
    s.set_defaults(func=cmd_simulate)

    s = command("run", "the streaming service on Kafka")
    s.add_argument("--space", help="space file (default: space.path from the config)")
    s.add_argument("--bootstrap-servers", help="overrides kafka.bootstrap_servers")
    s.add_argument("--group-id", help="overrides kafka.group_id")
    s.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port")
    s.add_argument(
        "--exit-when-idle", type=float, metavar="SECONDS", help="stop once caught up and idle"
    )
    s.add_argument(
        "--role",
        choices=("detect", "groups"),
        default="detect",
        help="detect: consume prompts; groups: consume client summaries and raise group alerts",
    )
    s.set_defaults(func=cmd_run)

    s = command("produce", "load an events file into the prompts topic")
    s.add_argument("events", help="JSONL file; lines are sent as they are, keyed by client_id")
    s.add_argument("--bootstrap-servers", help="overrides kafka.bootstrap_servers")
    s.add_argument("--topic", help="overrides kafka.prompts_topic")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_produce)

    s = command("eval", "measure detection on labelled pools")
    s.add_argument("--benign", required=True, help="benign pool: JSONL of {text, group}")
    s.add_argument("--attack", required=True, help="attack pool: JSONL of {text, group}")
    s.add_argument("--templates", help="pool whose groups are templates (template sweeper)")
    s.add_argument("--stream-length", type=int, default=1500, help="queries per client")
    s.add_argument("--seed", type=int, default=0, help="seed of the clients drawn and the split")
    s.add_argument("--report", default="out/eval", help="folder for report.json and plots")
    s.add_argument("--clients", type=int, default=400, help="held-out benign clients")
    s.add_argument(
        "--calibration-clients",
        type=int,
        default=800,
        help="benign clients to calibrate on (half reference, half threshold)",
    )
    s.add_argument("--attackers", type=int, default=100, help="clients per attack scenario")
    s.add_argument("--target-fpr", type=float, default=0.005, help=_TARGET)
    _confidence_arg(s)
    s.add_argument(
        "--sybil",
        type=int,
        default=0,
        metavar="N",
        help="also split a harvest over N accounts of stream-length/N queries "
        "and measure group detection (groups.json)",
    )
    s.add_argument("--no-progress", action="store_true", help="no progress bars")
    s.set_defaults(func=cmd_eval)

    s = command("tune", "calibrate thresholds on your benign traffic")
    s.add_argument("--benign", required=True, help="your traffic: events, or {text, group} pool")
    s.add_argument("--target-fpr", type=float, default=0.01, help=_TARGET)
    _confidence_arg(s)
    s.add_argument("--out", required=True, help="config TOML to write")
    s.add_argument("--space", help="space file (default: fit one on the benign traffic)")
    s.add_argument(
        "--stream-length", type=int, default=1500, help="queries per client, for pool input"
    )
    s.add_argument("--clients", type=int, default=400, help="clients drawn, for pool input")
    s.add_argument("--seed", type=int, default=0, help="seed of the clients drawn from a pool")
    s.add_argument(
        "--holdout",
        type=float,
        default=0.0,
        help="share of clients kept out of the calibration, to measure the threshold on",
    )
    s.add_argument("--no-progress", action="store_true", help="no progress bars")
    s.set_defaults(func=cmd_tune)

    s = command("schema", "print the JSON Schema of alerts")
    s.add_argument("--out", help="write it to this file")
    s.add_argument("--kind", choices=("client", "group"), default="client", help="which alert")
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
