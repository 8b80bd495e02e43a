"""Storing what else a micro-batch brings, in PostgreSQL and inside the batch's transaction: what
the tracking plan found wrong in the events it let in, and the bad messages with their reasons.
The events themselves go through `streaming.live_batch.store_events`."""

from __future__ import annotations

import json
from collections.abc import Sequence

import psycopg

from segops.events import Event
from streaming.source import Incoming


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
                [(m.message_id, reason, m.data, json.dumps(m.attributes))
                 for m, reason in rejected])
