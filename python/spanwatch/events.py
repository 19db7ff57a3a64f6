"""Prompt events: the record a client's request becomes, and its parser."""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Annotated, Any

import numpy as np
import numpy.typing as npt
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    Strict,
    ValidationError,
    field_validator,
    model_validator,
)

from spanwatch.errors import EventError

__all__ = ["Event", "parse_event", "prompt_from_messages", "vector_dim", "vector_problem"]


class Event(BaseModel):
    """One prompt sent by one client."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    client_id: str = Field(min_length=1, max_length=512)
    prompt: str = Field(min_length=1)
    ts: float = Field(description="seconds since the Unix epoch (an ISO 8601 string is accepted)")
    event_id: str | None = None
    # Strict floats: ints pass, booleans and numeric strings do not, and
    # pydantic checks the whole list in Rust (a per-float Python check was
    # the service's bottleneck with precomputed embeddings).
    embedding: tuple[Annotated[float, Strict()], ...] | None = None
    embedding_b64: str | None = Field(
        default=None,
        description="the embedding as base64 of little-endian float32 values: "
        "an alternative to `embedding` that parses several times faster",
    )
    meta: dict[str, Any] | None = None
    _vector: npt.NDArray[np.float32] | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _one_embedding(self) -> Event:
        if self.embedding_b64 is not None:
            if self.embedding is not None:
                raise ValueError("give embedding or embedding_b64, not both")
            try:
                raw = base64.b64decode(self.embedding_b64, validate=True)
            except (binascii.Error, ValueError):
                raise ValueError("embedding_b64 is not valid base64") from None
            if not raw or len(raw) % 4:
                raise ValueError(
                    f"embedding_b64 holds {len(raw)} bytes, not a whole number of float32 values"
                )
            self._vector = np.frombuffer(raw, dtype="<f4")
        elif self.embedding is not None:
            # once, here: the service checks it and the detector embeds it
            self._vector = _float32(self.embedding)
        return self

    @property
    def has_embedding(self) -> bool:
        return self.embedding is not None or self.embedding_b64 is not None

    def vector(self) -> npt.NDArray[np.float32] | None:
        """The precomputed embedding as float32, from either field."""
        if self._vector is None and self.embedding is not None:  # built without validation
            return _float32(self.embedding)
        return self._vector

    @model_validator(mode="before")
    @classmethod
    def _chat_body(cls, data: Any) -> Any:
        if isinstance(data, dict) and "prompt" not in data and "messages" in data:
            data = dict(data)
            data["prompt"] = prompt_from_messages(data["messages"])
        return data

    @field_validator("client_id", "prompt")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be blank")
        return v

    @field_validator("ts", mode="before")
    @classmethod
    def _ts(cls, v: Any) -> Any:
        if isinstance(v, bool):
            raise ValueError("must be a number or an ISO 8601 string, not a boolean")
        if isinstance(v, str):
            try:
                dt = datetime.fromisoformat(v)
            except ValueError:
                raise ValueError("must be a number or an ISO 8601 string") from None
            if dt.tzinfo is None:
                raise ValueError("an ISO 8601 timestamp needs a time zone")
            return dt.timestamp()
        return v

    @field_validator("ts")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("must be finite")
        return v


def _float32(values: tuple[float, ...]) -> npt.NDArray[np.float32]:
    """float32 values; one beyond float32's range becomes infinite (and the
    vector is refused as not finite) instead of raising a warning per event."""
    with np.errstate(over="ignore"):
        return np.asarray(values, dtype=np.float32)


def prompt_from_messages(messages: Any) -> str:
    """The user turns of an OpenAI-style chat request, joined by newlines."""
    if not isinstance(messages, list):
        raise ValueError("messages must be a list")
    parts: list[str] = []
    for m in messages:
        if not isinstance(m, dict) or m.get("role") != "user":
            continue
        content = m.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(
                p["text"]
                for p in content
                if isinstance(p, dict)
                and p.get("type") == "text"
                and isinstance(p.get("text"), str)
            )
    if not parts:
        raise ValueError("messages hold no user text")
    return "\n".join(parts)


def _describe(e: ValidationError) -> str:
    out = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "event"
        if err["type"] == "missing":
            out.append(f"missing field {loc}")
        else:
            out.append(f"{loc}: {err['msg']}")
    return "; ".join(out)


def parse_event(
    raw: bytes | str, *, max_prompt_bytes: int = 32_768, default_ts: float | None = None
) -> Event:
    """Parses one JSON record. Raises EventError with a one-line reason for
    invalid UTF-8, malformed JSON, missing or mistyped fields and prompts
    over the size limit. `default_ts` fills a missing ts (for example the
    Kafka record's timestamp)."""
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise EventError(f"invalid UTF-8 at byte {e.start}") from None
    else:
        text = raw
    # Fast path: pydantic parses and validates the JSON in one pass in Rust
    # (about 4x faster with an embedding list). Anything it refuses, or an
    # oversized prompt, takes the slow path below, which gives the reasons.
    try:
        event = Event.model_validate_json(text)
    except (ValidationError, ValueError):
        pass
    else:
        if len(event.prompt.encode("utf-8", "surrogatepass")) <= max_prompt_bytes:
            _check_text(event)
            return event
    return _parse_slow(text, max_prompt_bytes, default_ts)


def _check_text(event: Event) -> None:
    try:
        event.prompt.encode("utf-8")
        event.client_id.encode("utf-8")
    except UnicodeEncodeError:
        raise EventError("text holds lone surrogates (not valid Unicode)") from None


def _parse_slow(text: str, max_prompt_bytes: int, default_ts: float | None) -> Event:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise EventError(f"malformed JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except RecursionError:
        raise EventError("malformed JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise EventError(f"an event must be a JSON object, got {type(data).__name__}")
    if default_ts is not None and "ts" not in data:
        data["ts"] = default_ts
    prompt = data.get("prompt")
    if isinstance(prompt, str):
        size = len(prompt.encode("utf-8", "surrogatepass"))
        if size > max_prompt_bytes:
            raise EventError(f"prompt is {size} bytes, over the limit of {max_prompt_bytes}")
    try:
        event = Event.model_validate(data)
    except ValidationError as e:
        raise EventError(_describe(e)) from None
    except ValueError as e:
        raise EventError(str(e)) from None
    if (
        "prompt" not in data
        and len(event.prompt.encode("utf-8", "surrogatepass")) > max_prompt_bytes
    ):
        raise EventError(f"prompt is over the limit of {max_prompt_bytes} bytes")
    _check_text(event)
    return event


# Why an embedding of the right size is refused (here and in `Batch`).
UNUSABLE_VECTOR = "embedding is zero or not finite"


def vector_dim(events: Sequence[Event], space_dim: int | None, model_dim: Callable[[], int]) -> int:
    """The dimension the events' own embeddings must have: the space's when
    there is one, else the model's when some event needs the model, else the
    most common among them."""
    if space_dim is not None:
        return space_dim
    if any(not e.has_embedding for e in events):
        return model_dim()
    sizes = Counter(len(v) for e in events if (v := e.vector()) is not None)
    return sizes.most_common(1)[0][0] if sizes else model_dim()


def vector_problem(event: Event, dim: int) -> str | None:
    """Why the event's own embedding cannot be used, or None: the same
    checks the detector makes of a whole batch, for one event."""
    v = event.vector()
    if v is None:
        return None
    if len(v) != dim:
        return f"embedding has {len(v)} dimensions, expected {dim}"
    with np.errstate(over="ignore", invalid="ignore"):
        norm = float(np.linalg.norm(v))
    if not math.isfinite(norm) or norm == 0:
        return UNUSABLE_VECTOR
    return None
