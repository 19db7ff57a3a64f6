"""`Detector`: the library entry point. Plain Python over the Rust store;
it knows nothing of Kafka."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel

from spanwatch._core import SketchStore
from spanwatch.alerts import Alert, Evidence, alert_id, utc
from spanwatch.config import Settings, load_settings
from spanwatch.embed import CachedEmbedder, Embedder, SentenceTransformerEmbedder
from spanwatch.errors import EventError, SnapshotError, SpaceError
from spanwatch.events import Event
from spanwatch.scoring import RULE, CoverageScore, FeatureRow, score_coverage
from spanwatch.space import Space

__all__ = ["ClientReport", "Detector"]

log = logging.getLogger("spanwatch.detector")


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
            e = self.config.embed
            inner = SentenceTransformerEmbedder(
                e.model_path, batch_size=e.batch_size, device=e.device
            )
            self._embedder = CachedEmbedder(inner, e.cache_dir) if e.cache else inner
        return self._embedder

    def use_space(self, space: Space) -> None:
        """Adopts a space and starts an empty store shaped by its levels."""
        s = self.config.sketch
        hist_level = min(s.hist_level, len(space.levels) - 1)
        self.space = space
        self.store = SketchStore(
            secret=self.config.secret_bytes(),
            levels=space.levels,
            hist_level=hist_level,
            num_perm=s.num_perm,
            shingle_size=s.shingle_size,
            hll_precision=s.hll_precision,
            band_count=s.band_count,
            band_rows=s.band_rows,
            recent_prompts=s.recent_prompts,
            max_clients=s.max_clients,
            idle_ttl=s.idle_ttl,
        )

    def fit_space(self, events: Iterable[Event]) -> Space:
        """Fits the map of the input space on these events and starts afresh."""
        batch = list(events)
        if not batch:
            raise SpaceError("cannot fit a space on no events")
        emb = self.embed(batch)
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
        return any(e.embedding is None for e in events)

    def embed(self, events: Sequence[Event]) -> npt.NDArray[np.float32]:
        """Embeddings of the events: the precomputed ones where given, the
        model's for the rest. Raises EventError on a wrong dimension."""
        want = self.space.dim if self.space is not None else None
        given = [i for i, e in enumerate(events) if e.embedding is not None]
        if want is None and given:
            want = len(events[given[0]].embedding or ())
        todo = [i for i, e in enumerate(events) if e.embedding is None]
        if todo:
            dim = self.embedder.dim
            if want is not None and dim != want:
                raise SpaceError(f"the embedder gives {dim} dimensions but the space has {want}")
            want = dim
        assert want is not None or not events
        out = np.zeros((len(events), want or 0), dtype=np.float32)
        for i in given:
            vec = events[i].embedding or ()
            if len(vec) != want:
                raise EventError(
                    f"event {events[i].event_id or i}: embedding has {len(vec)} dimensions, "
                    f"expected {want}"
                )
            v = np.asarray(vec, dtype=np.float32)
            norm = float(np.linalg.norm(v))
            if not np.isfinite(norm) or norm == 0.0:
                raise EventError(
                    f"event {events[i].event_id or i}: embedding is zero or not finite"
                )
            out[i] = v / norm
        if todo:
            out[todo] = self.embedder.embed([events[i].prompt for i in todo])
        return out

    def _require(self) -> tuple[Space, SketchStore]:
        if self.space is None or self.store is None:
            raise SpaceError("the detector has no space: call fit_space() or pass space=")
        return self.space, self.store

    def observe(
        self, events: Sequence[Event], embeddings: npt.NDArray[np.float32] | None = None
    ) -> list[Alert]:
        """Folds a batch of events in and returns the alerts it raised, in
        event order. The batch is checked whole before any state changes.
        `embeddings`, if given, holds one row per event (as `embed` gives)."""
        space, store = self._require()
        if not events:
            return []
        emb = self.embed(events) if embeddings is None else embeddings
        if emb.shape != (len(events), space.dim):
            raise SpaceError(f"embeddings must be ({len(events)}, {space.dim}), got {emb.shape}")
        cells = space.assign(emb)
        ids = [e.client_id for e in events]
        ts = np.array([e.ts for e in events], dtype=np.float64)
        every = self.config.scoring.checkpoint_every
        _, at, rows = store.update(ids, [e.prompt for e in events], cells, ts, every)
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
                alerts.append(self._alert(events[i], feats, sc))
        return alerts

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
        """The client's sketch, scored now. Raises KeyError for an unknown client."""
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
        self.store = store

    def stats(self) -> dict[str, Any]:
        _, store = self._require()
        return {"clients": len(store), "evictions": store.evictions}
