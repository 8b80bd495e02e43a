"""Each message checked against the envelope (`segops/events.py`) and the tracking plan.

Validation never raises: every message is either an Event or a reason, so bad input becomes a
dead-letter row, not a crash. A malformed envelope is always refused; an unplanned type or a
property that breaks the plan is refused or let in, with what is wrong recorded, as the plan's
policies say.
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
    FIELDS,
    MAX_CLOCK_SKEW,
    MAX_ID_LENGTH,
    MAX_MESSAGE_BYTES,
    REQUIRED_FIELDS,
    Event,
)
from segops.tracking_plan import Property, TrackingPlan
from streaming.source import Incoming


@dataclass(frozen=True)
class Rejected:
    reason: str


def validate(data: bytes, now: datetime, plan: TrackingPlan) -> Event | Rejected:
    """Check one message payload against the envelope and `plan`; `now` bounds future
    timestamps."""
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
    if "\\u0000" in text and _holds_nul(body):  # the only way JSON text carries one
        return Rejected("a NUL character (\\u0000) in a string, which PostgreSQL cannot store")
    return _validate_body(body, now, plan)


def _holds_nul(value: object) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(key) or _holds_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_holds_nul(item) for item in value)
    return False


def _validate_body(body: dict, now: datetime, plan: TrackingPlan) -> Event | Rejected:
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
    occurred_at = _timestamp(body["occurred_at"])
    if isinstance(occurred_at, Rejected):
        return occurred_at
    if occurred_at > now + MAX_CLOCK_SKEW:
        return Rejected(f"occurred_at {body['occurred_at']} is in the future")
    if occurred_at < EARLIEST:
        return Rejected(f"occurred_at {body['occurred_at']} is before {EARLIEST.year}")
    properties = body.get("properties") or {}
    if not isinstance(properties, dict):
        return Rejected(f"properties must be an object, got {_describe(properties)}")
    violations = _violations(body["event_type"], properties, plan)
    if violations and _blocked(body["event_type"], plan):
        return Rejected(violations[0][1])
    return Event(
        event_id=body["event_id"],
        customer_id=body["customer_id"],
        event_type=body["event_type"],
        occurred_at=occurred_at,
        properties=json.dumps(properties, separators=(",", ":"), sort_keys=True),
        violations=tuple(violations),
    )


def _timestamp(text: str, field: str = "occurred_at") -> datetime | Rejected:
    has_zone = text.endswith(("Z", "z")) or (len(text) > 6 and text[-6] in "+-")
    if "T" not in text.upper() or not has_zone:
        return Rejected(f"{field} {text[:40]!r} is not RFC 3339 with a time zone")
    try:
        return parse_timestamp(text)
    except (ValueError, OverflowError):
        return Rejected(f"{field} {text[:40]!r} is not a valid RFC 3339 timestamp")


def _blocked(event_type: str, plan: TrackingPlan) -> bool:
    if event_type not in plan.events:
        return plan.unplanned_events == "block"
    return plan.blocks_violations_of(event_type)


def _violations(event_type: str, properties: dict, plan: TrackingPlan
                ) -> list[tuple[str, str]]:
    """(kind, detail) of each way the event breaks the plan."""
    if event_type not in plan.events:
        return [("unplanned_event", f"unplanned event_type {event_type!r}")]
    found = []
    for name, prop in plan.events[event_type].properties.items():
        value = properties.get(name)
        if value is None:
            if prop.required:
                found.append(("missing_property", f"{event_type} event needs properties.{name}"))
            continue
        if not _is_a(value, prop):
            found.append(("wrong_type", f"properties.{name} must be {_article(prop.type)}, "
                                        f"got {_describe(value)}"))
        elif prop.values is not None and value not in prop.values:
            found.append(("value_not_allowed",
                          f"properties.{name} {_describe(value)} is not one of "
                          f"{', '.join(map(str, prop.values))}"))
    return found


def _is_a(value: object, prop: Property) -> bool:
    kind = prop.type
    if kind == "number":
        return (isinstance(value, int | float) and not isinstance(value, bool)
                and math.isfinite(value) and value >= 0)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "timestamp":
        return isinstance(value, str) and not isinstance(_timestamp(value), Rejected)
    expected = {"string": str, "boolean": bool, "object": dict, "array": list}[kind]
    return isinstance(value, expected)


def _article(kind: str) -> str:
    return {"number": "a non-negative number", "integer": "an integer",
            "timestamp": "an RFC 3339 timestamp with a time zone", "object": "an object",
            "array": "an array", "boolean": "a boolean"}.get(kind, f"a {kind}")


def _describe(value: object) -> str:
    text = json.dumps(value, default=str)
    return f"{type(value).__name__} {text[:60]}"


def validate_all(
    messages: Sequence[Incoming], now: datetime, plan: TrackingPlan
) -> tuple[list[Event], list[tuple[Incoming, str]]]:
    """The valid events of a batch, and each invalid message with the reason."""
    events, rejected = [], []
    for message in messages:
        result = validate(message.data, now, plan)
        if isinstance(result, Rejected):
            rejected.append((message, result.reason))
        else:
            events.append(result)
    return events, rejected
