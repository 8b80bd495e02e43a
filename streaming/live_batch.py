"""A micro-batch's reads and writes on the live tables, inside the caller's transaction.

Concurrent consumers serialize per customer through PostgreSQL itself: each batch first takes a
transaction-scoped advisory lock per customer, in the order of the locks' keys, so two batches
that share customers run one after the other and never deadlock, and membership for a customer
is only ever decided while its lock is held. The locks go with the commit (or the rollback of a
consumer that died).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime

import psycopg

from segops.events import Event


def lock_customers(con: psycopg.Connection, customers: Iterable[str]) -> None:
    """Wait for, then hold until commit, the lock of every customer of the batch."""
    con.execute("select pg_advisory_xact_lock(key) from (select distinct "
                "hashtextextended(customer_id, 0) as key from unnest(%s::text[]) as batch "
                "(customer_id)) as keys order by key",
                [sorted(set(customers))])


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
