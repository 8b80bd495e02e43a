"""A micro-batch's reads and writes on the live tables, inside the caller's transaction.

Concurrent consumers serialize per customer through PostgreSQL itself: each batch first takes a
transaction-scoped advisory lock per customer, in sorted order, so two batches that share
customers run one after the other and never deadlock, and membership for a customer is only
ever decided while its lock is held. The locks go with the commit (or the rollback of a
consumer that died).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import psycopg
import pyarrow as pa

from segops.events import Event

HISTORY = pa.schema([("event_id", pa.string()), ("customer_id", pa.string()),
                     ("event_type", pa.string()), ("occurred_at", pa.timestamp("us")),
                     ("properties", pa.string()), ("ingested_at", pa.timestamp("us"))])


def lock_customers(con: psycopg.Connection, customers: Iterable[str]) -> None:
    """Wait for, then hold until commit, the lock of every customer of the batch."""
    con.execute("select pg_advisory_xact_lock(hashtextextended(customer_id, 0)) "
                "from unnest(%s::text[]) as batch (customer_id) order by customer_id",
                [sorted(set(customers))])


def store_events(con: psycopg.Connection, events: list[Event], now: datetime) -> set[str]:
    """Insert the events; the ids of those that were new (the rest were redeliveries)."""
    if not events:
        return set()
    rows = con.execute(
        "insert into raw.events (customer_id, event_id, event_type, occurred_at, properties, "
        "ingested_at) "
        "select * from unnest(%s::text[], %s::text[], %s::text[], %s::timestamp[], "
        "%s::text[]::jsonb[], %s::timestamp[]) on conflict do nothing returning event_id",
        [[e.customer_id for e in events], [e.event_id for e in events],
         [e.event_type for e in events], [e.occurred_at for e in events],
         [e.properties for e in events], [now] * len(events)],
    ).fetchall()
    return {event_id for (event_id,) in rows}


def histories(con: psycopg.Connection, customers: Iterable[str],
              since: datetime | None = None) -> pa.Table:
    """The customers' events (from `since` on, when the segments read no further back), as the
    Arrow table the scoped segment SQL reads in DuckDB."""
    rows = con.execute(
        "select event_id, customer_id, event_type, occurred_at, properties::text, ingested_at "
        "from raw.events where customer_id = any(%s) and occurred_at >= %s",
        [sorted(set(customers)), since or datetime.min],
    ).fetchall()
    columns = list(zip(*rows, strict=True)) if rows else [[] for _ in HISTORY]
    return pa.table([pa.array(column, type=field.type)
                     for column, field in zip(columns, HISTORY, strict=True)], schema=HISTORY)
