"""Storing a micro-batch in PostgreSQL, inside the batch's transaction: its events (their key
deduplicates a redelivery), what the tracking plan found wrong in those it let in, and the bad
messages with their reasons."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime

import psycopg

from segops.customers import TraitChange
from segops.events import IDENTIFY, Event
from streaming.source import Incoming


def store_events(con: psycopg.Connection, events: list[Event], now: datetime) -> set[str]:
    """Insert the events; the ids of those that were new (the rest were redeliveries).

    The batch travels as one JSON document (built by the json module's C encoder) rather than
    as arrays, which the driver would encode value by value in Python."""
    if not events:
        return set()
    rows = con.execute(
        """
        insert into raw.events (customer_id, event_id, event_type, occurred_at, properties,
            ingested_at)
        select customer_id, event_id, event_type, occurred_at, properties, %s
        from jsonb_to_recordset(%s::jsonb) as batch (customer_id text, event_id text,
            event_type text, occurred_at timestamp, properties jsonb)
        on conflict do nothing returning event_id
        """,
        [now, "[" + ",".join(
            f'{{"customer_id":{json.dumps(e.customer_id)},"event_id":{json.dumps(e.event_id)},'
            f'"event_type":{json.dumps(e.event_type)},"occurred_at":"{e.occurred_at.isoformat()}",'
            f'"properties":{e.properties or "null"}}}' for e in events) + "]"],
    ).fetchall()
    return {event_id for (event_id,) in rows}


def store_violations(con: psycopg.Connection, events: list[Event]) -> None:
    """One row per violation of each (new) event the plan's policy let in."""
    rows = [(e.customer_id, e.event_id, e.event_type, e.occurred_at, kind, detail)
            for e in events for kind, detail in e.violations]
    if rows:
        with con.cursor() as cursor:
            cursor.executemany(
                "insert into raw.event_violations (customer_id, event_id, event_type, "
                "occurred_at, kind, detail) values (%s, %s, %s, %s, %s, %s) "
                "on conflict do nothing", rows)


def store_dead_letters(con: psycopg.Connection,
                       rejected: Sequence[tuple[Incoming, str]]) -> None:
    """Each bad message with its reason, once, even when it is delivered (or replayed) again."""
    if rejected:
        with con.cursor() as cursor:
            cursor.executemany(
                "insert into raw.dead_letters (message_id, reason, payload, attributes) "
                "values (%s, %s, %s, %s) "
                "on conflict (message_id) where message_id is not null do nothing",
                [(m.message_id, reason, m.data, attributes_json(m.attributes))
                 for m, reason in rejected])


def trait_changes(events: list[Event]) -> list[TraitChange]:
    """What the identify events among `events` set."""
    return [TraitChange(e.customer_id, json.loads(e.properties), e.occurred_at,
                        f"{IDENTIFY}:{e.event_id}")
            for e in events if e.event_type == IDENTIFY]


def attributes_json(attributes: Mapping[str, str]) -> str:
    """A message's attributes as JSON for jsonb, each NUL character kept as the six characters
    `\\u0000`: Pub/Sub lets one through in an attribute, jsonb cannot hold it, and the failed
    insert would fail the dead letter's whole batch on every redelivery."""
    def visible(text: str) -> str:
        return text.replace("\x00", "\\u0000")

    return json.dumps({visible(key): visible(value) for key, value in attributes.items()})
