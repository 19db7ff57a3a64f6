"""`parse_event`: every way a record can be unusable gives an `EventError`
with a one-line reason; good records, ISO timestamps and OpenAI chat bodies
become `Event`s."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from spanwatch.errors import EventError, SpanwatchError
from spanwatch.events import Event, parse_event


def record(**fields: Any) -> str:
    """A valid event, with `fields` replacing or adding keys (None drops a key)."""
    base: dict[str, Any] = {"client_id": "client-1", "prompt": "What is a hash map?", "ts": 1.5}
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not None})


def reason_of(raw: bytes | str, **kwargs: Any) -> str:
    with pytest.raises(EventError) as info:
        parse_event(raw, **kwargs)
    assert str(info.value) == info.value.reason
    assert "\n" not in info.value.reason
    return info.value.reason


def test_valid_record_becomes_an_event_with_its_fields() -> None:
    ev = parse_event(record(event_id="e-7"))
    assert ev == Event(client_id="client-1", prompt="What is a hash map?", ts=1.5, event_id="e-7")
    assert ev.embedding is None
    assert ev.meta is None


def test_bytes_input_is_decoded_as_utf8() -> None:
    ev = parse_event(record(prompt="été à Paris").encode("utf-8"))
    assert ev.prompt == "été à Paris"


def test_event_error_is_a_value_error_and_a_spanwatch_error() -> None:
    with pytest.raises(EventError) as info:
        parse_event("{")
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, SpanwatchError)


@pytest.mark.parametrize(
    ("raw", "where"),
    [(b"\xff" + record().encode(), 0), (b'{"client_id": "a\xc3", "ts": 1}', 16)],
)
def test_invalid_utf8_names_the_offending_byte(raw: bytes, where: int) -> None:
    assert reason_of(raw) == f"invalid UTF-8 at byte {where}"


def test_malformed_json_reason_names_the_position() -> None:
    reason = reason_of('{"client_id": "a", "prompt": "p", "ts": 1')
    assert reason.startswith("malformed JSON:")
    assert "line 1 column 42" in reason


def test_deeply_nested_json_is_malformed_not_a_recursion_error() -> None:
    assert reason_of("[" * 100_000) == "malformed JSON: nested too deeply"


@pytest.mark.parametrize(
    ("raw", "kind"), [("[1, 2]", "list"), ('"text"', "str"), ("42", "int"), ("null", "NoneType")]
)
def test_non_object_json_is_refused_naming_its_type(raw: str, kind: str) -> None:
    assert reason_of(raw) == f"an event must be a JSON object, got {kind}"


@pytest.mark.parametrize("field", ["client_id", "prompt", "ts"])
def test_missing_required_field_is_named(field: str) -> None:
    assert reason_of(record(**{field: None})) == f"missing field {field}"


def test_all_missing_fields_are_named_together() -> None:
    reason = reason_of("{}")
    for field in ("client_id", "prompt", "ts"):
        assert f"missing field {field}" in reason


@pytest.mark.parametrize("field", ["client_id", "prompt"])
def test_empty_text_field_is_refused(field: str) -> None:
    reason = reason_of(record(**{field: ""}))
    assert reason.startswith(f"{field}:")
    assert "at least 1 character" in reason


@pytest.mark.parametrize("field", ["client_id", "prompt"])
@pytest.mark.parametrize("blank", [" ", "\t\n ", "\u3000"])
def test_blank_text_field_is_refused(field: str, blank: str) -> None:
    assert reason_of(record(**{field: blank})) == f"{field}: Value error, must not be blank"


def test_client_id_over_512_chars_is_refused() -> None:
    assert parse_event(record(client_id="c" * 512)).client_id == "c" * 512
    assert reason_of(record(client_id="c" * 513)).startswith("client_id:")


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"client_id": 12345}, "client_id: Input should be a valid string"),
        ({"prompt": ["a", "b"]}, "prompt: Input should be a valid string"),
        (
            {"ts": True},
            "ts: Value error, must be a number or an ISO 8601 string, not a boolean",
        ),
        ({"ts": False}, "ts: Value error, must be a number or an ISO 8601 string, not a boolean"),
        ({"ts": "yesterday"}, "ts: Value error, must be a number or an ISO 8601 string"),
        ({"ts": "1700000000"}, "ts: Value error, must be a number or an ISO 8601 string"),
        ({"ts": "nan"}, "ts: Value error, must be a number or an ISO 8601 string"),
        ({"event_id": 7}, "event_id: Input should be a valid string"),
        ({"meta": "not a dict"}, "meta: Input should be a valid dictionary"),
    ],
)
def test_wrong_type_is_refused_naming_the_field(fields: dict[str, Any], expected: str) -> None:
    assert reason_of(record(**fields)) == expected


@pytest.mark.parametrize(
    ("embedding", "where"),
    [
        ("0.1 0.2", "embedding: Input should be a valid tuple"),
        ({"x": 1.0}, "embedding: Input should be a valid tuple"),
        ([0.1, "abc"], "embedding.1: Input should be a valid number"),
    ],
)
def test_embedding_that_is_not_a_list_of_numbers_is_refused(embedding: Any, where: str) -> None:
    assert reason_of(record(embedding=embedding)) == where


@pytest.mark.parametrize("embedding", [[True, False, 0.5], ["0.5", 0.25, 0.75]])
def test_embedding_with_booleans_or_numeric_strings_is_refused(embedding: list[Any]) -> None:
    assert reason_of(record(embedding=embedding)).startswith(
        "embedding.0: Input should be a valid number"
    )


def test_embedding_list_of_numbers_is_kept_as_floats() -> None:
    ev = parse_event(record(embedding=[1, 0.5, -2e-3]))
    assert ev.embedding == (1.0, 0.5, -0.002)


def test_prompt_at_the_byte_limit_is_accepted() -> None:
    assert parse_event(record(prompt="a" * 10), max_prompt_bytes=10).prompt == "a" * 10


def test_prompt_over_the_byte_limit_is_refused_with_its_size() -> None:
    assert reason_of(record(prompt="a" * 11), max_prompt_bytes=10) == (
        "prompt is 11 bytes, over the limit of 10"
    )


def test_prompt_limit_counts_utf8_bytes_not_characters() -> None:
    # three characters, six bytes
    assert parse_event(record(prompt="ééé"), max_prompt_bytes=6).prompt == "ééé"
    assert reason_of(record(prompt="ééé"), max_prompt_bytes=5) == (
        "prompt is 6 bytes, over the limit of 5"
    )
    # one character, four bytes
    assert reason_of(record(prompt="😀"), max_prompt_bytes=3) == (
        "prompt is 4 bytes, over the limit of 3"
    )


def test_default_prompt_limit_is_32_kib() -> None:
    assert parse_event(record(prompt="x" * 32_768)).prompt == "x" * 32_768
    assert (
        reason_of(record(prompt="x" * 32_769)) == "prompt is 32769 bytes, over the limit of 32768"
    )


@pytest.mark.parametrize(
    "raw",
    [
        '{"client_id": "a", "prompt": "\\ud800", "ts": 1}',
        '{"client_id": "a", "prompt": "ok \\udfff then", "ts": 1}',
        '{"client_id": "\\udc00x", "prompt": "p", "ts": 1}',
        '{"client_id": "a", "ts": 1, "messages": [{"role": "user", "content": "\\ud800"}]}',
    ],
)
def test_lone_surrogate_escapes_are_refused(raw: str) -> None:
    reason = reason_of(raw)
    assert "unicode" in reason.lower() or "surrogate" in reason.lower()


def test_escaped_surrogate_pair_is_a_valid_character() -> None:
    ev = parse_event('{"client_id": "a", "prompt": "\\ud83d\\ude00", "ts": 1}')
    assert ev.prompt == "😀"


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_ts_is_refused(literal: str) -> None:
    raw = f'{{"client_id": "a", "prompt": "p", "ts": {literal}}}'
    assert reason_of(raw) == "ts: Value error, must be finite"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01T12:00:00+02:00", datetime(2024, 5, 1, 10, tzinfo=UTC)),
        ("2024-05-01T12:00:00Z", datetime(2024, 5, 1, 12, tzinfo=UTC)),
        ("2024-05-01T12:00:00.250-05:30", datetime(2024, 5, 1, 17, 30, 0, 250_000, tzinfo=UTC)),
    ],
)
def test_iso_8601_ts_with_zone_becomes_epoch_seconds(text: str, expected: datetime) -> None:
    assert parse_event(record(ts=text)).ts == expected.timestamp()


@pytest.mark.parametrize("text", ["2024-05-01T12:00:00", "2024-05-01"])
def test_naive_iso_8601_ts_is_refused(text: str) -> None:
    assert reason_of(record(ts=text)) == (
        "ts: Value error, an ISO 8601 timestamp needs a time zone"
    )


def test_default_ts_fills_a_missing_ts_only() -> None:
    assert parse_event(record(ts=None), default_ts=123.5).ts == 123.5
    assert parse_event(record(ts=7), default_ts=123.5).ts == 7.0
    assert reason_of(record(ts=None), default_ts=None) == "missing field ts"


def test_integer_ts_is_accepted_as_float() -> None:
    ev = parse_event(record(ts=1_700_000_000))
    assert ev.ts == 1_700_000_000.0
    assert isinstance(ev.ts, float)


def test_chat_body_with_string_content_uses_user_turns_only() -> None:
    raw = json.dumps(
        {
            "client_id": "a",
            "ts": 1,
            "model": "gpt-4o",
            "messages": [
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": "first question"},
                {"role": "assistant", "content": "an answer"},
                {"role": "user", "content": "second question"},
            ],
        }
    )
    assert parse_event(raw).prompt == "first question\nsecond question"


def test_chat_body_with_list_of_parts_keeps_text_parts_only() -> None:
    raw = json.dumps(
        {
            "client_id": "a",
            "ts": 1,
            "messages": [
                {"role": "system", "content": [{"type": "text", "text": "system text"}]},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "describe"},
                        {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
                        {"type": "text", "text": "this image"},
                    ],
                },
            ],
        }
    )
    assert parse_event(raw).prompt == "describe\nthis image"


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "system", "content": "only a system turn"}],
        [{"role": "assistant", "content": "only an answer"}],
        [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "u"}}]}],
        [],
    ],
)
def test_chat_body_without_user_text_is_refused(messages: list[Any]) -> None:
    raw = json.dumps({"client_id": "a", "ts": 1, "messages": messages})
    assert "messages hold no user text" in reason_of(raw)


def test_chat_body_messages_not_a_list_is_refused() -> None:
    raw = json.dumps({"client_id": "a", "ts": 1, "messages": "hello"})
    assert "messages must be a list" in reason_of(raw)


def test_chat_body_prompt_over_the_byte_limit_is_refused() -> None:
    raw = json.dumps(
        {"client_id": "a", "ts": 1, "messages": [{"role": "user", "content": "é" * 8}]}
    )
    assert parse_event(raw, max_prompt_bytes=16).prompt == "é" * 8
    assert "over the limit of 15 bytes" in reason_of(raw, max_prompt_bytes=15)


def test_explicit_prompt_wins_over_messages() -> None:
    raw = record(messages=[{"role": "user", "content": "from messages"}])
    assert parse_event(raw).prompt == "What is a hash map?"


def test_extra_fields_are_ignored() -> None:
    ev = parse_event(record(model="gpt-4o", temperature=0.2, nested={"a": [1, 2]}))
    assert ev == parse_event(record())
    assert not hasattr(ev, "temperature")


def test_meta_dict_is_kept() -> None:
    meta = {"ip": "10.0.0.1", "tags": ["a", "b"], "n": 3}
    assert parse_event(record(meta=meta)).meta == meta


def test_event_is_frozen() -> None:
    ev = parse_event(record())
    with pytest.raises(ValueError, match="frozen"):
        ev.prompt = "changed"


def _b64(values: list[float]) -> str:
    import base64

    import numpy as np

    return base64.b64encode(np.asarray(values, dtype="<f4").tobytes()).decode()


def test_embedding_b64_gives_the_same_vector_as_the_list() -> None:
    import numpy as np

    values = [0.25, -1.5, 3.0, 0.125]
    a = parse_event(json.dumps({"client_id": "c", "prompt": "p", "ts": 1, "embedding": values}))
    b = parse_event(
        json.dumps({"client_id": "c", "prompt": "p", "ts": 1, "embedding_b64": _b64(values)})
    )
    assert a.has_embedding and b.has_embedding
    va, vb = a.vector(), b.vector()
    assert va is not None and vb is not None
    assert vb.dtype == np.float32 and np.array_equal(va, vb)
    assert parse_event(json.dumps({"client_id": "c", "prompt": "p", "ts": 1})).vector() is None


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("not base64!", "not valid base64"),
        ("AAAA", "3 bytes"),
        ("", "0 bytes"),
        (12, "embedding_b64"),
    ],
)
def test_bad_embedding_b64_is_refused_with_a_reason(value: Any, reason: str) -> None:
    raw = json.dumps({"client_id": "c", "prompt": "p", "ts": 1, "embedding_b64": value})
    with pytest.raises(EventError, match=reason):
        parse_event(raw)


def test_both_embedding_forms_at_once_are_refused() -> None:
    raw = json.dumps(
        {"client_id": "c", "prompt": "p", "ts": 1, "embedding": [1.0], "embedding_b64": _b64([1.0])}
    )
    with pytest.raises(EventError, match="not both"):
        parse_event(raw)


def test_detector_embeds_both_forms_alike_and_refuses_a_zero_vector() -> None:
    import numpy as np

    from spanwatch.config import load_settings
    from spanwatch.detector import Detector
    from spanwatch.space import Space

    rng = np.random.default_rng(0)
    space = Space.fit(rng.normal(size=(400, 8)).astype(np.float32), levels=[4, 16], niter=3)
    det = Detector(load_settings(secret_key="t"), space=space)
    vecs = rng.normal(size=(3, 8)).astype(np.float32)
    listed = [
        Event(client_id="c", prompt="p", ts=1, embedding=tuple(float(x) for x in v)) for v in vecs
    ]
    packed = [
        Event.model_validate({"client_id": "c", "prompt": "p", "ts": 1, "embedding_b64": _b64(v)})
        for v in vecs.tolist()
    ]
    a, b = det.embed(listed), det.embed(packed)
    assert np.array_equal(a, b)
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0)
    zero = Event.model_validate(
        {
            "client_id": "c",
            "prompt": "p",
            "ts": 1,
            "event_id": "z",
            "embedding_b64": _b64([0.0] * 8),
        }
    )
    with pytest.raises(EventError, match="event z: embedding is zero"):
        det.embed([*packed, zero])
