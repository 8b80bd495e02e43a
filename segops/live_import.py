"""The live tables' raw rows copied from PostgreSQL into the warehouse (the lake), where the
nightly dbt build reads them: the stream stores events in PostgreSQL, the models are built in
DuckDB.

Events are only ever added, so each copy takes those ingested since shortly before the newest
the warehouse holds (consumers commit out of order by a batch or so; the margin covers that,
the key comparison within it keeps anything from arriving twice, also when a copy is repeated
after a crash). Profiles and their history change in place: the nightly copies them whole;
the frequent flush of events leaves them, since preview reads them from PostgreSQL itself.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import duckdb
import psycopg

from segops.extensions import attach_postgres
from segops.live_copy import COPIED
from segops.live_leases import LAKE_COPY, wait_for_lease
from segops.sql import literal

# How far back of the newest copied ingestion each copy looks again: far longer than a batch.
OVERLAP = "interval 10 minute"


@dataclass(frozen=True)
class Imported:
    events: int
    customers: int
    traits: int


PROFILES = ("raw.customers", "raw.customer_traits")


def import_live_raw(con: duckdb.DuckDBPyConnection, dsn: str, *,
                    profiles: bool = True) -> Imported:
    """Bring the raw tables of `con`'s default catalog level with PostgreSQL's in one
    transaction: the events, and with `profiles` the customers and their trait history. One
    copy at a time (the lake's appends never conflict, so two at once would both add them)."""
    with psycopg.connect(dsn, autocommit=True) as lease:
        wait_for_lease(lease, LAKE_COPY)
        return _import(con, dsn, profiles)


def _import(con: duckdb.DuckDBPyConnection, dsn: str, profiles: bool) -> Imported:
    attach_postgres(con, dsn, read_only=True)
    try:
        _ensure_raw_tables(con)
        con.execute("begin")
        events = ", ".join(COPIED["raw.events"])
        # A constant bound, so PostgreSQL reads the new events from its index on ingested_at.
        (newest,) = con.execute("select max(ingested_at) from raw.events").fetchone()
        since = (f"timestamp {literal(newest.isoformat(sep=' '))} - {OVERLAP}"
                 if newest else "timestamp '-infinity'")
        (added,) = con.execute(
            f"""
            insert into raw.events ({events})
            select {events} from live.raw.events as e
            where e.ingested_at >= {since}
              and not exists (select 1 from raw.events as w
                              where w.ingested_at >= {since}
                                and w.customer_id = e.customer_id and w.event_id = e.event_id)
            """).fetchone()
        copied = dict.fromkeys(PROFILES, 0)
        for table in PROFILES if profiles else ():
            columns = ", ".join(COPIED[table])
            con.execute(f"delete from {table}")
            (copied[table],) = con.execute(f"insert into {table} ({columns}) "
                                           f"select {columns} from live.{table}").fetchone()
        con.execute("commit")
    except BaseException:
        with contextlib.suppress(duckdb.TransactionException):  # a failed commit ended it
            con.execute("rollback")
        raise
    finally:
        con.execute("detach live")
    return Imported(events=added, customers=copied["raw.customers"],
                    traits=copied["raw.customer_traits"])


def _ensure_raw_tables(con: duckdb.DuckDBPyConnection) -> None:
    """The copied tables, shaped as PostgreSQL's columns, where they are missing (a new lake)."""
    con.execute("create schema if not exists raw")
    for table in ("raw.events", *PROFILES):
        con.execute(f"create table if not exists {table} as "
                    f"select {', '.join(COPIED[table])} from live.{table} limit 0")
