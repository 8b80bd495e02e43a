"""Storing a micro-batch: its valid events in `raw.events` (and what the tracking plan found
wrong in those it let in, in `raw.event_violations`), the traits its `identify` events set, and
its bad messages in `raw.dead_letters`, inside the batch's transaction."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

import duckdb
import pyarrow as pa

from segops.customers import TraitChange, apply_trait_changes
from segops.events import IDENTIFY, Event
from streaming.source import Incoming


def store_events(con: duckdb.DuckDBPyConnection, events: list[Event], now: datetime) -> None:
    """Append the events (already known not to be redeliveries)."""
    if not events:
        return
    batch = pa.table(
        {
            "event_id": [e.event_id for e in events],
            "customer_id": [e.customer_id for e in events],
            "event_type": [e.event_type for e in events],
            "occurred_at": pa.array([e.occurred_at for e in events], pa.timestamp("us")),
            "properties": [e.properties for e in events],
        }
    )
    con.register("_batch", batch)
    try:
        con.execute(
            """
            insert into raw.events
                (event_id, customer_id, event_type, occurred_at, properties, ingested_at)
            select event_id, customer_id, event_type, occurred_at, properties::json, $now
            from _batch
            """,
            {"now": now},
        )
    finally:
        con.unregister("_batch")


def store_violations(con: duckdb.DuckDBPyConnection, events: list[Event]) -> None:
    """One row per violation of each event the plan's policy let in."""
    rows = [(e.event_id, e.customer_id, e.event_type, e.occurred_at, kind, detail)
            for e in events for kind, detail in e.violations]
    if not rows:
        return
    names = ("event_id", "customer_id", "event_type", "occurred_at", "kind", "detail")
    con.register("_violations", pa.table(dict(zip(names, map(list, zip(*rows, strict=True)),
                                                  strict=True))))
    try:
        con.execute(f"insert into raw.event_violations ({', '.join(names)}) "
                    f"select {', '.join(names)} from _violations")
    finally:
        con.unregister("_violations")


def store_traits(con: duckdb.DuckDBPyConnection, events: list[Event]) -> list[str]:
    """Apply the traits of the batch's identify events; the customers whose profile changed."""
    return apply_trait_changes(con, trait_changes(events))


def trait_changes(events: list[Event]) -> list[TraitChange]:
    """What the identify events among `events` set."""
    return [TraitChange(e.customer_id, json.loads(e.properties), e.occurred_at,
                        f"{IDENTIFY}:{e.event_id}")
            for e in events if e.event_type == IDENTIFY]


def store_dead_letters(
    con: duckdb.DuckDBPyConnection, rejected: Sequence[tuple[Incoming, str]]
) -> None:
    """Store each bad message with its reason once, even when it is delivered (or replayed)
    again."""
    if not rejected:
        return
    batch = pa.table(
        {
            "message_id": [m.message_id for m, _ in rejected],
            "reason": [reason for _, reason in rejected],
            "payload": pa.array([m.data for m, _ in rejected], pa.binary()),
            "attributes": [json.dumps(m.attributes) for m, _ in rejected],
        }
    )
    con.register("_dead", batch)
    try:
        con.execute(
            """
            insert into raw.dead_letters (message_id, reason, payload, attributes)
            select message_id, reason, payload, attributes::json from _dead
            where message_id is null or message_id not in (
                select message_id from raw.dead_letters where message_id is not null)
            """
        )
    finally:
        con.unregister("_dead")
