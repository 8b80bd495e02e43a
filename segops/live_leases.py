"""Work one process at a time does, however many run: each holds a lease, a session-level
advisory lock that PostgreSQL releases when its holder's session ends (a crash ends it too), so
the next process to ask takes over.

The keys are constants no per-customer lock takes in practice (those come from
hashtextextended); a clash would only make one side wait, never break either.
"""

from __future__ import annotations

import psycopg

OUTBOX = 0x5E60_0B0C  # publishing the change feed, so one customer's changes leave in order
SWEEP = 0x5E60_5EE9  # finding whom time alone moved, so each crossing is swept once
EVERYONE = 0x5E60_E7E1  # evaluating a segment for every customer (a new or changed definition)
LAKE_COPY = 0x5E60_1A4E  # copying events into the lake: two copies at once would both add them


def take_lease(con: psycopg.Connection, key: int) -> bool:
    """Whether this session now holds the lease `key` (kept until it ends or `release`)."""
    (held,) = con.execute("select pg_try_advisory_lock(%s)", [key]).fetchone()
    return held


def wait_for_lease(con: psycopg.Connection, key: int) -> None:
    """Hold the lease `key`, waiting for its holder to finish first."""
    con.execute("select pg_advisory_lock(%s)", [key])


def release(con: psycopg.Connection, key: int) -> None:
    con.execute("select pg_advisory_unlock(%s)", [key])
