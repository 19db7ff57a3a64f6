"""`Batch`: events as columns, as the detector folds them in."""

from __future__ import annotations

import numpy as np
import pytest

from spanwatch.batch import Batch, parse_batch
from spanwatch.errors import EventError
from spanwatch.events import Event


def _events() -> list[Event]:
    return [
        Event(client_id="a", prompt="one", ts=1.0, event_id="e1", embedding=(1.0, 0.0)),
        Event(client_id="b", prompt="two", ts=2.0, meta={"org": "x"}),
        Event(client_id="c", prompt="three", ts=3.0, embedding=(0.0, 2.0)),
    ]


def test_columns_follow_the_events() -> None:
    b = Batch.from_events(_events())
    assert len(b) == 3 and b.dim == 2
    assert b.client_ids == ["a", "b", "c"]
    assert b.ts.tolist() == [1.0, 2.0, 3.0]
    assert b.has_vector.tolist() == [True, False, True]
    assert b.vectors.tolist() == [[1.0, 0.0], [0.0, 0.0], [0.0, 2.0]]
    assert b.meta(1) == {"org": "x"} and b.meta(0) is None


def test_a_wrong_dimension_names_the_event() -> None:
    with pytest.raises(EventError, match="event e1: embedding has 2 dimensions, expected 3"):
        Batch.from_events(_events(), dim=3)


def test_take_picks_rows_in_the_order_given() -> None:
    b = Batch.from_events(_events()).take([2, 0])
    assert b.client_ids == ["c", "a"]
    assert b.event_ids == [None, "e1"]
    assert b.vectors.tolist() == [[0.0, 2.0], [1.0, 0.0]]


def test_a_row_turns_back_into_its_event() -> None:
    events = _events()
    b = Batch.from_events(events)
    for i, e in enumerate(events):
        back = b.event(i)
        assert (back.client_id, back.prompt, back.ts, back.event_id, back.meta) == (
            e.client_id,
            e.prompt,
            e.ts,
            e.event_id,
            e.meta,
        )
        assert back.embedding == e.embedding


def test_meta_given_as_json_text_is_decoded_on_demand() -> None:
    raw = b'{"client_id": "a", "prompt": "p", "ts": 1, "meta": {"org": "acme", "n": [1]}}'
    b = parse_batch([raw], dim=2).batch
    assert b.metas[0] == '{"org": "acme", "n": [1]}'
    assert b.meta(0) == {"org": "acme", "n": [1]}


def test_zero_and_non_finite_vectors_are_named() -> None:
    b = Batch.from_events(_events())
    b.vectors[0] = 0.0
    b.vectors[2, 1] = np.nan
    assert b.bad_vectors() == [
        (0, "embedding is zero or not finite"),
        (2, "embedding is zero or not finite"),
    ]


def test_the_batch_parser_refuses_bad_vectors_with_a_reason() -> None:
    ok = b'{"client_id": "a", "prompt": "p", "ts": 1, "embedding": [0.6, 0.8]}'
    zero = b'{"client_id": "a", "prompt": "p", "ts": 1, "embedding": [0, 0]}'
    short = b'{"client_id": "a", "prompt": "p", "ts": 1, "embedding": [1]}'
    got = parse_batch([zero, ok, short], dim=2)
    assert got.positions == [1]
    assert got.errors == [
        (0, "embedding is zero or not finite"),
        (2, "embedding has 1 dimensions, expected 2"),
    ]
    assert got.batch.vectors.tolist() == [[pytest.approx(0.6), pytest.approx(0.8)]]


def test_unit_vectors_scale_the_given_rows_or_name_the_bad_ones() -> None:
    b = Batch.from_events(_events())
    units, bad = b.unit_vectors()
    assert bad == []
    assert units.tolist() == [[1.0, 0.0], [0.0, 1.0]]  # rows 0 and 2, in order
    b.vectors[2] = 0.0
    assert b.unit_vectors()[1] == [(2, "embedding is zero or not finite")]
