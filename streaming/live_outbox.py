"""The change feed's outbox on PostgreSQL: one publisher at a time, in order per customer.

Several consumers may run, but only the holder of the outbox lease (segops/live_leases.py)
publishes: two publishers could send one customer's changes out of order (each through its own
client), while one keeps the ordering key's promise. A change is marked published only after
Pub/Sub accepted it, so a takeover repeats changes, never loses one.
"""

from __future__ import annotations

from datetime import datetime

import psycopg


def unpublished(con: psycopg.Connection, in_flight: list[int], limit: int) -> list[tuple]:
    """Changes not yet published nor `in_flight`, in the order they were recorded.

    Not "after the last one read": a change recorded by a transaction that commits later than
    one with a higher id would be skipped. One customer's changes are recorded under its lock,
    so they become visible in their order. The ids in flight (up to ten thousand) are a
    subquery, which PostgreSQL hashes: `change_id <> all(array)` compares every row read with
    every id in flight, a second per call at that size."""
    return con.execute(
        "select change_id, segment, customer_id, change, changed_at, source, attributes::text "
        "from segops.segment_membership_changes where published_at is null "
        "and change_id not in (select unnest(%s::bigint[])) order by change_id limit %s",
        [in_flight, limit],
    ).fetchall()


def mark_published(con: psycopg.Connection, change_ids: list[int], at: datetime) -> None:
    """One probe of the key per id, joined as in ScopeEngine.load (segops/live_scope.py)."""
    con.execute("update segops.segment_membership_changes set published_at = %s "
                "where change_id in (select unnest(%s::bigint[])) and published_at is null",
                [at, change_ids])
