"""Events as columns: what the detector folds in, and the parser that turns a
polled batch of Kafka record values into one.

The common record (a JSON object with string `client_id` and `prompt`, a
numeric `ts`, and optionally `event_id`, `embedding` or `embedding_b64`, and
`meta`) is parsed in Rust, many at a time. Every other record goes through
`parse_event`, which accepts it or gives the reason it is refused: both paths
give the same values for the records the fast one takes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from spanwatch._core import parse_records
from spanwatch.errors import EventError
from spanwatch.events import UNUSABLE_VECTOR, Event, parse_event, vector_problem

__all__ = ["Batch", "Parsed", "parse_batch"]

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True, eq=False)
class Batch:
    """A batch of events, one row per event."""

    client_ids: list[str]
    prompts: list[str]
    ts: npt.NDArray[np.float64]
    event_ids: list[str | None]
    # (rows, dim) precomputed embeddings as given (not normalized); a row
    # without one is zero and false in `has_vector`
    vectors: F32
    has_vector: npt.NDArray[np.bool_]
    # a str is the `meta` object as JSON text, decoded by `meta()` on demand
    metas: list[dict[str, Any] | str | None]

    def __len__(self) -> int:
        return len(self.client_ids)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @classmethod
    def from_events(cls, events: Sequence[Event], dim: int | None = None) -> Batch:
        """Columns of these events. Their embeddings must all have `dim`
        values (by default, as many as the first one has): EventError
        otherwise, naming the event."""
        given = [(i, v) for i, e in enumerate(events) if (v := e.vector()) is not None]
        if dim is None:
            dim = len(given[0][1]) if given else 0
        vectors = np.zeros((len(events), dim), dtype=np.float32)
        for i, v in given:
            if len(v) != dim:
                raise EventError(
                    f"event {events[i].event_id or i}: embedding has {len(v)} dimensions, "
                    f"expected {dim}"
                )
            vectors[i] = v
        has_vector = np.zeros(len(events), dtype=bool)
        has_vector[[i for i, _ in given]] = True
        return cls(
            client_ids=[e.client_id for e in events],
            prompts=[e.prompt for e in events],
            ts=np.array([e.ts for e in events], dtype=np.float64),
            event_ids=[e.event_id for e in events],
            vectors=vectors,
            has_vector=has_vector,
            metas=[e.meta for e in events],
        )

    def take(self, rows: Sequence[int] | npt.NDArray[np.intp]) -> Batch:
        """The batch of these rows, in this order."""
        ix = np.asarray(rows, dtype=np.intp)
        pick = ix.tolist()
        return Batch(
            client_ids=[self.client_ids[i] for i in pick],
            prompts=[self.prompts[i] for i in pick],
            ts=self.ts[ix],
            event_ids=[self.event_ids[i] for i in pick],
            vectors=self.vectors[ix],
            has_vector=self.has_vector[ix],
            metas=[self.metas[i] for i in pick],
        )

    def meta(self, i: int) -> dict[str, Any] | None:
        m = self.metas[i]
        if isinstance(m, str):
            m = json.loads(m)
            self.metas[i] = m
        return m

    def event(self, i: int) -> Event:
        """Row i as an `Event` (for alerts, which are few)."""
        v = self.vectors[i] if self.has_vector[i] else None
        return Event.model_construct(
            client_id=self.client_ids[i],
            prompt=self.prompts[i],
            ts=float(self.ts[i]),
            event_id=self.event_ids[i],
            embedding=None if v is None else tuple(v.tolist()),
            meta=self.meta(i),
        )

    def bad_vectors(self) -> list[tuple[int, str]]:
        """Rows whose embedding is zero or not finite, with that reason."""
        return self._bad(*self._norms())

    def unit_vectors(self) -> tuple[F32, list[tuple[int, str]]]:
        """The embeddings of the rows that have one, scaled to unit length
        (in row order), and the rows that cannot be (`bad_vectors`)."""
        rows, norms = self._norms()
        bad = self._bad(rows, norms)
        if bad:
            return np.zeros((len(rows), self.dim), dtype=np.float32), bad
        units = (self.vectors[rows] / norms[:, None]).astype(np.float32, copy=False)
        return units, bad

    def _norms(self) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float32]]:
        rows = np.flatnonzero(self.has_vector)
        with np.errstate(over="ignore", invalid="ignore"):
            return rows, np.linalg.norm(self.vectors[rows], axis=1)

    @staticmethod
    def _bad(rows: npt.NDArray[np.intp], norms: npt.NDArray[np.float32]) -> list[tuple[int, str]]:
        bad = rows[~np.isfinite(norms) | (norms == 0)]
        return [(int(i), UNUSABLE_VECTOR) for i in bad]


@dataclass(frozen=True, eq=False)
class Parsed:
    """A polled batch after parsing: the good events as a `Batch`, the
    position of each among the values, and the reason for each refused one."""

    batch: Batch
    positions: list[int]
    errors: list[tuple[int, str]] = field(default_factory=list)


def parse_batch(
    values: Sequence[bytes | None],
    *,
    dim: int,
    max_prompt_bytes: int = 32_768,
    default_ts: Sequence[float | None] | None = None,
) -> Parsed:
    """Parses record values (JSON events, or None for a record without a
    value). `dim` is the embedding size the space expects; `default_ts`
    fills each value's missing ts (the Kafka record's timestamp)."""
    n = len(values)
    fill = np.full(n, np.nan)
    if default_ts is not None:
        fill[:] = [np.nan if t is None else t for t in default_ts]
    ok, ids, prompts, ts, event_ids, vectors, has_vector, raw_metas = parse_records(
        list(values), fill, dim, max_prompt_bytes
    )
    metas = cast(list[dict[str, Any] | str | None], raw_metas)
    errors: dict[int, str] = {}
    for i in np.flatnonzero(~ok).tolist():
        raw = values[i]
        if raw is None:
            errors[i] = "record has no value"
            continue
        t = fill[i]
        try:
            ev = parse_event(
                raw, max_prompt_bytes=max_prompt_bytes, default_ts=None if np.isnan(t) else t
            )
        except EventError as e:
            errors[i] = e.reason
            continue
        if why := vector_problem(ev, dim):
            errors[i] = why
            continue
        if (v := ev.vector()) is not None:
            vectors[i] = v
            has_vector[i] = True
        ids[i], prompts[i], event_ids[i] = ev.client_id, ev.prompt, ev.event_id
        ts[i] = ev.ts
        metas[i] = ev.meta
    # rows refused keep their None entries until `take` drops them below
    whole = Batch(
        client_ids=cast(list[str], ids),
        prompts=cast(list[str], prompts),
        ts=ts,
        event_ids=event_ids,
        vectors=vectors,
        has_vector=has_vector,
        metas=metas,
    )
    errors.update(whole.bad_vectors())
    if not errors:
        return Parsed(whole, list(range(n)))
    keep = [i for i in range(n) if i not in errors]
    return Parsed(whole.take(keep), keep, sorted(errors.items()))
