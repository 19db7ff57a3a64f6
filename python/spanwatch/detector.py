"""`Detector`: the library entry point. Plain Python over the Rust store;
it knows nothing of Kafka."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel

from spanwatch._core import SketchStore
from spanwatch.alerts import SEVERITIES, Alert, Evidence, Reason, alert_id, utc
from spanwatch.batch import Batch
from spanwatch.calibrate import (
    Calibration,
    Signals,
    fit_calibration,
    group_sums,
    max_evidence,
)
from spanwatch.config import Settings, load_settings
from spanwatch.embed import Embedder, embedder_from
from spanwatch.errors import ConfigError, EventError, SnapshotError, SpaceError
from spanwatch.events import Event
from spanwatch.groups import GroupDetector, Summary
from spanwatch.links import link_values
from spanwatch.scoring import RULE, CoverageScore, FeatureRow, evidence_of, score_coverage
from spanwatch.space import Space

__all__ = ["ClientReport", "Detector", "store_for"]

log = logging.getLogger("spanwatch.detector")

# Given a step's name ("embed", "sketch") and its size, returns what to call
# with each piece done (a progress bar's update, say), as `evaluate` takes it.
Steps = Callable[[str, int], Callable[[int], None]]
# Prompts embedded at once when progress is reported.
EMBED_CHUNK = 2048


def store_for(space: Space, config: Settings, *, max_clients: int | None = None) -> SketchStore:
    """An empty store shaped by the space's levels and the sketch settings,
    measuring divergence against the space's population."""
    s = config.sketch
    hist_level = min(s.hist_level, len(space.levels) - 1)
    store = SketchStore(
        secret=config.secret_bytes(),
        levels=space.levels,
        hist_level=hist_level,
        num_perm=s.num_perm,
        shingle_size=s.shingle_size,
        hll_precision=s.hll_precision,
        band_count=s.band_count,
        band_rows=s.band_rows,
        recent_prompts=s.recent_prompts,
        max_clients=max_clients or s.max_clients,
        idle_ttl=s.idle_ttl,
        stray_dim=space.dim if s.strays else 0,
        stray_reservoir=s.stray_reservoir,
        stray_open=s.stray_open,
        stray_radius=s.stray_radius,
    )
    store.set_reference(space.freqs[hist_level].tolist())
    return store


class ClientReport(BaseModel):
    """Everything the detector knows of one client."""

    client_id: str
    query_count: int
    first_seen: datetime | None
    last_seen: datetime | None
    distinct_prompts: float
    near_duplicate_share: float
    cells: dict[str, int]
    expected_cells: dict[str, float]
    coverage_ratio: dict[str, float]
    score: float
    evidence: float
    alarm_bound: float | None
    alerted: str | None


class Detector:
    """Embeds prompts, maps them to cells of the input space, keeps one
    sketch per client and raises an `Alert` when a client's queries span the
    space the way a model thief's do."""

    def __init__(
        self,
        config: Settings | None = None,
        space: Space | None = None,
        embedder: Embedder | None = None,
    ) -> None:
        self.config = config if config is not None else load_settings()
        self._embedder = embedder
        self.space: Space | None = None
        self.store: SketchStore | None = None
        self.calibration: Calibration | None = None
        # highest evidence ratio of each client of the last calibrate() call
        self.calibration_peaks: npt.NDArray[np.float64] = np.zeros(0)
        # the clients behind `calibration.peaks` (which set the threshold), in its order
        self.peak_clients: list[str] = []
        self._signals: Signals | None = None
        # metadata values that may link each client to others (groups.link_keys)
        self._links: dict[str, list[str]] = {}
        # clients that passed a checkpoint in the last observe() call
        self.checkpointed: list[str] = []
        if path := self.config.scoring.calibration:
            self.calibration = Calibration.load(path)
            log.info("calibration %s: %s", path, self.calibration.describe())
            chosen = self.config.scoring.threshold
            if chosen and not math.isclose(chosen, self.calibration.threshold, rel_tol=1e-6):
                log.info("scoring.threshold %.3f is used instead of the calibration's", chosen)
        if self.config.using_dev_secret:
            log.warning(
                "no secret_key configured: using the built-in development key. "
                "Set SPANWATCH_SECRET_KEY so attackers cannot predict the sketch hashes."
            )
        if space is not None:
            self.use_space(space)

    @property
    def embedder(self) -> Embedder:
        """The embedder, loaded on first use from the config if none was given."""
        if self._embedder is None:
            self._embedder = embedder_from(self.config.embed)
        return self._embedder

    def use_space(self, space: Space) -> None:
        """Adopts a space and starts an empty store shaped by its levels."""
        space.configure(self.config.space)
        self.space = space
        self.store = store_for(space, self.config)
        self._signals = Signals(space, self.store.feature_names, strays=self.config.sketch.strays)
        self._check_calibration()

    def _check_calibration(self) -> None:
        cal, space = self.calibration, self.space
        if cal is None or space is None:
            return
        if list(cal.levels) != list(space.levels):
            raise ConfigError(
                f"the calibration was made on a space with levels {cal.levels}, "
                f"this space has {space.levels}: calibrate again (spanwatch tune)"
            )
        assert self._signals is not None
        if list(cal.signals) != self._signals.names:
            raise ConfigError(
                f"the calibration scores the signals {cal.signals}, this config gives "
                f"{self._signals.names} (sketch.strays adds one): calibrate again (spanwatch tune)"
            )
        if cal.every != self.config.scoring.checkpoint_every:
            raise ConfigError(
                f"the calibration used checkpoints every {cal.every} queries; "
                f"scoring.checkpoint_every is {self.config.scoring.checkpoint_every}"
            )

    def fit_space(self, events: Iterable[Event], *, progress: Steps | None = None) -> Space:
        """Fits the map of the input space on these events and starts afresh.
        `progress`, if given, hears how the embedding goes."""
        batch = list(events)
        if not batch:
            raise SpaceError("cannot fit a space on no events")
        emb = self.embed(batch, progress=progress("embed", len(batch)) if progress else None)
        sp = self.config.space
        space = Space.fit(
            emb,
            levels=self.config.sketch.levels,
            seed=sp.seed,
            niter=sp.niter,
            min_points_per_cell=sp.min_points_per_cell,
            model_id=self.embedder.model_id if self._needs_model(batch) else "",
        )
        self.use_space(space)
        return space

    @staticmethod
    def _needs_model(events: Sequence[Event]) -> bool:
        return any(not e.has_embedding for e in events)

    def _batch(self, events: Sequence[Event] | Batch) -> Batch:
        if isinstance(events, Batch):
            return events
        return Batch.from_events(events, self.space.dim if self.space is not None else None)

    def embed(
        self, events: Sequence[Event] | Batch, *, progress: Callable[[int], None] | None = None
    ) -> npt.NDArray[np.float32]:
        """Embeddings of the events, one unit row each: the precomputed ones
        where given, the model's for the rest. Raises EventError on a wrong
        dimension or a zero or non-finite embedding. With `progress`, the
        model works through the prompts in pieces and it hears each piece's
        size (the precomputed ones count at once)."""
        batch = self._batch(events)
        given = np.flatnonzero(batch.has_vector)
        todo = np.flatnonzero(~batch.has_vector)
        want = self.space.dim if self.space is not None else batch.dim if len(given) else None
        if len(todo):
            dim = self.embedder.dim
            if want is not None and dim != want:
                raise SpaceError(f"the embedder gives {dim} dimensions but the space has {want}")
            want = dim
        if len(given) and batch.dim != want:
            i = int(given[0])
            raise EventError(
                f"event {batch.event_ids[i] or i}: embedding has {batch.dim} dimensions, "
                f"expected {want}"
            )
        out = np.zeros((len(batch), want or 0), dtype=np.float32)
        if len(given):
            units, bad = batch.unit_vectors()
            if bad:
                i, reason = bad[0]
                raise EventError(f"event {batch.event_ids[i] or i}: {reason}")
            out[given] = units
        if progress is not None and len(given):
            progress(len(given))
        step = len(todo) if progress is None else EMBED_CHUNK
        for lo in range(0, len(todo), max(step, 1)):
            part = todo[lo : lo + step]
            out[part] = self.embedder.embed([batch.prompts[i] for i in part.tolist()])
            if progress is not None:
                progress(len(part))
        return out

    def _require(self) -> tuple[Space, SketchStore]:
        if self.space is None or self.store is None:
            raise SpaceError("the detector has no space: call fit_space() or pass space=")
        return self.space, self.store

    def observe(
        self,
        events: Sequence[Event] | Batch,
        embeddings: npt.NDArray[np.float32] | None = None,
        *,
        cells: npt.NDArray[np.int64] | None = None,
    ) -> list[Alert]:
        """Folds a batch of events (a list of `Event`, or a `Batch`) in and
        returns the alerts it raised, in event order. The batch is checked
        whole before any state changes. `embeddings`, if given, holds one
        row per event (as `embed` gives); `cells`, if given, the events'
        cells (as `space.assign` gives), and then embeddings are not needed
        (unless the store tracks stray queries: without them it skips that)."""
        space, store = self._require()
        if not len(events):
            return []
        batch = self._batch(events)
        emb = embeddings
        if emb is None and (cells is None or store.stray_dim):
            emb = self.embed(batch)
        if emb is not None and emb.shape != (len(batch), space.dim):
            raise SpaceError(f"embeddings must be ({len(batch)}, {space.dim}), got {emb.shape}")
        if cells is None:
            assert emb is not None
            cells = space.assign(emb)
        elif cells.shape != (len(batch), len(space.levels)):
            raise SpaceError(
                f"cells must be ({len(batch)}, {len(space.levels)}), got {cells.shape}"
            )
        ids = batch.client_ids
        every = self.config.scoring.checkpoint_every
        tracked = np.ascontiguousarray(emb, dtype=np.float32) if store.stray_dim else None
        _, at, rows = store.update(ids, batch.prompts, cells, batch.ts, every, tracked)
        self._note_links(batch)
        self.checkpointed = list(dict.fromkeys(ids[i] for i in at.tolist()))
        if self.calibration is not None:
            return self._decide_sequential(batch, at.tolist(), rows)
        names = store.feature_names
        alerts = []
        # A client may pass several checkpoints in one batch; its rows were
        # taken before any of this batch's alerts were recorded.
        raised: dict[str, int] = {}
        for i, row in zip(at.tolist(), rows, strict=True):
            feats = FeatureRow.from_array(names, row)
            sc = score_coverage(feats, space, self.config.scoring)
            level = max(int(feats["alert_level"]), raised.get(ids[i], 0))
            if sc.severity_level > level:
                raised[ids[i]] = sc.severity_level
                store.set_alert_level(ids[i], sc.severity_level)
                alerts.append(self._alert(batch.event(i), feats, sc))
        return alerts

    def _note_links(self, batch: Batch) -> None:
        keys = self.config.groups.link_keys
        if not keys:
            return
        cap = self.config.groups.max_values
        for i, cid in enumerate(batch.client_ids):
            vals = link_values(batch.meta(i), keys)
            if vals:
                mine = self._links.setdefault(cid, [])
                mine.extend(v for v in vals if v not in mine and len(mine) < cap)
        store = self.store
        if store is not None and len(self._links) > 2 * len(store) + 1000:
            self._links = {c: v for c, v in self._links.items() if c in store}

    def summaries(self, client_ids: Sequence[str]) -> list[Summary]:
        """Each known client's summary with its metadata link values: what
        consumers publish for the group detector."""
        _, store = self._require()
        return [(store.summary(c), tuple(self._links.get(c, ()))) for c in client_ids if c in store]

    def group_detector(self) -> GroupDetector:
        """A group detector on this detector's space and calibration."""
        space, _ = self._require()
        if self.calibration is None:
            raise ConfigError(
                "group detection needs a calibrated detector (spanwatch tune, then "
                "scoring.calibration)"
            )
        return GroupDetector(space, self.config, self.calibration)

    @property
    def threshold(self) -> float:
        """The alarm threshold of the sequential test, on the ratio of a
        client's evidence to the benign envelope at its query count."""
        assert self.calibration is not None
        return self.config.scoring.threshold or self.calibration.threshold

    def alarm_bound(self, count: int) -> float:
        """The CUSUM value at which a client with `count` queries alarms."""
        assert self.calibration is not None
        return float(self.calibration.bound(count, self.threshold))

    def _severity(self, evidence: float, count: int) -> int:
        """0 below the bound, then low, medium, high at 1x, 2x, 4x of it."""
        h = self.alarm_bound(count)
        return 0 if evidence < h else 1 if evidence < 2 * h else 2 if evidence < 4 * h else 3

    def _decide_sequential(
        self, batch: Batch, at: list[int], rows: npt.NDArray[np.float64]
    ) -> list[Alert]:
        cal, sig, store = self.calibration, self._signals, self.store
        assert cal is not None and sig is not None and store is not None
        if not at:
            return []
        names = store.feature_names
        counts = rows[:, sig.col["count"]].astype(np.int64)
        values = sig.matrix(rows)
        z, p = cal.surprise(counts, values)
        drift = self.config.scoring.drift if self.config.scoring.drift is not None else cal.drift
        state: dict[str, tuple[float, int]] = {}
        alerts = []
        for j, i in enumerate(at):
            cid = batch.client_ids[i]
            prev, level = state.get(cid, (float(rows[j, sig.col["evidence"]]), -1))
            if level < 0:
                level = int(rows[j, sig.col["alert_level"]])
            evidence = max(0.0, prev + float(z[j]) - drift)
            sev = self._severity(evidence, int(counts[j]))
            if sev > level:
                level = sev
                feats = FeatureRow.from_array(names, rows[j])
                why = [
                    Reason(
                        signal="sequential_evidence",
                        value=round(evidence, 4),
                        threshold=round(self.alarm_bound(int(counts[j])), 4),
                        detail=(
                            "CUSUM of per-checkpoint surprise; the bound is the calibrated "
                            f"threshold {self.threshold:.3f} times the benign envelope at "
                            f"{int(counts[j])} queries"
                        ),
                    ),
                    *cal.reasons(int(counts[j]), values[j], p[j]),
                ]
                alerts.append(self._sequential_alert(batch.event(i), feats, evidence, sev, why))
            state[cid] = (evidence, level)
        for cid, (evidence, level) in state.items():
            if cid in store:
                store.set_evidence(cid, evidence)
                store.set_alert_level(cid, level)
        return alerts

    def _sequential_alert(
        self, ev: Event, f: FeatureRow, evidence: float, sev: int, reasons: list[Reason]
    ) -> Alert:
        severity = SEVERITIES[sev - 1]
        n = int(f["count"])
        return Alert(
            alert_id=alert_id(ev.client_id, "sequential-v1", severity, n),
            client_id=ev.client_id,
            time=utc(ev.ts),
            event_id=ev.event_id,
            severity=severity,
            score=round(evidence, 4),
            threshold=round(self.alarm_bound(n), 4),
            reasons=reasons,
            evidence=evidence_of(self._require()[0], f),
        )

    def calibrate(
        self,
        benign_events: Iterable[Event],
        *,
        target_fpr: float = 0.01,
        stream_length: int | None = None,
        confidence: float | None = None,
        progress: Steps | None = None,
    ) -> Calibration:
        """Calibrates the sequential test on benign traffic only: clients are
        split in two halves by a hash of their id, one for the reference
        distributions, one for the threshold. Adopts and returns the result.
        Without a `confidence` the benign alert rate is `target_fpr` on
        average; with one, it stays within it with that probability.
        Clients with fewer queries than `scoring.checkpoint_every` cannot
        alert and are left out, with a warning. `progress`, if given, hears
        how the embedding and the sketching go."""
        streams, rows = self._client_rows(benign_events, stream_length, progress)
        # A client with fewer queries than one checkpoint is never scored and
        # cannot alert: counted in, it would only lower the threshold for the
        # clients that can.
        every = self.config.scoring.checkpoint_every
        short = sum(1 for r in rows if not len(r))
        if short:
            log.warning(
                "%d of %d benign clients sent fewer than %d queries (scoring.checkpoint_every) "
                "and are left out of the calibration: they cannot alert",
                short,
                len(rows),
                every,
            )
            kept = [(st, r) for st, r in zip(streams, rows, strict=True) if len(r)]
            streams, rows = [st for st, _ in kept], [r for _, r in kept]
        if not rows:
            raise ConfigError(f"no benign client sent the {every} queries of one checkpoint")
        import hashlib

        halves = [hashlib.sha256(s.client.encode()).digest()[0] & 1 for s in streams]
        ref = [r for r, h in zip(rows, halves, strict=True) if h == 0]
        thr = [r for r, h in zip(rows, halves, strict=True) if h == 1]
        # cross-fitted: the threshold clients' peaks first, then the reference clients'
        pairs = list(zip(streams, halves, strict=True))
        ids = [s.client for want in (1, 0) for s, h in pairs if h == want]
        assert self._signals is not None
        cal = fit_calibration(
            self._signals,
            ref,
            thr,
            target_fpr=target_fpr,
            stream_length=max((len(st.texts) for st in streams), default=0),
            confidence=confidence,
            **self.config.scoring.calibration_options(),
        )
        self.calibration_peaks = np.array([max_evidence(cal, self._signals, r) for r in rows])
        cal.group_sums = group_sums(
            self.calibration_peaks / cal.threshold, self.config.groups.target_fpr
        )
        self.peak_clients = ids
        self.calibration = cal
        return cal

    def peaks(self, events: Iterable[Event], *, progress: Steps | None = None) -> dict[str, float]:
        """Each client's highest evidence over its events under the adopted
        calibration: it alerts where this reaches `calibration.threshold`.
        The events are scored apart (the detector's own clients are not
        touched): to check a calibration on traffic it never saw."""
        self._require()
        if self.calibration is None:
            raise ConfigError("peaks need a calibration: calibrate first, or set one in the config")
        cal, signals = self.calibration, self._signals
        assert signals is not None
        streams, rows = self._client_rows(events, None, progress)
        return {
            st.client: max_evidence(cal, signals, r) for st, r in zip(streams, rows, strict=True)
        }

    def _client_rows(
        self, events: Iterable[Event], stream_length: int | None, progress: Steps | None = None
    ) -> tuple[list[Any], list[npt.NDArray[np.float64]]]:
        """Each client's events (the first `stream_length` of them) run
        through a store of their own: the clients' streams, sorted by id,
        and their checkpoint rows."""
        from spanwatch.evaluate import Stream, run_streams

        space, _ = self._require()
        events = list(events)
        by_client: dict[str, list[int]] = {}
        for i, e in enumerate(events):
            by_client.setdefault(e.client_id, []).append(i)
        if stream_length:
            by_client = {c: ix[:stream_length] for c, ix in by_client.items()}
        emb = self.embed(events, progress=progress("embed", len(events)) if progress else None)
        cells = space.assign(emb)
        streams = [
            Stream(c, "benign", np.array(ix, dtype=np.int64)) for c, ix in sorted(by_client.items())
        ]
        total = sum(len(s.texts) for s in streams)
        rows = run_streams(
            space,
            self.config,
            streams,
            [e.prompt for e in events],
            cells,
            emb=emb,
            progress=progress("sketch", total) if progress else None,
        )
        return streams, rows

    def _alert(self, ev: Event, f: FeatureRow, sc: CoverageScore) -> Alert:
        assert sc.severity is not None
        n = int(f["count"])
        return Alert(
            alert_id=alert_id(ev.client_id, RULE, sc.severity, n),
            client_id=ev.client_id,
            time=utc(ev.ts),
            event_id=ev.event_id,
            severity=sc.severity,  # type: ignore[arg-type]
            score=round(sc.score, 4),
            threshold=self.config.scoring.coverage_threshold,
            reasons=sc.reasons,
            evidence=Evidence(
                query_count=n,
                coverage={str(lv): round(f[f"coverage_{lv}"], 6) for lv in sc.cells},
                cells={str(lv): c for lv, c in sc.cells.items()},
                expected_cells={str(lv): round(e, 3) for lv, e in sc.expected.items()},
                near_duplicate_share=round(f["near_dup_share"], 4),
                distinct_prompts=round(f["distinct_prompts"], 1),
                first_seen=utc(f["first_ts"]),
                last_seen=utc(f["last_ts"]),
            ),
        )

    def report(self, client_id: str) -> ClientReport:
        """The client's sketch, scored now: the coverage rule's score, and the
        sequential evidence with the bound it must reach to alarm when the
        detector is calibrated. Raises KeyError for an unknown client."""
        space, store = self._require()
        if client_id not in store:
            raise KeyError(f"unknown client: {client_id!r}")
        f = FeatureRow.from_array(store.feature_names, store.features([client_id])[0])
        sc = score_coverage(f, space, self.config.scoring)
        level = int(f["alert_level"])
        return ClientReport(
            client_id=client_id,
            query_count=int(f["count"]),
            first_seen=utc(f["first_ts"]),
            last_seen=utc(f["last_ts"]),
            distinct_prompts=round(f["distinct_prompts"], 1),
            near_duplicate_share=f["near_dup_share"],
            cells={str(k): v for k, v in sc.cells.items()},
            expected_cells={str(k): v for k, v in sc.expected.items()},
            coverage_ratio={str(k): v for k, v in sc.ratios.items()},
            score=sc.score,
            evidence=f["evidence"],
            alarm_bound=self.alarm_bound(int(f["count"])) if self.calibration else None,
            alerted=("low", "medium", "high")[level - 1] if level else None,
        )

    def clients(self) -> list[str]:
        _, store = self._require()
        return store.client_ids()

    def snapshot(self) -> bytes:
        """Versioned, checksummed bytes of every client's state."""
        _, store = self._require()
        return store.snapshot()

    def restore(self, data: bytes) -> None:
        """Replaces the client state with a snapshot taken under the same
        secret and space levels. Raises SnapshotError otherwise."""
        space, _ = self._require()
        store = SketchStore.restore(data, secret=self.config.secret_bytes())
        if list(store.levels) != list(space.levels):
            raise SnapshotError(
                f"snapshot levels {store.levels} do not match the space's {space.levels}"
            )
        want = space.dim if self.config.sketch.strays else 0
        if store.stray_dim != want:
            log.warning(
                "the snapshot's stray tracker (dimensions %d; 0 = none) is not the config's "
                "(%d): restored clients score 0 on stray queries until they start afresh",
                store.stray_dim,
                want,
            )
        store.set_reference(space.freqs[store.hist_level].tolist())
        self.store = store

    def stats(self) -> dict[str, Any]:
        _, store = self._require()
        return {"clients": len(store), "evictions": store.evictions}
