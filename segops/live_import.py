"""The live tables' raw rows copied from PostgreSQL into the lake, where the nightly dbt
build reads them: the stream stores events in PostgreSQL, the models are built in DuckDB.

Events are only ever added, but consumers commit out of order, so "the newest copied" says
nothing about what is still to come. Each event row carries its inserting transaction's id,
and a copy takes PostgreSQL's snapshot horizon first (`pg_snapshot_xmin`: every transaction
below it has ended): it copies the events of the transactions from the last copy's horizon up
to this one, and records the horizon in the lake in the same commit. So each event reaches the
lake exactly once, whatever the commit order, with no overlap to re-read; and a reader of the
lake at any snapshot knows the exact tail PostgreSQL holds beyond it (segops/live_reach.py).
Profiles change in place, so each carries the id of the transaction that last wrote it (a
trigger sets it, whoever writes), deletions and rewritten trait history are recorded with
theirs, and the nightly copies what was written since its last copy the same way; the frequent
flush of events leaves them, since preview reads them from PostgreSQL itself.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import duckdb
import psycopg

from segops.extensions import attach_postgres
from segops.lake import FLUSHES, flushed_horizon
from segops.live_columns import COPIED
from segops.live_leases import LAKE_COPY, wait_for_lease
from segops.sql import literal


@dataclass(frozen=True)
class Imported:
    events: int
    customers: int
    traits: int


PROFILES = ("raw.customers", "raw.customer_traits")
# Every profile copy's horizon, as FLUSHES records the events'.
PROFILE_COPIES = "segops.lake_profile_copies"
# the column of each profile table that holds the transaction that wrote the row
WRITTEN_BY = {"raw.customers": "changed_xid", "raw.customer_traits": "recorded_xid"}


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
        (horizon,) = con.execute(
            "select * from postgres_query('live', "
            "'select pg_snapshot_xmin(pg_current_snapshot())::text::bigint')").fetchone()
        since = flushed_horizon(con)
        (added,) = con.execute(
            f"insert into raw.events ({events}) select {events} from live.raw.events "
            f"where ingested_xid >= {since} and ingested_xid < {horizon} "
            # in time order, so a segment's window skips the files and row groups outside it
            "order by occurred_at").fetchone()
        con.execute(f"insert into {FLUSHES} values ({horizon}, now(), {added})")
        copied = _copy_profiles(con, horizon) if profiles else dict.fromkeys(PROFILES, 0)
        con.execute("commit")
    except BaseException:
        with contextlib.suppress(duckdb.TransactionException):  # a failed commit ended it
            con.execute("rollback")
        raise
    finally:
        con.execute("detach live")
    return Imported(events=added, customers=copied["raw.customers"],
                    traits=copied["raw.customer_traits"])


def _copy_profiles(con: duckdb.DuckDBPyConnection, horizon: int) -> dict[str, int]:
    """The profiles and trait changes written by the transactions from the last profile copy's
    horizon up to `horizon`, as the events are copied: a profile written since replaces the
    lake's (a deleted one leaves it), a trait change is added, and a customer whose trait
    history was changed otherwise gets theirs replaced whole. The first copy replaces
    everything (a lake from before this record holds a whole copy of its own). A `truncate`
    fires no row trigger, so the lake keeps what a truncated table held. Rows copied per
    table."""
    (since,) = con.execute(f"select coalesce(max(horizon), 0) from {PROFILE_COPIES}").fetchone()
    if since:  # PostgreSQL finds the rows by its indexes on the transaction ids
        def written(column: str) -> str:
            return f"{column} >= {since} and {column} < {horizon}"

        rewritten = ("select customer_id from raw.profiles_rewritten "
                     f"where {written('rewritten_xid')}")
        customers = ("select customer_id from raw.customers "
                     f"where {written(WRITTEN_BY['raw.customers'])} "
                     f"union {rewritten}")
        copied = {
            "raw.customers": _replace(con, "raw.customers", customers,
                                      f"customer_id in ({customers})"),
            "raw.customer_traits": _replace(con, "raw.customer_traits", rewritten,
                                            f"{written(WRITTEN_BY['raw.customer_traits'])} "
                                            f"or customer_id in ({rewritten})"),
        }
    else:
        copied = {table: _replace_all(con, table, horizon) for table in PROFILES}
    con.execute(f"insert into {PROFILE_COPIES} values ({horizon}, now(), "
                f"{copied['raw.customers']}, {copied['raw.customer_traits']})")
    return copied


def _replace(con: duckdb.DuckDBPyConnection, table: str, customers: str, rows: str) -> int:
    """The lake's rows of `table` for the `customers` PostgreSQL's query finds deleted, and
    PostgreSQL's rows of it that `rows` selects added; how many."""
    columns = ", ".join(COPIED[table])
    con.execute(f"delete from {table} where customer_id in "
                f"(select customer_id from postgres_query('live', {literal(customers)}))")
    select = f"select {columns} from {table} where {rows}"
    return con.execute(f"insert into {table} ({columns}) select {columns} "
                       f"from postgres_query('live', {literal(select)})").fetchone()[0]


def _replace_all(con: duckdb.DuckDBPyConnection, table: str, horizon: int) -> int:
    """The lake's `table` replaced by PostgreSQL's rows written below `horizon`; how many."""
    columns = ", ".join(COPIED[table])
    con.execute(f"delete from {table}")
    return con.execute(f"insert into {table} ({columns}) select {columns} from live.{table} "
                       f"where {WRITTEN_BY[table]} < {horizon}").fetchone()[0]


def _ensure_raw_tables(con: duckdb.DuckDBPyConnection) -> None:
    """The copied tables, shaped as PostgreSQL's columns, and the copies' record, where they
    are missing (a new lake)."""
    con.execute("create schema if not exists raw")
    for table in ("raw.events", *PROFILES):
        con.execute(f"create table if not exists {table} as "
                    f"select {', '.join(COPIED[table])} from live.{table} limit 0")
    con.execute("create schema if not exists segops")
    con.execute(f"create table if not exists {FLUSHES} "
                "(horizon bigint not null, flushed_at timestamp not null, events bigint not null)")
    con.execute(f"create table if not exists {PROFILE_COPIES} (horizon bigint not null, "
                "copied_at timestamp not null, customers bigint not null, traits bigint not null)")
