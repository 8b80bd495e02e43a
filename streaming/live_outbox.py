"""The change feed's outbox on PostgreSQL: one publisher at a time, in order per customer.

Several consumers may run, but only the holder of the outbox lease publishes: two publishers
could send one customer's changes out of order (each through its own client), while one keeps
the ordering key's promise. The lease is a session-level advisory lock, so PostgreSQL releases
it when its holder dies or disconnects, and the next consumer to ask takes over; a change is
marked published only after Pub/Sub accepted it, so a takeover repeats changes, never loses one.
"""

from __future__ import annotations

from datetime import datetime

import psycopg

# pg_advisory_lock key of the outbox lease: any constant no per-customer lock can take (those
# come from hashtextextended, but a clash would only delay, never break, either side).
OUTBOX_LEASE = 0x5E60_0B0C


def take_lease(con: psycopg.Connection) -> bool:
    """Whether this session now holds the outbox lease (kept until it ends or `release`)."""
    (held,) = con.execute("select pg_try_advisory_lock(%s)", [OUTBOX_LEASE]).fetchone()
    return held


def release(con: psycopg.Connection) -> None:
    con.execute("select pg_advisory_unlock(%s)", [OUTBOX_LEASE])


def unpublished(con: psycopg.Connection, after: int, limit: int) -> list[tuple]:
    """Changes not yet published, after change `after`, in the order they were recorded."""
    return con.execute(
        "select change_id, segment, customer_id, change, changed_at, source, attributes::text "
        "from segops.segment_membership_changes "
        "where published_at is null and change_id > %s order by change_id limit %s",
        [after, limit],
    ).fetchall()


def mark_published(con: psycopg.Connection, change_ids: list[int], at: datetime) -> None:
    con.execute("update segops.segment_membership_changes set published_at = %s "
                "where change_id = any(%s) and published_at is null", [at, change_ids])
