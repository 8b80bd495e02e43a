"""A micro-batch's reads and writes on the live tables, inside the caller's transaction.

Concurrent consumers serialize per customer through PostgreSQL itself: each batch first takes a
transaction-scoped advisory lock per customer, in the order of the locks' keys, so two batches
that share customers run one after the other and never deadlock, and membership for a customer
is only ever decided while its lock is held. The locks go with the commit (or the rollback of a
consumer that died).
"""

from __future__ import annotations

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


def apply_found(con: psycopg.Connection, found: Sequence[tuple[str, str, str | None]], *,
                segments: Sequence[str], customers: Iterable[str], source: str,
                changed_at: datetime) -> Counter[tuple[str, str]]:
    """Bring the customers' membership of `segments` to `found` (segment, customer_id,
    attributes as JSON text): enters, exits and their changes recorded, attributes kept current.
    What was already so changes nothing, so a redelivered batch records nothing twice. Returns
    (segment, enter|exit) counts. Run it under the customers' locks (`lock_customers`)."""
    con.execute("create temp table _found (segment text, customer_id text, attributes jsonb) "
                "on commit drop")
    with con.cursor().copy("copy _found from stdin") as copy:
        for row in found:
            copy.write_row(row)
    scope = {"customers": sorted(set(customers)), "segments": list(segments),
             "at": changed_at, "source": source}
    con.execute(
        """
        create temp table _delta on commit drop as
        select m.customer_id, m.segment, 'exit' as change, m.attributes
        from segops.segment_membership as m
        where m.customer_id = any(%(customers)s) and m.segment = any(%(segments)s)
          and not exists (select from _found as f
                          where f.customer_id = m.customer_id and f.segment = m.segment)
        union all
        select f.customer_id, f.segment, 'enter', f.attributes
        from _found as f
        where not exists (select from segops.segment_membership as m
                          where m.customer_id = f.customer_id and m.segment = f.segment)
        union all
        select f.customer_id, f.segment, 'update', f.attributes
        from _found as f join segops.segment_membership as m using (customer_id, segment)
        where m.attributes is distinct from f.attributes
        """, scope)
    con.execute("delete from segops.segment_membership as m using _delta as d "
                "where d.change = 'exit' and (m.customer_id, m.segment) = "
                "(d.customer_id, d.segment)")
    con.execute("update segops.segment_membership as m set attributes = d.attributes "
                "from _delta as d where d.change = 'update' and (m.customer_id, m.segment) = "
                "(d.customer_id, d.segment)")
    recorded = con.execute(
        "insert into segops.segment_membership_changes "
        "(customer_id, segment, change, changed_at, source, attributes) "
        "select customer_id, segment, change, %(at)s, %(source)s, attributes from _delta "
        "where change <> 'update' order by customer_id, segment returning segment, change",
        scope).fetchall()
    con.execute("insert into segops.segment_membership "
                "(customer_id, segment, entered_at, source, attributes) "
                "select customer_id, segment, %(at)s, %(source)s, attributes from _delta "
                "where change = 'enter'", scope)
    con.execute("drop table _found; drop table _delta")
    return Counter(recorded)
