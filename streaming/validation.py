"""Each message checked against the event contract (`segops/events.py`).

Validation never raises: every message is either an Event or a reason, so bad input becomes a
dead-letter row, not a crash.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from segops.clock import parse_timestamp
from segops.events import (
    EARLIEST,
    EVENT_TYPES,
    FIELDS,
    MAX_CLOCK_SKEW,
    MAX_ID_LENGTH,
    MAX_MESSAGE_BYTES,
    NUMBER,
    PROPERTY_TYPES,
    REQUIRED_FIELDS,
    STRING,
    TIMESTAMP,
    Event,
)
from streaming.source import Incoming


@dataclass(frozen=True)
class Rejected:
    reason: str


def validate(data: bytes, now: datetime) -> Event | Rejected:
    """Check one message payload against the schema; `now` bounds future timestamps."""
    if not data:
        return Rejected("empty payload (attributes only?)")
    if len(data) > MAX_MESSAGE_BYTES:
        return Rejected(f"oversized: {len(data)} bytes > {MAX_MESSAGE_BYTES}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        return Rejected(f"not UTF-8: {error.reason} at byte {error.start}")
    try:
        body = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as error:
        return Rejected(f"not JSON: {error}")
    if not isinstance(body, dict):
        return Rejected(f"not a JSON object but {type(body).__name__}")
    return _validate_body(body, now)


def _validate_body(body: dict, now: datetime) -> Event | Rejected:
    missing = [f for f in REQUIRED_FIELDS if f not in body]
    if missing:
        return Rejected(f"missing field(s): {', '.join(missing)}")
    extra = sorted(str(f) for f in body if f not in FIELDS)
    if extra:
        return Rejected(f"unexpected field(s): {', '.join(extra)[:200]}")
    for field in ("event_id", "customer_id", "event_type", "occurred_at"):
        value = body[field]
        if not isinstance(value, str) or not value.strip():
            return Rejected(f"{field} must be a non-empty string, got {_describe(value)}")
        if len(value) > MAX_ID_LENGTH:
            return Rejected(f"{field} longer than {MAX_ID_LENGTH} characters")
    if body["event_type"] not in EVENT_TYPES:
        return Rejected(f"unknown event_type {body['event_type']!r}")
    occurred_at = _timestamp(body["occurred_at"])
    if isinstance(occurred_at, Rejected):
        return occurred_at
    if occurred_at > now + MAX_CLOCK_SKEW:
        return Rejected(f"occurred_at {body['occurred_at']} is in the future")
    if occurred_at < EARLIEST:
        return Rejected(f"occurred_at {body['occurred_at']} is before {EARLIEST.year}")
    properties = body.get("properties") or {}
    problem = _properties_problem(body["event_type"], properties)
    if problem:
        return Rejected(problem)
    return Event(
        event_id=body["event_id"],
        customer_id=body["customer_id"],
        event_type=body["event_type"],
        occurred_at=occurred_at,
        properties=json.dumps(properties, separators=(",", ":"), sort_keys=True),
    )


def _timestamp(text: str, field: str = "occurred_at") -> datetime | Rejected:
    has_zone = text.endswith(("Z", "z")) or (len(text) > 6 and text[-6] in "+-")
    if "T" not in text.upper() or not has_zone:
        return Rejected(f"{field} {text[:40]!r} is not RFC 3339 with a time zone")
    try:
        return parse_timestamp(text)
    except (ValueError, OverflowError):
        return Rejected(f"{field} {text[:40]!r} is not a valid RFC 3339 timestamp")


def _properties_problem(event_type: str, properties: object) -> str | None:
    if not isinstance(properties, dict):
        return f"properties must be an object, got {_describe(properties)}"
    for key in EVENT_TYPES[event_type].required:
        if key not in properties:
            return f"{event_type} event needs properties.{key}"
    for key, kind in PROPERTY_TYPES.items():
        value = properties.get(key)
        if value is None:
            continue
        if kind == NUMBER and (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value < 0
        ):
            return f"properties.{key} must be a non-negative number, got {_describe(value)}"
        if kind in (STRING, TIMESTAMP) and not isinstance(value, str):
            return f"properties.{key} must be a string, got {_describe(value)}"
        if kind == TIMESTAMP and isinstance(
                problem := _timestamp(value, f"properties.{key}"), Rejected):
            return problem.reason
    return None


def _describe(value: object) -> str:
    text = json.dumps(value, default=str)
    return f"{type(value).__name__} {text[:60]}"


def validate_all(
    messages: Sequence[Incoming], now: datetime
) -> tuple[list[Event], list[tuple[Incoming, str]]]:
    """The valid events of a batch, and each invalid message with the reason."""
    events, rejected = [], []
    for message in messages:
        result = validate(message.data, now)
        if isinstance(result, Rejected):
            rejected.append((message, result.reason))
        else:
            events.append(result)
    return events, rejected
