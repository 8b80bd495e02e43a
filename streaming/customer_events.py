"""The events again, keyed by customer: what the real-time path reads for a batch's customers.

`raw.events` is laid out in arrival order, so copying a thousand customers' events out of it
decompresses most of the history (half a second at ten million events), however few rows match.
This SQLite table holds the same rows in a B-tree on (customer_id, event_id), so the same copy is
a thousand seeks whatever the history's size.

It is derived: `raw.events` stays the record. The consumer writes both in each batch and commits
the warehouse first, so the index is never ahead of it. It is also where redeliveries are caught:
its unique `event_id` lives on disk, where a unique index in DuckDB would be held whole in memory
and grow with every event stored (about 100 bytes each). Each time the consumer opens the
warehouse it checks the two agree (row count, newest ingestion, newest occurrence) and catches up
or rebuilds when they do not: another process appended, a consumer died between its two
commits, or the shop was regenerated.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb
import pyarrow as pa

from segops.errors import SegOpsError
from segops.events import Event

log = logging.getLogger(__name__)

EVENTS = "raw.events"
COLUMNS = ("event_id", "customer_id", "event_type", "occurred_at", "properties", "ingested_at")
LOAD_CHUNK = 100_000
# What `SELECT` returns, column by column, before the timestamps become timestamps again.
FOUND = pa.schema([("customer_id", pa.string()), ("event_id", pa.string()),
                   ("event_type", pa.string()), ("occurred_at", pa.int64()),
                   ("properties", pa.string()), ("ingested_at", pa.int64())])

DDL = """
create table if not exists events (
    customer_id text not null,
    event_id text not null,
    event_type text not null,
    occurred_at integer not null,  -- microseconds since the epoch, UTC
    properties text,
    ingested_at integer not null,
    primary key (customer_id, event_id)
) without rowid;

create table if not exists summary (
    id integer primary key check (id = 1),
    row_count integer not null,
    newest_ingested_at integer,
    newest_occurred_at integer
);

insert or ignore into summary values (1, 0, null, null);
"""
EVENT_ID_INDEX = "create unique index if not exists events_event_id on events (event_id)"

# Rows travel as one JSON document per statement, both ways. sqlite3 releases the interpreter
# lock around every row it steps, and while the Pub/Sub client's threads run, taking it back can
# wait a switch interval each time: row by row, 150 customers' events took seconds to read.
INSERT = """
insert or ignore into events
select value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5
from json_each(?)
returning event_id
"""
SELECT = """
select json_array(json_group_array(customer_id), json_group_array(event_id),
    json_group_array(event_type), json_group_array(occurred_at), json_group_array(properties),
    json_group_array(ingested_at))
from events where customer_id in (select value from json_each(?))
"""
COUNT = """
select json_group_array(json_array(value, (select count(*) from events where customer_id = value)))
from json_each(?)
"""
# Rows in each part of a copy (see `CustomerEvents.copy_into`).
COPY_PART_ROWS = 5_000


class IndexMismatch(SegOpsError):
    """The index still differs from raw.events after a rebuild."""


class CustomerEvents:
    """`raw.events` keyed by customer, in a SQLite file beside the warehouse."""

    def __init__(self, warehouse: Path):
        self.path = warehouse.with_suffix(".events-by-customer.sqlite")
        self._db: sqlite3.Connection | None = None
        self._copy: _Copy | None = None  # the last copy made, which the next one carries over
        self._added: list[tuple] = []  # rows added since, in FOUND's order

    # -- keeping it equal to raw.events ------------------------------------------------------

    def sync(self, con: duckdb.DuckDBPyConnection) -> None:
        """Make the index hold what `raw.events` holds; run while holding the warehouse."""
        columns = tuple(row[0] for row in con.execute(f"describe {EVENTS}").fetchall())
        if columns != COLUMNS:
            raise SegOpsError(
                f"{EVENTS} has columns {', '.join(columns)}; the index by customer holds "
                f"{', '.join(COLUMNS)} (streaming/customer_events.py)"
            )
        expected = _fingerprint(con)
        held = self._summary()
        if held == expected:
            return
        if held[0] < expected[0] and held[1] is not None:
            with self.transaction():
                added = self._load(con, f"ingested_at >= make_timestamp({held[1]}::bigint)")
            if self._summary() == expected:
                log.info("index by customer caught up with %d events", added)
                return
        started = time.monotonic()
        with self.transaction() as db:
            db.execute("delete from events")
            db.execute("update summary set row_count = 0, newest_ingested_at = null, "
                       "newest_occurred_at = null")
            # Built after the load: filled in random id order it took twice as long.
            db.execute("drop index events_event_id")
            added = self._load(con, "true")
            db.execute(EVENT_ID_INDEX)
        log.info("indexed %d events by customer in %.1fs (it did not match %s)", added,
                 time.monotonic() - started, EVENTS)
        if self._summary() != expected:
            raise IndexMismatch(
                f"the index by customer ({self.path}) holds {self._summary()} after a rebuild, "
                f"{EVENTS} holds {expected} (rows, newest ingestion, newest occurrence)"
            )

    def _load(self, con: duckdb.DuckDBPyConnection, where: str) -> int:
        """Insert the rows of raw.events matching `where`, inside `transaction()`, in key
        order (a B-tree fills fastest that way)."""
        newest = con.execute(
            f"select epoch_us(max(ingested_at)), epoch_us(max(occurred_at)) from {EVENTS} "
            f"where {where}"
        ).fetchone()
        reader = con.execute(
            f"""
            select json_array(customer_id, event_id, event_type, epoch_us(occurred_at),
                properties::varchar, epoch_us(ingested_at))::varchar
            from {EVENTS} where {where} order by customer_id, event_id
            """
        )
        added = 0
        while rows := reader.fetchmany(LOAD_CHUNK):
            added += len(self._insert("[" + ",".join(row[0] for row in rows) + "]"))
        if added:
            self._count(added, *newest)
        return added

    # -- the consumer's side ------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Commit when the block ends (after the warehouse committed inside it), else roll back."""
        db = self._connection()
        copy = self._copy
        db.execute("begin")
        try:
            yield db
            db.execute("commit")
        except BaseException:
            self._copy, self._added = None, []  # the warehouse may hold an older copy again
            if db.in_transaction:
                db.execute("rollback")
            raise
        finally:
            if self._copy is copy:  # no new copy in this block: carried only to the next batch
                self._copy, self._added = None, []

    def add(self, events: list[Event], ingested_at: datetime) -> list[Event]:
        """Add the events not held yet, inside `transaction()`; return them, for the warehouse
        to store. An event whose id is held already is a redelivery."""
        if not events:
            return []
        occurred = pa.array([e.occurred_at for e in events], pa.timestamp("us"))
        ingested = _epoch_us(ingested_at)
        rows = [
            (e.customer_id, e.event_id, e.event_type, at, e.properties, ingested)
            for e, at in zip(events, occurred.cast(pa.int64()).to_pylist(), strict=True)
        ]
        added = set(self._insert(json.dumps(rows)))
        if added:
            self._count(len(added), ingested, max(row[3] for row in rows if row[1] in added))
            if self._copy is not None:
                self._added.extend(row for row in rows if row[1] in added)
        return events if len(added) == len(events) else [e for e in events if e.event_id in added]

    def copy_into(self, con: duckdb.DuckDBPyConnection, table: str, scope: str) -> None:
        """Create temp table `table` as the events of the customers in temp table `scope`.

        Busy customers are in nearly every batch, and their histories grow all the time. So
        the customers the previous batch copied into `table` carry their rows over, plus the
        events added since; only the others are read from the index. Those rows cross from
        SQLite in parts of about COPY_PART_ROWS (`parts`), so only one part's Python objects
        are alive at a time, whatever a customer's history holds.
        """
        customers = [row[0] for row in con.execute(f"select customer_id from {scope}").fetchall()]
        carried = self._carried(con, table)
        fresh = [c for c in customers if c not in carried]
        added = [row for row in self._added if row[0] in carried]
        found = pa.concat_tables([_rows_table(added),
                                  *(self._events_of(part) for part in self.parts(fresh))])
        kept = (f"select * from {table} where customer_id in (select customer_id from {scope}) "
                "union all ") if carried else ""
        con.register("_by_customer", found)
        try:
            con.execute(
                f"""
                create or replace temp table {table} as
                {kept}
                select event_id, customer_id, event_type,
                    make_timestamp(occurred_at) as occurred_at, properties::json as properties,
                    make_timestamp(ingested_at) as ingested_at
                from _by_customer
                """
            )
        finally:
            con.unregister("_by_customer")
        self._copy = _Copy(con, table, _table_oid(con, table), frozenset(customers))
        self._added = []

    def _carried(self, con: duckdb.DuckDBPyConnection, table: str) -> frozenset[str]:
        """The customers whose rows `table` holds from the last copy, if it is still that copy
        (same connection, not replaced since), else none."""
        copy = self._copy
        if copy is None or copy.con is not con or copy.table != table:
            return frozenset()
        return copy.customers if _table_oid(con, table) == copy.oid else frozenset()

    def _events_of(self, customers: list[str]) -> pa.Table:
        """The events of `customers`, read as one JSON document (see INSERT)."""
        (document,) = self._connection().execute(SELECT, (json.dumps(customers),)).fetchone()
        return pa.table(dict(zip(FOUND.names, json.loads(document), strict=True)), schema=FOUND)

    def parts(self, customers: list[str]) -> list[list[str]]:
        """`customers` in runs holding about COPY_PART_ROWS events together (a customer with
        more is a run alone); at least one run, so an empty scope still gives an empty copy."""
        (document,) = self._connection().execute(COUNT, (json.dumps(customers),)).fetchone()
        runs: list[list[str]] = [[]]
        rows = 0
        for customer, events in json.loads(document):
            if runs[-1] and rows + events > COPY_PART_ROWS:
                runs.append([])
                rows = 0
            runs[-1].append(customer)
            rows += events
        return runs

    def close(self) -> None:
        if self._db is not None:
            self._db, db = None, self._db
            db.close()

    # -- internals ------------------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            # Autocommit mode: transactions are explicit. WAL with synchronous=normal survives a
            # killed process; what an OS crash loses, the next sync puts back from raw.events.
            db = sqlite3.connect(self.path, isolation_level=None, timeout=60)
            db.execute("pragma journal_mode = wal")
            db.execute("pragma synchronous = normal")
            db.executescript(DDL)
            db.execute(EVENT_ID_INDEX)
            self._db = db
        return self._db

    def _insert(self, rows: str) -> list[str]:
        """Insert `rows` (a JSON array of row arrays); return the ids of those not held yet."""
        return [row[0] for row in self._connection().execute(INSERT, (rows,)).fetchall()]

    def _count(self, added: int, newest_ingested: int, newest_occurred: int) -> None:
        """Record rows added in the summary that `sync` compares with raw.events."""
        self._connection().execute(
            """
            update summary set
                row_count = row_count + ?1,
                newest_ingested_at = max(coalesce(newest_ingested_at, ?2), ?2),
                newest_occurred_at = max(coalesce(newest_occurred_at, ?3), ?3)
            """,
            (added, newest_ingested, newest_occurred),
        )

    def _summary(self) -> tuple[int, int | None, int | None]:
        return self._connection().execute(
            "select row_count, newest_ingested_at, newest_occurred_at from summary"
        ).fetchone()


@dataclass(frozen=True)
class _Copy:
    """A copy `copy_into` made: on which connection, as which table (its oid tells whether it
    was replaced since), of which customers."""

    con: duckdb.DuckDBPyConnection
    table: str
    oid: int
    customers: frozenset[str]


def _rows_table(rows: list[tuple]) -> pa.Table:
    """Rows in FOUND's order as a table."""
    columns = list(zip(*rows, strict=True)) or [[] for _ in FOUND]
    return pa.table(columns, schema=FOUND)


def _table_oid(con: duckdb.DuckDBPyConnection, table: str) -> int | None:
    rows = con.execute("select table_oid from duckdb_tables() where temporary and table_name = ?",
                       [table]).fetchall()
    return rows[0][0] if rows else None


def _fingerprint(con: duckdb.DuckDBPyConnection) -> tuple[int, int | None, int | None]:
    """Row count, newest ingestion and newest occurrence (answered from table statistics)."""
    return con.execute(
        f"select count(*), epoch_us(max(ingested_at)), epoch_us(max(occurred_at)) from {EVENTS}"
    ).fetchone()


def _epoch_us(moment: datetime) -> int:
    return pa.scalar(moment, pa.timestamp("us")).cast(pa.int64()).as_py()
