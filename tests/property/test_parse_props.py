"""`parse_batch` (Rust for the common record, `parse_event` for the rest)
agrees with `parse_event` on every record: the same events with the same
values, and the same reason for each one refused."""

from __future__ import annotations

import base64
import json
import math
import struct
from typing import Any

import numpy as np
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from spanwatch.batch import parse_batch
from spanwatch.errors import EventError
from spanwatch.events import Event, parse_event

DIM = 3
LIMIT = 64
PROPS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# text that trips the edge cases: blanks of both kinds of whitespace, the
# ASCII separators Python counts as space, lone surrogates, multi-byte text
tricky_text = st.one_of(
    st.text(max_size=8),
    st.text(alphabet=" \t\n\x1c\x1d\x1e\x1f\x85\xa0\u2028\u3000", max_size=4),
    st.sampled_from(["a", "é" * 40, "\ud800", "x" * 70, "ok \x1c", "😀"]),
)
numbers = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.floats(allow_nan=False, allow_infinity=False),
)
anything = st.one_of(
    st.none(), st.booleans(), numbers, tricky_text, st.lists(st.integers(0, 3), max_size=2)
)


def b64_of(values: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()


vectors = st.lists(st.floats(width=32, allow_nan=True, allow_infinity=True), max_size=4)
b64_values = st.one_of(
    vectors.map(b64_of),
    st.sampled_from(["", "AAA", "AAAA", "AAB=", "!!!!", "AAAAAAAAAAAAAAAA", "AAAAAAAAAAAAAAA="]),
)
valid_text = st.text(min_size=1, max_size=10).filter(lambda t: not t.isspace())
unit_vectors = st.lists(st.floats(-1, 1, width=32), min_size=DIM, max_size=DIM).filter(any)
valid = st.fixed_dictionaries(
    {"client_id": valid_text, "prompt": valid_text, "ts": st.floats(0, 2e9)},
    optional={
        "event_id": st.one_of(st.none(), valid_text),
        "embedding": st.one_of(st.none(), unit_vectors),
        "meta": st.one_of(st.none(), st.dictionaries(st.text(max_size=3), st.integers())),
    },
)
# a valid record, then up to two fields replaced by odd values or removed
odd_values = {
    "client_id": st.one_of(tricky_text, anything),
    "prompt": st.one_of(tricky_text, anything),
    "ts": st.one_of(numbers, anything, st.just("2026-01-01T00:00:00+00:00")),
    "event_id": anything,
    "embedding": st.one_of(st.lists(st.one_of(numbers, st.booleans()), max_size=4), anything),
    "embedding_b64": st.one_of(b64_values, anything),
    "meta": anything,
    "messages": st.just([{"role": "user", "content": "from messages"}]),
    "other": anything,
}
REMOVE = object()


@st.composite
def fields(draw: st.DrawFn) -> dict[str, Any]:
    d = draw(valid)
    if "embedding" not in d and draw(st.booleans()):
        d["embedding_b64"] = b64_of(draw(unit_vectors))
    for key in draw(st.lists(st.sampled_from(sorted(odd_values)), max_size=2, unique=True)):
        value = draw(st.one_of(odd_values[key], st.just(REMOVE)))
        if value is REMOVE:
            d.pop(key, None)
        else:
            d[key] = value
    return d


def record(d: dict[str, Any], dup: bool) -> bytes:
    text = json.dumps(d, allow_nan=True)
    if dup and d:  # a key given twice
        text = text[:-1] + ", " + json.dumps(d)[1:]
    return text.encode("utf-8", "surrogatepass")


def reference(raw: bytes, default_ts: float | None) -> Event | str:
    """What the service did with one record before the batch parser, with the
    vector checks the detector made later."""
    try:
        ev = parse_event(raw, max_prompt_bytes=LIMIT, default_ts=default_ts)
    except EventError as e:
        return e.reason
    v = ev.vector()
    if v is not None:
        if len(v) != DIM:
            return f"embedding has {len(v)} dimensions, expected {DIM}"
        # zero or not finite as the detector sees it: the float32 norm it
        # divides by (a subnormal vector's norm underflows to zero)
        with np.errstate(over="ignore"):
            norm = np.linalg.norm(v[None, :], axis=1)[0]
        if not np.isfinite(norm) or norm == 0:
            return "embedding is zero or not finite"
    return ev


def same_float(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


@PROPS
@given(
    st.lists(st.tuples(fields(), st.booleans()), min_size=1, max_size=6),
    st.lists(st.one_of(st.none(), st.floats(0, 2e9)), min_size=6, max_size=6),
)
# a value past float32's range: infinite once cast, so refused, with no warning
@example(
    [({"client_id": "0", "prompt": "0", "ts": 0.0, "embedding": [3.4028235677973366e38]}, False)],
    [None] * 6,
)
# a vector of two zeros and a subnormal: not all zero, but its norm is
@example(
    [({"client_id": "0", "prompt": "0", "ts": 0.0, "embedding": [0, 0, 5.5e-43]}, False)],
    [None] * 6,
)
@example(
    [({"client_id": "0", "prompt": "0", "ts": 0.0, "embedding_b64": "AAAAAAAAAACKAQAA"}, False)],
    [None] * 6,
)
def test_batch_parser_agrees_with_the_event_parser(
    items: list[tuple[dict[str, Any], bool]], stamps: list[float | None]
) -> None:
    raws = [record(d, dup) for d, dup in items]
    stamps = stamps[: len(raws)]
    got = parse_batch(raws, dim=DIM, max_prompt_bytes=LIMIT, default_ts=stamps)
    errors = dict(got.errors)
    rows = {pos: j for j, pos in enumerate(got.positions)}
    assert sorted([*errors, *rows]) == list(range(len(raws)))
    b = got.batch
    for i, raw in enumerate(raws):
        want = reference(raw, stamps[i])
        if isinstance(want, str):
            assert errors.get(i) == want, raw
            continue
        assert i in rows, (raw, errors.get(i))
        j = rows[i]
        assert (b.client_ids[j], b.prompts[j], b.event_ids[j]) == (
            want.client_id,
            want.prompt,
            want.event_id,
        )
        assert b.ts[j] == want.ts
        assert b.meta(j) == want.meta
        v = want.vector()
        assert bool(b.has_vector[j]) == (v is not None)
        if v is not None:
            assert all(same_float(x, y) for x, y in zip(b.vectors[j], v, strict=True))


def test_a_record_without_a_value_is_refused_in_place() -> None:
    ok = b'{"client_id": "a", "prompt": "p", "ts": 1}'
    got = parse_batch([ok, None, ok], dim=DIM)
    assert got.positions == [0, 2]
    assert got.errors == [(1, "record has no value")]
    assert got.batch.client_ids == ["a", "a"]
