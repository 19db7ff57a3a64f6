"""Which events' own embeddings replay and tune can use, checked one event
at a time (the detector refuses a batch with one bad event whole)."""

from __future__ import annotations

import pytest

from spanwatch.events import Event, vector_dim, vector_problem


def _ev(vec: list[float] | None = None) -> Event:
    return Event(client_id="c", prompt="p", ts=0.0, embedding=vec)


def _no_model() -> int:
    raise AssertionError("the model was not needed")


def test_the_space_decides_the_dimension_when_there_is_one() -> None:
    assert vector_dim([_ev([1.0, 0.0])], 384, _no_model) == 384


def test_events_without_embeddings_need_the_model_dimension() -> None:
    assert vector_dim([_ev([1.0, 0.0]), _ev()], None, lambda: 384) == 384


def test_without_a_space_or_the_model_the_most_common_size_wins() -> None:
    events = [_ev([1.0, 0.0, 0.0]), _ev([0.0, 1.0, 0.0]), _ev([1.0, 1.0])]
    assert vector_dim(events, None, _no_model) == 3


@pytest.mark.parametrize(
    ("vec", "why"),
    [
        (None, None),
        ([0.0, 3.0, 4.0], None),
        ([1.0, 2.0], "embedding has 2 dimensions, expected 3"),
        ([0.0, 0.0, 0.0], "embedding is zero or not finite"),
        ([3e38, 3e38, 0.0], "embedding is zero or not finite"),  # its norm overflows
    ],
)
def test_one_event_at_a_time(vec: list[float] | None, why: str | None) -> None:
    assert vector_problem(_ev(vec), 3) == why
