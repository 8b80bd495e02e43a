"""A micro-batch's reads and writes on the live tables, inside the caller's transaction.

Concurrent consumers serialize per customer through PostgreSQL itself: each batch first takes a
transaction-scoped advisory lock per customer, in the order of the locks' keys, so two batches
that share customers run one after the other and never deadlock, and membership for a customer
is only ever decided while its lock is held. The locks go with the commit (or the rollback of a
consumer that died).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
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


def apply_found(con: psycopg.Connection, found: Sequence[tuple[str, str, str | None]], *,
                segments: Sequence[str], customers: Iterable[str], source: str,
                changed_at: datetime) -> Counter[tuple[str, str]]:
    """Bring the customers' membership of `segments` to `found` (segment, customer_id,
    attributes as JSON text): enters, exits and their changes recorded, attributes kept current.
    What was already so changes nothing, so a redelivered batch records nothing twice. Returns
    (segment, enter|exit) counts. Run it under the customers' locks (`lock_customers`).

    One statement: the delta, the membership writes and the changes as data-modifying CTEs,
    with no temporary tables to create and drop on every batch."""
    recorded = con.execute(
        """
        with found as (
            select * from jsonb_to_recordset(%(found)s::jsonb)
                as f (segment text, customer_id text, attributes jsonb)
        ),
        held as (
            select * from segops.segment_membership
            where customer_id = any(%(customers)s) and segment = any(%(segments)s)
        ),
        delta as (
            select h.customer_id, h.segment, 'exit' as change, h.attributes from held as h
            where not exists (select from found as f
                              where (f.customer_id, f.segment) = (h.customer_id, h.segment))
            union all
            select f.customer_id, f.segment, 'enter', f.attributes from found as f
            where not exists (select from held as h
                              where (h.customer_id, h.segment) = (f.customer_id, f.segment))
            union all
            select f.customer_id, f.segment, 'update', f.attributes
            from found as f join held as h using (customer_id, segment)
            where h.attributes is distinct from f.attributes
        ),
        exited as (
            delete from segops.segment_membership as m using delta as d
            where d.change = 'exit' and (m.customer_id, m.segment) = (d.customer_id, d.segment)
        ),
        updated as (
            update segops.segment_membership as m set attributes = d.attributes from delta as d
            where d.change = 'update' and (m.customer_id, m.segment) = (d.customer_id, d.segment)
        ),
        entered as (
            insert into segops.segment_membership
                (customer_id, segment, entered_at, source, attributes)
            select customer_id, segment, %(at)s, %(source)s, attributes from delta
            where change = 'enter'
        )
        insert into segops.segment_membership_changes
            (customer_id, segment, change, changed_at, source, attributes)
        select customer_id, segment, change, %(at)s, %(source)s, attributes from delta
        where change <> 'update' order by customer_id, segment
        returning segment, change
        """,
        {"found": "[" + ",".join(
            f'{{"segment":{json.dumps(segment)},"customer_id":{json.dumps(customer)},'
            f'"attributes":{attributes or "null"}}}' for segment, customer, attributes in found
        ) + "]",
         "customers": sorted(set(customers)), "segments": list(segments),
         "at": changed_at, "source": source}).fetchall()
    return Counter(recorded)
